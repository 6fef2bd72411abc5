"""POST /api/chat: the handler, and the chat service the OpenAI layer reuses."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from supervisor import ndjson
from supervisor.api.context import AppState, app_state, free_memory
from supervisor.catalog import LocalModel
from supervisor.errors import BadRequest
from supervisor.inference import (
    Prepared,
    Record,
    check_format,
    check_think,
    check_top_logprobs,
    created_at,
    load_only,
    prepare,
    stats,
    stream_replies,
)
from supervisor.runtime import Runtime
from supervisor.schemas import ChatRequest, parse_body
from worker import protocol as p

_ID_CHARS = string.ascii_lowercase + string.digits

Answer = Record | AsyncGenerator[Record, None]
"""One record to send at once (load, unload), or the stream of records of a generation."""


async def chat(request: Request) -> Response:
    req = await parse_body(request, ChatRequest)
    answer = await run_chat(app_state(request), req)
    if isinstance(answer, dict):
        return JSONResponse(answer)
    return await ndjson.respond(answer, stream=req.stream is not False, collect=collect)


async def run_chat(st: AppState, req: ChatRequest) -> Answer:
    """Validate `req` (every error raised here, before any byte), then answer it."""
    check_top_logprobs(req.top_logprobs)
    prep = prepare(
        st.catalog,
        st.settings,
        free_memory,
        req.model,
        req.options,
        req.keep_alive,
        missing_status=400,
    )
    head: Record = {
        "model": req.model,
        "created_at": created_at(),
        "message": {"role": "assistant", "content": ""},
    }
    if not req.messages and prep.keep_alive is not None and prep.keep_alive.seconds == 0:
        st.runtime.unload(prep.spec.path)
        return {**head, "done": True, "done_reason": "unload"}
    caps = prep.local.capabilities
    if "completion" not in caps:
        raise BadRequest(f'"{req.model}" does not support chat')
    if req.tools and "tools" not in caps:
        raise BadRequest(f"{prep.local.name} does not support tools")
    if any(m.images for m in req.messages) and "vision" not in caps:
        raise BadRequest(f"{prep.local.name} does not support vision")
    think = check_think(prep.local, req.think)
    fmt = check_format(req.format)
    if not req.messages:
        load_s = await load_only(st.runtime, prep)
        return {**head, "done": True, "done_reason": "load", "load_duration": int(load_s * 1e9)}
    messages = history(prep.local, [m.wire() for m in req.messages])

    def build(request_id: int) -> p.Generate:
        return p.Generate(
            id=request_id,
            messages=messages,
            template=prep.local.template or "",
            tools=req.tools,
            think=think,
            format=fmt,
            options=prep.options,
            truncate=req.truncate is not False,
            chat=True,
        )

    return _records(st.runtime, prep, build, req.model)


def history(
    local: LocalModel, request_messages: list[dict[str, object]]
) -> list[dict[str, object]]:
    """The model's MESSAGE history, then the request's; the model SYSTEM first unless overridden."""
    out: list[dict[str, object]] = [dict(m) for m in local.messages]
    if local.system and (not request_messages or request_messages[0].get("role") != "system"):
        out.insert(0, {"role": "system", "content": local.system})
    return out + request_messages


def tool_calls_with_ids(calls: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for index, call in enumerate(calls):
        function = dict(call.get("function") or {})  # type: ignore[call-overload]
        function.setdefault("index", index)
        call_id = call.get("id") or "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(8))
        out.append({"id": call_id, "function": function})
    return out


async def _records(
    runtime: Runtime, prep: Prepared, build: Callable[[int], p.Generate], model: str
) -> AsyncGenerator[Record, None]:
    started = time.monotonic()
    async for reply, load_s in stream_replies(runtime, prep, build):
        if isinstance(reply, p.Chunk):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.thinking:
                message["thinking"] = reply.thinking
            yield {"model": model, "created_at": created_at(), "message": message, "done": False}
        elif isinstance(reply, p.Done):
            final_message: dict[str, Any] = {"role": "assistant", "content": ""}
            if reply.tool_calls:
                final_message["tool_calls"] = tool_calls_with_ids(reply.tool_calls)
            final: Record = {
                "model": model,
                "created_at": created_at(),
                "message": final_message,
                "done": True,
                "done_reason": reply.done_reason,
            }
            final.update(stats(reply, started, load_s))
            yield final


def collect(records: list[Record]) -> Record:
    """The non-streaming answer: the final record with all content and thinking joined."""
    final = dict(records[-1])
    message = dict(final["message"])
    message["content"] = "".join(r["message"].get("content", "") for r in records)
    thinking = "".join(r["message"].get("thinking", "") for r in records)
    if thinking:
        message["thinking"] = thinking
    final["message"] = message
    return final
