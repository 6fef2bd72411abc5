"""POST /api/create; a `from` model that is not in the store is pulled first (as Ollama does)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from supervisor import ndjson
from supervisor.api.context import app_state
from supervisor.api.transfer import pull_records
from supervisor.catalog import Catalog
from supervisor.create import create_model
from supervisor.schemas import CreateRequest, parse_body


async def create(request: Request) -> Response:
    req = await parse_body(request, CreateRequest)
    catalog = app_state(request).catalog
    stream = req.stream is not False
    if req.from_ and not req.modelfile:
        base = catalog.parse_name(req.from_)
        if await run_in_threadpool(catalog.find, base) is None:
            catalog.parse_name(req.model or req.name)  # a bad target name fails before the pull
            # Ollama has no `insecure` on create; a name spelled http:// is that consent here.
            insecure = base.scheme == "http"
            pulled = await pull_records(request, req.from_, insecure=insecure)
            return await ndjson.respond(_then_create(pulled, catalog, req), stream=stream)
    progress = await create_model(catalog, req)
    return await ndjson.respond(progress, stream=stream)


async def _then_create(
    pulled: AsyncGenerator[dict[str, Any], None], catalog: Catalog, req: CreateRequest
) -> AsyncGenerator[dict[str, Any], None]:
    async for item in pulled:
        if item.get("status") != "success":
            yield item
    async for item in await create_model(catalog, req):
        yield item
