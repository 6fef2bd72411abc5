"""POST /api/generate: the handler, and the generate service the OpenAI layer reuses."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from supervisor import ndjson
from supervisor.api.context import AppState, app_state, free_memory
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
from supervisor.schemas import GenerateRequest, parse_body
from worker import protocol as p

Answer = Record | AsyncGenerator[Record, None]
"""One record to send at once (load, unload), or the stream of records of a generation."""


async def generate(request: Request) -> Response:
    req = await parse_body(request, GenerateRequest)
    answer = await run_generate(app_state(request), req)
    if isinstance(answer, dict):
        return JSONResponse(answer)
    return await ndjson.respond(answer, stream=req.stream is not False, collect=collect)


async def run_generate(st: AppState, req: GenerateRequest) -> Answer:
    """Validate `req` (every error raised here, before any byte), then answer it."""
    check_top_logprobs(req.top_logprobs)
    prep = prepare(st.catalog, st.settings, free_memory, req.model, req.options, req.keep_alive)
    head: Record = {"model": req.model, "created_at": created_at(), "response": ""}
    if req.prompt == "" and prep.keep_alive is not None and prep.keep_alive.seconds == 0:
        st.runtime.unload(prep.spec.path)
        return {**head, "done": True, "done_reason": "unload"}
    if req.raw and (req.template or req.system or req.context):
        raise BadRequest("raw mode does not support template, system, or context")
    caps = prep.local.capabilities
    if "completion" not in caps:
        raise BadRequest(f'"{req.model}" does not support generate')
    if req.suffix and "insert" not in caps:
        raise BadRequest(f"{prep.local.name} does not support insert")
    if req.images and "vision" not in caps:
        raise BadRequest(f"{prep.local.name} does not support vision")
    think = check_think(prep.local, req.think)
    fmt = check_format(req.format)
    if req.prompt == "" and not req.suffix:
        load_s = await load_only(st.runtime, prep)
        return {**head, "done": True, "done_reason": "load", "load_duration": int(load_s * 1e9)}

    def build(request_id: int) -> p.Generate:
        return p.Generate(
            id=request_id,
            messages=[] if req.context else list(prep.local.messages),
            prompt=req.prompt,
            raw=req.raw,
            suffix=req.suffix,
            template=req.template or prep.local.template or "",
            system=req.system if req.system is not None else (prep.local.system or ""),
            think=think,
            format=fmt,
            options=prep.options,
            truncate=req.truncate is not False,
            chat=False,
        )

    return _records(st.runtime, prep, build, req.model, req.raw)


async def _records(
    runtime: Runtime, prep: Prepared, build: Callable[[int], p.Generate], model: str, raw: bool
) -> AsyncGenerator[Record, None]:
    started = time.monotonic()
    async for reply, load_s in stream_replies(runtime, prep, build):
        if isinstance(reply, p.Chunk):
            chunk: Record = {
                "model": model,
                "created_at": created_at(),
                "response": reply.text,
                "done": False,
            }
            if reply.thinking:
                chunk["thinking"] = reply.thinking
            yield chunk
        elif isinstance(reply, p.Done):
            final: Record = {
                "model": model,
                "created_at": created_at(),
                "response": "",
                "done": True,
                "done_reason": reply.done_reason,
            }
            if not raw:
                final["context"] = reply.context
            final.update(stats(reply, started, load_s))
            yield final


def collect(records: list[Record]) -> Record:
    """The non-streaming answer: the final record with all text joined."""
    final = dict(records[-1])
    final["response"] = "".join(r.get("response", "") for r in records)
    thinking = "".join(r.get("thinking", "") for r in records)
    if thinking:
        final["thinking"] = thinking
    return final
