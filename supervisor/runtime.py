"""The shell around the Scheduler: feeds it events, carries out its actions, lends out workers.

Owned by the event loop: every scheduler call and every mutation here happens on it,
never across an await in the middle of a decision. Actions are carried out without
awaiting where the caller may be a cancelled task (a client that went away): Stop and
Spawn become tasks of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import psutil

from supervisor.config import Settings
from supervisor.errors import ApiError, LoadFailed, QueueFull, RequestCancelled
from supervisor.keepalive import KeepAlive
from supervisor.scheduler import (
    Action,
    Assign,
    LoadedModel,
    ModelSpec,
    PendingRequest,
    Reject,
    RejectReason,
    RequestId,
    Scheduler,
    Spawn,
    Stop,
    WorkerId,
)
from supervisor.workers import SpareWorker, WorkerCommand, WorkerHandle, WorkerLoadError
from worker.transport import ChannelError, private_runtime_dir

log = logging.getLogger(__name__)

# After a spare is used, its successor starts this much later, so that the new process's
# imports do not compete for the cores with the first tokens of the model just loaded.
SPARE_REFILL_DELAY_S = 1.0


@dataclass(frozen=True, slots=True)
class Lease:
    """A request's claim on a ready worker, held until the request ends."""

    request_id: RequestId
    handle: WorkerHandle
    load_duration_s: float


class Runtime:
    """Runs workers for the API; `lease()` is the one way handlers reach a worker."""

    def __init__(self, settings: Settings, memory_budget_bytes: int) -> None:
        self.settings = settings
        self.scheduler = Scheduler(
            max_loaded=settings.max_loaded_models,
            max_queue=settings.max_queue,
            memory_budget_bytes=memory_budget_bytes,
            default_keep_alive=settings.keep_alive,
        )
        self._workers: dict[WorkerId, WorkerHandle] = {}
        self._waiting: dict[RequestId, asyncio.Future[WorkerId]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._runtime_dir = private_runtime_dir()
        self._ticker: asyncio.Task[None] | None = None
        self._spare: SpareWorker | None = None
        self._spare_pending = False  # a spare is being started or is scheduled to be
        self._spares = itertools.count(1)
        self._stopping = False

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop())
        self._refill_spare(0.0)

    async def stop(self) -> None:
        """Stop every worker and the spare and reap them; called from the app's lifespan."""
        self._stopping = True
        if self._ticker is not None:
            self._ticker.cancel()
        handles = list(self._workers.values())
        spare, self._spare = self._spare, None
        stops = [h.stop() for h in handles] + ([spare.stop()] if spare is not None else [])
        await asyncio.gather(*stops, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        shutil.rmtree(self._runtime_dir, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def lease(self, spec: ModelSpec, keep_alive: KeepAlive | None) -> AsyncIterator[Lease]:
        """Wait for a worker of `spec` with a free slot; release it when the block ends."""
        rid = RequestId(next(self._ids))
        started = time.monotonic()
        future: asyncio.Future[WorkerId] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self._apply(
            self.scheduler.on_request(PendingRequest(rid, spec, keep_alive, started), started)
        )
        try:
            worker_id = await future
        except asyncio.CancelledError:
            self._waiting.pop(rid, None)
            self._apply(self.scheduler.on_request_cancelled(rid, time.monotonic()))
            raise
        handle = self._workers[worker_id]
        try:
            yield Lease(rid, handle, time.monotonic() - started)
        finally:
            self._apply(self.scheduler.on_request_finished(rid, time.monotonic()))

    def unload(self, path: str) -> None:
        """keep_alive 0 with no input: stop idle workers of this model now, busy ones when idle."""
        self._apply(self.scheduler.on_unload(path, time.monotonic()))

    def snapshot(self) -> list[tuple[LoadedModel, WorkerHandle | None]]:
        now = time.monotonic()
        return [(m, self._workers.get(m.worker_id)) for m in self.scheduler.snapshot(now)]

    def _apply(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Assign):
                future = self._waiting.pop(action.request_id, None)
                if future is not None and not future.done():
                    future.set_result(action.worker_id)
            elif isinstance(action, Reject):
                future = self._waiting.pop(action.request_id, None)
                if future is not None and not future.done():
                    future.set_exception(_rejection(action))
            elif isinstance(action, Spawn):
                self._spawn(action)
            elif isinstance(action, Stop):
                self._stop(action)
        self._wake.set()

    def _spawn(self, action: Spawn) -> None:
        spec, opts = action.spec, {k: v for k, v in action.spec.runner_options}
        command = WorkerCommand(
            model_name=spec.name,
            model_path=spec.path,
            backend=self.settings.worker_backend,
            num_ctx=_int(opts["num_ctx"], 2048),
            num_parallel=spec.num_parallel,
            num_batch=_int(opts.get("num_batch"), 512),
            num_gpu=_int(opts.get("num_gpu"), -1),
            num_thread=_int(opts.get("num_thread"), 0),
            use_mmap=bool(opts.get("use_mmap", True)),
            embedding=spec.is_embedding,
            stream_interval_ms=self.settings.stream_interval_ms,
            extra_args=self.settings.worker_args,
        )
        handle = WorkerHandle(action.worker_id, command, self._runtime_dir)
        handle.on_exit = self._on_exit
        self._workers[action.worker_id] = handle
        self._background(self._load(handle, self._take_spare()))

    async def _load(self, handle: WorkerHandle, spare: SpareWorker | None) -> None:
        wid = WorkerId(handle.worker_id)
        try:
            ready = await handle.start(self.settings.load_timeout_s, spare)
        except WorkerLoadError as exc:
            log.warning("model load failed model=%s error=%s", handle.name, exc)
            self._apply(self.scheduler.on_worker_failed(wid, str(exc), time.monotonic()))
            return
        finally:
            if spare is not None:
                self._refill_spare(SPARE_REFILL_DELAY_S)
        memory = max(ready.memory_bytes, _resident_bytes(ready.pid))
        log.info("model loaded model=%s pid=%s memory_bytes=%d", handle.name, ready.pid, memory)
        self._apply(self.scheduler.on_worker_ready(wid, memory, time.monotonic()))

    # ---- the spare worker ----

    def _take_spare(self) -> SpareWorker | None:
        """The spare, if one is alive (it is no longer ours); settings never change, so any
        spare was started for the same backend and worker arguments as this load."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        if spare.alive:
            return spare
        self._background(spare.stop())
        self._refill_spare(0.0)
        return None

    def _refill_spare(self, delay_s: float) -> None:
        """Start a spare after `delay_s` unless one exists, is coming, or spares are off."""
        if not self.settings.spare_worker or self._spare_pending or self._spare is not None:
            return
        self._spare_pending = True
        self._background(self._start_spare(delay_s))

    async def _start_spare(self, delay_s: float) -> None:
        try:
            await asyncio.sleep(delay_s)
            if self._stopping or self._spare is not None:
                return
            name = f"spare{next(self._spares)}"
            spare = await SpareWorker.spawn(
                self._runtime_dir, name, self.settings.worker_backend, self.settings.worker_args
            )
            if self._stopping:
                await spare.stop()
                return
            self._spare = spare
        except (OSError, ChannelError) as exc:  # the next cold load spawns as before
            log.warning("spare worker not started error=%s", exc)
        finally:
            self._spare_pending = False

    def _stop(self, action: Stop) -> None:
        handle = self._workers.get(action.worker_id)
        if handle is not None:
            log.info("unloading model=%s pid=%s reason=%s", handle.name, handle.pid, action.reason)
            self._background(handle.stop())

    def _on_exit(self, handle: WorkerHandle) -> None:
        wid = WorkerId(handle.worker_id)
        if self._workers.pop(wid, None) is not None and handle.ready is not None:
            self._apply(self.scheduler.on_worker_exited(wid, time.monotonic()))

    def _background(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick_loop(self) -> None:
        while True:
            self._wake.clear()
            deadline = self.scheduler.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._apply(self.scheduler.on_tick(time.monotonic()))


def _int(value: object, default: int) -> int:
    return int(value) if isinstance(value, (int, float)) else default


def _resident_bytes(pid: int) -> int:
    """The worker's real resident memory (weights paged in, KV cache, buffers)."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def _rejection(action: Reject) -> ApiError:
    if action.reason is RejectReason.QUEUE_FULL:
        return QueueFull()
    if action.reason is RejectReason.LOAD_FAILED:
        return LoadFailed(action.message or "model failed to load")
    if action.reason is RejectReason.TOO_LARGE:
        return ApiError(action.message or "model requires more memory than is available")
    return RequestCancelled()
