"""LlamaBackend driven in-process on the generated tiny GGUF (real llama.cpp, no subprocess).

The tiny model's weights are random, so its text is nonsense: these tests assert on
structure, counts, determinism and stop reasons, never on content. They drive one slot at
a time; tests/integration/test_batching_llama.py runs several at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from worker.backend import (  # noqa: E402
    BackendError,
    Ended,
    LoadOptions,
    Piece,
    Sampled,
    Sampling,
    SlotFailed,
    StopReason,
)
from worker.llama_backend import LlamaBackend  # noqa: E402
from worker.protocol import ErrorCode  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.llama]

NUM_CTX = 96
TINY_N_EMBD = 64  # the fixture's model is 64 wide (tests/support/tiny_gguf.py)
GREEDY = Sampling(temperature=0.0, num_predict=8)
SMOLLM2 = Path(__file__).parents[2] / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _options(path: Path, *, embedding: bool = False, num_batch: int = 32) -> LoadOptions:
    return LoadOptions(
        model_path=str(path),
        model_name="tiny",
        num_ctx=NUM_CTX,
        num_parallel=2,
        num_batch=num_batch,
        num_gpu=0,
        num_thread=1,
        use_mmap=True,
        embedding=embedding,
    )


@pytest.fixture
def backend(tiny_gguf: Path) -> Iterator[LlamaBackend]:
    loaded = LlamaBackend(_options(tiny_gguf))
    yield loaded
    loaded.close()


@pytest.fixture
def embedder(tiny_embed_gguf: Path) -> Iterator[LlamaBackend]:
    loaded = LlamaBackend(_options(tiny_embed_gguf, embedding=True))
    yield loaded
    loaded.close()


def _prompt(backend: LlamaBackend, text: str = "the cat sat on the mat") -> list[int]:
    return backend.tokenize(text, add_special=True, parse_special=False)


def _run(
    backend: LlamaBackend, sampling: Sampling, prompt: list[int], slot: int = 0
) -> tuple[list[Piece], StopReason]:
    """Generate in one slot until the backend ends it: the pieces and why it ended."""
    backend.start(slot, prompt, sampling)
    pieces: list[Piece] = []
    while True:
        for event in backend.step():
            assert event.slot == slot and not isinstance(event, SlotFailed), event
            if isinstance(event, Sampled):
                pieces.append(event.piece)
            elif isinstance(event, Ended):
                return pieces, event.reason


def _tokens(backend: LlamaBackend, sampling: Sampling, prompt: list[int]) -> list[int]:
    return [piece.token for piece in _run(backend, sampling, prompt)[0]]


def _text(pieces: list[Piece]) -> str:
    return b"".join(piece.text_bytes for piece in pieces).decode("utf-8", "replace")


def test_llama_backend_reports_model_facts(backend: LlamaBackend, tiny_gguf: Path) -> None:
    facts = backend.facts
    assert facts.n_ctx == NUM_CTX
    assert facts.n_ctx_train == 256
    assert facts.chat_template is not None and "<|im_start|>" in facts.chat_template
    assert (facts.bos_token, facts.eos_token, facts.add_bos) == ("<s>", "</s>", True)
    assert facts.memory_bytes > tiny_gguf.stat().st_size // 2


@pytest.mark.parametrize("text", ["hello world", "the cat sat on the mat.", 'json: {"a": [1, 2]}'])
def test_llama_backend_tokenize_round_trips_ascii(backend: LlamaBackend, text: str) -> None:
    tokens = backend.tokenize(text, add_special=False, parse_special=False)
    assert tokens and backend.detokenize(tokens) == text
    with_bos = backend.tokenize(text, add_special=True, parse_special=False)
    assert with_bos[1:] == tokens


def test_llama_backend_greedy_generation_is_deterministic(backend: LlamaBackend) -> None:
    prompt = _prompt(backend)
    first, reason = _run(backend, GREEDY, prompt)
    assert reason is StopReason.LENGTH and len(first) == GREEDY.num_predict
    assert [p.token for p in _run(backend, GREEDY, prompt)[0]] == [p.token for p in first]


def test_llama_backend_seeded_sampling_is_deterministic(backend: LlamaBackend) -> None:
    sampling = Sampling(temperature=1.0, top_k=0, top_p=1.0, seed=42, num_predict=12)
    prompt = _prompt(backend)
    assert _tokens(backend, sampling, prompt) == _tokens(backend, sampling, prompt)


def test_llama_backend_slot_keeps_its_cache_for_the_next_prompt(backend: LlamaBackend) -> None:
    prompt = _prompt(backend)
    generated = _tokens(backend, GREEDY, prompt)
    # The last sampled token was never decoded: the cache is the prompt and the others.
    assert list(backend.cached(0)) == prompt + generated[:-1]
    longer = prompt + generated + _prompt(backend, "and then")[1:]
    assert backend.start(0, longer, GREEDY) == len(prompt) + len(generated) - 1
    backend.release(0)
    # Never the whole prompt: its last token is evaluated again for its logits.
    assert backend.start(0, prompt, GREEDY) == len(prompt) - 1
    backend.release(0)
    assert backend.start(1, prompt, GREEDY) == 0  # another slot, another cache


def test_llama_backend_released_generation_leaves_no_state(backend: LlamaBackend) -> None:
    prompt = _prompt(backend)
    expected = _tokens(backend, GREEDY, prompt)
    backend.start(0, prompt + prompt, Sampling(temperature=0.0, num_predict=40))
    events = backend.step() + backend.step()
    assert any(isinstance(e, Sampled) for e in events)
    backend.release(0)
    assert backend.step() == []
    assert _tokens(backend, GREEDY, prompt) == expected


def test_llama_backend_release_in_the_middle_of_a_prompt(tiny_gguf: Path) -> None:
    chunked = LlamaBackend(_options(tiny_gguf, num_batch=8))  # llama.cpp raises it to 64
    try:
        long_prompt = _prompt(chunked, "the cat sat on the mat " * 6)  # > 64 tokens
        expected = _tokens(chunked, GREEDY, _prompt(chunked))
        chunked.start(1, long_prompt, GREEDY)
        assert chunked.step() == []  # one chunk of the prompt, nothing sampled yet
        chunked.release(1)
        assert 0 < len(chunked.cached(1)) < len(long_prompt)
        assert _tokens(chunked, GREEDY, _prompt(chunked)) == expected
    finally:
        chunked.close()


def test_llama_backend_ends_with_length_when_context_fills(backend: LlamaBackend) -> None:
    words = " ".join(["the cat sat on the mat"] * 40)
    prompt = _prompt(backend, words)[: NUM_CTX - 4]
    pieces, reason = _run(backend, Sampling(temperature=0.0), prompt)
    assert reason is StopReason.LENGTH
    # Every position of the sequence is used; the last sampled token needs no slot.
    assert len(prompt) + len(pieces) == NUM_CTX + 1


def test_llama_backend_rejects_prompt_longer_than_context(backend: LlamaBackend) -> None:
    too_long = _prompt(backend, "the " * (NUM_CTX * 2))
    with pytest.raises(BackendError) as caught:
        backend.start(0, too_long, GREEDY)
    assert caught.value.error.code is ErrorCode.CONTEXT_OVERFLOW
    assert len(_tokens(backend, GREEDY, _prompt(backend))) == GREEDY.num_predict  # still free


@pytest.mark.parametrize("prompt", [[], [10**6]], ids=["empty", "token-outside-vocabulary"])
def test_llama_backend_rejects_bad_prompt(backend: LlamaBackend, prompt: list[int]) -> None:
    with pytest.raises(BackendError) as caught:
        backend.start(0, prompt, GREEDY)
    assert caught.value.error.code is ErrorCode.BAD_REQUEST


def test_llama_backend_json_grammar_constrains_output(backend: LlamaBackend) -> None:
    sampling = Sampling(temperature=0.0, num_predict=64, grammar=backend.json_grammar(None))
    pieces, reason = _run(backend, sampling, _prompt(backend))
    text = _text(pieces).strip()
    assert text[:1] in ("{", "[")
    if reason is StopReason.STOP:
        assert isinstance(json.loads(text), dict | list)


def test_llama_backend_schema_grammar_constrains_output(backend: LlamaBackend) -> None:
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    }
    sampling = Sampling(temperature=0.0, num_predict=64, grammar=backend.json_grammar(schema))
    pieces, reason = _run(backend, sampling, _prompt(backend))
    text = _text(pieces).strip()
    assert text.startswith("{")
    if reason is StopReason.STOP:
        assert isinstance(json.loads(text)["n"], int)


@pytest.mark.parametrize("schema", [{"type": "no-such-type"}, {"$ref": "#/missing"}])
def test_llama_backend_unsupported_schema_is_bad_request(
    backend: LlamaBackend, schema: dict[str, object]
) -> None:
    with pytest.raises(BackendError) as caught:
        backend.json_grammar(schema)
    assert caught.value.error.code is ErrorCode.BAD_REQUEST


def test_llama_backend_invalid_grammar_is_bad_request(backend: LlamaBackend) -> None:
    sampling = Sampling(grammar="root ::= undefined-rule")
    with pytest.raises(BackendError) as caught:
        backend.start(0, _prompt(backend), sampling)
    assert caught.value.error.code is ErrorCode.BAD_REQUEST
    assert backend.step() == []  # the slot never became active


def test_llama_backend_embeds_deterministically(embedder: LlamaBackend) -> None:
    prompt = _prompt(embedder)
    vector = embedder.embed(0, prompt)
    assert len(vector) == TINY_N_EMBD
    assert all(math.isfinite(x) for x in vector) and any(x != 0.0 for x in vector)
    assert embedder.embed(0, prompt) == vector
    assert embedder.embed(0, _prompt(embedder, "hello world")) != vector


def test_llama_backend_embedding_model_refuses_generation(embedder: LlamaBackend) -> None:
    with pytest.raises(BackendError) as caught:
        embedder.start(0, _prompt(embedder), GREEDY)
    assert caught.value.error.code is ErrorCode.BAD_REQUEST


def test_llama_backend_generative_model_embeds_by_mean(backend: LlamaBackend) -> None:
    prompt = _prompt(backend, "the cat sat on the mat " * 6)  # more than one batch
    expected = _tokens(backend, GREEDY, _prompt(backend))
    vector = backend.embed(0, prompt)
    assert len(vector) == TINY_N_EMBD
    assert backend.embed(1, prompt) == vector
    assert list(backend.cached(0)) == []  # embedding drops the slot's cache
    assert _tokens(backend, GREEDY, _prompt(backend)) == expected


def test_llama_backend_load_failure_is_load_failed(tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a gguf file at all")
    for path in (not_gguf, tmp_path / "missing.gguf"):
        with pytest.raises(BackendError) as caught:
            LlamaBackend(_options(path))
        assert caught.value.error.code is ErrorCode.LOAD_FAILED


def test_llama_backend_close_is_idempotent(tiny_gguf: Path) -> None:
    loaded = LlamaBackend(_options(tiny_gguf))
    loaded.close()
    loaded.close()


@pytest.mark.skipif(not SMOLLM2.is_file(), reason="SmolLM2 GGUF not fetched")
def test_llama_backend_smollm2_generates_utf8_text() -> None:
    options = LoadOptions(
        model_path=str(SMOLLM2), model_name="smollm2", num_ctx=512, num_parallel=1,
        num_batch=128, num_gpu=0, num_thread=2, use_mmap=True, embedding=False,
    )  # fmt: skip
    loaded = LlamaBackend(options)
    try:
        assert loaded.facts.chat_template
        prompt = loaded.tokenize(
            "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n",
            add_special=False,
            parse_special=True,
        )
        pieces, _ = _run(loaded, Sampling(temperature=0.0, num_predict=16), prompt)
        assert pieces
        b"".join(p.text_bytes for p in pieces).decode("utf-8")
    finally:
        loaded.close()
