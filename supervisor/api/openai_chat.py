"""/v1/chat/completions translated: OpenAI request -> ChatRequest, native records -> OpenAI."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncGenerator
from typing import Any

from supervisor.api.openai_wire import (
    FINGERPRINT,
    ChatCompletionRequest,
    Obj,
    finish_reason,
    new_id,
    now_s,
    usage,
)
from supervisor.errors import BadRequest
from supervisor.inference import Record
from supervisor.schemas import ChatRequest, validate

_DATA_URI = re.compile(r"data:(?:image/(?:jpeg|jpg|png|webp))?;base64,(.*)", re.DOTALL)
# reasoning_effort -> native think, Ollama's table; "" means unset.
_EFFORT: dict[str, bool | str | None] = {
    "": None,
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}


def chat_request(body: ChatCompletionRequest) -> ChatRequest:
    """The native chat request an OpenAI one means; 400 for what cannot be translated."""
    if not body.messages:
        raise BadRequest("[] is too short - 'messages'")
    data: dict[str, Any] = {
        "model": body.model,
        "messages": _messages(body.messages),
        "stream": bool(body.stream),
        "options": body.native_options(),
        "keep_alive": body.keep_alive,
        "format": _format(body.response_format),
        "think": _think(body),
    }
    if body.tools and body.tool_choice != "none":
        data["tools"] = body.tools
    return validate(ChatRequest, data)


def _think(body: ChatCompletionRequest) -> bool | str | None:
    effort = body.reasoning_effort
    if effort is None and body.reasoning is not None:
        effort = body.reasoning.get("effort")
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in _EFFORT:
        allowed = ", ".join(repr(e) for e in _EFFORT if e)
        raise BadRequest(f"invalid reasoning_effort {effort!r}; expected one of {allowed}")
    return _EFFORT[effort]


def _format(response_format: dict[str, Any] | None) -> str | dict[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("response_format json_schema needs a 'schema' object")
        return schema
    if kind in ("text", None):
        return None
    raise BadRequest(f"invalid response_format type {kind!r}")


def _messages(raw: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool call id -> function name, for later tool results
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise BadRequest("invalid message format")
        message = _message(item, tool_names)
        for call in message.get("tool_calls", []):
            if call.get("id"):
                tool_names[call["id"]] = call["function"]["name"]
        out.append(message)
    return out


def _message(item: dict[str, Any], tool_names: dict[str, str]) -> dict[str, Any]:
    role = item["role"].lower()
    calls = _tool_calls_in(item.get("tool_calls"))
    content, images = _content(item.get("content"), has_calls=bool(calls))
    message: dict[str, Any] = {"role": role, "content": content}
    if images:
        message["images"] = images
    if calls:
        message["tool_calls"] = calls
    reasoning = item.get("reasoning") or item.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        message["thinking"] = reasoning
    if role == "tool":
        call_id = item.get("tool_call_id")
        name = item.get("name") or tool_names.get(call_id or "")
        if name:
            message["tool_name"] = name
        if isinstance(call_id, str) and call_id:
            message["tool_call_id"] = call_id
    return message


def _content(content: object, *, has_calls: bool) -> tuple[str, list[str]]:
    """Text and base64 images of a message's content: a string or a list of parts."""
    if isinstance(content, str):
        return content, []
    if content is None:
        if has_calls:
            return "", []
        raise BadRequest("invalid message content: null is allowed only with tool_calls")
    if not isinstance(content, list):
        raise BadRequest("invalid message format")
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            images.append(_image(part.get("image_url")))
        else:
            raise BadRequest("invalid message format")
    return "\n\n".join(texts), images


def _image(value: object) -> str:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise BadRequest("invalid message format")
    if url.startswith(("http://", "https://")):
        raise BadRequest(
            "image URLs are not currently supported, please use base64 encoded data instead"
        )
    match = _DATA_URI.fullmatch(url)
    if match is None:
        raise BadRequest("invalid image input")
    try:
        base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("invalid image input") from exc
    return match.group(1)


def _tool_calls_in(calls: object) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as a JSON string) as native ones (arguments an object)."""
    if not calls:
        return []
    if not isinstance(calls, list):
        raise BadRequest("invalid tool calls")
    out: list[dict[str, Any]] = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest("invalid tool calls")
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise BadRequest("invalid tool call arguments") from exc
        if not isinstance(arguments, dict):
            raise BadRequest("invalid tool call arguments")
        native: dict[str, Any] = {"function": {"name": function["name"], "arguments": arguments}}
        if isinstance(call.get("id"), str):
            native["id"] = call["id"]
        out.append(native)
    return out


def _tool_call_out(call: dict[str, Any]) -> Obj:
    function = call.get("function") or {}
    return {
        "id": call.get("id", ""),
        "type": "function",
        "function": {
            "name": function.get("name", ""),
            "arguments": json.dumps(function.get("arguments") or {}, ensure_ascii=False),
        },
    }


def chat_completion(record: Record, model: str) -> Obj:
    """A `chat.completion` object from the native non-streaming answer."""
    native = record.get("message") or {}
    calls = native.get("tool_calls") or []
    content = native.get("content") or ""
    message: Obj = {"role": "assistant", "content": content if content or not calls else None}
    if native.get("thinking"):
        message["reasoning"] = native["thinking"]
    if calls:
        message["tool_calls"] = [_tool_call_out(c) for c in calls]
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason(record.get("done_reason"), bool(calls)),
        "logprobs": None,
    }
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": now_s(),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
        "usage": usage(record),
    }


def _deltas(message: dict[str, Any]) -> list[Obj]:
    """The deltas one native message becomes: reasoning, then content, then tool calls.

    A tool call goes out as OpenAI streams one: a delta with its index, id, type and name
    (arguments ""), then a delta with the same index carrying the arguments JSON text.
    """
    out: list[Obj] = []
    if message.get("thinking"):
        out.append({"content": "", "reasoning": message["thinking"]})
    if message.get("content"):
        out.append({"content": message["content"]})
    for index, call in enumerate(message.get("tool_calls") or []):
        whole = _tool_call_out(call)
        head = {**whole, "index": index, "function": {**whole["function"], "arguments": ""}}
        out.append({"tool_calls": [head]})
        arguments = {"index": index, "function": {"arguments": whole["function"]["arguments"]}}
        out.append({"tool_calls": [arguments]})
    return out


async def chat_chunks(
    records: AsyncGenerator[Record, None], model: str, include_usage: bool
) -> AsyncGenerator[Obj, None]:
    """`chat.completion.chunk` objects: role first, deltas, a finish chunk, then usage if asked.

    Nothing is yielded before the first native record, so an error in loading the model
    still becomes an HTTP status rather than an event.
    """
    head: Obj = {
        "id": new_id("chatcmpl"),
        "object": "chat.completion.chunk",
        "created": now_s(),
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }
    tail: Obj = {"usage": None} if include_usage else {}

    def chunk(delta: Obj, finish: str | None = None) -> Obj:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**head, "choices": [choice], **tail}

    role_sent = False
    final: Record = {}
    try:
        async for record in records:
            for delta in _deltas(record.get("message") or {}):
                if not role_sent:
                    delta, role_sent = {"role": "assistant", "content": None, **delta}, True
                yield chunk(delta)
            if record.get("done"):
                final = record
    finally:
        await records.aclose()
    if not role_sent:
        yield chunk({"role": "assistant", "content": ""})
    calls = bool((final.get("message") or {}).get("tool_calls"))
    yield chunk({}, finish_reason(final.get("done_reason"), calls))
    if include_usage:
        yield {**head, "choices": [], "usage": usage(final)}
