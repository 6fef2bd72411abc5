"""POST /api/embed, the legacy POST /api/embeddings, and the embed service /v1 reuses."""

from __future__ import annotations

import math
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from supervisor.api.context import AppState, app_state, free_memory
from supervisor.errors import BadRequest
from supervisor.inference import Record, load_only, prepare, stream_replies
from supervisor.schemas import EmbeddingsRequest, EmbedRequest, parse_body
from worker import protocol as p


async def embed(request: Request) -> Response:
    req = await parse_body(request, EmbedRequest)
    return JSONResponse(await run_embed(app_state(request), req))


async def run_embed(st: AppState, req: EmbedRequest) -> Record:
    """Embed every input of `req`: Ollama's /api/embed record (vectors L2-normalized)."""
    inputs = _inputs(req.input)
    prep = prepare(st.catalog, st.settings, free_memory, req.model, req.options, req.keep_alive)
    started = time.monotonic()
    if not inputs:
        load_s = await load_only(st.runtime, prep)
        return {"model": req.model, "embeddings": [], "load_duration": int(load_s * 1e9)}
    truncate = req.truncate is not False
    vectors: list[list[float]] = []
    count = 0
    load_s = 0.0
    async for reply, loaded_s in stream_replies(
        st.runtime, prep, lambda rid: p.Embed(id=rid, inputs=inputs, truncate=truncate)
    ):
        if isinstance(reply, p.Embeddings):
            vectors, count, load_s = reply.vectors, reply.prompt_eval_count, loaded_s
    if req.dimensions is not None and req.dimensions > 0:
        vectors = [_cut(v, req.dimensions) for v in vectors]
    return {
        "model": req.model,
        "embeddings": vectors,
        "total_duration": int((time.monotonic() - started) * 1e9),
        "load_duration": int(load_s * 1e9),
        "prompt_eval_count": count,
    }


async def embeddings(request: Request) -> Response:
    req = await parse_body(request, EmbeddingsRequest)
    st = app_state(request)
    if not req.model.strip():
        raise BadRequest("model is required")
    prep = prepare(st.catalog, st.settings, free_memory, req.model, req.options, req.keep_alive)
    if not req.prompt:
        await load_only(st.runtime, prep)
        return JSONResponse({"embedding": []})
    vector: list[float] = []
    async for reply, _ in stream_replies(
        st.runtime, prep, lambda rid: p.Embed(id=rid, inputs=[req.prompt], truncate=True)
    ):
        if isinstance(reply, p.Embeddings):
            vector = reply.vectors[0]
    return JSONResponse({"embedding": vector})


def _inputs(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return list(value)
    raise BadRequest("invalid input type")


def _cut(vector: list[float], dims: int) -> list[float]:
    """Ollama: keep the first `dims` values and normalize again."""
    if dims >= len(vector):
        return vector
    head = vector[:dims]
    norm = max(math.sqrt(sum(x * x for x in head)), 1e-12)
    return [x / norm for x in head]
