"""The real `ollama` Python library, every public method of Client and AsyncClient, against corral.

Text generation runs on the real engine with SmolLM2 (real answers) and the tiny embedding
model; tool calls and thinking run on the fake backend, whose canned output thinks and then
calls a tool, so they are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import ollama
import pytest
from pydantic import BaseModel

from tests.support.models import (
    SMOL,
    create_from_gguf,
    fake_agent_env,
    smol_and_embed_server,
)
from tests.support.oci_registry import OciRegistry, run_registry
from tests.support.server import ServerProcess, run_server
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY = {"temperature": 0, "num_predict": 16}
# Methods that reach ollama.com or a route outside Ollama's local API, not a local server.
NOT_LOCAL = {"web_search", "web_fetch", "systemone"}
# A ChatML template that offers tools and thinking, written for these tests.
AGENT_TEMPLATE = """{{- if .Tools }}<|im_start|>system
{{- range .Tools }}
{{ . }}
{{- end }}<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{- if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}
{{ .Content }}
{{- if .ToolCalls }}<tool_call>
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}</tool_call>
{{- end }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
      city: The city to look up
    """
    return f"sunny in {city}"


class Capital(BaseModel):
    city: Literal["Paris", "Lyon", "Nice"]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, tiny_embed_gguf: Path
) -> Iterator[ServerProcess]:
    pytest.importorskip("llama_cpp")
    root = tmp_path_factory.mktemp("conformance")
    with smol_and_embed_server(root, smollm2_gguf, tiny_embed_gguf) as srv:
        yield srv


@pytest.fixture(scope="module")
def agent_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("conformance-fake")
    (root / "models").mkdir()
    env = fake_agent_env(root)
    with run_server(root / "models", env=env) as srv:
        with ollama.Client(host=srv.url) as client:
            create_from_gguf(client, "agent", tiny_gguf, template=AGENT_TEMPLATE)
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url, timeout=120) as c:
        yield c


def _public_methods(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}


COVERED = {
    "generate",
    "chat",
    "embed",
    "embeddings",
    "list",
    "show",
    "ps",
    "create",
    "create_blob",
    "copy",
    "delete",
    "pull",
    "push",
    "close",
}


@pytest.mark.parametrize("cls", [ollama.Client, ollama.AsyncClient])
def test_client_every_public_method_is_covered_here(cls: type) -> None:
    # A new library release that adds a method fails here until a test drives it.
    assert _public_methods(cls) - NOT_LOCAL == COVERED


# ---- Client ------------------------------------------------------------------------------


@pytest.mark.llama
def test_client_generate_whole_and_streamed(client: ollama.Client) -> None:
    whole = client.generate(model=SMOL, prompt="Name the capital of France.", options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.response
    assert whole.model == SMOL and whole.context and (whole.eval_count or 0) > 0
    assert (whole.total_duration or 0) > 0 and whole.created_at
    parts = list(
        client.generate(
            model=SMOL, prompt="Name the capital of France.", options=GREEDY, stream=True
        )
    )
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.response or "" for p in parts) == whole.response


@pytest.mark.llama
def test_client_chat_whole_and_streamed(client: ollama.Client) -> None:
    whole = client.chat(model=SMOL, messages=QUESTION, options=GREEDY)
    assert whole.message.role == "assistant" and "Paris" in (whole.message.content or "")
    assert whole.done and (whole.prompt_eval_count or 0) > 0
    parts = list(client.chat(model=SMOL, messages=QUESTION, options=GREEDY, stream=True))
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count


@pytest.mark.llama
def test_client_chat_format_with_a_pydantic_schema(client: ollama.Client) -> None:
    answer = client.chat(
        model=SMOL,
        messages=QUESTION,
        format=Capital.model_json_schema(),
        options={"temperature": 0, "num_predict": 48},
    )
    parsed = Capital.model_validate_json(answer.message.content or "")
    assert parsed.city in ("Paris", "Lyon", "Nice")


def test_client_chat_tools_and_thinking(agent_server: ServerProcess) -> None:
    with ollama.Client(host=agent_server.url) as c:
        whole = c.chat(model="agent", messages=QUESTION, tools=[get_weather])
        (call,) = whole.message.tool_calls or []
        assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
        assert whole.message.thinking == "Need the weather." and whole.done_reason == "stop"
        parts = list(c.chat(model="agent", messages=QUESTION, tools=[get_weather], stream=True))
        streamed = [tc for p in parts for tc in (p.message.tool_calls or [])]
        assert [tc.function.name for tc in streamed] == ["get_weather"]
        assert "".join(p.message.thinking or "" for p in parts) == "Need the weather."
        follow_up = [
            *QUESTION,
            whole.message,
            {"role": "tool", "tool_name": "get_weather", "content": get_weather("Paris")},
        ]
        again = c.chat(model="agent", messages=follow_up, tools=[get_weather], think=False)
        assert again.message.thinking is None and "<think>" in (again.message.content or "")


@pytest.mark.llama
def test_client_embed_and_embeddings(client: ollama.Client) -> None:
    one = client.embed(model="tiny-embed", input="the cat")
    assert one.model == "tiny-embed" and len(one.embeddings) == 1
    assert math.isclose(sum(x * x for x in one.embeddings[0]), 1.0, rel_tol=1e-4)
    two = client.embed(model="tiny-embed", input=["the cat", "a dog"], dimensions=8)
    assert [len(v) for v in two.embeddings] == [8, 8]
    legacy = client.embeddings(model="tiny-embed", prompt="the cat")
    assert len(legacy.embedding) == 64


@pytest.mark.llama
def test_client_list_show_ps(client: ollama.Client) -> None:
    names = {m.model for m in client.list().models}
    assert {SMOL, "tiny-embed:latest"} <= names
    shown = client.show(SMOL)
    assert shown.capabilities == ["completion"] and shown.details and shown.details.family
    assert shown.modelinfo and "general.architecture" in shown.modelinfo
    assert shown.modelfile and shown.template and shown.modified_at
    client.generate(model=SMOL, prompt="")  # loads it
    loaded = {m.model: m for m in client.ps().models}
    assert SMOL in loaded and (loaded[SMOL].size or 0) > 0 and loaded[SMOL].expires_at


def test_client_create_copy_delete(client: ollama.Client, tmp_path: Path) -> None:
    digest = client.create_blob(write_tiny_gguf(tmp_path / "made.gguf", seed=11))
    assert digest.startswith("sha256:")
    steps = list(
        client.create(
            model="made",
            files={"made.gguf": digest},
            system="You are terse.",
            parameters={"temperature": 0.1},
            stream=True,
        )
    )
    assert steps[-1].status == "success"
    shown = client.show("made")
    assert "You are terse." in (shown.modelfile or "") and "temperature" in (shown.parameters or "")
    assert client.copy("made", "made-copy").status == "success"
    assert client.delete("made").status == "success"
    assert "made-copy:latest" in {m.model for m in client.list().models}
    assert client.delete("made-copy").status == "success"
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete("made")
    assert missing.value.status_code == 404


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    with run_registry(tmp_path_factory.mktemp("oci")) as reg:
        yield reg


def test_client_push_and_pull(client: ollama.Client, registry: OciRegistry, tmp_path: Path) -> None:
    name = f"{registry.host}/library/shared:latest"
    digest = client.create_blob(write_tiny_gguf(tmp_path / "shared.gguf", seed=13))
    client.create(model=name, files={"shared.gguf": digest})
    pushed = client.push(name, insecure=True)
    assert pushed.status == "success"
    client.delete(name)
    pulled = list(client.pull(name, insecure=True, stream=True))
    assert pulled[0].status == "pulling manifest" and pulled[-1].status == "success"
    assert any(p.digest and p.total for p in pulled)
    assert name in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        client.pull(f"{registry.host}/library/absent:latest", insecure=True)
    with pytest.raises(ollama.ResponseError) as unknown:
        list(client.push("nosuch-model", stream=True))
    assert unknown.value.status_code == 404


def test_client_errors_are_response_errors(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as whole:
        client.generate(model="nosuch", prompt="x")
    assert whole.value.status_code == 404 and "model 'nosuch' not found" in whole.value.error
    with pytest.raises(ollama.ResponseError) as streamed:
        list(client.chat(model="nosuch", messages=QUESTION, stream=True))
    assert streamed.value.status_code == 404


def test_server_version_is_what_clients_read(server: ServerProcess) -> None:
    # The Python library has no version(); the JavaScript one does (test_ollama_js.py).
    answer = httpx.get(server.url + "/api/version", timeout=30)
    assert answer.status_code == 200 and answer.json()["version"]


# ---- AsyncClient -------------------------------------------------------------------------


@pytest.mark.llama
async def test_async_client_inference(server: ServerProcess) -> None:
    async with ollama.AsyncClient(host=server.url, timeout=120) as c:
        whole = await c.generate(model=SMOL, prompt="Name the capital of France.", options=GREEDY)
        parts = [
            p
            async for p in await c.generate(
                model=SMOL, prompt="Name the capital of France.", options=GREEDY, stream=True
            )
        ]
        assert "".join(p.response or "" for p in parts) == whole.response and parts[-1].done
        chat = await c.chat(model=SMOL, messages=QUESTION, options=GREEDY)
        assert "Paris" in (chat.message.content or "")
        chunks = [
            p
            async for p in await c.chat(model=SMOL, messages=QUESTION, stream=True, options=GREEDY)
        ]
        assert "".join(p.message.content or "" for p in chunks) == chat.message.content
        shaped = await c.chat(
            model=SMOL,
            messages=QUESTION,
            format=Capital.model_json_schema(),
            options={"temperature": 0, "num_predict": 48},
        )
        assert Capital.model_validate_json(shaped.message.content or "")
        embedded = await c.embed(model="tiny-embed", input=["a", "b"])
        assert len(embedded.embeddings) == 2
        legacy = await c.embeddings(model="tiny-embed", prompt="a")
        assert len(legacy.embedding) == 64
        assert SMOL in {m.model for m in (await c.ps()).models}


async def test_async_client_model_management(server: ServerProcess, tmp_path: Path) -> None:
    async with ollama.AsyncClient(host=server.url, timeout=120) as c:
        digest = await c.create_blob(write_tiny_gguf(tmp_path / "async.gguf", seed=12))
        assert (await c.create(model="async-made", files={"async.gguf": digest})).status == (
            "success"
        )
        steps = [
            s
            async for s in await c.create(
                model="async-made2", from_="async-made", system="hi", stream=True
            )
        ]
        assert steps[-1].status == "success"
        assert "SYSTEM hi" in ((await c.show("async-made2")).modelfile or "")
        assert (await c.copy("async-made", "async-copy")).status == "success"
        names = {m.model for m in (await c.list()).models}
        assert {"async-made:latest", "async-made2:latest", "async-copy:latest"} <= names
        for name in ("async-made", "async-made2", "async-copy"):
            assert (await c.delete(name)).status == "success"


async def test_async_client_push_and_pull(
    server: ServerProcess, registry: OciRegistry, tmp_path: Path
) -> None:
    name = f"{registry.host}/alice/async-shared:latest"
    async with ollama.AsyncClient(host=server.url, timeout=120) as c:
        digest = await c.create_blob(write_tiny_gguf(tmp_path / "async-shared.gguf", seed=14))
        await c.create(model=name, files={"async-shared.gguf": digest})
        pushed = [p async for p in await c.push(name, insecure=True, stream=True)]
        assert pushed[-1].status == "success"
        await c.delete(name)
        assert (await c.pull(name, insecure=True)).status == "success"
        assert name in {m.model for m in (await c.list()).models}


async def test_async_client_chat_tools(agent_server: ServerProcess) -> None:
    async with ollama.AsyncClient(host=agent_server.url) as c:
        whole = await c.chat(model="agent", messages=QUESTION, tools=[get_weather])
        (call,) = whole.message.tool_calls or []
        assert call.function.arguments == {"city": "Paris"}
        parts = [
            p
            async for p in await c.chat(
                model="agent", messages=QUESTION, tools=[get_weather], stream=True
            )
        ]
        assert any(p.message.tool_calls for p in parts)
