"""The whole path with the real engine: `corral serve`, llama.cpp workers, the ollama client."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from tests.support.models import create_from_gguf
from tests.support.server import ServerProcess, run_server

pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.integration, pytest.mark.llama, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    models = tmp_path_factory.mktemp("llama") / "models"
    models.mkdir()
    with run_server(
        models, env={"CORRAL_CONTEXT_LENGTH": "256", "CORRAL_NUM_PARALLEL": "1"}
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(
    server: ServerProcess, tiny_gguf: Path, tiny_embed_gguf: Path
) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url) as c:
        create_from_gguf(c, "tiny", tiny_gguf, parameters={"num_predict": 8})
        create_from_gguf(c, "tiny-embed", tiny_embed_gguf)
        yield c


def test_llama_generate_streams_and_reports_stats(client: ollama.Client) -> None:
    parts = list(
        client.generate(model="tiny", prompt="the cat", stream=True, options={"temperature": 0})
    )
    final = parts[-1]
    assert final.done and final.done_reason == "length"
    assert final.eval_count == 8 and (final.prompt_eval_count or 0) > 0
    assert (final.eval_duration or 0) > 0 and (final.total_duration or 0) > 0
    assert final.context and len(final.context) >= (final.prompt_eval_count or 0)
    again = client.generate(model="tiny", prompt="the cat", options={"temperature": 0})
    assert again.response == "".join(p.response for p in parts)  # greedy is repeatable


def test_llama_chat_streams(client: ollama.Client) -> None:
    parts = list(
        client.chat(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            options={"num_predict": 5},
        )
    )
    assert parts[-1].done and parts[-1].eval_count == 5
    assert all(p.message.role == "assistant" for p in parts)


def test_llama_format_json_is_enforced(client: ollama.Client) -> None:
    answer = client.generate(
        model="tiny",
        prompt="json please",
        format="json",
        options={"num_predict": 24, "temperature": 0},
    )
    assert answer.response.lstrip().startswith("{")


def test_llama_embed_is_normalized_and_batched(client: ollama.Client) -> None:
    result = client.embed(model="tiny-embed", input=["the cat", "a dog sat"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 64
    for vector in result.embeddings:
        assert math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-4)
    cut = client.embed(model="tiny-embed", input="the cat", dimensions=8)
    assert len(cut.embeddings[0]) == 8
    legacy = client.embeddings(model="tiny-embed", prompt="the cat")
    assert len(legacy.embedding) == 64


def test_llama_ps_lists_loaded_models(client: ollama.Client) -> None:
    client.generate(model="tiny", prompt="")
    names = {m.model for m in client.ps().models}
    assert "tiny:latest" in names
    entry = next(m for m in client.ps().models if m.model == "tiny:latest")
    assert entry.size and entry.size > 0 and entry.context_length == 256


def test_smollm2_answers_a_real_question(client: ollama.Client, smollm2_gguf: Path) -> None:
    create_from_gguf(client, "smollm2:135m", smollm2_gguf)
    answer = client.chat(
        model="smollm2:135m",
        messages=[
            {"role": "user", "content": "What is the capital of France? Answer in one word."}
        ],
        options={"temperature": 0, "num_predict": 32},
    )
    assert "Paris" in answer.message.content
    raw = client.generate(
        model="smollm2:135m",
        prompt="Say hello.",
        stream=False,
        options={"temperature": 0, "num_predict": 16},
        keep_alive=0,
    )
    assert raw.response.strip() and raw.done
    assert json.dumps(raw.model_dump(mode="json"))  # the client parsed every field
