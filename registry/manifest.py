"""Manifests: the media types, strict parsing and Go-identical JSON serialisation.

Parsing validates everything before any caller can build a path from it: size cap, UTF-8
JSON, schema version 2, a Docker v2 or OCI manifest type, and every digest and size. Layers
with unknown media types are kept, never dropped. ``to_bytes`` reproduces what Ollama's
``json.Encoder`` writes for a locally created manifest; pulled manifests are stored as the
raw bytes received and never re-serialised.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal

from registry.digest import parse_digest
from registry.errors import InvalidDigest, InvalidManifest, RegistryError

MEDIA_TYPE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.docker.container.image.v1+json"

_LAYER_PREFIX = "application/vnd.ollama.image."
LAYER_MODEL = _LAYER_PREFIX + "model"
LAYER_ADAPTER = _LAYER_PREFIX + "adapter"
LAYER_PROJECTOR = _LAYER_PREFIX + "projector"
LAYER_TEMPLATE = _LAYER_PREFIX + "template"
LAYER_PROMPT = _LAYER_PREFIX + "prompt"
LAYER_SYSTEM = _LAYER_PREFIX + "system"
LAYER_PARAMS = _LAYER_PREFIX + "params"
LAYER_MESSAGES = _LAYER_PREFIX + "messages"
LAYER_LICENSE = _LAYER_PREFIX + "license"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_MAX_SIZE = 2**63 - 1  # Go's int64
_MANIFEST_TYPES = frozenset({MEDIA_TYPE_MANIFEST, MEDIA_TYPE_OCI_MANIFEST})


@dataclass(frozen=True, slots=True)
class Layer:
    """One descriptor: the config or a layer of a manifest.

    ``digest`` is canonical (``sha256:<lowercase hex>``); ``size`` is in bytes; ``from_`` is
    the short name of the model the layer was inherited from; ``name`` is a file or tensor
    name inside safetensors models. Empty ``from``/``name`` are stored as None.
    """

    media_type: str
    digest: str
    size: int
    from_: str | None = None
    name: str | None = None

    def to_json(self) -> dict[str, object]:
        """Return the descriptor as JSON-ready data, in Go's field order."""
        data: dict[str, object] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.from_:
            data["from"] = self.from_
        if self.name:
            data["name"] = self.name
        return data


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed image manifest (schema 2): one config descriptor and the layers in order."""

    config: Layer
    layers: tuple[Layer, ...]
    schema_version: int = 2
    media_type: str = MEDIA_TYPE_MANIFEST

    @classmethod
    def parse(cls, data: bytes, max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest:
        """Parse and validate manifest bytes; raise ``InvalidManifest`` on any defect."""
        if len(data) > max_bytes:
            raise InvalidManifest(f"manifest larger than {max_bytes} bytes")
        doc = _decode_json(data)
        if not isinstance(doc, dict):
            raise InvalidManifest("manifest is not a JSON object")
        version = doc.get("schemaVersion")
        if type(version) is not int or version != 2:
            raise InvalidManifest(f"unsupported manifest schemaVersion {version!r}")
        # OCI makes mediaType optional; Docker schema 2 always writes it.
        media_type = doc.get("mediaType", MEDIA_TYPE_OCI_MANIFEST)
        if not isinstance(media_type, str) or media_type not in _MANIFEST_TYPES:
            raise InvalidManifest(f"unsupported manifest mediaType {media_type!r}")
        raw_layers = doc.get("layers")
        if raw_layers is None:
            raw_layers = []
        if not isinstance(raw_layers, list):
            raise InvalidManifest("manifest layers is not a list")
        return cls(
            config=_parse_layer(doc.get("config"), "config"),
            layers=tuple(_parse_layer(item, f"layers[{i}]") for i, item in enumerate(raw_layers)),
            schema_version=version,
            media_type=media_type,
        )

    def to_bytes(self) -> bytes:
        """Serialise exactly as Ollama writes a local manifest: compact JSON plus newline."""
        doc = {
            "schemaVersion": self.schema_version,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        return _encode(doc, sort_keys=False).encode("utf-8") + b"\n"

    def digests(self) -> list[str]:
        """Return the unique digests of the config and the layers, in manifest order."""
        return list(dict.fromkeys([self.config.digest, *(layer.digest for layer in self.layers)]))

    def layers_of(self, media_type: str) -> list[Layer]:
        """Return the layers of one media type, in manifest order."""
        return [layer for layer in self.layers if layer.media_type == media_type]

    def first(self, media_type: str) -> Layer | None:
        """Return the first layer of one media type, or None."""
        return next((layer for layer in self.layers if layer.media_type == media_type), None)

    def total_size(self) -> int:
        """Return the sum of all descriptor sizes (layers plus config), as Ollama reports."""
        return self.config.size + sum(layer.size for layer in self.layers)


def _reject_constant(name: str) -> object:
    raise InvalidManifest(f"invalid JSON constant {name}")


def _decode_json(data: bytes) -> object:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidManifest(f"manifest is not valid JSON: {exc}") from exc


def _optional_str(item: dict[str, object], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidManifest(f"{where}.{key} is not a string")
    return value


def _parse_layer(item: object, where: str) -> Layer:
    if not isinstance(item, dict):
        raise InvalidManifest(f"{where} is not a JSON object")
    media_type = item.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidManifest(f"{where}.mediaType is missing")
    raw_digest = item.get("digest")
    try:
        digest = parse_digest(raw_digest) if isinstance(raw_digest, str) else ""
    except InvalidDigest as exc:
        raise InvalidManifest(f"{where}.digest is invalid") from exc
    if not digest:
        raise InvalidManifest(f"{where}.digest is missing")
    size = item.get("size")
    if type(size) is not int or not 0 <= size <= _MAX_SIZE:
        raise InvalidManifest(f"{where}.size is not a non-negative integer")
    return Layer(
        media_type=media_type,
        digest=digest,
        size=size,
        from_=_optional_str(item, "from", where),
        name=_optional_str(item, "name", where),
    )


# Go's json.Encoder escapes these even inside strings (HTML safety and JS line separators).
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _go_string(text: str) -> str:
    # A lone surrogate cannot be UTF-8; Go's decoder would have made it U+FFFD already.
    text = _SURROGATE_RE.sub("\ufffd", text)
    quoted = json.dumps(text, ensure_ascii=False)
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], quoted)


def _go_float(value: float) -> str:
    """Format a float as Go's encoding/json does (shortest digits, 'f' or cleaned 'e')."""
    if not math.isfinite(value):
        raise RegistryError(f"unsupported JSON value {value!r}")
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = repr(value)
        # Go writes e-7 where Python writes e-07 (but keeps e+21 and e-100).
        return re.sub(r"e-0(\d)\Z", r"e-\1", text)
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _encode(obj: object, sort_keys: bool) -> str:
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(int(obj))
    if isinstance(obj, float):
        return _go_float(obj)
    if isinstance(obj, str):
        return _go_string(obj)
    if isinstance(obj, list | tuple):
        return "[" + ",".join(_encode(item, sort_keys) for item in obj) + "]"
    if isinstance(obj, dict):
        items = [(_SURROGATE_RE.sub("\ufffd", _key(k)), v) for k, v in obj.items()]
        if sort_keys:
            items.sort(key=lambda kv: kv[0])
        return "{" + ",".join(f"{_go_string(k)}:{_encode(v, sort_keys)}" for k, v in items) + "}"
    raise RegistryError(f"unsupported JSON value of type {type(obj).__name__}")


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise RegistryError(f"unsupported JSON key of type {type(key).__name__}")
    return key


def go_json_bytes(obj: object) -> bytes:
    """Encode as Go's json.Encoder does for maps: compact, sorted keys, Go escapes, newline.

    Used for the params, messages and config blobs so their digests match Go Ollama's.
    """
    return _encode(obj, sort_keys=True).encode("utf-8") + b"\n"
