"""Go's view of template values: truthiness, printing, printf, JSON, and TypeScript types."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal

from worker.gotemplate_parse import TemplateError


class Record(dict[str, object]):
    """A Go struct (or a map with a String method) in template data.

    Fields are looked up by their Go names; printing gives the JSON of `wire`, and so does
    the `json` function. A struct is always true; a map (struct=False) is true when non-empty.
    """

    __slots__ = ("wire", "struct")

    def __init__(self, fields: Mapping[str, object], wire: object, *, struct: bool = True):
        super().__init__(fields)
        self.wire = wire
        self.struct = struct

    def __bool__(self) -> bool:
        return self.struct or len(self) > 0

    def __str__(self) -> str:
        return go_json(self.wire)


class TypeList(list[str]):
    """Ollama's PropertyType: one JSON-schema type prints bare, several print as a Go list."""

    def __str__(self) -> str:
        return self[0] if len(self) == 1 else "[" + " ".join(self) + "]" if self else ""


def is_true(value: object) -> bool:
    """Go template truth: false, 0, nil and empty strings, lists and maps are false."""
    return value is not None and bool(value)


def go_float(x: float, e_from: int = 6) -> str:
    """A float64 as Go's %v prints it (shortest digits; exponent form outside 1e-4..1e6)."""
    if math.isinf(x) or math.isnan(x):
        return "NaN" if math.isnan(x) else ("+Inf" if x > 0 else "-Inf")
    if x == 0:
        return "-0" if math.copysign(1, x) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    point = len(digit_tuple) + int(exponent)
    head = "-" if sign else ""
    exp = point - 1
    if exp < -4 or exp >= e_from:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{head}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{head}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return head + digits + "0" * (point - len(digits))
    return f"{head}{digits[:point]}.{digits[point:]}"


def go_print(value: object) -> str:
    """A value as text/template prints it (fmt's %v; nil prints as nothing)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Record | TypeList):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = " ".join(f"{go_print(k)}:{go_print(value[k])}" for k in sorted(value, key=str))
        return f"map[{inner}]"
    return str(value)


def to_wire(value: object) -> object:
    """Template data back to plain JSON values (Records become their wire form)."""
    if isinstance(value, Record):
        return to_wire(value.wire)
    if isinstance(value, TypeList):
        return value[0] if len(value) == 1 else list(value)
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def go_json(value: object) -> str:
    """Go's json.Marshal: compact, key order kept, HTML-sensitive characters escaped."""
    text = json.dumps(to_wire(value), ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


_TS_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


def typescript_type(prop: object) -> str:
    """Ollama's ToolProperty.ToTypeScriptType over a JSON-schema property."""
    if not isinstance(prop, Mapping):
        return "any"
    any_of = prop.get("anyOf")
    if isinstance(any_of, list) and any_of:
        return " | ".join(typescript_type(p) for p in any_of)
    kinds = prop.get("type")
    names = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    if not names:
        return "any"
    return " | ".join(_TS_TYPES.get(str(n), "any") for n in names)


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def _format_one(flags: str, width: str | None, prec: str | None, verb: str, arg: object) -> str:
    if verb in "dxXobc" and isinstance(arg, int) and not isinstance(arg, bool):
        spec = {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}.get(verb)
        text = chr(arg) if spec is None else format(arg, ("+" if "+" in flags else "") + spec)
    elif verb in "feEgG" and isinstance(arg, int | float) and not isinstance(arg, bool):
        if verb in "gG" and prec is None:
            text = go_float(float(arg), 21)
        else:
            text = format(float(arg), f"{'+' if '+' in flags else ''}.{prec or 6}{verb}")
    elif verb == "q" and isinstance(arg, str):
        text = json.dumps(arg, ensure_ascii=False)
    elif verb == "t" and isinstance(arg, bool):
        text = go_print(arg)
    elif verb == "x" and isinstance(arg, str):
        text = arg.encode().hex()
    elif verb in "sv":
        text = go_print(arg)
        text = text[: int(prec)] if prec is not None and verb == "s" else text
    else:
        return f"%!{verb}({type(arg).__name__}={go_print(arg)})"
    if width:
        pad = "0" if "0" in flags and "-" not in flags and verb not in "sqv" else " "
        text = text.ljust(int(width)) if "-" in flags else text.rjust(int(width), pad)
    return text


def go_printf(fmt: object, args: list[object]) -> str:
    """fmt.Sprintf for the common verbs (%s %v %d %q %t %f %g %x %c)."""
    if not isinstance(fmt, str):
        raise TemplateError("template: printf format must be a string")
    out: list[str] = []
    pos, used = 0, 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
        elif used >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_format_one(flags, width, prec, verb, args[used]))
            used += 1
    out.append(fmt[pos:])
    if used < len(args):
        extra = ", ".join(f"{type(a).__name__}={go_print(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
