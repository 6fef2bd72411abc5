"""Read a GGUF file's header, metadata and tensor infos, treating the file as hostile.

Every count and length in the file is checked against the bytes left in the file before
anything is read or allocated, so a forged header fails fast with `GGUFError` instead of
exhausting memory. Tensor data is never read; only its extent is checked against the file
size, so a truncated download is caught here rather than inside llama.cpp.

Only little-endian GGUF versions 2 and 3 are accepted (version 1 used 32-bit counts and
is long gone; llama.cpp reads the same two).
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from registry.errors import GGUFError
from registry.gguf_reader import BoundedReader

__all__ = ["GGUFInfo", "TensorInfo", "format_parameter_count", "read_gguf"]

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_MAX_DIMS = 4  # GGML_MAX_DIMS; llama.cpp rejects more
_MAX_ARRAY_DEPTH = 3  # arrays of arrays of arrays; llama.cpp itself accepts no nesting
_DEFAULT_ALIGNMENT = 32
_INT64_MAX = (1 << 63) - 1
_LONG_ARRAY = 5  # /api/show elides arrays longer than this unless verbose

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F32 = struct.Struct("<f")
_FLOAT32, _STRING, _ARRAY = 6, 8, 9
# GGUF value type id -> (name, struct code) for fixed-size values.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("uint8", "B"), 1: ("int8", "b"), 2: ("uint16", "H"), 3: ("int16", "h"),
    4: ("uint32", "I"), 5: ("int32", "i"), 6: ("float32", "f"), 7: ("bool", "?"),
    10: ("uint64", "Q"), 11: ("int64", "q"), 12: ("float64", "d"),
}  # fmt: skip
_VALUE_TYPE_NAMES = {k: name for k, (name, _) in _SCALARS.items()} | {
    _STRING: "string",
    _ARRAY: "array",
}

# ggml_type id -> (name, elements per block, bytes per block), as in ggml.h / ggml.c.
_GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}  # fmt: skip

# general.file_type (llama.cpp's llama_ftype) -> the name Ollama shows as quantization_level.
_FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4", 39: "NVFP4", 40: "Q1_0",
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; `shape` is in GGUF order (fastest-varying dimension first)."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]

    @property
    def type_name(self) -> str:
        """The ggml type name, e.g. "F32", "Q4_K"; "unknown" for an id ggml does not define."""
        entry = _GGML_TYPES.get(self.ggml_type)
        return entry[0] if entry else "unknown"

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file says about itself.

    `metadata` holds every scalar value and every array that was kept (see `read_gguf`);
    arrays that were not kept appear only in `array_lengths` and `array_types`, which hold
    the length and element type name of every top-level array, kept or not.
    """

    version: int
    metadata: dict[str, object]
    array_lengths: dict[str, int]
    tensors: tuple[TensorInfo, ...]
    array_types: dict[str, str] = field(default_factory=dict)

    def _str(self, key: str) -> str | None:
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    def _int(self, key: str) -> int | None:
        value = self.metadata.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _arch_int(self, suffix: str) -> int | None:
        return self._int(f"{self.architecture}.{suffix}")

    @property
    def architecture(self) -> str:
        return self._str("general.architecture") or ""

    @property
    def parameter_count(self) -> int:
        declared = self._int("general.parameter_count")
        return declared if declared is not None else sum(t.n_elements for t in self.tensors)

    @property
    def file_type(self) -> str:
        """Quantization name from general.file_type; else the type holding most weights."""
        declared = self._int("general.file_type")
        if declared is not None:
            return _FILE_TYPES.get(declared, "unknown")
        weights: Counter[str] = Counter()
        for tensor in self.tensors:
            weights[tensor.type_name] += tensor.n_elements
        return weights.most_common(1)[0][0] if weights else "unknown"

    @property
    def context_length(self) -> int | None:
        return self._arch_int("context_length")

    @property
    def embedding_length(self) -> int | None:
        return self._arch_int("embedding_length")

    @property
    def block_count(self) -> int | None:
        return self._arch_int("block_count")

    @property
    def head_count(self) -> int | None:
        return self._arch_int("attention.head_count")

    @property
    def head_count_kv(self) -> int | None:
        return self._arch_int("attention.head_count_kv")

    @property
    def chat_template(self) -> str | None:
        return self._str("tokenizer.chat_template")

    @property
    def has_pooling(self) -> bool:
        return f"{self.architecture}.pooling_type" in self.metadata

    @property
    def is_embedding(self) -> bool:
        """Ollama's rule: a pooling type makes a model an embedding model."""
        return self.has_pooling

    @property
    def has_vision(self) -> bool:
        keys = {f"{self.architecture}.vision.block_count", "vision.block_count"}
        keys.add("clip.vision.block_count")  # a separate projector (mmproj) file
        return (
            bool(keys & self.metadata.keys())
            or self.metadata.get("clip.has_vision_encoder") is True
        )

    @property
    def general_type(self) -> str | None:
        """general.type, e.g. "model", "adapter" or "mmproj"; None when absent."""
        return self._str("general.type")

    @property
    def tokenizer_model(self) -> str | None:
        return self._str("tokenizer.ggml.model")

    @property
    def bos_token_id(self) -> int | None:
        return self._int("tokenizer.ggml.bos_token_id")

    @property
    def eos_token_id(self) -> int | None:
        return self._int("tokenizer.ggml.eos_token_id")

    @property
    def vocab_size(self) -> int | None:
        return self.array_lengths.get("tokenizer.ggml.tokens")

    def model_info(self, verbose: bool = False) -> dict[str, object]:
        """/api/show's model_info: every key except general.name and tokenizer.chat_template.

        Keys are sorted (Go marshals maps that way). Arrays longer than 5 are `[]` unless
        `verbose`; an array that was not kept at read time is `[]` even when verbose, so a
        verbose caller must read with `read_gguf(path, keep_arrays=True)`. Non-finite floats
        become None so the result is always valid JSON.
        """
        info: dict[str, object] = {}
        for key in sorted({*self.metadata, *self.array_lengths}):
            if key in ("general.name", "tokenizer.chat_template"):
                continue
            elided = key in self.array_lengths and (
                key not in self.metadata or (self.array_lengths[key] > _LONG_ARRAY and not verbose)
            )
            info[key] = [] if elided else _json_safe(self.metadata[key])
        return info


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def format_parameter_count(n: int) -> str:
    """Ollama's format.HumanNumber, used for details.parameter_size ("8.0B", "134.52M")."""
    for unit, scale, decimals in (("B", 10**9, 1), ("M", 10**6, 2)):
        if n >= scale:
            number = n / scale
            return f"{number:.0f}{unit}" if number.is_integer() else f"{number:.{decimals}f}{unit}"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)


def _min_value_bytes(vtype: int, what: str) -> int:
    if vtype in _SCALARS:
        return struct.calcsize(_SCALARS[vtype][1])
    if vtype == _STRING:
        return _U64.size
    if vtype == _ARRAY:
        return _U32.size + _U64.size
    raise GGUFError(f"malformed GGUF: unknown value type {vtype} for {what}")


def _float32(value: float) -> float:
    """The shortest decimal that is still the same float32, as Go prints a float32 (1e-05)."""
    packed = struct.pack("<f", value)
    for digits in (6, 7, 8):
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == packed:
            return short
    return value


def _read_value(r: BoundedReader, vtype: int, what: str) -> object:
    """Read one value that is not an array."""
    if vtype == _FLOAT32:
        return _float32(r.unpack(_F32, what)[0])
    if vtype in _SCALARS:
        return r.unpack(struct.Struct("<" + _SCALARS[vtype][1]), what)[0]
    if vtype == _STRING:
        return r.string(what)
    raise GGUFError(f"malformed GGUF: unknown value type {vtype} for {what}")


def _array_header(r: BoundedReader, what: str, depth: int) -> tuple[int, int]:
    if depth >= _MAX_ARRAY_DEPTH:
        raise GGUFError(f"malformed GGUF: {what} nests arrays deeper than {_MAX_ARRAY_DEPTH}")
    etype = r.uint(_U32, f"{what} element type")
    count = r.uint(_U64, f"{what} length")
    r.check_count(count, _min_value_bytes(etype, what), f"{what} length")
    return etype, count


def _read_array(
    r: BoundedReader, etype: int, count: int, what: str, keep: bool, depth: int
) -> list[object] | None:
    """Read `count` elements, or only step over them when not `keep` (then return None)."""
    if etype in _SCALARS:
        code = _SCALARS[etype][1]
        if not keep:
            r.skip(count * struct.calcsize(code), what)
            return None
        values = list(r.unpack(struct.Struct(f"<{count}{code}"), what))
        return [_float32(v) for v in values] if etype == _FLOAT32 else values
    if etype == _STRING:
        # A tokenizer's vocabulary is 30k-260k strings: this loop is the hot path.
        return r.strings(count, what, keep=keep)
    items: list[object] = []
    for _ in range(count):
        inner = _read_array(r, *_array_header(r, what, depth + 1), what, keep, depth + 1)
        items.append(inner)
    return items if keep else None


def _read_metadata(
    r: BoundedReader, n_kv: int, keep_arrays: bool, keep_array_max: int
) -> tuple[dict[str, object], dict[str, int], dict[str, str]]:
    metadata: dict[str, object] = {}
    lengths: dict[str, int] = {}
    types: dict[str, str] = {}
    for index in range(n_kv):
        key = r.string(f"key {index}")
        if key in metadata or key in lengths:
            raise GGUFError(f"malformed GGUF: duplicate key {key!r}")
        what = f"value of {key!r}"
        vtype = r.uint(_U32, f"type of {what}")
        if vtype != _ARRAY:
            metadata[key] = _read_value(r, vtype, what)
            continue
        etype, count = _array_header(r, what, depth=0)
        lengths[key], types[key] = count, _VALUE_TYPE_NAMES[etype]
        keep = keep_arrays or count <= keep_array_max
        value = _read_array(r, etype, count, what, keep, depth=0)
        if keep:
            metadata[key] = value
    return metadata, lengths, types


def _read_tensor(r: BoundedReader, index: int) -> tuple[TensorInfo, int, int]:
    """One tensor info, with its data offset and size in bytes."""
    name = r.string(f"tensor {index} name")
    n_dims = r.uint(_U32, f"dimension count of tensor {name!r}")
    if n_dims > _MAX_DIMS:
        raise GGUFError(
            f"malformed GGUF: tensor {name!r} has {n_dims} dimensions (max {_MAX_DIMS})"
        )
    shape = tuple(r.uint(_U64, f"dimensions of tensor {name!r}") for _ in range(n_dims))
    ggml_type = r.uint(_U32, f"type of tensor {name!r}")
    offset = r.uint(_U64, f"data offset of tensor {name!r}")
    if ggml_type not in _GGML_TYPES:
        raise GGUFError(f"malformed GGUF: tensor {name!r} has unknown ggml type {ggml_type}")
    _, block, type_bytes = _GGML_TYPES[ggml_type]
    n_elements = math.prod(shape)
    if any(d > _INT64_MAX for d in shape) or n_elements > _INT64_MAX:
        raise GGUFError(f"malformed GGUF: tensor {name!r} shape {list(shape)} overflows")
    if shape and shape[0] % block:
        raise GGUFError(
            f"malformed GGUF: tensor {name!r} row of {shape[0]} is not a multiple of the "
            f"{_GGML_TYPES[ggml_type][0]} block size {block}"
        )
    return TensorInfo(name, ggml_type, shape), offset, n_elements // block * type_bytes


def _alignment(metadata: dict[str, object]) -> int:
    value = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise GGUFError(f"malformed GGUF: general.alignment {value!r} is not a power of two")
    return value


def _parse(r: BoundedReader, keep_arrays: bool, keep_array_max: int) -> GGUFInfo:
    magic = r.unpack(struct.Struct("4s"), "magic")[0]
    if magic != _MAGIC:
        raise GGUFError(f"not a GGUF file: it starts with {magic!r}, not {_MAGIC!r}")
    version = r.uint(_U32, "version")
    if version not in _VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        hint = " (big-endian GGUF files are not supported)" if swapped in _VERSIONS else ""
        raise GGUFError(f"unsupported GGUF version {version}{hint}; supported: 2, 3")
    n_tensors = r.uint(_U64, "tensor count")
    n_kv = r.uint(_U64, "metadata count")
    r.check_count(n_kv, 13, "n_kv")  # key length + value type + a one-byte value
    r.check_count(n_tensors, 24, "n_tensors")  # name length, n_dims, type, offset
    metadata, lengths, types = _read_metadata(r, n_kv, keep_arrays, keep_array_max)
    r.check_count(n_tensors, 24, "n_tensors")
    entries = [_read_tensor(r, i) for i in range(n_tensors)]
    names = [info.name for info, _, _ in entries]
    if len(set(names)) != len(names):
        raise GGUFError("malformed GGUF: duplicate tensor name")
    alignment = _alignment(metadata)
    data_start = -(-r.pos // alignment) * alignment
    for info, offset, nbytes in entries:
        if offset % alignment:
            raise GGUFError(f"malformed GGUF: tensor {info.name!r} offset {offset} is unaligned")
        if data_start + offset + nbytes > r.size:
            raise GGUFError(
                f"truncated GGUF file: tensor {info.name!r} data ends at byte "
                f"{data_start + offset + nbytes} but the file has {r.size}"
            )
    return GGUFInfo(version, metadata, lengths, tuple(e[0] for e in entries), types)


def read_gguf(path: Path, *, keep_arrays: bool = False, keep_array_max: int = 5) -> GGUFInfo:
    """Parse `path`'s header; arrays longer than `keep_array_max` are kept only if `keep_arrays`.

    With the defaults, memory stays small whatever the file claims. `keep_arrays=True`
    turns every array into Python objects (a 150k-token vocabulary costs tens of MB), so
    use it only for a verbose /api/show. Raises GGUFError for anything that is not a
    well-formed GGUF v2/v3 file, including an unreadable path.
    """
    try:
        with path.open("rb") as stream:
            size = stream.seek(0, 2)
            stream.seek(0)
            if size == 0:
                raise GGUFError(f"not a GGUF file: {path.name} is empty")
            return _parse(BoundedReader(stream, size), keep_arrays, keep_array_max)
    except OSError as exc:
        raise GGUFError(f"cannot read GGUF file {path.name}: {exc.strerror or exc}") from exc
