"""Server-sent events for the OpenAI routes, with the same before/after-first-byte error rule.

The caller hands over an async generator of JSON objects, each sent as one `data:` event.
The first object is awaited before the response starts, so an error raised there becomes
a proper HTTP status and body. An error raised later becomes one last `data:` event
carrying the error object under the 200 already sent (the OpenAI SDKs raise on it). A
stream that ends normally is closed with `data: [DONE]`. When the client goes away, the
generator's `aclose()` runs its `finally` blocks, which is where the work is cancelled.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from supervisor.errors import ApiError

EVENT_STREAM = "text/event-stream"
DONE = b"data: [DONE]\n\n"
Obj = dict[str, Any]
HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
"""Proxies (nginx) must not buffer the stream; nothing may cache it."""


def event(obj: Obj) -> bytes:
    """One `data:` event: compact JSON on one line, then a blank line."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def respond(
    events: AsyncGenerator[Obj, None], *, error_body: Callable[[ApiError], Obj]
) -> Response:
    """Stream `events` as SSE; `error_body` renders an ApiError for the status or the last event."""
    try:
        first = await anext(events)
    except StopAsyncIteration:
        return StreamingResponse(_just_done(), media_type=EVENT_STREAM, headers=HEADERS)
    except ApiError as exc:
        await events.aclose()
        return JSONResponse(error_body(exc), status_code=exc.status)
    return StreamingResponse(
        _events(first, events, error_body), media_type=EVENT_STREAM, headers=HEADERS
    )


async def _just_done() -> AsyncIterator[bytes]:
    yield DONE


async def _events(
    first: Obj, events: AsyncGenerator[Obj, None], error_body: Callable[[ApiError], Obj]
) -> AsyncIterator[bytes]:
    try:
        yield event(first)
        async for item in events:
            yield event(item)
    except ApiError as exc:
        yield event(error_body(exc))
        return
    finally:
        await events.aclose()
    yield DONE
