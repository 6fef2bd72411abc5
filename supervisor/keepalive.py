"""Keep-alive values: Ollama's keep_alive decoding, the env-var form, and Go's duration text.

Semantics (Ollama's `api.Duration` and `envconfig.KeepAlive`, reference §1.17 and §4):

* A `KeepAlive` is a number of seconds. `0` means "unload as soon as the model is idle";
  any negative value means "forever" and is stored as `math.inf` (`FOREVER`), so ordering
  by `seconds` puts forever last, as Ollama's unsigned comparison does.
* `parse_keep_alive(value)` decodes the JSON `keep_alive` field of a request:
  `None` (absent or null) → `None` ("not specified": a new load takes the server default,
  a loaded worker keeps its current duration); a JSON number → seconds; a string → Go
  duration syntax (`"5m"`, `"1h30m"`, `"-1m"`, `"0"`), where a unitless non-zero string is an
  error; anything else (bool, object, array) → `KeepAliveError("Unsupported type: '<go type>'")`.
* `parse_env_keep_alive(text)` decodes `CORRAL_KEEP_ALIVE` / `OLLAMA_KEEP_ALIVE`: a Go duration
  or a bare integer meaning seconds; an empty value means the default of 5 minutes.

Error messages copy Go's `time.ParseDuration` texts, because Ollama returns them to clients
verbatim in a 400 body. Everything here is pure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NS_PER_S = 1_000_000_000
_MAX_NS = (1 << 63) - 1  # Go's time.Duration is an int64 count of nanoseconds
_MAX_SECONDS = _MAX_NS / _NS_PER_S

# Units accepted by Go's time.ParseDuration, in nanoseconds. Both micro signs are accepted.
_UNIT_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": _NS_PER_S,
    "m": 60 * _NS_PER_S,
    "h": 3600 * _NS_PER_S,
}

_BARE_INT = re.compile(r"[+-]?[0-9]+")


class KeepAliveError(ValueError):
    """A keep_alive value that Ollama would refuse; the message is the client-facing text."""


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """How long a worker stays loaded once idle.

    seconds: duration in seconds; 0 unloads as soon as idle; `math.inf` is forever. A negative
    value given to the constructor is stored as `math.inf` (Ollama: negative means forever);
    values beyond Go's largest duration (about 292 years) are forever as well.
    """

    seconds: float

    def __post_init__(self) -> None:
        if math.isnan(self.seconds):
            raise KeepAliveError("keep_alive must be a number, not NaN")
        if self.seconds < 0 or self.seconds > _MAX_SECONDS:
            object.__setattr__(self, "seconds", math.inf)

    @property
    def is_forever(self) -> bool:
        """True when the worker never expires on its own."""
        return math.isinf(self.seconds)

    @property
    def unloads_now(self) -> bool:
        """True when the worker is to be stopped as soon as it is idle (duration <= 0)."""
        return self.seconds <= 0


FOREVER = KeepAlive(math.inf)
DEFAULT_KEEP_ALIVE = KeepAlive(300.0)  # Ollama's default: 5m


def parse_keep_alive(value: object) -> KeepAlive | None:
    """Decode a request's JSON `keep_alive` value; `None` means it was not specified."""
    if value is None:
        return None
    if isinstance(value, bool):  # before int: bool is an int subclass in Python
        raise KeepAliveError(f"Unsupported type: '{_go_type_name(value)}'")
    if isinstance(value, int | float):
        return KeepAlive(float(value))
    if isinstance(value, str):
        return KeepAlive(parse_go_duration(value))
    raise KeepAliveError(f"Unsupported type: '{_go_type_name(value)}'")


def parse_env_keep_alive(text: str) -> KeepAlive:
    """Decode the keep-alive environment variable: a Go duration or a bare integer of seconds.

    Surrounding whitespace is ignored and an empty value gives `DEFAULT_KEEP_ALIVE`. An
    invalid value raises `KeepAliveError` carrying Go's duration error; config.py names the
    variable in its own message.
    """
    text = text.strip()
    if not text:
        return DEFAULT_KEEP_ALIVE
    if _BARE_INT.fullmatch(text):
        return KeepAlive(float(int(text)))
    return KeepAlive(parse_go_duration(text))


def parse_go_duration(text: str) -> float:
    """Parse Go duration syntax (`[-+]?([0-9]*(\\.[0-9]*)?unit)+`, or "0") into seconds."""
    nanos = _parse_go_duration_ns(text)
    return nanos / _NS_PER_S


def _parse_go_duration_ns(orig: str) -> int:
    invalid = KeepAliveError(f"time: invalid duration {_go_quote(orig)}")
    s = orig
    negative = s[:1] == "-"
    if s[:1] in ("-", "+"):
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        whole, frac, scale, s = _take_number(s, invalid)
        unit_end = 0
        while unit_end < len(s) and s[unit_end] not in ".0123456789":
            unit_end += 1
        if unit_end == 0:
            raise KeepAliveError(f"time: missing unit in duration {_go_quote(orig)}")
        unit_text, s = s[:unit_end], s[unit_end:]
        unit = _UNIT_NS.get(unit_text)
        if unit is None:
            raise KeepAliveError(
                f"time: unknown unit {_go_quote(unit_text)} in duration {_go_quote(orig)}"
            )
        if whole > (1 << 63) // unit:
            raise invalid
        part = whole * unit
        if frac > 0:
            # Go computes the fraction in float64 to stay nanosecond-exact for hours.
            part += int(float(frac) * (float(unit) / scale))
        total += part
        if part > 1 << 63 or total > 1 << 63:
            raise invalid
    if negative:
        return -total
    if total > _MAX_NS:
        raise invalid
    return total


def _take_number(s: str, invalid: KeepAliveError) -> tuple[int, int, float, str]:
    """Consume `[0-9]*(\\.[0-9]*)?` with Go's overflow rules: (whole, fraction, scale, rest)."""
    if not (s[0] == "." or s[0] in "0123456789"):
        raise invalid
    i = 0
    whole = 0
    while i < len(s) and s[i] in "0123456789":
        whole = whole * 10 + int(s[i])
        if whole > 1 << 63:
            raise invalid
        i += 1
    has_whole = i > 0
    frac, scale, has_frac = 0, 1.0, False
    if i < len(s) and s[i] == ".":
        i += 1
        start, overflow = i, False
        while i < len(s) and s[i] in "0123456789":
            # Digits past int64 precision are consumed but ignored, as Go does.
            if not overflow and frac <= _MAX_NS // 10 and frac * 10 + int(s[i]) <= 1 << 63:
                frac = frac * 10 + int(s[i])
                scale *= 10
            else:
                overflow = True
            i += 1
        has_frac = i > start
    if not has_whole and not has_frac:
        raise invalid
    return whole, frac, scale, s[i:]


def _go_quote(text: str) -> str:
    """Quote as Go's time package does in errors: `"`, `\\` escaped; other bytes as \\xNN."""
    out = ['"']
    for ch in text:
        if ch < " " or not ch.isascii():
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        elif ch in '"\\':
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_type_name(value: object) -> str:
    """The Go type a JSON value decodes to under `interface{}`, as Ollama's error names it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return type(value).__name__
