"""Ollama's option table: names, kinds, defaults, and the typing of Modelfile and API values.

Two entry points type raw values, because Ollama types them differently by origin:

* ``format_params`` takes Modelfile/CLI text (``PARAMETER num_ctx 4096``). Unknown names
  are an error, deprecated names a warning; values parse like Go's ``strconv``.
* ``validate_options`` takes an API request's JSON ``options``. Unknown and deprecated
  names are dropped with a logged warning; a value of the wrong JSON type is an error.

``render_parameters`` prints typed options the way ``/api/show`` prints ``parameters``.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Literal

from registry.errors import InvalidOption

logger = logging.getLogger(__name__)

Kind = Literal["int", "float", "bool", "str", "list[str]"]

OPTION_KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        # Runner (load-time) options.
        "num_ctx": "int",
        "num_batch": "int",
        "num_gpu": "int",
        "main_gpu": "int",
        "use_mmap": "bool",
        "num_thread": "int",
        # Speculative decoding's draft length: accepted, unused (corral loads no draft model).
        "draft_num_predict": "int",
        # corral's own: parallel request slots of one model's worker.
        "num_parallel": "int",
        # Predict options.
        "num_keep": "int",
        "seed": "int",
        "num_predict": "int",
        "top_k": "int",
        "top_p": "float",
        "min_p": "float",
        "typical_p": "float",
        "repeat_last_n": "int",
        "temperature": "float",
        "repeat_penalty": "float",
        "presence_penalty": "float",
        "frequency_penalty": "float",
        "stop": "list[str]",
    }
)

# Changing one of these means a new worker: they are fixed when the model is loaded.
RUNNER_OPTIONS: frozenset[str] = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "use_mmap",
        "num_thread",
        "draft_num_predict",
        "num_parallel",
    }
)

# Ollama warns about these in a Modelfile and ignores them in API options.
DEPRECATED: frozenset[str] = frozenset(
    {
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mlock",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
    }
)

# Ollama's DefaultOptions() for the predict options; runner defaults depend on the machine.
DEFAULT_OPTIONS: Mapping[str, int | float] = MappingProxyType(
    {
        "num_keep": 4,
        "seed": -1,
        "num_predict": -1,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_last_n": 64,
        "temperature": 0.8,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }
)

# Go's strconv.ParseBool accepts exactly these spellings.
_GO_BOOLS: Mapping[str, bool] = MappingProxyType(
    {
        **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
        **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
    }
)
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_DECIMAL_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_GO_HEX_FLOAT = re.compile(r"[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")
_GO_SPECIAL_FLOAT = re.compile(r"[+-]?(inf|infinity)|nan", re.IGNORECASE)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TYPE_WORD: Mapping[Kind, str] = MappingProxyType(
    {"int": "integer", "float": "float", "bool": "boolean", "str": "string", "list[str]": "array"}
)


def format_params(
    raw: Mapping[str, list[str]], *, kinds: Mapping[str, Kind] = OPTION_KINDS
) -> tuple[dict[str, object], list[str]]:
    """Type Modelfile/CLI text values; returns ``(params, warnings)``.

    A list-kind option (``stop``) keeps every value in order; any other kind takes the
    last one. Deprecated names give ``parameter X is deprecated`` and are dropped.
    Raises InvalidOption for an unknown name or a value that does not parse.
    """
    params: dict[str, object] = {}
    warnings: list[str] = []
    for name, values in raw.items():
        if name in DEPRECATED:
            warnings.append(f"parameter {name} is deprecated")
            continue
        kind = kinds.get(name)
        if kind is None:
            raise InvalidOption(f"unknown parameter '{name}'")
        if kind == "list[str]":
            params[name] = list(values)
        elif values:
            params[name] = _parse_text(kind, values[-1])
    return params, warnings


def _parse_text(kind: Kind, text: str) -> object:
    """One scalar value as Go's strconv would read it; the error quotes it Go-style."""
    if kind == "int":
        if _GO_INT.fullmatch(text) and _INT64_MIN <= int(text) <= _INT64_MAX:
            return int(text)
        raise InvalidOption(f"invalid int value [{text}]")
    if kind == "float":
        value = _parse_go_float32(text)
        if value is None:
            raise InvalidOption(f"invalid float value [{text}]")
        return value
    if kind == "bool":
        if text in _GO_BOOLS:
            return _GO_BOOLS[text]
        raise InvalidOption(f"invalid bool value [{text}]")
    return text


def _parse_go_float32(text: str) -> float | None:
    """What ``strconv.ParseFloat(text, 32)`` accepts, as a Python float; None if rejected.

    The value is kept at full precision (not rounded to float32) so that ``0.7`` stays
    ``0.7`` in JSON, which is also what Go's float32 encoding prints.
    """
    if _GO_SPECIAL_FLOAT.fullmatch(text):
        return float(text)
    if _GO_DECIMAL_FLOAT.fullmatch(text):
        value = float(text)
    elif _GO_HEX_FLOAT.fullmatch(text):
        value = float.fromhex(text)
    else:
        return None
    try:
        struct.pack("<f", value)
    except OverflowError:
        return None
    return None if math.isinf(value) else value


def validate_options(
    options: Mapping[str, object], *, kinds: Mapping[str, Kind] = OPTION_KINDS
) -> dict[str, object]:
    """Type an API request's JSON ``options`` the way Ollama's ``Options.FromMap`` does.

    Unknown and deprecated names are dropped (logged); ``None`` values are skipped.
    Integers accept any JSON number and truncate fractions; floats accept integers.
    Raises InvalidOption naming the option and the type it must have.
    """
    typed: dict[str, object] = {}
    for name, value in options.items():
        kind = None if name in DEPRECATED else kinds.get(name)
        if kind is None:
            logger.warning("invalid option ignored option=%s", name)
            continue
        if value is not None:
            typed[name] = _check_json(name, kind, value)
    return typed


def _check_json(name: str, kind: Kind, value: object) -> object:
    """One JSON value checked against its kind; raises InvalidOption when it does not fit."""
    if isinstance(value, bool):
        if kind == "bool":
            return value
    elif kind == "int" and isinstance(value, int):
        return value
    elif kind == "int" and isinstance(value, float) and math.isfinite(value):
        return int(value)
    elif kind == "float" and isinstance(value, int | float):
        return float(value)
    elif kind == "str" and isinstance(value, str):
        return value
    elif kind == "list[str]" and isinstance(value, list | tuple):
        if all(isinstance(item, str) for item in value):
            return list(value)
        raise InvalidOption(f'option "{name}" must be of an array of strings')
    raise InvalidOption(f'option "{name}" must be of type {_TYPE_WORD[kind]}')


def render_parameters(params: Mapping[str, object]) -> str:
    """``/api/show``'s ``parameters`` text: ``<key padded to 30> <Go-syntax value>`` per line.

    Keys are sorted (Ollama's order is Go map order, i.e. random); a list gives one line
    per element; ``None`` values are left out. Lines are joined by ``\\n`` with none after.
    """
    lines: list[str] = []
    for name in sorted(params):
        value = params[name]
        items = value if isinstance(value, list | tuple) else [value]
        lines.extend(f"{name:<30} {go_syntax(item)}" for item in items if item is not None)
    return "\n".join(lines)


def go_syntax(value: object) -> str:
    """A value as Go's ``%#v`` prints it: strings quoted and escaped, numbers bare."""
    if isinstance(value, str):
        return go_quote(value)
    return go_value(value)


def go_value(value: object) -> str:
    """A value as Go's ``%v`` prints it: ``true``, ``4096``, ``0.7``, ``1e+06``, raw text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _go_float(value: float) -> str:
    """``strconv.FormatFloat(value, 'g', -1, 64)``: shortest digits, exponent form when
    the decimal exponent is below -4 or at least 6 (``1e+06``, ``1e-05``, ``0.0001``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_tuple))
    assert isinstance(exponent, int)
    point = len(digits) + exponent  # the value is 0.<digits> x 10**point
    if point - 1 < -4 or point - 1 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{point - 1:+03d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: double quotes, C-style escapes, printable runes kept as is."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES: Mapping[str, str] = MappingProxyType(
    {
        "\a": "\\a",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\v": "\\v",
        "\\": "\\\\",
        '"': '\\"',
    }
)
