"""Terminal rendering with rich: tables, human-readable sizes and times, show sections, stats.

The formatting functions are pure (time is an argument) and return plain text; the
commands print that text through a rich ``Console``. Formats follow Ollama's CLI (§6.3):
borderless tables with upper-case headers and 4 spaces between columns, decimal byte
units, "2 weeks ago" style times and Go's ``Duration.String()`` for durations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from cli.client import Chunk, RunningModel, ShowResponse

COLUMN_GAP = "    "
_BYTE_UNITS = ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "KB"))
_FRACTION_RE = re.compile(r"\.(\d+)")
# Go's time.Since(t) hours / 24 / 365 < -20 (integer division) means "Forever".
_FOREVER_HOURS = 21 * 365 * 24


def make_console(*, stderr: bool = False) -> Console:
    """A console that never wraps, highlights or reads markup unless told to."""
    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


def format_table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, 4 spaces apart, no borders; trailing blanks removed."""
    table = [list(headers)] if headers else []
    table.extend(list(row) for row in rows)
    if not table:
        return ""
    columns = max(len(row) for row in table)
    widths = [
        max((len(row[i]) for row in table if i < len(row)), default=0) for i in range(columns)
    ]
    lines = []
    for row in table:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(COLUMN_GAP.join(cells).rstrip())
    return "\n".join(lines)


def human_bytes(size: int) -> str:
    """Decimal units: ``512 B``, ``4.7 GB``, ``2 GB``, ``42 GB`` (>= 10 is truncated)."""
    for factor, unit in _BYTE_UNITS:
        if size >= factor:
            value = size / factor
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def human_number(count: int) -> str:
    """Parameter counts: ``8B`` / ``1.5B``, ``135M`` / ``134.52M``, ``12K``, ``999``."""
    if count >= 10**9:
        value = count / 10**9
        return f"{value:.0f}B" if value == math.floor(value) else f"{value:.1f}B"
    if count >= 10**6:
        value = count / 10**6
        return f"{value:.0f}M" if value == math.floor(value) else f"{value:.2f}M"
    if count >= 10**3:
        return f"{count / 10**3:.0f}K"
    return str(count)


def _round_half_away(value: float) -> int:
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def human_duration(delta: timedelta) -> str:
    """A positive span in words: ``Less than a second`` ... ``N years``."""
    seconds = int(delta.total_seconds())
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = _round_half_away(delta.total_seconds() / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(delta.total_seconds() // 3600) // 24 // 365} years"


def human_time(moment: datetime | None, now: datetime, zero: str = "Never") -> str:
    """``N units ago`` / ``N units from now``; ``Forever`` beyond 20 years ahead."""
    if moment is None:
        return zero
    delta = now - moment
    if delta.total_seconds() / 3600 <= -_FOREVER_HOURS:
        return "Forever"
    if delta < timedelta(0):
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def parse_timestamp(text: str | None) -> datetime | None:
    """An RFC 3339 time (up to 9 fractional digits); None for absent or Go's zero time."""
    if not text:
        return None
    text = _FRACTION_RE.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return None if moment.year <= 1 else moment


def processor(model: RunningModel) -> str:
    """Where a loaded model lives: ``100% GPU``, ``100% CPU``, ``48%/52% CPU/GPU``."""
    size, vram = model.get("size", 0), model.get("size_vram", 0)
    if vram == 0:
        return "100% CPU"
    if vram == size:
        return "100% GPU"
    if vram > size or size == 0:
        return "Unknown"
    cpu = _round_half_away((size - vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def until(expires_at: str | None, now: datetime) -> str:
    """The ps UNTIL column: ``Stopping...`` once expired, else ``4 minutes from now``."""
    moment = parse_timestamp(expires_at)
    if moment is not None and now > moment:
        return "Stopping..."
    return human_time(moment, now)


def _trim_fraction(whole: int, fraction: int, digits: int) -> str:
    text = str(whole)
    if fraction:
        text += "." + str(fraction).rjust(digits, "0").rstrip("0")
    return text


def format_go_duration(seconds: float) -> str:
    """Go's ``Duration.String()``: ``0s``, ``750ns``, ``1.5µs``, ``325.953ms``, ``1h2m3.5s``."""
    nanos = round(seconds * 1e9)
    sign, nanos = ("-", -nanos) if nanos < 0 else ("", nanos)
    if nanos == 0:
        return "0s"
    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return sign + _trim_fraction(nanos // 1_000, nanos % 1_000, 3) + "µs"
    if nanos < 1_000_000_000:
        return sign + _trim_fraction(nanos // 1_000_000, nanos % 1_000_000, 6) + "ms"
    whole, fraction = divmod(nanos, 1_000_000_000)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    text = _trim_fraction(secs, fraction, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def stats_block(final: Chunk) -> str:
    """The ``--verbose`` statistics of a final chunk; each line only when its value > 0."""
    lines: list[str] = []

    def line(label: str, value: str) -> None:
        lines.append(f"{label + ':':<22}{value}")

    fields: dict[str, Any] = dict(final)
    total, load = int(fields.get("total_duration", 0)), int(fields.get("load_duration", 0))
    if total > 0:
        line("total duration", format_go_duration(total / 1e9))
    if load > 0:
        line("load duration", format_go_duration(load / 1e9))
    for prefix, count_key, duration_key in (
        ("prompt eval", "prompt_eval_count", "prompt_eval_duration"),
        ("eval", "eval_count", "eval_duration"),
    ):
        count, duration = int(fields.get(count_key, 0)), int(fields.get(duration_key, 0))
        if count > 0:
            line(f"{prefix} count", f"{count} token(s)")
        if duration > 0:
            line(f"{prefix} duration", format_go_duration(duration / 1e9))
            line(f"{prefix} rate", f"{count / (duration / 1e9):.2f} tokens/s")
    return "".join(f"{text}\n" for text in lines)


def _number(value: object) -> str:
    """A JSON number as Go's ``FormatFloat(f, 'f', -1, 64)`` prints it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _head(text: str, count: int) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [["", line] for line in lines[:count]]
    return rows + [["", "..."]] if len(lines) > count else rows


def _metadata_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + " ".join(_metadata_value(item) for item in value[:10]) + "]"
    return str(value)


def _model_rows(show: ShowResponse) -> list[list[str]]:
    details = show.get("details") or {}
    info = show.get("model_info") or {}
    rows: list[list[str]] = []
    if info:
        arch = str(info.get("general.architecture", details.get("family", "")))
        params = details.get("parameter_size") or ""
        if not params and isinstance(info.get("general.parameter_count"), int | float):
            params = human_number(int(info["general.parameter_count"]))
        rows += [["", "architecture", arch], ["", "parameters", params]]
        for label, key in (
            ("context length", "context_length"),
            ("embedding length", "embedding_length"),
        ):
            if f"{arch}.{key}" in info:
                rows.append(["", label, _number(info[f"{arch}.{key}"])])
    else:
        rows.append(["", "architecture", details.get("family", "")])
        rows.append(["", "parameters", details.get("parameter_size", "")])
    rows.append(["", "quantization", details.get("quantization_level", "")])
    if show.get("requires"):
        rows.append(["", "requires", show.get("requires", "")])
    return rows


def _projector_rows(info: Mapping[str, Any]) -> list[list[str]]:
    arch = str(info.get("general.architecture", ""))
    rows = [["", "architecture", arch]]
    if isinstance(info.get("general.parameter_count"), int | float):
        rows.append(["", "parameters", human_number(int(info["general.parameter_count"]))])
    for label, key in (
        ("embedding length", "vision.embedding_length"),
        ("dimensions", "vision.projection_dim"),
    ):
        if f"{arch}.{key}" in info:
            rows.append(["", label, _number(info[f"{arch}.{key}"])])
    return rows


def show_sections(show: ShowResponse, *, verbose: bool = False) -> str:
    """The section view of ``show`` with no field flag: Model, Capabilities, Projector,
    Parameters, [Metadata, Tensors with verbose], System and License (first 2 lines)."""
    sections: list[tuple[str, list[list[str]]]] = [("Model", _model_rows(show))]
    if show.get("capabilities"):
        sections.append(("Capabilities", [["", cap] for cap in show.get("capabilities", [])]))
    if show.get("projector_info"):
        sections.append(("Projector", _projector_rows(show.get("projector_info", {}))))
    if show.get("parameters"):
        params = [
            ["", *line.split()] for line in show.get("parameters", "").splitlines() if line.strip()
        ]
        sections.append(("Parameters", params))
    info = show.get("model_info") or {}
    if verbose and info:
        sections.append(
            ("Metadata", [["", key, _metadata_value(info[key])] for key in sorted(info)])
        )
    if verbose and show.get("tensors"):
        tensor_rows = [
            ["", str(t.get("name", "")), str(t.get("type", "")), str(t.get("shape", []))]
            for t in show.get("tensors", [])
        ]
        sections.append(("Tensors", tensor_rows))
    if show.get("system"):
        sections.append(("System", _head(show.get("system", ""), 2)))
    if show.get("license"):
        sections.append(("License", _head(show.get("license", ""), 2)))
    return "".join(f"  {title}\n{format_table(None, rows)}\n\n" for title, rows in sections)
