"""The Starlette app: the one route table, the error handlers, and the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import psutil
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from registry.store import ModelStore
from supervisor.api import (
    blobs,
    chat,
    create,
    embed,
    generate,
    models,
    openai,
    ps,
    system,
    transfer,
)
from supervisor.api.context import AppState
from supervisor.catalog import Catalog
from supervisor.config import Settings
from supervisor.errors import ApiError, handle_api_error
from supervisor.guard import RequestGuard
from supervisor.runtime import Runtime

log = logging.getLogger(__name__)

RESERVE_BYTES = 1 << 30


def routes() -> list[Route]:
    return [
        Route("/", system.root, methods=["GET", "HEAD"]),
        Route("/api/version", system.api_version, methods=["GET", "HEAD"]),
        Route("/api/generate", generate.generate, methods=["POST"]),
        Route("/api/chat", chat.chat, methods=["POST"]),
        Route("/api/embed", embed.embed, methods=["POST"]),
        Route("/api/embeddings", embed.embeddings, methods=["POST"]),
        Route("/api/tags", models.tags, methods=["GET", "HEAD"]),
        Route("/api/show", models.show, methods=["POST"]),
        Route("/api/create", create.create, methods=["POST"]),
        Route("/api/blobs/{digest}", blobs.head_blob, methods=["HEAD"]),
        Route("/api/blobs/{digest}", blobs.upload_blob, methods=["POST"]),
        Route("/api/copy", models.copy, methods=["POST"]),
        Route("/api/delete", models.delete, methods=["DELETE"]),
        Route("/api/pull", transfer.pull, methods=["POST"]),
        Route("/api/push", transfer.push, methods=["POST"]),
        Route("/api/ps", ps.ps, methods=["GET"]),
        Route("/v1/chat/completions", openai.chat_completions, methods=["POST"]),
        Route("/v1/completions", openai.completions, methods=["POST"]),
        Route("/v1/embeddings", openai.embeddings, methods=["POST"]),
        Route("/v1/models", openai.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", openai.retrieve_model, methods=["GET"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    # Ollama (gin) answers unknown routes and methods with these plain-text bodies.
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return PlainTextResponse("404 page not found", status_code=404)
    if exc.status_code == 405:
        return PlainTextResponse("405 method not allowed", status_code=405)
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code)


def create_app(settings: Settings) -> Starlette:
    """Build the app around a store rooted at `settings.models_dir`."""
    store = ModelStore(settings.models_dir)
    catalog = Catalog(store)
    # The budget models may use: all memory but a reserve for the OS and the server.
    total = psutil.virtual_memory().total
    runtime = Runtime(settings, memory_budget_bytes=max(total - RESERVE_BYTES, total // 2))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store.fix_blob_names()
        if not settings.noprune:
            pruned = store.prune()
            if pruned:
                log.info("pruned unused blobs count=%d", len(pruned))
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    guard = Middleware(RequestGuard, bind_host=settings.host.host, origins=settings.origins)
    app = Starlette(
        routes=routes(),
        middleware=[guard],
        exception_handlers={ApiError: handle_api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.corral = AppState(settings, catalog, runtime)
    return app
