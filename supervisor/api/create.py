"""POST /api/create."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from supervisor import ndjson
from supervisor.catalog import Catalog
from supervisor.create import create_model
from supervisor.schemas import CreateRequest, parse_body


async def create(request: Request) -> Response:
    req = await parse_body(request, CreateRequest)
    catalog: Catalog = request.app.state.catalog
    progress = await create_model(catalog, req)
    return await ndjson.respond(progress, stream=req.stream is not False)
