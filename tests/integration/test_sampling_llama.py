"""Sampling on a real llama.cpp context: our candidate array and repetition penalties give
exactly what llama.cpp's own `llama_sampler_sample` and penalties sampler give."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
np = pytest.importorskip("numpy")

from worker.backend import Sampling  # noqa: E402
from worker.sampling import Candidates, Penalties, build_sampler, greedy_pick  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.llama]

ROWS = 4  # output rows of the fixture's one decode


@dataclass
class Context:
    ctx: object
    vocab: object
    n_vocab: int


@pytest.fixture(scope="module")
def context(tiny_gguf: Path) -> Iterator[Context]:
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(tiny_gguf).encode(), params)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_threads, cparams.n_threads_batch = 64, 1, 1
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    vocab = llama_cpp.llama_model_get_vocab(model)
    batch = llama_cpp.llama_batch_init(ROWS, 0, 1)
    batch.n_tokens = ROWS
    for i, token in enumerate((1, 40, 41, 42)):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, 1
        batch.seq_id[i][0] = 0
    assert llama_cpp.llama_decode(ctx, batch) == 0
    yield Context(ctx, vocab, llama_cpp.llama_vocab_n_tokens(vocab))
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


def _logits(context: Context, row: int) -> np.ndarray:  # type: ignore[name-defined]
    pointer = llama_cpp.llama_get_logits_ith(context.ctx, row)
    return np.ctypeslib.as_array(pointer, shape=(context.n_vocab,)).copy()


def _llama_penalised(context: Context, row: int, history: list[int], *args: float) -> object:
    """llama.cpp's own penalties sampler applied to the logits of `row`, in id order."""
    n = context.n_vocab
    buffer = (llama_cpp.llama_token_data * n)()
    for i, logit in enumerate(_logits(context, row)):
        buffer[i].id, buffer[i].logit, buffer[i].p = i, float(logit), 0.0
    array = llama_cpp.llama_token_data_array(data=buffer, size=n, selected=-1, sorted=False)
    stage = llama_cpp.llama_sampler_init_penalties(int(args[0]), *args[1:])
    for token in history:
        llama_cpp.llama_sampler_accept(stage, token)
    llama_cpp.llama_sampler_apply(stage, ctypes.byref(array))
    llama_cpp.llama_sampler_free(stage)
    return np.array([buffer[i].logit for i in range(n)], dtype=np.float32)


@pytest.mark.parametrize(
    "args",
    [(8, 1.1, 0.0, 0.0), (8, 1.3, 0.25, 0.5), (64, 0.9, 0.1, 0.0)],
    ids=["repeat-only", "all-three", "reward-repeats"],
)
def test_penalties_match_llama_cpps_sampler(context: Context, args: tuple[float, ...]) -> None:
    # More tokens than the window, with repeats, so eviction and counts both matter.
    history = [5, 9, 9, 3, 5, 5, 17, 2, 9, 30, 31, 5, 9, 7]
    for row in range(ROWS):
        ours = _logits(context, row)
        penalties = Penalties(int(args[0]), *args[1:])
        for token in history:
            penalties.accept(token)
        penalties.apply(ours)
        theirs = _llama_penalised(context, row, history, *args)
        assert np.array_equal(ours, theirs) if args[2:] == (0.0, 0.0) else np.allclose(
            ours, theirs, rtol=1e-6, atol=1e-6
        )
        assert not np.array_equal(ours, _logits(context, row))  # something was penalised


def test_candidates_pick_what_llama_sampler_sample_picks(context: Context) -> None:
    sampling = Sampling(temperature=0.8, top_k=20, top_p=0.9, seed=42, num_predict=8)
    theirs = build_sampler(context.vocab, sampling, n_ctx=64, history=[])
    ours = build_sampler(context.vocab, sampling, n_ctx=64, history=[])
    candidates = Candidates(context.ctx, context.n_vocab)
    try:
        picked = [candidates.sample(ours, row % ROWS) for row in range(40)]
        expected = [
            llama_cpp.llama_sampler_sample(theirs.chain, context.ctx, row % ROWS)
            for row in range(40)
        ]
    finally:
        ours.free()
        theirs.free()
    assert picked == expected
    assert len(set(picked)) > 1  # the seeded draw really sampled


def test_candidates_shared_by_greedy_and_sampling_chains_pick_as_llama_does(
    context: Context,
) -> None:
    # One array serves every slot: a chain that sorted it and wrote probabilities must
    # leave nothing behind for the next slot's pick, greedy or drawn.
    drawn = Sampling(temperature=0.9, top_k=30, seed=7, num_predict=8)
    greedy = Sampling(temperature=0, num_predict=8)
    samplers = {
        name: (build_sampler(context.vocab, s, n_ctx=64, history=[]), s)
        for name, s in (("drawn", drawn), ("greedy", greedy))
    }
    references = {
        name: build_sampler(context.vocab, s, n_ctx=64, history=[]) for name, s in
        (("drawn", drawn), ("greedy", greedy))
    }
    candidates = Candidates(context.ctx, context.n_vocab)
    order = ["greedy", "greedy", "drawn", "greedy", "drawn", "drawn", "greedy"] * 4
    try:
        picked = [candidates.sample(samplers[n][0], i % ROWS) for i, n in enumerate(order)]
        expected = [
            llama_cpp.llama_sampler_sample(references[n].chain, context.ctx, i % ROWS)
            for i, n in enumerate(order)
        ]
    finally:
        for sampler, _ in samplers.values():
            sampler.free()
        for sampler in references.values():
            sampler.free()
    assert picked == expected
    assert samplers["greedy"][0].greedy and not samplers["drawn"][0].greedy


def _llama_greedy(logits: np.ndarray) -> int:  # type: ignore[name-defined]
    """What llama.cpp's greedy stage selects from these logits, in id order."""
    buffer = (llama_cpp.llama_token_data * len(logits))()
    for i, logit in enumerate(logits):
        buffer[i].id, buffer[i].logit, buffer[i].p = i, float(logit), 0.0
    array = llama_cpp.llama_token_data_array(
        data=buffer, size=len(logits), selected=-1, sorted=False
    )
    stage = llama_cpp.llama_sampler_init_greedy()
    llama_cpp.llama_sampler_apply(stage, ctypes.byref(array))
    llama_cpp.llama_sampler_free(stage)
    return int(buffer[array.selected].id)


@pytest.mark.parametrize(
    "values",
    [
        [0.5, 2.0, 2.0, -1.0],
        [-3.0, -1.0, -2.0, -1.0],
        [float("-inf"), -7.5, float("-inf"), -7.25],
        [9.0, 1.0, 9.0, 9.0],
        [1e-30, 0.0, -0.0, 1e-31],
    ],
    ids=["tie-in-the-middle", "all-negative", "some-minus-inf", "tie-first", "near-zero"],
)
def test_greedy_pick_is_llama_cpps_greedy_stage(values: list[float]) -> None:
    logits = np.array(values, dtype=np.float32)
    assert greedy_pick(logits) == _llama_greedy(logits)


@pytest.mark.parametrize(
    "values",
    [[1.0, float("nan"), 3.0], [float("-inf")] * 3],
    ids=["nan", "all-minus-inf"],
)
def test_greedy_pick_leaves_rows_without_a_finite_maximum_to_llama(values: list[float]) -> None:
    assert greedy_pick(np.array(values, dtype=np.float32)) is None
