"""The /v1 routes: OpenAI requests translated onto the native services, and their answers back.

Nothing here runs a model or reads the store on its own: chat, completions and embeddings
call the same `run_chat` / `run_generate` / `run_embed` services as /api/chat,
/api/generate and /api/embed, and the model routes the same lookups as /api/tags and
/api/show. Every error is rendered as OpenAI's error object with the native status, so the
SDKs raise their typed exceptions (404 NotFoundError, 400 BadRequestError, ...).
"""

from __future__ import annotations

import base64
import functools
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from registry.store import StoredModel
from supervisor import sse
from supervisor.api import chat, generate
from supervisor.api.context import app_state
from supervisor.api.embed import run_embed
from supervisor.api.models import find_model, stored_models
from supervisor.api.openai_chat import chat_chunks, chat_completion, chat_request
from supervisor.api.openai_wire import (
    FINGERPRINT,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Obj,
    error_body,
    finish_reason,
    new_id,
    now_s,
    usage,
)
from supervisor.errors import ApiError, BadRequest
from supervisor.inference import Record
from supervisor.schemas import EmbedRequest, GenerateRequest, parse_body, validate

Handler = Callable[[Request], Awaitable[Response]]
_ENCODINGS = ("float", "base64")


def openai_errors(handler: Handler) -> Handler:
    """Render an ApiError raised by `handler` as OpenAI's error object, status kept."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return JSONResponse(error_body(exc), status_code=exc.status)

    return wrapped


async def _stream_of(answer: Record | AsyncGenerator[Record, None]) -> AsyncGenerator[Record, None]:
    """A native answer as a stream: a single record (load, unload) is a stream of one."""
    if isinstance(answer, dict):
        yield answer
        return
    try:
        async for record in answer:
            yield record
    finally:
        await answer.aclose()


async def _gathered(records: AsyncGenerator[Record, None]) -> list[Record]:
    try:
        return [record async for record in records]
    finally:
        await records.aclose()


@openai_errors
async def chat_completions(request: Request) -> Response:
    body = await parse_body(request, ChatCompletionRequest)
    answer = await chat.run_chat(app_state(request), chat_request(body))
    records = _stream_of(answer)
    if body.stream:
        chunks = chat_chunks(records, body.model, body.include_usage)
        return await sse.respond(chunks, error_body=error_body)
    return JSONResponse(chat_completion(chat.collect(await _gathered(records)), body.model))


@openai_errors
async def completions(request: Request) -> Response:
    body = await parse_body(request, CompletionRequest)
    answer = await generate.run_generate(app_state(request), _generate_request(body))
    records = _stream_of(answer)
    if body.stream:
        chunks = _completion_chunks(records, body.model, body.include_usage)
        return await sse.respond(chunks, error_body=error_body)
    record = generate.collect(await _gathered(records))
    return JSONResponse(_completion(new_id("cmpl"), body.model, record, whole=True))


def _generate_request(body: CompletionRequest) -> GenerateRequest:
    prompt = body.prompt
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("invalid prompt: expected one string")
    data: dict[str, Any] = {
        "model": body.model,
        "prompt": prompt,
        "suffix": body.suffix or "",
        "stream": bool(body.stream),
        "options": body.native_options(),
        "keep_alive": body.keep_alive,
    }
    return validate(GenerateRequest, data)


def _completion(cid: str, model: str, record: Record, *, whole: bool) -> Obj:
    """A `text_completion`: the whole answer, or one streamed piece of it."""
    done = bool(record.get("done"))
    choice = {
        "text": record.get("response", ""),
        "index": 0,
        "finish_reason": finish_reason(record.get("done_reason")) if done else None,
        "logprobs": None,
    }
    out: Obj = {
        "id": cid,
        "object": "text_completion",
        "created": now_s(),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
    }
    if whole:
        out["usage"] = usage(record)
    return out


async def _completion_chunks(
    records: AsyncGenerator[Record, None], model: str, include_usage: bool
) -> AsyncGenerator[Obj, None]:
    """One chunk per native record; the last carries finish_reason, then usage if asked."""
    cid = new_id("cmpl")
    tail: Obj = {"usage": None} if include_usage else {}
    final: Record = {}
    try:
        async for record in records:
            yield {**_completion(cid, model, record, whole=False), **tail}
            if record.get("done"):
                final = record
    finally:
        await records.aclose()
    if include_usage:
        head = _completion(cid, model, final, whole=False)
        yield {**head, "choices": [], "usage": usage(final)}


@openai_errors
async def embeddings(request: Request) -> Response:
    body = await parse_body(request, EmbeddingRequest)
    encoding = body.encoding_format or "float"
    if encoding not in _ENCODINGS:
        raise BadRequest(
            f"Invalid value for 'encoding_format' = {encoding}. "
            "Supported values: ['float', 'base64']."
        )
    inputs = [""] if body.input == "" else body.input
    if not inputs or not (
        isinstance(inputs, str)
        or (isinstance(inputs, list) and all(isinstance(x, str) for x in inputs))
    ):
        raise BadRequest("invalid input")
    native = EmbedRequest(
        model=body.model,
        input=inputs,
        dimensions=body.dimensions,
        options=body.options,
        keep_alive=body.keep_alive,
    )
    record = await run_embed(app_state(request), native)
    data = [
        {"object": "embedding", "embedding": _encoded(vector, encoding), "index": index}
        for index, vector in enumerate(record["embeddings"])
    ]
    count = int(record.get("prompt_eval_count") or 0)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": body.model,
            "usage": {"prompt_tokens": count, "total_tokens": count},
        }
    )


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _model_object(stored: StoredModel, model_id: str | None = None) -> Obj:
    return {
        "id": model_id or stored.name.display_shortest(),
        "object": "model",
        "created": int(stored.modified_at),
        "owned_by": stored.name.namespace,
    }


@openai_errors
async def list_models(request: Request) -> Response:
    stored = await run_in_threadpool(stored_models, app_state(request).catalog)
    # Ollama sends `data: null` for an empty store; the SDKs iterate `data`, so [] it is.
    return JSONResponse({"object": "list", "data": [_model_object(s) for s in stored]})


@openai_errors
async def retrieve_model(request: Request) -> Response:
    text = request.path_params["model"]
    stored = await run_in_threadpool(find_model, app_state(request).catalog, text)
    return JSONResponse(_model_object(stored, text))
