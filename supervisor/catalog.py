"""The store as the API sees it: resolve request names, read a model's parts, describe it."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry import manifest as mf
from registry.errors import GGUFError, InvalidName, RegistryError
from registry.errors import ModelNotFound as StoreModelNotFound
from registry.gguf import GGUFInfo, format_parameter_count, read_gguf
from registry.names import ModelName
from registry.store import ModelStore, StoredModel
from supervisor.errors import ApiError, BadRequest
from worker.capability import capabilities

log = logging.getLogger(__name__)

LOADED_CACHE_SIZE = 64  # models kept read; past that the cache starts over
SMALL_BLOB_MAX = 16 * 1024 * 1024
"""Cap on text/JSON layers (template, system, params, messages, license, config)."""


@dataclass(frozen=True)
class LocalModel:
    """Everything a stored model is made of, read once from its manifest and small layers."""

    name: ModelName
    stored: StoredModel
    model_path: Path | None
    gguf: GGUFInfo | None
    parent: str = ""
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    adapters: list[Path] = field(default_factory=list)
    projectors: list[Path] = field(default_factory=list)

    @property
    def display(self) -> str:
        return self.name.display_shortest()

    @property
    def capabilities(self) -> list[str]:
        info = self.gguf
        return capabilities(
            self.template or "",
            info.chat_template if info else None,
            is_embedding=bool(info and info.is_embedding),
            has_vision=bool(self.projectors) or bool(info and info.has_vision),
        )

    def details(self) -> dict[str, Any]:
        """Ollama's ModelDetails, from the config blob, else from the GGUF."""
        cfg, info = self.config, self.gguf
        family = cfg.get("model_family") or (info.architecture if info else "")
        families = cfg.get("model_families") or ([family] if family else None)
        size = cfg.get("model_type") or (
            format_parameter_count(info.parameter_count) if info else ""
        )
        quant = cfg.get("file_type") or (info.file_type if info else "")
        out: dict[str, Any] = {
            "parent_model": self.parent,
            "format": cfg.get("model_format") or "gguf",
            "family": family,
            "families": families,
            "parameter_size": size,
            "quantization_level": quant,
        }
        return out


class Catalog:
    """Reads models out of a ModelStore; GGUF metadata is cached by blob digest."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        # Inference reads a model on every request. Its layers are content-addressed blobs
        # named by the manifest, so a LocalModel stays right for as long as the manifest
        # does: keyed by the manifest's name, bytes' digest and mtime.
        self._loaded: dict[tuple[ModelName, str, float], LocalModel] = {}

    @staticmethod
    def parse_name(text: str) -> ModelName:
        try:
            return ModelName.parse(text.strip())
        except InvalidName as exc:
            raise BadRequest("invalid model name") from exc

    def find(self, name: ModelName) -> StoredModel | None:
        try:
            return self.store.get(name)
        except StoreModelNotFound:
            return None

    def load(self, stored: StoredModel) -> LocalModel:
        """Read a stored model's layers; a corrupt layer is an ApiError, never a crash."""
        key = (stored.name, stored.digest_hex, stored.modified_at)
        if (local := self._loaded.get(key)) is not None:
            return local
        try:
            local = self._load(stored)
        except RegistryError as exc:
            raise ApiError(f"model {stored.name.display_shortest()} is unreadable: {exc}") from exc
        if len(self._loaded) >= LOADED_CACHE_SIZE:
            self._loaded.clear()
        self._loaded[key] = local
        return local

    def _load(self, stored: StoredModel) -> LocalModel:
        m = stored.manifest
        model_layer = m.first(mf.LAYER_MODEL)
        path = self.store.blob_path(model_layer.digest) if model_layer else None
        parts: dict[str, Any] = {
            "template": self._text(m.first(mf.LAYER_TEMPLATE) or m.first(mf.LAYER_PROMPT)),
            "system": self._text(m.first(mf.LAYER_SYSTEM)),
            "params": self._json(m.first(mf.LAYER_PARAMS)) or {},
            "messages": self._json(m.first(mf.LAYER_MESSAGES)) or [],
            "licenses": [self._text(x) or "" for x in m.layers_of(mf.LAYER_LICENSE)],
            "config": self._json(m.config) or {},
        }
        return LocalModel(
            name=stored.name,
            stored=stored,
            model_path=path,
            gguf=self.gguf(model_layer.digest) if model_layer else None,
            parent=(model_layer.from_ or "") if model_layer else "",
            adapters=[self.store.blob_path(x.digest) for x in m.layers_of(mf.LAYER_ADAPTER)],
            projectors=[self.store.blob_path(x.digest) for x in m.layers_of(mf.LAYER_PROJECTOR)],
            **parts,
        )

    def gguf(self, digest: str) -> GGUFInfo | None:
        try:
            return _read_gguf_cached(self.store.blob_path(digest))
        except (GGUFError, OSError) as exc:
            log.warning("gguf unreadable digest=%s error=%s", digest, exc)
            return None

    def _text(self, layer: mf.Layer | None) -> str | None:
        if layer is None:
            return None
        return self.store.read_blob_bytes(layer.digest, SMALL_BLOB_MAX).decode("utf-8", "replace")

    def _json(self, layer: mf.Layer | None) -> Any:
        text = self._text(layer)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            log.warning("layer is not JSON digest=%s", layer.digest if layer else "")
            return None


@functools.lru_cache(maxsize=64)
def _read_gguf_cached(path: Path) -> GGUFInfo:
    # Blobs are content-addressed and never rewritten, so the path is a sound cache key.
    return read_gguf(path)
