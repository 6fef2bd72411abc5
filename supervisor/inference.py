"""Generate, chat and embed as services: resolve, lease a worker, turn replies into records.

Handlers call `prepare()` (all validation, before any byte is sent) and then iterate one
of the `*_records` generators, which yield Ollama's wire records. Leaving a generator
early (the client went away) releases the lease, and the worker handle sends Cancel.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from registry.errors import InvalidOption
from registry.options import RUNNER_OPTIONS, validate_options
from supervisor.catalog import Catalog, LocalModel
from supervisor.config import Settings
from supervisor.errors import ApiError, BadRequest, ModelNotFound, from_error_code
from supervisor.keepalive import KeepAlive, KeepAliveError, parse_keep_alive
from supervisor.placement import model_spec
from supervisor.runtime import Runtime
from supervisor.scheduler import ModelSpec
from supervisor.workers import WorkerCrashed
from worker import protocol as p

Record = dict[str, Any]
THINK_LEVELS = ("high", "medium", "low", "max")


@dataclass(frozen=True)
class Prepared:
    """A validated inference request: which model, which worker spec, which options."""

    model_text: str
    local: LocalModel
    spec: ModelSpec
    keep_alive: KeepAlive | None
    options: dict[str, Any]
    """Predict options: the model's PARAMETERs overlaid with the request's."""


def resolve(catalog: Catalog, text: str, *, missing_status: int = 404) -> LocalModel:
    """The stored model a request names; 404 `model 'x' not found` as Ollama words it."""
    if not text.strip():
        if missing_status == 400:
            raise BadRequest("model is required")
        raise ModelNotFound("model '' not found")
    name = catalog.parse_name(text)
    stored = catalog.find(name)
    if stored is None:
        raise ModelNotFound(f"model '{text}' not found")
    return catalog.load(stored)


def prepare(
    catalog: Catalog,
    settings: Settings,
    free_memory: Callable[[], int],
    model_text: str,
    options: dict[str, Any] | None,
    keep_alive: object,
    *,
    missing_status: int = 404,
) -> Prepared:
    try:
        request_options = validate_options(options or {})
    except InvalidOption as exc:
        raise BadRequest(str(exc)) from exc
    try:
        ka = parse_keep_alive(keep_alive)
    except KeepAliveError as exc:
        raise BadRequest(str(exc)) from exc
    local = resolve(catalog, model_text, missing_status=missing_status)
    if local.model_path is None:
        raise ApiError(f"model '{model_text}' has no weights layer")
    merged = {k: v for k, v in local.params.items() if k not in RUNNER_OPTIONS}
    merged.update({k: v for k, v in request_options.items() if k not in RUNNER_OPTIONS})
    spec = model_spec(local, request_options, settings, free_memory)
    return Prepared(model_text, local, spec, ka, merged)


def check_think(local: LocalModel, think: bool | str | None) -> bool | str | None:
    """Ollama's thinking rules: default on for thinking models, 400 for others asking for it."""
    if isinstance(think, str) and think not in THINK_LEVELS:
        allowed = '"high", "medium", "low", "max", true, or false'
        raise BadRequest(f'invalid think value: "{think}" (must be {allowed})')
    thinks = "thinking" in local.capabilities
    if think is None:
        return True if thinks else None
    if think and not thinks:
        raise BadRequest(f'"{local.display}" does not support thinking')
    return think


def check_top_logprobs(top_logprobs: int | None) -> None:
    if top_logprobs is not None and not 0 <= top_logprobs <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")


def check_format(fmt: object) -> str | dict[str, object] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json" or isinstance(fmt, dict):
        return fmt
    raise BadRequest(f'invalid format: {fmt!r}; expected "json" or a valid JSON Schema object')


def stats(done: p.Done, started: float, load_s: float) -> Record:
    return {
        "total_duration": int((time.monotonic() - started) * 1e9),
        "load_duration": int(load_s * 1e9),
        "prompt_eval_count": done.prompt_eval_count,
        "prompt_eval_duration": done.prompt_eval_duration_ns,
        "eval_count": done.eval_count,
        "eval_duration": done.eval_duration_ns,
    }


async def stream_replies(
    runtime: Runtime, prep: Prepared, build: Callable[[int], p.Generate | p.Embed]
) -> AsyncGenerator[tuple[p.Message, float], None]:
    """Lease a worker, send the request `build(id)` makes, yield (reply, load seconds)."""
    async with runtime.lease(prep.spec, prep.keep_alive) as lease:
        try:
            async for reply in lease.handle.request(build(lease.request_id)):
                if isinstance(reply, p.Failed):
                    raise from_error_code(reply.error.code, reply.error.message)
                yield reply, lease.load_duration_s
        except WorkerCrashed as exc:
            raise ApiError(str(exc)) from exc


async def load_only(runtime: Runtime, prep: Prepared) -> float:
    """Load the model (or refresh its keep-alive) without running anything; the load seconds."""
    async with runtime.lease(prep.spec, prep.keep_alive) as lease:
        return lease.load_duration_s


class _UtcClock:
    """`created_at` for every streamed record: UTC, RFC 3339 with microseconds and a Z.

    It runs once per streamed token, so the date and time of day are formatted once per
    second and only the microseconds each time (datetime's isoformat costs ~10x more).
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1e6):06d}Z"


created_at = _UtcClock()
