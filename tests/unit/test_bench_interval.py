"""The benchmarks' verdict on a paired ratio: the median's distribution-free 95% interval."""

from __future__ import annotations

import math
import random

from bench.common import median_interval, paired_ratio, paired_ratio_interval, settled


def test_interval_takes_the_order_statistics_the_binomial_allows() -> None:
    # n=15: P(Bin(15, 1/2) <= 3) = 0.018 <= 0.025 < P(<= 4) = 0.059, so x(4) and x(12).
    assert median_interval(list(range(1, 16))) == [4, 12]
    assert median_interval(list(range(1, 10))) == [2, 8]  # P(<= 1) = 0.020
    assert median_interval(list(range(1, 42))) == [14, 28]  # P(<= 13) = 0.015, (<= 14) = 0.030


def test_interval_ignores_the_order_values_come_in() -> None:
    values = [0.91, 1.02, 0.97, 0.88, 0.95, 1.10, 0.93, 0.99, 0.96]
    shuffled = random.Random(3).sample(values, len(values))
    assert median_interval(shuffled) == median_interval(values) == [0.91, 1.02]


def test_too_few_rounds_give_no_interval() -> None:
    low, high = median_interval([1.0, 2.0, 3.0, 4.0, 5.0])  # 2 * (1/32) > 0.05
    assert math.isnan(low) and math.isnan(high)
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == [1.0, 6.0]


def test_paired_interval_is_over_round_by_round_ratios() -> None:
    ours = [90.0, 100.0, 110.0, 95.0, 105.0, 99.0]
    theirs = [100.0] * 6
    assert paired_ratio(ours, theirs) == (0.99 + 1.0) / 2
    assert paired_ratio_interval(ours, theirs) == [0.9, 1.1]


def test_settled_only_when_the_interval_is_on_one_side() -> None:
    assert settled([0.96, 1.02], 0.95)
    assert settled([0.90, 0.94], 0.95)
    assert not settled([0.93, 0.97], 0.95)
    assert not settled([float("nan"), float("nan")], 0.95)
