"""POST /api/create's work: turn a create request into layers, a config blob and a manifest.

Validation happens before the first progress line, so a bad request is a 4xx status;
from then on, progress is Ollama's status lines and a failure is a final error line.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncGenerator
from typing import Any

from starlette.concurrency import run_in_threadpool

from registry import manifest as mf
from registry.digest import parse_digest, sha256_digest
from registry.errors import GGUFError, InvalidDigest, InvalidOption, ModelfileError
from registry.gguf import GGUFInfo, format_parameter_count, read_gguf
from registry.manifest import Layer, Manifest, go_json_bytes
from registry.modelfile import parse_modelfile, to_create_spec
from registry.names import ModelName
from registry.options import DEPRECATED, OPTION_KINDS, validate_options
from supervisor.catalog import Catalog
from supervisor.errors import BadRequest, ModelNotFound
from supervisor.schemas import CreateRequest
from worker.gotemplate import GoTemplate, TemplateError

Progress = dict[str, Any]
_REPLACEABLE = {
    mf.LAYER_TEMPLATE,
    mf.LAYER_PROMPT,
    mf.LAYER_SYSTEM,
    mf.LAYER_PARAMS,
    mf.LAYER_MESSAGES,
}


async def create_model(catalog: Catalog, req: CreateRequest) -> AsyncGenerator[Progress, None]:
    """Validate `req` (raising BadRequest / ModelNotFound), then yield progress lines."""
    name = catalog.parse_name(req.model or req.name)
    if req.modelfile and not (req.from_ or req.files):
        req = _from_modelfile(req)
    if req.quantize:
        raise BadRequest("quantization is not supported by corral yet")
    base_layers, base_params, gguf = await _base(catalog, req)
    adapters = await _adapter_layers(catalog, req.adapters or {})
    params = _merge_params(base_params, req.parameters)
    if req.template is not None:
        try:
            GoTemplate.parse(req.template)
        except TemplateError as exc:
            raise BadRequest(f"template error: {exc}") from exc
    return _write(catalog, name, req, base_layers + adapters, params, gguf)


async def _write(
    catalog: Catalog,
    name: ModelName,
    req: CreateRequest,
    layers: list[Layer],
    params: dict[str, Any] | None,
    gguf: GGUFInfo | None,
) -> AsyncGenerator[Progress, None]:
    store = catalog.store
    if req.files and not req.from_:
        yield {"status": "parsing GGUF"}
    for layer in layers:
        yield {"status": f"using existing layer {layer.digest}"}
    extra: list[tuple[str, bytes]] = []
    if req.template is not None:
        extra.append((mf.LAYER_TEMPLATE, req.template.encode()))
    if req.system is not None:
        extra.append((mf.LAYER_SYSTEM, req.system.encode()))
    if params is not None:
        extra.append((mf.LAYER_PARAMS, go_json_bytes(params)))
    if req.messages is not None:
        extra.append((mf.LAYER_MESSAGES, go_json_bytes(req.messages)))
    licenses = [req.license] if isinstance(req.license, str) else (req.license or [])
    extra += [(mf.LAYER_LICENSE, text.encode()) for text in licenses]
    replaced = {media for media, _ in extra} & _REPLACEABLE
    if mf.LAYER_TEMPLATE in replaced:
        replaced.add(mf.LAYER_PROMPT)
    layers = [x for x in layers if x.media_type not in replaced]
    for media, data in extra:
        existed = store.has_blob(sha256_digest(data))
        digest, size = await run_in_threadpool(store.write_blob_bytes, data)
        verb = "using existing" if existed else "creating new"
        yield {"status": f"{verb} layer {digest}"}
        layers.append(Layer(media, digest, size))
    config_bytes = go_json_bytes(_config(gguf))
    cdigest, csize = await run_in_threadpool(store.write_blob_bytes, config_bytes)
    manifest = Manifest(config=Layer(mf.MEDIA_TYPE_CONFIG, cdigest, csize), layers=tuple(layers))
    yield {"status": "writing manifest"}
    await run_in_threadpool(store.write_manifest, name, manifest.to_bytes())
    yield {"status": "success"}


async def _base(
    catalog: Catalog, req: CreateRequest
) -> tuple[list[Layer], dict[str, Any], GGUFInfo | None]:
    """The layers the new model starts from: another model's, or uploaded files."""
    if req.from_:
        base_name = catalog.parse_name(req.from_)
        stored = await run_in_threadpool(catalog.find, base_name)
        if stored is None:
            raise ModelNotFound(f"model '{req.from_}' not found, try pulling it first")
        local = await run_in_threadpool(catalog.load, stored)
        short = stored.name.display_shortest()
        layers = []
        for layer in stored.manifest.layers:
            if layer.media_type in (mf.LAYER_MODEL, mf.LAYER_ADAPTER, mf.LAYER_PROJECTOR):
                layer = Layer(
                    layer.media_type, layer.digest, layer.size, layer.from_ or short, layer.name
                )
            layers.append(layer)
        return layers, dict(local.params), local.gguf
    if req.files:
        return await _file_layers(catalog, req.files)
    raise BadRequest("neither 'from' or 'files' was specified")


async def _file_layers(
    catalog: Catalog, files: dict[str, str]
) -> tuple[list[Layer], dict[str, Any], GGUFInfo | None]:
    layers: list[Layer] = []
    model_info: GGUFInfo | None = None
    for filename, raw_digest in files.items():
        digest, info = await _checked_gguf(catalog, filename, raw_digest)
        kind = (info.general_type or "").lower()
        if kind == "adapter":
            media = mf.LAYER_ADAPTER
        elif kind in ("mmproj", "projector") or info.architecture == "clip":
            media = mf.LAYER_PROJECTOR
        else:
            media = mf.LAYER_MODEL
            model_info = info
        layers.append(Layer(media, digest, catalog.store.blob_size(digest)))
    if not any(x.media_type == mf.LAYER_MODEL for x in layers):
        raise BadRequest("no model weights were supplied (only adapters or projectors)")
    return layers, {}, model_info


async def _adapter_layers(catalog: Catalog, adapters: dict[str, str]) -> list[Layer]:
    if len(adapters) > 1:
        raise BadRequest("only one adapter is currently supported")
    out = []
    for filename, raw_digest in adapters.items():
        digest, _ = await _checked_gguf(catalog, filename, raw_digest)
        out.append(Layer(mf.LAYER_ADAPTER, digest, catalog.store.blob_size(digest)))
    return out


async def _checked_gguf(catalog: Catalog, filename: str, raw_digest: str) -> tuple[str, GGUFInfo]:
    clean = posixpath.normpath(filename.replace("\\", "/"))
    if not filename or filename.startswith(("/", "\\")) or clean.startswith(".."):
        raise BadRequest("file path must be relative")
    try:
        digest = parse_digest(raw_digest)
    except InvalidDigest as exc:
        raise BadRequest("invalid digest format") from exc
    store = catalog.store
    if not store.has_blob(digest):
        raise BadRequest(f'blob "{digest}" not found; upload it with POST /api/blobs first')
    try:
        info = await run_in_threadpool(read_gguf, store.blob_path(digest))
    except GGUFError as exc:
        raise BadRequest(f"supplied file was not in GGUF format: {filename}: {exc}") from exc
    return digest, info


def _merge_params(base: dict[str, Any], new: dict[str, Any] | None) -> dict[str, Any] | None:
    if new is None:
        return None
    unknown = sorted(set(new) - set(OPTION_KINDS) - DEPRECATED)
    if unknown:
        raise BadRequest(f"unknown parameter '{unknown[0]}'")
    try:
        checked = validate_options(new)
    except InvalidOption as exc:
        raise BadRequest(str(exc)) from exc
    merged = dict(base)
    merged.update(checked)  # the request wins, field by field (Ollama)
    return merged


def _config(info: GGUFInfo | None) -> dict[str, Any]:
    arch = info.architecture if info else ""
    return {
        "model_format": "gguf",
        "model_family": arch,
        "model_families": [arch] if arch else None,
        "model_type": format_parameter_count(info.parameter_count) if info else "",
        "file_type": info.file_type if info else "",
        "architecture": "amd64",
        "os": "linux",
    }


def _from_modelfile(req: CreateRequest) -> CreateRequest:
    """Legacy `{"modelfile": text}` form: FROM must name a model or an uploaded blob digest."""
    try:
        spec = to_create_spec(parse_modelfile(req.modelfile))
    except (ModelfileError, InvalidOption) as exc:
        raise BadRequest(str(exc)) from exc
    update: dict[str, Any] = {}
    for ref in spec.froms:
        ref = ref.removeprefix("@")
        try:
            update.setdefault("files", {})[f"model-{len(update.get('files', {}))}.gguf"] = (
                parse_digest(ref)
            )
        except InvalidDigest:
            update["from_"] = ref
    update.update(
        template=req.template if req.template is not None else spec.template,
        system=req.system if req.system is not None else spec.system,
        parameters=req.parameters if req.parameters is not None else (spec.parameters or None),
        messages=req.messages if req.messages is not None else (spec.messages or None),
        license=req.license if req.license is not None else (spec.license or None),
    )
    return req.model_copy(update=update)
