"""GET /api/ps: the loaded models, most time left first."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from supervisor.api.context import app_state
from supervisor.schemas import timestamp

FOREVER_S = 292 * 365 * 24 * 3600  # Go's max Duration, as Ollama reports "forever"


async def ps(request: Request) -> Response:
    st = app_state(request)
    now_mono, now_wall = time.monotonic(), time.time()
    entries = []
    for model, handle in st.runtime.snapshot():
        if model.expires_at is not None:
            left = model.expires_at - now_mono
        else:
            left = model.keep_alive.seconds
        left = min(left, FOREVER_S)
        stored = st.catalog.find(st.catalog.parse_name(model.spec.name))
        details = st.catalog.load(stored).details() if stored else {}
        ctx = dict(model.spec.runner_options).get("num_ctx", 0)
        if handle is not None and handle.ready is not None:
            ctx = handle.ready.n_ctx
        entries.append(
            (
                left,
                {
                    "name": model.spec.name,
                    "model": model.spec.name,
                    "size": model.memory_bytes,
                    "digest": model.spec.digest,
                    "details": details,
                    "expires_at": timestamp(now_wall + left),
                    "size_vram": 0,
                    "context_length": ctx,
                },
            )
        )
    entries.sort(key=lambda e: e[0], reverse=True)
    return JSONResponse({"models": [e for _, e in entries]})
