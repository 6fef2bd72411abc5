"""Pure slot decisions of the batched engine: prefix reuse, slot choice, and step planning.

No llama.cpp and no clock here: the engine and the llama backend call these with plain
token lists and counters, so every rule is unit-tested on its own (tests/unit/test_slots.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BatchEntry",
    "SlotCandidate",
    "SlotDemand",
    "choose_slot",
    "plan_batch",
    "reusable_prefix",
    "shared_prefix",
]

_CHUNK = 64  # tokens compared per list slice before the token-by-token scan


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The number of leading tokens `a` and `b` have in common."""
    limit = min(len(a), len(b))
    start = 0
    # Whole slices compare in C; only the slice that differs is scanned token by token.
    while start + _CHUNK <= limit and a[start : start + _CHUNK] == b[start : start + _CHUNK]:
        start += _CHUNK
    while start < limit and a[start] == b[start]:
        start += 1
    return start


def reusable_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """Prompt tokens whose cached KV can be kept: the shared prefix, never the whole prompt.

    The last prompt token is always evaluated again, because its logits (which are not
    cached) give the first sampled token.
    """
    return min(shared_prefix(cached, prompt), max(len(prompt) - 1, 0))


@dataclass(frozen=True, slots=True)
class SlotCandidate:
    """A free slot as the slot choice sees it.

    slot: the slot (KV-cache sequence) id.
    cached: the tokens whose KV the slot holds, from position 0.
    last_used: engine tick at which the slot was last released; 0 if never used.
    """

    slot: int
    cached: Sequence[int]
    last_used: int


def choose_slot(candidates: Sequence[SlotCandidate], prompt: Sequence[int]) -> tuple[int, int]:
    """The free slot to run `prompt` in, and how many of its tokens that slot already holds.

    1. The slot that reuses the most prompt tokens (`reusable_prefix`).
    2. On a tie, an empty slot before one holding a cache (nothing worth keeping is lost).
    3. Then the least recently used slot (llama-server's LRU rule).
    4. Then the lowest id: llama.cpp batches consecutive sequence ids in one pass.
    """
    if not candidates:
        raise ValueError("no free slot to choose from")
    best = min(
        candidates,
        key=lambda c: (-reusable_prefix(c.cached, prompt), bool(c.cached), c.last_used, c.slot),
    )
    return best.slot, reusable_prefix(best.cached, prompt)


@dataclass(frozen=True, slots=True)
class SlotDemand:
    """An active slot's input waiting for the next step.

    slot: the slot id.
    pending: tokens not yet evaluated (1 for a slot that is generating).
    decoding: True when the pending token is one it sampled (its prompt is done).
    """

    slot: int
    pending: int
    decoding: bool


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """`count` of the slot's pending tokens go into this step's batch."""

    slot: int
    count: int


def plan_batch(demands: Sequence[SlotDemand], capacity: int) -> list[BatchEntry]:
    """Split one step's `capacity` tokens among the active slots.

    1. Every generating slot gets its one token first, so running streams never wait
       behind a prompt (if they alone exceed the capacity, the lowest ids go first).
    2. What is left is shared among the slots still reading their prompt: slots needing
       the least are served first and each takes at most an equal share of what remains,
       so a long prompt is processed in chunks and a short one is not held behind it.
    3. Entries come out in slot order: llama.cpp puts consecutive sequence ids of one
       batch into one micro-batch.
    """
    if capacity < 1:
        raise ValueError("capacity must be >= 1")
    decoding = sorted((d for d in demands if d.decoding and d.pending > 0), key=lambda d: d.slot)
    entries = [BatchEntry(d.slot, 1) for d in decoding[:capacity]]
    left = capacity - len(entries)
    reading = sorted(
        (d for d in demands if not d.decoding and d.pending > 0), key=lambda d: (d.pending, d.slot)
    )
    for index, demand in enumerate(reading):
        share = left // (len(reading) - index)
        count = min(demand.pending, share)
        if count > 0:
            entries.append(BatchEntry(demand.slot, count))
            left -= count
    return sorted(entries, key=lambda e: e.slot)
