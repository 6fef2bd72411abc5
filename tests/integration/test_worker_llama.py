"""LlamaBackend driven in-process on the generated tiny GGUF (real llama.cpp, no subprocess).

The tiny model's weights are random, so its text is nonsense: these tests assert on
structure, counts, determinism and stop reasons, never on content.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from worker.backend import BackendError, LoadOptions, Piece, Sampling  # noqa: E402
from worker.llama_backend import LlamaBackend, StopReason  # noqa: E402
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


def _run(backend: LlamaBackend, sampling: Sampling, prompt: list[int]) -> list[Piece]:
    return list(backend.generate(prompt, sampling, lambda: False))


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
    first = _run(backend, GREEDY, prompt)
    assert backend.last_stop_reason is StopReason.LENGTH
    second = _run(backend, GREEDY, prompt)
    assert len(first) == GREEDY.num_predict
    assert [p.token for p in first] == [p.token for p in second]


def test_llama_backend_seeded_sampling_is_deterministic(backend: LlamaBackend) -> None:
    sampling = Sampling(temperature=1.0, top_k=0, top_p=1.0, seed=42, num_predict=12)
    prompt = _prompt(backend)
    runs = [[p.token for p in _run(backend, sampling, prompt)] for _ in range(2)]
    assert runs[0] == runs[1]


def test_llama_backend_abandoned_generation_leaves_no_state(backend: LlamaBackend) -> None:
    prompt = _prompt(backend)
    expected = [p.token for p in _run(backend, GREEDY, prompt)]
    abandoned = backend.generate(prompt + prompt, GREEDY, lambda: False)
    next(abandoned)
    assert isinstance(abandoned, Generator)
    abandoned.close()
    assert [p.token for p in _run(backend, GREEDY, prompt)] == expected


@pytest.mark.parametrize("stop_after", [0, 1, 3])
def test_llama_backend_honours_should_stop_within_one_token(
    backend: LlamaBackend, stop_after: int
) -> None:
    received: list[Piece] = []
    sampling = Sampling(temperature=0.0, num_predict=40)
    for piece in backend.generate(_prompt(backend), sampling, lambda: len(received) >= stop_after):
        received.append(piece)
    assert stop_after <= len(received) <= stop_after + 1
    assert backend.last_stop_reason is StopReason.CANCELLED


def test_llama_backend_ends_with_length_when_context_fills(backend: LlamaBackend) -> None:
    words = " ".join(["the cat sat on the mat"] * 40)
    prompt = _prompt(backend, words)[: NUM_CTX - 4]
    pieces = _run(backend, Sampling(temperature=0.0), prompt)
    assert backend.last_stop_reason is StopReason.LENGTH
    # Every position of the sequence is used; the last sampled token needs no slot.
    assert len(prompt) + len(pieces) == NUM_CTX + 1


def test_llama_backend_rejects_prompt_longer_than_context(backend: LlamaBackend) -> None:
    too_long = _prompt(backend, "the " * (NUM_CTX * 2))
    with pytest.raises(BackendError) as caught:
        backend.generate(too_long, GREEDY, lambda: False)
    assert caught.value.error.code is ErrorCode.CONTEXT_OVERFLOW


@pytest.mark.parametrize("prompt", [[], [10**6]], ids=["empty", "token-outside-vocabulary"])
def test_llama_backend_rejects_bad_prompt(backend: LlamaBackend, prompt: list[int]) -> None:
    with pytest.raises(BackendError) as caught:
        backend.generate(prompt, GREEDY, lambda: False)
    assert caught.value.error.code is ErrorCode.BAD_REQUEST


def test_llama_backend_json_grammar_constrains_output(backend: LlamaBackend) -> None:
    sampling = Sampling(temperature=0.0, num_predict=64, grammar=backend.json_grammar(None))
    text = _text(_run(backend, sampling, _prompt(backend))).strip()
    assert text[:1] in ("{", "[")
    if backend.last_stop_reason is StopReason.STOP:
        assert isinstance(json.loads(text), dict | list)


def test_llama_backend_schema_grammar_constrains_output(backend: LlamaBackend) -> None:
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    }
    sampling = Sampling(temperature=0.0, num_predict=64, grammar=backend.json_grammar(schema))
    text = _text(_run(backend, sampling, _prompt(backend))).strip()
    assert text.startswith("{")
    if backend.last_stop_reason is StopReason.STOP:
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
        _run(backend, sampling, _prompt(backend))
    assert caught.value.error.code is ErrorCode.BAD_REQUEST


def test_llama_backend_embeds_deterministically(embedder: LlamaBackend) -> None:
    prompt = _prompt(embedder)
    vector = embedder.embed(prompt)
    assert len(vector) == TINY_N_EMBD
    assert all(math.isfinite(x) for x in vector) and any(x != 0.0 for x in vector)
    assert embedder.embed(prompt) == vector
    assert embedder.embed(_prompt(embedder, "hello world")) != vector


def test_llama_backend_embedding_model_refuses_generation(embedder: LlamaBackend) -> None:
    with pytest.raises(BackendError) as caught:
        embedder.generate(_prompt(embedder), GREEDY, lambda: False)
    assert caught.value.error.code is ErrorCode.BAD_REQUEST


def test_llama_backend_generative_model_embeds_by_mean(backend: LlamaBackend) -> None:
    prompt = _prompt(backend, "the cat sat on the mat " * 6)  # more than one batch
    vector = backend.embed(prompt)
    assert len(vector) == TINY_N_EMBD
    assert backend.embed(prompt) == vector
    assert len(_run(backend, GREEDY, _prompt(backend))) == GREEDY.num_predict


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
        pieces = _run(loaded, Sampling(temperature=0.0, num_predict=16), prompt)
        assert pieces
        b"".join(p.text_bytes for p in pieces).decode("utf-8")
    finally:
        loaded.close()
