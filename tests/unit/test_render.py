"""Pure rendering: tables, human sizes/numbers/times, Go durations, stats, word wrap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cli.client import Chunk, RunningModel
from cli.render import (
    format_go_duration,
    format_table,
    human_bytes,
    human_number,
    human_time,
    parse_timestamp,
    processor,
    stats_block,
    until,
)
from cli.response import WordWrapper

NOW = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 KB"),
        (1500, "1.5 KB"),
        (9_950, "9.9 KB"),
        (10_000, "10 KB"),
        (15_900, "15 KB"),
        (1_000_000, "1 MB"),
        (2_000_000_000, "2 GB"),
        (4_700_000_000, "4.7 GB"),
        (42_000_000_000, "42 GB"),
        (1_500_000_000_000, "1.5 TB"),
    ],
)
def test_human_bytes_uses_decimal_units(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1K"),
        (12_345, "12K"),
        (1_000_000, "1M"),
        (134_515_008, "134.52M"),
        (7_000_000_000, "7B"),
        (8_030_261_248, "8.0B"),
        (1_540_000_000, "1.5B"),
    ],
)
def test_human_number_formats_parameter_counts(count: int, text: str) -> None:
    assert human_number(count) == text


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (timedelta(seconds=-0.5), "Less than a second ago"),
        (timedelta(seconds=-1), "1 second ago"),
        (timedelta(seconds=-30), "30 seconds ago"),
        (timedelta(seconds=-90), "About a minute ago"),
        (timedelta(minutes=-45), "45 minutes ago"),
        (timedelta(hours=-1), "About an hour ago"),
        (timedelta(hours=-5), "5 hours ago"),
        (timedelta(days=-3), "3 days ago"),
        (timedelta(days=-15), "2 weeks ago"),
        (timedelta(days=-90), "3 months ago"),
        (timedelta(days=-3 * 365), "3 years ago"),
        (timedelta(minutes=4, seconds=30), "4 minutes from now"),
        (timedelta(hours=30), "30 hours from now"),
        (timedelta(days=19 * 365), "19 years from now"),
        (timedelta(days=300 * 365), "Forever"),
    ],
)
def test_human_time_reads_like_ollama(offset: timedelta, text: str) -> None:
    assert human_time(NOW + offset, NOW) == text


def test_human_time_of_no_time_is_never() -> None:
    assert human_time(None, NOW) == "Never"
    assert human_time(parse_timestamp("0001-01-01T00:00:00Z"), NOW) == "Never"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-15T11:00:00Z", datetime(2025, 1, 15, 11, tzinfo=UTC)),
        ("2024-07-22T20:47:51.147561123Z", datetime(2024, 7, 22, 20, 47, 51, 147561, tzinfo=UTC)),
        ("2025-01-15T13:00:00.5+01:00", datetime(2025, 1, 15, 12, 0, 0, 500000, tzinfo=UTC)),
        ("", None),
        (None, None),
    ],
)
def test_parse_timestamp_reads_rfc3339(text: str | None, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_until_says_stopping_once_expired() -> None:
    assert until("2025-01-15T11:59:00Z", NOW) == "Stopping..."
    assert until("2025-01-15T12:04:59Z", NOW) == "4 minutes from now"
    assert until("2318-01-15T12:00:00Z", NOW) == "Forever"


@pytest.mark.parametrize(
    ("size", "vram", "text"),
    [
        (1000, 0, "100% CPU"),
        (0, 0, "100% CPU"),
        (1000, 1000, "100% GPU"),
        (1000, 1500, "Unknown"),
        (0, 5, "Unknown"),
        (1000, 520, "48%/52% CPU/GPU"),
        (200, 101, "50%/50% CPU/GPU"),
    ],
)
def test_processor_column(size: int, vram: int, text: str) -> None:
    assert processor(RunningModel(size=size, size_vram=vram)) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1e-9, "1ns"),
        (999e-9, "999ns"),
        (1.1e-6, "1.1µs"),
        (1e-6, "1µs"),
        (2.2e-3, "2.2ms"),
        (0.325953, "325.953ms"),
        (0.005025959, "5.025959ms"),
        (3.3, "3.3s"),
        (5.043500667, "5.043500667s"),
        (4 * 60 + 5.5, "4m5.5s"),
        (3600, "1h0m0s"),
        (2 * 3600 + 3 * 60 + 4.000000001, "2h3m4.000000001s"),
        (-1.5, "-1.5s"),
    ],
)
def test_format_go_duration_matches_go(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


def test_format_table_pads_columns_four_spaces_apart() -> None:
    text = format_table(["NAME", "ID"], [["a:latest", "0123"], ["bb", ""]])
    assert text == "NAME        ID\na:latest    0123\nbb"


def test_stats_block_prints_positive_values_with_rates() -> None:
    final = Chunk(
        done=True,
        total_duration=5_043_500_667,
        load_duration=5_025_959,
        prompt_eval_count=26,
        prompt_eval_duration=325_953_000,
        eval_count=290,
        eval_duration=4_709_213_000,
    )
    assert stats_block(final) == (
        "total duration:       5.043500667s\n"
        "load duration:        5.025959ms\n"
        "prompt eval count:    26 token(s)\n"
        "prompt eval duration: 325.953ms\n"
        "prompt eval rate:     79.77 tokens/s\n"
        "eval count:           290 token(s)\n"
        "eval duration:        4.709213s\n"
        "eval rate:            61.58 tokens/s\n"
    )


def test_stats_block_leaves_out_zero_values() -> None:
    assert stats_block(Chunk(done=True, eval_count=3)) == "eval count:           3 token(s)\n"


def test_word_wrapper_breaks_at_spaces_across_chunks() -> None:
    wrapper = WordWrapper(10)
    out = "".join(wrapper.feed(piece) for piece in ["Hello th", "ere my fri", "end\nok go"])
    out += wrapper.flush()
    assert out == "Hello \nthere my \nfriend\nok go"
    assert all(len(line.rstrip()) <= 10 for line in out.splitlines())
