"""GET /api/tags, POST /api/show, POST /api/copy, DELETE /api/delete; store lookups /v1 reuses."""

from __future__ import annotations

from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from registry.errors import InvalidName
from registry.errors import ModelNotFound as StoreModelNotFound
from registry.gguf import GGUFInfo, read_gguf
from registry.modelfile import render_modelfile
from registry.names import ModelName
from registry.options import render_parameters
from registry.store import StoredModel
from supervisor.api.context import app_state
from supervisor.catalog import Catalog, LocalModel
from supervisor.errors import BadRequest, ModelNotFound
from supervisor.schemas import CopyRequest, DeleteRequest, ShowRequest, parse_body, timestamp


def _catalog(request: Request) -> Catalog:
    catalog = app_state(request).catalog
    return catalog


async def tags(request: Request) -> Response:
    catalog = _catalog(request)
    entries = await run_in_threadpool(_list_entries, catalog)
    return JSONResponse({"models": entries})


def stored_models(catalog: Catalog) -> list[StoredModel]:
    """The models in the store, most recently modified first (the order of /api/tags)."""
    return sorted(catalog.store.list_models(), key=lambda s: s.modified_at, reverse=True)


def find_model(catalog: Catalog, text: str) -> StoredModel:
    """The stored model `text` names; 404 `model 'x:latest' not found` (the display form)."""
    name = catalog.parse_name(text)
    stored = catalog.find(name)
    if stored is None:
        raise ModelNotFound(f"model '{name.display_shortest()}' not found")
    return stored


def _list_entries(catalog: Catalog) -> list[dict[str, Any]]:
    out = []
    for s in stored_models(catalog):
        local = catalog.load(s)
        name = s.name.display_shortest()
        out.append(
            {
                "name": name,
                "model": name,
                "modified_at": timestamp(s.modified_at),
                "size": s.manifest.total_size(),
                "digest": s.digest_hex,
                "details": local.details(),
            }
        )
    return out


async def show(request: Request) -> Response:
    req = await parse_body(request, ShowRequest)
    text = req.model or req.name
    if not text:
        raise BadRequest("model is required")
    catalog = _catalog(request)
    stored = await run_in_threadpool(find_model, catalog, text)
    local = await run_in_threadpool(catalog.load, stored)
    info: GGUFInfo | None = local.gguf
    if req.verbose and local.model_path is not None:
        info = await run_in_threadpool(partial(read_gguf, local.model_path, keep_arrays=True))
    return JSONResponse(_show_body(local, req, info))


def _show_body(local: LocalModel, req: ShowRequest, info: GGUFInfo | None) -> dict[str, Any]:
    params = dict(local.params)
    params.update(req.options or {})
    system = req.system if req.system is not None else local.system
    body: dict[str, Any] = {
        "modelfile": render_modelfile(
            model_from=str(local.model_path or local.parent),
            short_name=local.display,
            adapters=[str(p) for p in local.adapters],
            projectors=[str(p) for p in local.projectors],
            template=local.template,
            system=system,
            parameters=params,
            licenses=local.licenses,
            messages=local.messages,
        ),
        "details": local.details(),
        "model_info": info.model_info(verbose=req.verbose) if info else {},
        "capabilities": local.capabilities,
        "modified_at": timestamp(local.stored.modified_at),
    }
    if local.licenses:
        body["license"] = "\n".join(local.licenses)
    if params:
        body["parameters"] = render_parameters(params)
    template = local.template or (info.chat_template if info else None)
    if template:
        body["template"] = template
    if system:
        body["system"] = system
    if local.messages:
        body["messages"] = local.messages
    if info is not None:
        body["tensors"] = [
            {"name": t.name, "type": t.type_name, "shape": list(t.shape)} for t in info.tensors
        ]
    return body


async def copy(request: Request) -> Response:
    req = await parse_body(request, CopyRequest)
    try:
        src = ModelName.parse(req.source)
    except InvalidName as exc:
        raise BadRequest(f'source "{req.source}" is invalid') from exc
    try:
        dst = ModelName.parse(req.destination)
    except InvalidName as exc:
        raise BadRequest(f'destination "{req.destination}" is invalid') from exc
    store = _catalog(request).store
    try:
        await run_in_threadpool(store.copy, src, dst)
    except StoreModelNotFound as exc:
        raise ModelNotFound(f'model "{req.source}" not found') from exc
    return Response(status_code=200)


async def delete(request: Request) -> Response:
    req = await parse_body(request, DeleteRequest)
    text = req.model or req.name
    try:
        name = ModelName.parse(text)
    except InvalidName as exc:
        raise BadRequest(f'name "{text}" is invalid') from exc
    store = _catalog(request).store
    try:
        await run_in_threadpool(store.delete, name)
    except StoreModelNotFound as exc:
        raise ModelNotFound(f"model '{text}' not found") from exc
    return Response(status_code=200)
