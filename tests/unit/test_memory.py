"""Memory estimates, eviction plans and the parallel-slot choice."""

from __future__ import annotations

import pytest

from supervisor.keepalive import FOREVER, KeepAlive
from supervisor.memory import (
    LoadedUsage,
    ModelShape,
    WorkerId,
    choose_num_parallel,
    estimate,
    plan_eviction,
)

MIB = 1 << 20
GIB = 1 << 30

# A llama-2-7B-like shape (32 layers, 4096 wide, 32 heads, 32000 tokens).
LLAMA7B = ModelShape(file_bytes=4 * GIB, n_layer=32, n_embd=4096, n_head=32, n_head_kv=32,
                     n_ctx_train=4096, vocab_size=32000)  # fmt: skip


def test_memory_estimate_llama_shape() -> None:
    est = estimate(LLAMA7B, num_ctx=4096, num_parallel=1)
    assert est.weights_bytes == 4 * GIB
    assert est.kv_cache_bytes == 2 * GIB  # 2 × 32 × 4096 × 128 × 32 × 2 bytes
    # max(4·512·(1 + 4·4096 + 4096·33), 4·512·(4096 + 32000))
    assert est.compute_bytes == 2048 * (1 + 4 * 4096 + 4096 * 33)
    assert est.total_bytes == est.weights_bytes + est.kv_cache_bytes + est.compute_bytes


@pytest.mark.parametrize(
    ("n_head_kv", "num_parallel", "bpe", "kv_bytes"),
    [
        (32, 1, 2.0, 2 * GIB),
        (8, 1, 2.0, 512 * MIB),  # grouped-query attention
        (32, 2, 2.0, 4 * GIB),  # the cache holds num_ctx tokens per slot
        (32, 1, 1.0, 1 * GIB),  # q8_0
        (32, 1, 0.5, 512 * MIB),  # q4_0
    ],
)
def test_memory_estimate_kv_cache_scales(
    n_head_kv: int, num_parallel: int, bpe: float, kv_bytes: int
) -> None:
    shape = ModelShape(4 * GIB, 32, 4096, 32, n_head_kv, 4096, 32000)
    est = estimate(shape, num_ctx=4096, num_parallel=num_parallel, kv_bytes_per_elem=bpe)
    assert est.kv_cache_bytes == kv_bytes


def test_memory_estimate_compute_uses_vocab_when_larger() -> None:
    shape = ModelShape(1000, 2, 64, 4, 4, 256, 100_000)
    est = estimate(shape, num_ctx=256, num_parallel=1, num_batch=512)
    b = 256  # min(num_ctx, num_batch)
    assert est.compute_bytes == 4 * b * (64 + 100_000)
    assert est.kv_cache_bytes == 2 * 2 * 256 * 16 * 4 * 2


def test_memory_estimate_attention_free_model_has_no_kv() -> None:
    shape = ModelShape(1000, 2, 64, 0, 0, 256, 100)
    assert estimate(shape, num_ctx=256, num_parallel=1).kv_cache_bytes == 0


@pytest.mark.parametrize(("num_ctx", "num_parallel"), [(0, 1), (256, 0)])
def test_memory_estimate_rejects_nonpositive(num_ctx: int, num_parallel: int) -> None:
    with pytest.raises(ValueError):
        estimate(LLAMA7B, num_ctx=num_ctx, num_parallel=num_parallel)


def test_memory_shape_rejects_negative() -> None:
    with pytest.raises(ValueError, match="n_layer"):
        ModelShape(1, -1, 1, 1, 1, 1, 1)


def usage(wid: int, name: str, gib: int, keep_s: float, busy: bool = False) -> LoadedUsage:
    return LoadedUsage(WorkerId(wid), name, gib * GIB, KeepAlive(keep_s), busy)


def ids(*values: int) -> list[WorkerId]:
    return [WorkerId(v) for v in values]


LOADED = [
    usage(1, "alpha", 3, 600),
    usage(2, "charlie", 3, 60),
    usage(3, "bravo", 3, 60),
    usage(4, "delta", 3, -1),  # forever: last
]


@pytest.mark.parametrize(
    ("need_gib", "budget_gib", "loaded", "at_least", "expected"),
    [
        (1, 16, LOADED, 0, []),  # 12 + 1 fits
        (5, 16, LOADED, 0, ids(3)),  # bravo: 60s, name before charlie
        (8, 16, LOADED, 0, ids(3, 2)),
        (11, 16, LOADED, 0, ids(3, 2, 1)),
        (14, 16, LOADED, 0, ids(3, 2, 1, 4)),  # forever goes last
        (17, 16, LOADED, 0, None),  # never fits
        (1, 16, LOADED, 2, ids(3, 2)),  # a count limit forces two out
        (1, 16, LOADED, 5, None),
        (5, 12, [usage(3, "bravo", 3, 60, busy=True), *LOADED[:2]], 0, ids(2)),
        (5, 12, [usage(1, "a", 6, 1, busy=True), usage(2, "b", 6, 600)], 0, ids(2)),
        (7, 12, [usage(1, "a", 6, 1, busy=True), usage(2, "b", 6, 600)], 0, None),
        (1, 4, [], 0, []),
        (5, 4, [], 0, None),
    ],
)
def test_memory_plan_eviction(
    need_gib: int,
    budget_gib: int,
    loaded: list[LoadedUsage],
    at_least: int,
    expected: list[WorkerId] | None,
) -> None:
    plan = plan_eviction(need_gib * GIB, budget_gib * GIB, loaded, evict_at_least=at_least)
    assert plan == expected


def test_memory_plan_eviction_never_chooses_busy() -> None:
    loaded = [usage(1, "a", 4, 0, busy=True), usage(2, "b", 4, FOREVER.seconds)]
    assert plan_eviction(6 * GIB, 10 * GIB, loaded) == ids(2)
    assert plan_eviction(7 * GIB, 10 * GIB, loaded) is None


@pytest.mark.parametrize(
    ("free", "max_parallel", "expected"),
    [
        (100, 4, 4),
        (40, 4, 4),
        (39, 4, 2),
        (20, 4, 2),
        (19, 4, 1),
        (0, 4, 1),  # at least one slot, even if nothing fits
        (100, 1, 1),
        (100, 3, 3),
        (29, 3, 2),
        (100, 8, 8),
        (79, 8, 4),
    ],
)
def test_memory_choose_num_parallel(free: int, max_parallel: int, expected: int) -> None:
    assert choose_num_parallel(lambda n: 10 * n, free, max_parallel) == expected


def test_memory_choose_num_parallel_rejects_zero() -> None:
    with pytest.raises(ValueError):
        choose_num_parallel(lambda n: n, 10, max_parallel=0)
