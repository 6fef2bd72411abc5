"""worker/slots.py: prefix reuse, slot choice and step planning, as plain tables."""

from __future__ import annotations

import pytest

from worker.slots import (
    BatchEntry,
    SlotCandidate,
    SlotDemand,
    choose_slot,
    plan_batch,
    reusable_prefix,
    shared_prefix,
)

LONG = list(range(1000))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([], [], 0),
        ([], [1, 2], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2], 2),
        ([1, 2, 3], [1, 9, 3], 1),
        ([7], [8], 0),
        (LONG, LONG, 1000),
        (LONG, [*LONG[:700], -1, *LONG[701:]], 700),  # past the whole-slice fast path
        (LONG, LONG[:130], 130),
        (LONG[:64], LONG, 64),
    ],
)
def test_slots_shared_prefix(a: list[int], b: list[int], expected: int) -> None:
    assert shared_prefix(a, b) == expected
    assert shared_prefix(b, a) == expected


@pytest.mark.parametrize(
    ("cached", "prompt", "expected"),
    [
        ([], [1, 2, 3], 0),
        ([1, 2, 3, 4, 5], [1, 2, 3, 9], 3),
        ([1, 2, 3], [1, 2, 3], 2),  # the whole prompt is cached: its last token runs again
        ([1, 2, 3, 4], [1, 2, 3], 2),  # the prompt is a prefix of the cache: same rule
        ([1, 2], [1, 2, 3, 4], 2),  # a growing chat pays only for the new turn
        ([1], [1], 0),
        ([1, 2], [], 0),
    ],
)
def test_slots_reusable_prefix_always_leaves_the_last_token(
    cached: list[int], prompt: list[int], expected: int
) -> None:
    assert reusable_prefix(cached, prompt) == expected


def _free(*slots: tuple[int, list[int], int]) -> list[SlotCandidate]:
    return [SlotCandidate(slot, cached, last_used) for slot, cached, last_used in slots]


@pytest.mark.parametrize(
    ("candidates", "prompt", "expected"),
    [
        # 1. the longest reusable prefix wins, whatever its age or id
        (_free((0, [1, 2], 5), (1, [1, 2, 3, 4], 9), (2, [], 0)), [1, 2, 3, 4, 5], (1, 4)),
        (_free((0, [5, 6], 1), (3, [1, 2, 3], 2)), [1, 2, 3, 7], (3, 3)),
        # 2. a tie at 0 goes to an empty slot before a cached one
        (_free((0, [9, 9], 1), (1, [], 5)), [1, 2], (1, 0)),
        # 2. a tie at a shared system prompt, too
        (_free((0, [1, 2, 8], 1), (1, [1, 2, 9], 2), (2, [], 3)), [1, 2, 5], (0, 2)),
        # 3. then the least recently used
        (_free((0, [9], 7), (1, [8], 3), (2, [7], 5)), [1, 2], (1, 0)),
        # 4. then the lowest id
        (_free((2, [], 0), (1, [], 0), (3, [], 0)), [1, 2], (1, 0)),
        # an embedding (no prompt) takes an empty slot, or else the least recently used
        (_free((0, [1, 2], 4), (1, [3], 2)), [], (1, 0)),
    ],
)
def test_slots_choose_slot(
    candidates: list[SlotCandidate], prompt: list[int], expected: tuple[int, int]
) -> None:
    assert choose_slot(candidates, prompt) == expected


def test_slots_choose_slot_needs_a_candidate() -> None:
    with pytest.raises(ValueError):
        choose_slot([], [1])


def _plan(capacity: int, *demands: tuple[int, int, bool]) -> list[tuple[int, int]]:
    entries = plan_batch([SlotDemand(s, n, d) for s, n, d in demands], capacity)
    return [(e.slot, e.count) for e in entries]


@pytest.mark.parametrize(
    ("capacity", "demands", "expected"),
    [
        # nothing to do
        (512, [], []),
        # running slots: one token each, in slot order
        (512, [(2, 1, True), (0, 1, True), (1, 1, True)], [(0, 1), (1, 1), (2, 1)]),
        # a prompt that fits goes in whole, beside the running tokens
        (512, [(0, 1, True), (1, 100, False)], [(0, 1), (1, 100)]),
        # 1. running tokens first; a long prompt gets the rest of the batch, in chunks
        (512, [(0, 1, True), (1, 1, True), (2, 4000, False)], [(0, 1), (1, 1), (2, 510)]),
        # 2. prompts share what is left equally
        (100, [(0, 500, False), (1, 500, False)], [(0, 50), (1, 50)]),
        # 2. the smallest need is served first and gives back what it does not use
        (100, [(0, 500, False), (1, 10, False), (2, 500, False)], [(0, 45), (1, 10), (2, 45)]),
        (
            512,
            [(0, 1, True), (1, 3000, False), (2, 30, False), (3, 1, True)],
            [(0, 1), (1, 480), (2, 30), (3, 1)],
        ),
        # an odd remainder still fills the batch
        (10, [(0, 50, False), (1, 50, False), (2, 50, False)], [(0, 3), (1, 3), (2, 4)]),
        # more running slots than room: the lowest ids go first
        (2, [(3, 1, True), (1, 1, True), (2, 1, True)], [(1, 1), (2, 1)]),
        # slots with nothing pending are left out
        (8, [(0, 0, False), (1, 0, True), (2, 3, False)], [(2, 3)]),
    ],
)
def test_slots_plan_batch(
    capacity: int, demands: list[tuple[int, int, bool]], expected: list[tuple[int, int]]
) -> None:
    assert _plan(capacity, *demands) == expected


def test_slots_plan_batch_never_exceeds_capacity_and_never_starves() -> None:
    """A long prompt beside running streams: every step each stream gets its token and
    the prompt advances, until it is done."""
    left = {1: 5000, 4: 700}
    for _ in range(40):
        demands = [SlotDemand(0, 1, True), SlotDemand(2, 1, True)]
        demands += [SlotDemand(s, n, False) for s, n in left.items() if n > 0]
        entries = plan_batch(demands, 512)
        assert sum(e.count for e in entries) <= 512
        assert BatchEntry(0, 1) in entries and BatchEntry(2, 1) in entries
        for entry in entries:
            if entry.slot in left:
                assert entry.count > 0
                left[entry.slot] -= entry.count
    assert left == {1: 0, 4: 0}


def test_slots_plan_batch_needs_room() -> None:
    with pytest.raises(ValueError):
        plan_batch([SlotDemand(0, 1, True)], 0)
