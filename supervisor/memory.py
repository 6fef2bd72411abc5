"""Memory arithmetic for loading models: size estimates, eviction plans, parallel-slot choice.

Pure functions, no logging (llama-swap's `EvictionFor`). The scheduler and the runtime call them:

* `estimate(shape, num_ctx, num_parallel)` predicts what a worker will hold once loaded:
  the weights file, the KV cache for every slot, and llama.cpp's compute buffer. It follows
  Ollama's classic estimator (reference §5.7) for a plain llama-style transformer and errs on
  the large side (the compute term assumes no flash attention).
* `plan_eviction(need, budget, loaded)` picks the idle workers to stop so that `need` fits,
  in Ollama's `ByDurationAndName` order (shortest keep-alive first, then name). It is not
  LRU: a model with a short keep-alive goes before one used less recently.
* `choose_num_parallel(estimate_for, free)` picks the most parallel slots (4, 2, 1) that fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NewType

from supervisor.keepalive import KeepAlive

WorkerId = NewType("WorkerId", int)
"""Scheduler-assigned id of one worker process (defined here, re-exported by scheduler.py)."""

DEFAULT_NUM_BATCH = 512


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The GGUF facts the estimate needs.

    file_bytes: size of the model weights file in bytes.
    n_layer: transformer blocks (`<arch>.block_count`).
    n_embd: embedding width (`<arch>.embedding_length`).
    n_head: attention heads (`<arch>.attention.head_count`); 0 for an attention-free model.
    n_head_kv: key/value heads (`<arch>.attention.head_count_kv`; equals n_head without GQA).
    n_ctx_train: trained context length (`<arch>.context_length`); informational here.
    vocab_size: tokens in the vocabulary.
    """

    file_bytes: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ctx_train: int
    vocab_size: int

    def __post_init__(self) -> None:
        for name in ("file_bytes", "n_layer", "n_embd", "n_head", "n_head_kv",
                     "n_ctx_train", "vocab_size"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"ModelShape.{name} must be >= 0")


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Predicted bytes held by one loaded worker; total = weights + KV cache + compute."""

    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class LoadedUsage:
    """One loaded worker as `plan_eviction` sees it.

    worker_id: the worker.
    name: model display name; the tie-breaker after keep-alive.
    memory_bytes: bytes it holds (measured once ready, else its estimate).
    keep_alive: its current keep-alive; shorter ones are evicted first.
    busy: True while it serves a request or is still loading; busy workers are never chosen.
    """

    worker_id: WorkerId
    name: str
    memory_bytes: int
    keep_alive: KeepAlive
    busy: bool


def estimate(
    shape: ModelShape,
    num_ctx: int,
    num_parallel: int,
    kv_bytes_per_elem: float = 2.0,
    num_batch: int = DEFAULT_NUM_BATCH,
) -> MemoryEstimate:
    """Predict a worker's memory for `num_parallel` slots of `num_ctx` tokens each.

    With C = num_ctx × num_parallel (the whole KV cache is shared by the slots),
    head_dim = n_embd // n_head, E = n_embd, H = n_head, V = vocab_size and
    b = min(num_ctx, num_batch) (tokens in one decode step):

    * weights = file_bytes (the tensors are the file, mmapped or read);
    * kv_cache = 2 (K and V) × n_layer × C × head_dim × n_head_kv × kv_bytes_per_elem
      (2.0 for f16, 1.0 for q8_0, 0.5 for q4_0);
    * compute = max(4·b·(1 + 4E + C·(1 + H)), 4·b·(E + V)): f32 activations for one batch,
      the larger of the attention step (scores for b tokens against C cached positions in
      every head) and the output step (logits over the vocabulary). This is Ollama's classic
      llama "full offload" graph size.

    num_ctx is used as given: the caller passes the context the worker will allocate
    (after any clamping to n_ctx_train).
    """
    if num_ctx < 1 or num_parallel < 1 or num_batch < 1:
        raise ValueError("num_ctx, num_parallel and num_batch must be >= 1")
    if kv_bytes_per_elem <= 0:
        raise ValueError("kv_bytes_per_elem must be > 0")
    cells = num_ctx * num_parallel
    head_dim = shape.n_embd // shape.n_head if shape.n_head else 0
    kv = math.ceil(2 * shape.n_layer * cells * head_dim * shape.n_head_kv * kv_bytes_per_elem)
    b = min(num_ctx, num_batch)
    e, h, v = shape.n_embd, shape.n_head, shape.vocab_size
    compute = max(4 * b * (1 + 4 * e + cells * (1 + h)), 4 * b * (e + v))
    weights = shape.file_bytes
    return MemoryEstimate(
        weights_bytes=weights,
        kv_cache_bytes=kv,
        compute_bytes=compute,
        total_bytes=weights + kv + compute,
    )


def eviction_order(loaded: Sequence[LoadedUsage]) -> list[LoadedUsage]:
    """Ollama's `ByDurationAndName`: shortest keep-alive first (forever last), then name."""
    return sorted(loaded, key=lambda u: (u.keep_alive.seconds, u.name, u.worker_id))


def plan_eviction(
    need_bytes: int,
    budget_bytes: int,
    loaded: Sequence[LoadedUsage],
    evict_at_least: int = 0,
) -> list[WorkerId] | None:
    """Choose idle workers to stop so that `need_bytes` more fits in `budget_bytes`.

    Returns the ids in eviction order: `[]` when it already fits, `None` when it cannot fit
    even after stopping every idle worker. Workers are taken in `eviction_order`, skipping busy
    ones, until the memory fits and at least `evict_at_least` are chosen (the scheduler's way
    of also honouring the cap on loaded models). Busy workers are never chosen.
    """
    used = sum(u.memory_bytes for u in loaded)
    chosen: list[WorkerId] = []
    for usage in eviction_order([u for u in loaded if not u.busy]):
        if used + need_bytes <= budget_bytes and len(chosen) >= evict_at_least:
            break
        chosen.append(usage.worker_id)
        used -= usage.memory_bytes
    if used + need_bytes > budget_bytes or len(chosen) < evict_at_least:
        return None
    return chosen


def choose_num_parallel(
    estimate_for: Callable[[int], int],
    free_bytes: int,
    max_parallel: int = 4,
) -> int:
    """The most parallel slots whose estimated total fits in `free_bytes`; at least 1.

    Tries `max_parallel`, then each power of two below it down to 1 (4, 2, 1 by default);
    `estimate_for(n)` returns the total bytes a worker with n slots would hold.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be >= 1")
    candidates = [max_parallel]
    power = 1 << (max_parallel.bit_length() - 1)
    if power == max_parallel:
        power //= 2
    while power >= 1:
        candidates.append(power)
        power //= 2
    for n in candidates:
        if estimate_for(n) <= free_bytes:
            return n
    return 1
