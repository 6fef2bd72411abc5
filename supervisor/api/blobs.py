"""HEAD|POST /api/blobs/:digest: check for and upload a blob, verified against its digest."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from registry.digest import parse_digest
from registry.errors import DigestMismatch, InvalidDigest, RegistryError
from registry.store import ModelStore
from supervisor.api.context import app_state
from supervisor.errors import ApiError, BadRequest


def _digest(request: Request) -> str:
    try:
        return parse_digest(request.path_params["digest"])
    except InvalidDigest as exc:
        raise BadRequest("invalid digest format") from exc


async def head_blob(request: Request) -> Response:
    digest = _digest(request)
    store: ModelStore = app_state(request).catalog.store
    if await run_in_threadpool(store.has_blob, digest):
        return Response(status_code=200)
    return JSONResponse({"error": f'blob "{digest}" not found'}, status_code=404)


async def upload_blob(request: Request) -> Response:
    digest = _digest(request)
    store: ModelStore = app_state(request).catalog.store
    if await run_in_threadpool(store.has_blob, digest):
        # Ollama answers without storing it again; the body is still drained, or the
        # keep-alive connection would carry it into the client's next request.
        async for _ in request.stream():
            pass
        return Response(status_code=200)
    with store.blob_writer() as writer:
        async for chunk in request.stream():
            if chunk:
                writer.write(chunk)
        try:
            await run_in_threadpool(writer.commit, digest)
        except DigestMismatch as exc:
            raise BadRequest(str(exc)) from exc
        except RegistryError as exc:
            raise ApiError(f"could not store blob: {exc}") from exc
    return Response(status_code=201)
