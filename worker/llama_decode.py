"""llama.cpp's half of a step: one llama_batch over every active slot, one decode, C samplers.

`SlotDecoder` is owned by `LlamaBackend` and used on the engine thread only. Slot i is the
KV-cache sequence with seq id i. Invariant: a slot's `cached` list is exactly the tokens
whose KV that sequence holds, at positions 0 .. len(cached) - 1; every path that changes
the cache (a decode, a failed decode, prefix trimming, clearing) keeps it so.

Per step, Python does O(active slots) work: the batch arrays are numpy buffers allocated
once, a prompt chunk is a few slice assignments, and each slot samples with its own C
sampler chain straight from the context's output row (no logits are copied to Python).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from worker.backend import (
    BackendError,
    Ended,
    Piece,
    Sampled,
    Sampling,
    SlotEvent,
    SlotFailed,
    StopReason,
)
from worker.protocol import ErrorCode, ErrorInfo
from worker.sampling import Candidates, GrammarError, SlotSampler, build_sampler
from worker.slots import BatchEntry, SlotDemand, plan_batch, reusable_prefix

__all__ = ["SlotDecoder", "TokenBatch"]

Tokens = npt.NDArray[np.int32]
_NO_TOKENS: Tokens = np.zeros(0, dtype=np.int32)
_INT32_BYTES = 4


def _pointer(array: npt.NDArray[Any], ctype: Any) -> Any:
    return ctypes.cast(array.ctypes.data, ctypes.POINTER(ctype))


class TokenBatch:
    """One llama_batch for up to `capacity` tokens, its arrays numpy buffers made once.

    Seq ids go through a table of pointers to one int per slot, so a chunk of any length
    is written with slice assignments only.
    """

    def __init__(self, capacity: int, n_slots: int, n_positions: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._token = np.zeros(capacity, dtype=np.int32)
        self._pos = np.zeros(capacity, dtype=np.int32)
        self._n_seq_id = np.ones(capacity, dtype=np.int32)
        self._logits = np.zeros(capacity, dtype=np.int8)
        self._seq_ids = np.arange(n_slots, dtype=np.int32)
        offsets = _INT32_BYTES * np.arange(n_slots, dtype=np.uintp)
        self._seq_ptr = self._seq_ids.ctypes.data + offsets
        self._seq_rows = np.zeros(capacity + 1, dtype=np.uintp)
        self._positions = np.arange(n_positions + 1, dtype=np.int32)
        self.struct = llama_cpp.llama_batch(
            n_tokens=0,
            token=_pointer(self._token, llama_cpp.llama_token),
            embd=None,
            pos=_pointer(self._pos, llama_cpp.llama_pos),
            n_seq_id=_pointer(self._n_seq_id, ctypes.c_int32),
            seq_id=_pointer(self._seq_rows, ctypes.POINTER(llama_cpp.llama_seq_id)),
            logits=_pointer(self._logits, ctypes.c_int8),
        )

    def clear(self) -> None:
        self.size = 0

    def add(self, slot: int, tokens: Tokens, first_pos: int, *, all_outputs: bool) -> int:
        """Append `tokens` of `slot` at positions first_pos..; return the last row's index.

        Only the last row asks for output unless `all_outputs` (embeddings).
        """
        start, end = self.size, self.size + len(tokens)
        self._token[start:end] = tokens
        self._pos[start:end] = self._positions[first_pos : first_pos + len(tokens)]
        self._seq_rows[start:end] = self._seq_ptr[slot]
        self._logits[start:end] = 1 if all_outputs else 0
        self._logits[end - 1] = 1
        self.size = end
        return end - 1

    def add_one(self, slot: int, token: int, pos: int) -> int:
        """Append one token that wants output (a running slot's step); return its row."""
        row = self.size
        self._token[row] = token
        self._pos[row] = pos
        self._seq_rows[row] = self._seq_ptr[slot]
        self._logits[row] = 1
        self.size = row + 1
        return row

    def decode(self, ctx: llama_cpp.llama_context_p) -> int:
        """llama_decode over the rows added since `clear`; its status (0 is success)."""
        self.struct.n_tokens = self.size
        status: int = llama_cpp.llama_decode(ctx, self.struct)
        return status


class _Slot:
    """One sequence's bookkeeping. Active while it has a sampler.

    While reading its prompt, `pending[offset:]` is what is left to evaluate; once it has
    sampled (`produced` > 0), `last` is the one token to evaluate next.
    """

    __slots__ = ("cached", "pending", "offset", "last", "sampler", "produced", "num_predict")

    def __init__(self) -> None:
        self.cached: list[int] = []
        self.pending: Tokens = _NO_TOKENS
        self.offset = 0
        self.last = 0
        self.sampler: SlotSampler | None = None
        self.produced = 0  # tokens sampled in this generation
        self.num_predict = -1


def _left(state: _Slot) -> int:
    """Prompt tokens the slot has yet to evaluate (1 once it is generating)."""
    return 1 if state.produced > 0 else len(state.pending) - state.offset


def decode_error(status: int) -> ErrorInfo:
    """The protocol error for a failed llama_decode status."""
    if status == 1:
        return ErrorInfo(ErrorCode.OUT_OF_MEMORY, "no room left in the KV cache")
    if status == -2:
        return ErrorInfo(ErrorCode.OUT_OF_MEMORY, "out of memory for the compute buffers")
    return ErrorInfo(ErrorCode.INTERNAL, f"llama_decode failed with status {status}")


class SlotDecoder:
    """The slots of one llama context: start, step, release, and raw decodes for embeddings."""

    def __init__(
        self,
        ctx: llama_cpp.llama_context_p,
        vocab: llama_cpp.llama_vocab_p,
        *,
        n_slots: int,
        slot_ctx: int,
        n_batch: int,
    ) -> None:
        self._ctx = ctx
        self._vocab = vocab
        self._memory = llama_cpp.llama_get_memory(ctx)  # None: encoder-only model
        self._slot_ctx = slot_ctx
        self._n_vocab: int = llama_cpp.llama_vocab_n_tokens(vocab)
        self._candidates = Candidates(ctx, self._n_vocab)
        self._slots = [_Slot() for _ in range(n_slots)]
        self.batch = TokenBatch(n_batch, n_slots, slot_ctx)
        self._piece_buf = ctypes.create_string_buffer(64)

    def cached(self, slot: int) -> Sequence[int]:
        return self._slots[slot].cached

    # ---- starting and ending ----

    def start(self, slot: int, prompt: Sequence[int], sampling: Sampling) -> int:
        state = self._slots[slot]
        if state.sampler is not None:
            raise RuntimeError(f"slot {slot} is already active")
        tokens = self.checked(prompt)
        try:
            sampler = build_sampler(self._vocab, sampling, n_ctx=self._slot_ctx, history=tokens)
        except GrammarError as exc:
            raise BackendError(
                ErrorInfo(ErrorCode.BAD_REQUEST, f"{exc} (see the worker log)")
            ) from exc
        reused = self._trim(slot, reusable_prefix(state.cached, tokens))
        state.pending = np.asarray(tokens[reused:], dtype=np.int32)
        state.offset = 0
        state.sampler = sampler
        state.produced = 0
        state.num_predict = sampling.num_predict
        return reused

    def release(self, slot: int) -> None:
        state = self._slots[slot]
        if state.sampler is not None:
            state.sampler.free()
        state.sampler = None
        state.pending, state.offset = _NO_TOKENS, 0

    def clear(self, slot: int) -> None:
        """Release the slot and drop its whole cache."""
        self.release(slot)
        if self._memory:
            llama_cpp.llama_memory_seq_rm(self._memory, slot, -1, -1)
        self._slots[slot].cached.clear()

    def close(self) -> None:
        for slot in range(len(self._slots)):
            self.release(slot)

    def checked(self, tokens: Sequence[int]) -> list[int]:
        """`tokens` as a list, or BackendError when they cannot be evaluated in one slot."""
        prompt = list(tokens)
        if not prompt:
            raise BackendError(ErrorInfo(ErrorCode.BAD_REQUEST, "empty prompt: nothing to decode"))
        if len(prompt) > self._slot_ctx:
            message = f"input of {len(prompt)} tokens exceeds the context of {self._slot_ctx}"
            raise BackendError(ErrorInfo(ErrorCode.CONTEXT_OVERFLOW, message))
        if not all(0 <= token < self._n_vocab for token in prompt):
            raise BackendError(ErrorInfo(ErrorCode.BAD_REQUEST, "token id outside the vocabulary"))
        return prompt

    def _trim(self, slot: int, keep: int) -> int:
        """Drop the slot's cache after `keep` tokens; return the tokens kept."""
        cached = self._slots[slot].cached
        if keep >= len(cached):
            return len(cached)
        if not self._memory:
            cached.clear()
            return 0
        if not llama_cpp.llama_memory_seq_rm(self._memory, slot, keep, -1):
            # Some caches (recurrent models) cannot drop a tail: start the slot afresh.
            llama_cpp.llama_memory_seq_rm(self._memory, slot, -1, -1)
            keep = 0
        del cached[keep:]
        return keep

    # ---- stepping ----

    def step(self) -> list[SlotEvent]:
        active = [(i, s) for i, s in enumerate(self._slots) if s.sampler is not None]
        if all(s.produced > 0 for _, s in active) and len(active) <= self.batch.capacity:
            plan = [BatchEntry(i, 1) for i, _ in active]  # the usual step: no prompt to read
        else:
            demands = [SlotDemand(i, _left(s), s.produced > 0) for i, s in active]
            plan = plan_batch(demands, self.batch.capacity)
        events: list[SlotEvent] = []
        if plan:
            self._run(plan, events)
        return events

    def _run(self, plan: list[BatchEntry], events: list[SlotEvent]) -> None:
        """Decode `plan` at once; if that fails, each slot alone, so a failure stays its own."""
        rows = self._fill(plan)
        status = self.batch.decode(self._ctx)
        if status == 0:
            self._collect(plan, rows, events)
            return
        self._forget_unrecorded(plan)
        if len(plan) > 1:
            for entry in plan:
                self._run([entry], events)
            return
        self.release(plan[0].slot)
        events.append(SlotFailed(plan[0].slot, decode_error(status)))

    def _fill(self, plan: list[BatchEntry]) -> list[int]:
        """Write each entry's tokens; the row to sample for each, -1 while its prompt lasts."""
        batch = self.batch
        batch.clear()
        rows: list[int] = []
        for entry in plan:
            state = self._slots[entry.slot]
            pos = len(state.cached)
            if state.produced > 0:
                rows.append(batch.add_one(entry.slot, state.last, pos))
                continue
            chunk = state.pending[state.offset : state.offset + entry.count]
            row = batch.add(entry.slot, chunk, pos, all_outputs=False)
            rows.append(row if entry.count == _left(state) else -1)
        return rows

    def _collect(self, plan: list[BatchEntry], rows: list[int], events: list[SlotEvent]) -> None:
        for entry, row in zip(plan, rows, strict=True):
            state = self._slots[entry.slot]
            if state.produced > 0:
                state.cached.append(state.last)
            else:
                end = state.offset + entry.count
                state.cached.extend(state.pending[state.offset : end].tolist())
                state.offset = end
            if row >= 0:
                self._sample(entry.slot, row, events)

    def _sample(self, slot: int, row: int, events: list[SlotEvent]) -> None:
        state = self._slots[slot]
        assert state.sampler is not None  # a slot is sampled only while it runs
        token = self._candidates.sample(state.sampler, row)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self.release(slot)
            events.append(Ended(slot, StopReason.STOP))
            return
        state.produced += 1
        events.append(Sampled(slot, Piece(self._piece(token), token)))
        if 0 < state.num_predict <= state.produced or len(state.cached) >= self._slot_ctx:
            self.release(slot)
            events.append(Ended(slot, StopReason.LENGTH))
            return
        state.last = token
        state.pending, state.offset = _NO_TOKENS, 0

    def _forget_unrecorded(self, plan: list[BatchEntry]) -> None:
        """After a failed decode: drop KV that a partly processed batch left past `cached`."""
        if not self._memory:
            return
        for entry in plan:
            llama_cpp.llama_memory_seq_rm(
                self._memory, entry.slot, len(self._slots[entry.slot].cached), -1
            )

    def _piece(self, token: int) -> bytes:
        """The bytes a sampled token stands for; control tokens print as nothing."""
        buf = self._piece_buf
        n: int = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    # ---- raw decodes (embeddings) ----

    def evaluate(self, slot: int, tokens: Sequence[int], first_pos: int) -> None:
        """Decode `tokens` of free `slot` with every row as output; BackendError on failure.

        The caller clears the slot before and after: this bypasses `cached`.
        """
        self.batch.clear()
        self.batch.add(slot, np.asarray(tokens, dtype=np.int32), first_pos, all_outputs=True)
        status = self.batch.decode(self._ctx)
        if status != 0:
            raise BackendError(decode_error(status))
