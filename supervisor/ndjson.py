"""NDJSON streaming with Ollama's rule: an error before the first byte is a status, after it a line.

The caller hands over an async iterator of JSON objects. The first object is awaited
before the response starts, so an error raised there becomes a proper HTTP status. An
error raised later becomes one last `{"error": ...}` line under the 200 already sent.
When the client goes away, Starlette cancels the response task and the iterator's
`aclose()` runs its `finally` blocks, which is where handlers cancel their work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from supervisor.errors import ApiError, error_response

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
Obj = dict[str, Any]


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Obj) -> bytes:
    """One NDJSON line (one encoder for all: json.dumps with options builds one per call)."""
    return (_ENCODER.encode(obj) + "\n").encode()


async def respond(
    items: AsyncGenerator[Obj, None],
    *,
    stream: bool,
    collect: Callable[[list[Obj]], Obj] | None = None,
) -> Response:
    """Stream `items` as NDJSON, or answer once with `collect(items)` (default: the last one)."""
    if not stream:
        return await _respond_once(items, collect)
    try:
        first = await anext(items)
    except StopAsyncIteration:
        return Response(b"", media_type=NDJSON)
    except ApiError as exc:
        await items.aclose()
        return error_response(exc)
    return StreamingResponse(
        _lines(first, items),
        media_type=NDJSON,
        headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"},
    )


async def _lines(first: Obj, items: AsyncGenerator[Obj, None]) -> AsyncIterator[bytes]:
    try:
        yield dumps(first)
        async for item in items:
            yield dumps(item)
    except ApiError as exc:
        yield dumps({"error": exc.message})
    finally:
        await items.aclose()


async def _respond_once(
    items: AsyncGenerator[Obj, None], collect: Callable[[list[Obj]], Obj] | None
) -> Response:
    gathered: list[Obj] = []
    try:
        async for item in items:
            if "error" in item and len(item) == 1:
                raise ApiError(str(item["error"]))
            gathered.append(item)
    except ApiError as exc:
        return error_response(exc)
    finally:
        await items.aclose()
    if not gathered:
        return JSONResponse({})
    body = collect(gathered) if collect else gathered[-1]
    return JSONResponse(body)
