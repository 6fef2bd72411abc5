"""The real `openai` Python SDK against /v1: chat (stream, tools, JSON schema, parse), completions,
embeddings, models and typed errors.

Two servers: the real engine with SmolLM2 (real text) and the tiny embedding model, and the
fake backend whose canned output thinks and then calls a tool, which makes tool calls,
reasoning and structured output deterministic.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
import ollama
import openai
import pytest
from gguf import GGUFWriter
from pydantic import BaseModel

from tests.support.models import AGENT_PIECES, SMOL, fake_agent_env, smol_and_embed_server
from tests.support.server import ServerProcess, run_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# A ChatML template that offers tools and thinking, written for these tests.
AGENT_TEMPLATE = """{{- if .Tools }}<|im_start|>system
Tools you may call:
{{- range .Tools }}
{{ . }}
{{- end }}
Call one as <tool_call>{"name": ..., "arguments": {...}}</tool_call>.<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{- if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}
{{- if .Content }}
{{ .Content }}
{{- end }}
{{- if .ToolCalls }}
<tool_call>
{{- range .ToolCalls }}
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}
</tool_call>
{{- end }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a png").decode()


def write_projector(path: Path) -> Path:
    """A minimal clip (mmproj) GGUF: enough for the store to file it as a vision projector."""
    writer = GGUFWriter(path, "clip")
    writer.add_string("general.type", "mmproj")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_tensor("v.patch_embd.weight", np.zeros(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def sdk(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="corral", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def llama_api(llama_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with sdk(llama_server) as client:
        yield client


@pytest.fixture(scope="module")
def fake_api(fake_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with sdk(fake_server) as client:
        yield client


@pytest.fixture(scope="module")
def llama_server(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, tiny_embed_gguf: Path
) -> Iterator[ServerProcess]:
    pytest.importorskip("llama_cpp")
    root = tmp_path_factory.mktemp("openai-llama")
    with smol_and_embed_server(root, smollm2_gguf, tiny_embed_gguf) as srv:
        yield srv


@pytest.fixture(scope="module")
def fake_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("openai-fake")
    (root / "models").mkdir()
    env = fake_agent_env(root)
    with run_server(root / "models", env=env) as srv:
        with ollama.Client(host=srv.url) as client:
            weights = {"tiny.gguf": client.create_blob(tiny_gguf)}
            projector = {"mmproj.gguf": client.create_blob(write_projector(root / "mmproj.gguf"))}
            client.create(model="plain", files=weights)
            client.create(model="agent", files=weights, template=AGENT_TEMPLATE)
            client.create(model="vision", files={**weights, **projector})
        yield srv


# ---- the real engine --------------------------------------------------------------------


@pytest.mark.llama
def test_openai_chat_completion_answers_with_usage(llama_api: openai.OpenAI) -> None:
    answer = llama_api.chat.completions.create(
        model=SMOL, messages=QUESTION, temperature=0, max_tokens=16
    )
    assert answer.object == "chat.completion" and answer.model == SMOL
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and "Paris" in (choice.message.content or "")
    assert choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.llama
def test_openai_chat_stream_has_role_deltas_finish_and_usage(llama_api: openai.OpenAI) -> None:
    chunks = list(
        llama_api.chat.completions.create(
            model=SMOL,
            messages=QUESTION,
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.id for c in chunks} == {chunks[0].id} and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:-2])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    finish, last = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason in ("stop", "length")
    assert finish.choices[0].delta.content is None and finish.usage is None
    assert last.choices == [] and last.usage and last.usage.completion_tokens > 0
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])


@pytest.mark.llama
def test_openai_max_completion_tokens_seed_and_stop(llama_api: openai.OpenAI) -> None:
    client = llama_api
    short = client.chat.completions.create(
        model=SMOL, messages=QUESTION, max_completion_tokens=3, seed=7
    )
    assert short.choices[0].finish_reason == "length"
    assert short.usage and short.usage.completion_tokens == 3
    again = client.chat.completions.create(
        model=SMOL, messages=QUESTION, max_completion_tokens=3, seed=7
    )
    assert again.choices[0].message.content == short.choices[0].message.content
    stopped = client.chat.completions.create(
        model=SMOL, messages=QUESTION, temperature=0, stop=["Paris"]
    )
    assert "Paris" not in (stopped.choices[0].message.content or "")
    assert stopped.choices[0].finish_reason == "stop"


@pytest.mark.llama
def test_openai_json_schema_response_format_is_enforced(llama_api: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string", "enum": ["Paris", "Lyon", "Nice"]}},
        "required": ["capital"],
    }
    answer = llama_api.chat.completions.create(
        model=SMOL,
        messages=QUESTION,
        temperature=0,
        max_tokens=48,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    capital = json.loads(answer.choices[0].message.content or "")["capital"]
    assert capital in ("Paris", "Lyon", "Nice")


class Capital(BaseModel):
    city: Literal["Paris", "Lyon", "Nice"]


@pytest.mark.llama
def test_openai_parse_fills_a_pydantic_model(llama_api: openai.OpenAI) -> None:
    answer = llama_api.chat.completions.parse(
        model=SMOL,
        messages=QUESTION,
        temperature=0,
        max_tokens=48,
        response_format=Capital,
    )
    parsed = answer.choices[0].message.parsed
    assert isinstance(parsed, Capital) and parsed.city in ("Paris", "Lyon", "Nice")


@pytest.mark.llama
def test_openai_completions_whole_and_streamed_agree(llama_api: openai.OpenAI) -> None:
    client = llama_api
    prompt = "Name the capital of France."
    whole = client.completions.create(model=SMOL, prompt=prompt, max_tokens=8, temperature=0)
    assert whole.object == "text_completion" and whole.choices[0].text
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage and whole.usage.completion_tokens > 0
    chunks = list(
        client.completions.create(
            model=SMOL,
            prompt=prompt,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage and usage.prompt_tokens > 0
    assert usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.llama
def test_openai_embeddings_float_base64_list_and_dimensions(
    llama_server: ServerProcess, llama_api: openai.OpenAI
) -> None:
    client = llama_api
    default = client.embeddings.create(model="tiny-embed", input="the cat")  # SDK asks base64
    vector = default.data[0].embedding
    assert len(vector) == 64 and math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-4)
    assert default.usage.prompt_tokens > 0 and default.model == "tiny-embed"
    floats = client.embeddings.create(
        model="tiny-embed", input=["the cat", "a dog"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == pytest.approx(vector, abs=1e-6)
    cut = client.embeddings.create(model="tiny-embed", input="the cat", dimensions=8)
    assert len(cut.data[0].embedding) == 8
    raw = httpx.post(
        llama_server.url + "/v1/embeddings",
        json={"model": "tiny-embed", "input": "the cat", "encoding_format": "base64"},
        timeout=60,
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack("<64f", packed)) == pytest.approx(vector, abs=1e-6)


@pytest.mark.llama
def test_openai_models_list_and_retrieve(llama_api: openai.OpenAI) -> None:
    client = llama_api
    listed = {m.id: m for m in client.models.list()}
    assert {SMOL, "tiny-embed:latest"} <= set(listed)
    assert listed[SMOL].owned_by == "library" and listed[SMOL].created > 0
    assert client.models.retrieve(SMOL).id == SMOL
    with pytest.raises(openai.NotFoundError, match="model 'nosuch:latest' not found"):
        client.models.retrieve("nosuch")


@pytest.mark.llama
def test_openai_errors_are_typed(llama_api: openai.OpenAI) -> None:
    client = llama_api
    with pytest.raises(openai.NotFoundError, match="model 'nosuch' not found"):
        client.chat.completions.create(model="nosuch", messages=QUESTION)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nosuch", messages=QUESTION, stream=True)
    with pytest.raises(openai.BadRequestError, match="too short"):
        client.chat.completions.create(model=SMOL, messages=[])
    with pytest.raises(openai.BadRequestError, match="does not support vision"):
        client.chat.completions.create(model=SMOL, messages=_image_message(PIXEL))
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nosuch", input="x")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nosuch", prompt="x")


# ---- the fake backend: tools, reasoning, structured output, images ----------------------


def test_openai_tool_call_whole_answer(fake_api: openai.OpenAI) -> None:
    answer = fake_api.chat.completions.create(
        model="agent", messages=QUESTION, tools=[WEATHER_TOOL]
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert choice.message.reasoning == "Need the weather."
    assert answer.usage and answer.usage.completion_tokens == len(AGENT_PIECES)


def test_openai_tool_call_stream_deltas_are_shaped_like_openai(fake_api: openai.OpenAI) -> None:
    chunks = list(
        fake_api.chat.completions.create(
            model="agent",
            messages=QUESTION,
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant"
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    head, rest = calls[0], calls[1:]
    assert head.index == 0 and head.id and head.id.startswith("call_") and head.type == "function"
    assert head.function and head.function.name == "get_weather"
    assert head.function.arguments == ""
    assert all(c.index == 0 and c.id is None and c.type is None for c in rest)
    arguments = "".join(c.function.arguments or "" for c in rest if c.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    reasoning = "".join(getattr(d, "reasoning", None) or "" for d in deltas)
    assert reasoning == "Need the weather."


class GetWeather(BaseModel):
    city: str


def test_openai_stream_helper_accumulates_tool_calls(fake_api: openai.OpenAI) -> None:
    tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
    with fake_api.chat.completions.stream(model="agent", messages=QUESTION, tools=[tool]) as stream:
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == GetWeather(city="Paris")


def test_openai_tool_results_go_back_to_the_model(fake_api: openai.OpenAI) -> None:
    client = fake_api
    first = client.chat.completions.create(model="agent", messages=QUESTION, tools=[WEATHER_TOOL])
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    history = [
        *QUESTION,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = client.chat.completions.create(model="agent", messages=history, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "tool_calls"
    bad = {
        "role": "assistant",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
        ],
    }
    with pytest.raises(openai.BadRequestError, match="invalid tool call arguments"):
        client.chat.completions.create(model="agent", messages=[*QUESTION, bad])


@pytest.mark.parametrize(
    "extra, content, reasoning",
    [
        ({"tool_choice": "none"}, "<tool_call>", "Need the weather."),
        ({"reasoning_effort": "none"}, "<think>Need the weather.</think>", None),
        ({"reasoning_effort": "high"}, "<tool_call>", "Need the weather."),
    ],
)
def test_openai_tool_choice_none_and_reasoning_effort(
    fake_api: openai.OpenAI, extra: dict[str, object], content: str, reasoning: str | None
) -> None:
    answer = fake_api.chat.completions.create(
        model="agent",
        messages=QUESTION,
        tools=[WEATHER_TOOL] if "tool_choice" in extra else None,
        **extra,
    )
    message = answer.choices[0].message
    assert content in (message.content or "") and not message.tool_calls
    assert getattr(message, "reasoning", None) == reasoning


def test_openai_json_object_and_parse_on_the_fake(fake_api: openai.OpenAI) -> None:
    client = fake_api
    answer = client.chat.completions.create(
        model="plain", messages=QUESTION, response_format={"type": "json_object"}
    )
    assert json.loads(answer.choices[0].message.content or "") == {"hello": "world"}

    class Greeting(BaseModel):
        hello: str

    parsed = client.chat.completions.parse(
        model="plain", messages=QUESTION, response_format=Greeting
    )
    assert parsed.choices[0].message.parsed == Greeting(hello="world")


def _image_message(data: str, scheme: str = "data:image/png;base64,") -> list[dict[str, object]]:
    parts = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": scheme + data}},
    ]
    return [{"role": "user", "content": parts}]


def test_openai_image_parts_need_a_vision_model(fake_api: openai.OpenAI) -> None:
    client = fake_api
    answer = client.chat.completions.create(model="vision", messages=_image_message(PIXEL))
    assert answer.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError, match="plain:latest does not support vision"):
        client.chat.completions.create(model="plain", messages=_image_message(PIXEL))
    with pytest.raises(openai.BadRequestError, match="image URLs are not currently supported"):
        client.chat.completions.create(
            model="vision", messages=_image_message("x.png", "https://example.com/")
        )


@pytest.mark.parametrize(
    "path, body, status, kind, message",
    [
        (
            "/v1/chat/completions",
            {"model": "nosuch", "messages": QUESTION},
            404,
            "not_found_error",
            "model 'nosuch' not found",
        ),
        (
            "/v1/chat/completions",
            {"model": "plain", "messages": QUESTION, "tools": [WEATHER_TOOL]},
            400,
            "invalid_request_error",
            "does not support tools",
        ),
        (
            "/v1/chat/completions",
            {"model": "plain", "messages": QUESTION, "reasoning_effort": "high"},
            400,
            "invalid_request_error",
            "does not support thinking",
        ),
        (
            "/v1/chat/completions",
            {"model": "agent", "messages": QUESTION, "reasoning_effort": "loud"},
            400,
            "invalid_request_error",
            "invalid reasoning_effort",
        ),
        (
            "/v1/chat/completions",
            {"model": "plain", "messages": "hi"},
            400,
            "invalid_request_error",
            '"messages"',
        ),
        (
            "/v1/embeddings",
            {"model": "plain", "input": []},
            400,
            "invalid_request_error",
            "invalid input",
        ),
        (
            "/v1/embeddings",
            {"model": "plain", "input": "x", "encoding_format": "hex"},
            400,
            "invalid_request_error",
            "Invalid value for 'encoding_format' = hex",
        ),
        (
            "/v1/completions",
            {"model": "plain", "prompt": ["a", "b"]},
            400,
            "invalid_request_error",
            "invalid prompt",
        ),
    ],
)
def test_openai_error_object_shape(
    fake_server: ServerProcess,
    path: str,
    body: dict[str, object],
    status: int,
    kind: str,
    message: str,
) -> None:
    answer = httpx.post(fake_server.url + path, json=body, timeout=60)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["type"] == kind and message in error["message"]
    assert error["param"] is None and error["code"] is None


def test_openai_options_and_keep_alive_pass_through(fake_api: openai.OpenAI) -> None:
    client = fake_api
    answer = client.chat.completions.create(
        model="plain",
        messages=QUESTION,
        extra_body={"options": {"num_predict": 2}, "keep_alive": 0},
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage and answer.usage.completion_tokens == 2
    overridden = client.chat.completions.create(
        model="plain",
        messages=QUESTION,
        max_tokens=3,
        extra_body={"options": {"num_predict": 2}},
    )
    assert overridden.usage and overridden.usage.completion_tokens == 3
