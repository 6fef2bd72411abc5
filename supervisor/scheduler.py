"""Decides which worker serves each request, when models load and unload, and what to evict.

Pure and synchronous: no I/O, no asyncio, no clock. Time comes in as `now` (monotonic
seconds). The owner is `supervisor/runtime.py`, which calls one `on_*` method per event, on
the event loop only, and carries out the returned actions in order:

* `Spawn(worker_id, spec, keep_alive)`: start a worker; later report `on_worker_ready` with
  its measured memory, or `on_worker_failed` if the load fails, then `on_worker_exited`.
* `Stop(worker_id, reason)`: stop that worker (log `reason`) and report `on_worker_exited`.
* `Assign(request_id, worker_id)`: send the request to the worker; report
  `on_request_finished` (or `on_request_cancelled`) when it ends.
* `Reject(request_id, reason, message)`: fail the request (QUEUE_FULL → 503, TOO_LARGE and
  LOAD_FAILED → 500 quoting `message`).

Call `on_tick(now)` at `next_deadline()` for keep-alive expiry. Events naming an unknown
worker or request (a race with an exit) are ignored. A worker goes STARTING → READY →
STOPPING → forgotten (at `on_worker_exited`); a failed load is forgotten at once. Requests
that a dying worker was serving are the runtime's to fail; this class just forgets them.

Keep-alive (Ollama, reference §1.17 and §5.5): a new worker takes the request's keep_alive or
the default; each assigned request that carries keep_alive overwrites the worker's duration,
one without it keeps the current one. The idle timer starts when the last request ends.

Policy, as numbered in the code:

on_request:
  1. A ready worker for `spec.key` (not marked for reload) has a free slot → Assign at once.
     Such a request never waits, so it is never refused for a full queue (Ollama's fast path).
  2. Strict mode only (`allow_oversize=False`): the estimate exceeds the whole budget
     → Reject(TOO_LARGE).
  3. `max_queue` requests are already waiting → Reject(QUEUE_FULL).
  4. Otherwise queue it and run the queue.

Running the queue (after every event), for each waiting request in arrival order:
  5. A worker for its key is starting or ready → wait for it; Assign when it has a free slot.
     So two requests for a cold model load it once.
  6. An earlier request is already waiting to load → wait: loads start in arrival order.
  7. Another worker holds the same model file (other options, marked for reload, or stopping)
     → mark a ready one for reload (Ollama's needsReload): Stop it now if idle ("options
     changed"), else it takes no new requests and stops once idle. Wait for it to exit.
  8. It fits now (loaded count below `max_loaded`, memory within budget counting workers
     still stopping) → Spawn.
  9. Stopping idle workers makes room (memory and count; `memory.plan_eviction`, shortest
     keep-alive first, then name) → Stop them ("evicted for <name>"); Spawn after they exit.
 10. Otherwise busy or starting workers hold the room → wait. A busy worker is never evicted.
  Leniency: an estimate above the whole budget counts as the whole budget, so the model
  loads once nothing else is loaded (the real load may still fit, e.g. with swap; a real
  failure comes back as on_worker_failed).

A ready worker that becomes idle:
 11. marked for reload → Stop("options changed"); keep-alive <= 0 → Stop("unload requested"
     after on_unload, else "keep-alive 0"); otherwise `expires_at = now + keep_alive`.
 12. on_tick: an idle worker whose expires_at <= now → Stop("keep-alive expired").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType, TypeAlias

from supervisor.keepalive import KeepAlive
from supervisor.memory import LoadedUsage, WorkerId, plan_eviction

__all__ = [
    "Action", "Assign", "LoadedModel", "ModelKey", "ModelSpec", "PendingRequest", "Reject",
    "RejectReason", "RequestId", "Scheduler", "Spawn", "Stop", "WorkerId", "WorkerState",
]  # fmt: skip

RequestId = NewType("RequestId", int)
RunnerOptions: TypeAlias = tuple[tuple[str, object], ...]
ModelKey: TypeAlias = tuple[str, RunnerOptions]
QUEUE_FULL_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class WorkerState(StrEnum):
    STARTING = "starting"  # spawned, loading the model
    READY = "ready"  # serving requests or idle
    STOPPING = "stopping"  # Stop issued, waiting for on_worker_exited


class RejectReason(StrEnum):
    QUEUE_FULL = "queue_full"  # too many requests waiting
    TOO_LARGE = "too_large"  # estimate above the whole budget (strict mode only)
    LOAD_FAILED = "load_failed"  # the worker it waited on failed to load


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What to load: one model file with the options that shape its runner.

    name: display name (`mistral:latest`), for logs and eviction order.
    path: model blob path; one worker per path at a time.
    digest: manifest digest, for /api/ps.
    runner_options: load-time options (num_ctx, num_parallel, num_batch, num_gpu, ...),
        stored sorted by name; sampling options never belong here.
    estimate_bytes: predicted memory of the loaded worker (memory.estimate).
    num_parallel: parallel slots (requests served at once), >= 1.
    is_embedding: an embedding model.
    """

    name: str
    path: str
    digest: str
    runner_options: RunnerOptions
    estimate_bytes: int
    num_parallel: int
    is_embedding: bool

    def __post_init__(self) -> None:
        if self.num_parallel < 1:
            raise ValueError("num_parallel must be >= 1")
        if self.estimate_bytes < 0:
            raise ValueError("estimate_bytes must be >= 0")
        ordered = tuple(sorted(self.runner_options, key=lambda item: item[0]))
        object.__setattr__(self, "runner_options", ordered)

    @property
    def key(self) -> ModelKey:
        """Specs with equal keys share a worker; same path with another key needs a reload."""
        return (self.path, self.runner_options)


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request for a model: id (unique), spec, keep_alive (None: not given), arrival time."""

    id: RequestId
    spec: ModelSpec
    keep_alive: KeepAlive | None
    arrived_at: float


@dataclass(frozen=True, slots=True)
class Spawn:
    worker_id: WorkerId
    spec: ModelSpec
    keep_alive: KeepAlive


@dataclass(frozen=True, slots=True)
class Stop:
    worker_id: WorkerId
    reason: str  # for the unload log line


@dataclass(frozen=True, slots=True)
class Assign:
    request_id: RequestId
    worker_id: WorkerId


@dataclass(frozen=True, slots=True)
class Reject:
    request_id: RequestId
    reason: RejectReason
    message: str = ""  # client-facing detail (the load error for LOAD_FAILED)


Action: TypeAlias = Spawn | Stop | Assign | Reject


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One worker in `snapshot()`; expires_at is None unless idle (math.inf: forever)."""

    worker_id: WorkerId
    spec: ModelSpec
    state: WorkerState
    active: int
    memory_bytes: int
    expires_at: float | None
    keep_alive: KeepAlive


@dataclass(slots=True)
class _Worker:
    id: WorkerId
    spec: ModelSpec
    keep_alive: KeepAlive
    memory_bytes: int
    state: WorkerState = WorkerState.STARTING
    active: set[RequestId] = field(default_factory=set)
    expires_at: float | None = None
    retiring: bool = False  # marked for reload: no new requests, stops once idle
    unload_requested: bool = False

    @property
    def is_idle(self) -> bool:
        return self.state is WorkerState.READY and not self.active

    @property
    def has_free_slot(self) -> bool:
        return (self.state is WorkerState.READY and not self.retiring
                and len(self.active) < self.spec.num_parallel)  # fmt: skip


class Scheduler:
    """The decision state; see the module docstring for the protocol and the policy."""

    def __init__(
        self,
        max_loaded: int,
        max_queue: int,
        memory_budget_bytes: int,
        default_keep_alive: KeepAlive,
        *,
        allow_oversize: bool = True,
    ) -> None:
        """max_loaded: cap on workers alive at once (0: no cap); max_queue: cap on waiting
        requests (0: nothing may wait); memory_budget_bytes: memory the workers may hold."""
        if max_loaded < 0 or max_queue < 0 or memory_budget_bytes <= 0:
            raise ValueError("need max_loaded >= 0, max_queue >= 0, memory_budget_bytes > 0")
        self._max_loaded = max_loaded
        self._max_queue = max_queue
        self._budget = memory_budget_bytes
        self._default_keep_alive = default_keep_alive
        self._allow_oversize = allow_oversize
        self._workers: dict[WorkerId, _Worker] = {}
        self._queue: list[PendingRequest] = []
        self._assigned: dict[RequestId, WorkerId] = {}
        self._next_id = 1

    # -- events ---------------------------------------------------------------------------

    def on_request(self, req: PendingRequest, now: float) -> list[Action]:
        if req.id in self._assigned or any(q.id == req.id for q in self._queue):
            raise ValueError(f"request id {req.id} is already known")
        worker = self._usable_worker(req.spec)
        if worker is not None and worker.has_free_slot:  # 1
            return [self._assign(req, worker)]
        if not self._allow_oversize and req.spec.estimate_bytes > self._budget:  # 2
            message = (f"model requires {req.spec.estimate_bytes} bytes of memory, more than "
                       f"the budget of {self._budget}")  # fmt: skip
            return [Reject(req.id, RejectReason.TOO_LARGE, message)]
        if len(self._queue) >= self._max_queue:  # 3
            return [Reject(req.id, RejectReason.QUEUE_FULL, QUEUE_FULL_MESSAGE)]
        self._queue.append(req)  # 4
        return self._settle(now)

    def on_worker_ready(self, worker_id: WorkerId, memory_bytes: int, now: float) -> list[Action]:
        """The worker loaded; `memory_bytes` (measured) replaces the estimate."""
        worker = self._workers.get(worker_id)
        if worker is None or worker.state is not WorkerState.STARTING:
            return []
        worker.state = WorkerState.READY
        worker.memory_bytes = memory_bytes
        return self._settle(now)

    def on_worker_failed(self, worker_id: WorkerId, message: str, now: float) -> list[Action]:
        """The worker failed to load: reject the requests waiting on it and forget it."""
        return self._forget(worker_id, message, now)

    def on_worker_exited(self, worker_id: WorkerId, now: float) -> list[Action]:
        """The process is gone. Waiters of a worker that never became ready are rejected."""
        return self._forget(worker_id, "worker exited while loading the model", now)

    def on_request_finished(self, request_id: RequestId, now: float) -> list[Action]:
        worker_id = self._assigned.pop(request_id, None)
        if worker_id is None:
            return []
        worker = self._workers.get(worker_id)
        if worker is not None:
            worker.active.discard(request_id)
        return self._settle(now)

    def on_request_cancelled(self, request_id: RequestId, now: float) -> list[Action]:
        """A waiting request just leaves the queue; an assigned one counts as finished."""
        for req in self._queue:
            if req.id == request_id:
                self._queue.remove(req)
                return self._settle(now)
        return self.on_request_finished(request_id, now)

    def on_unload(self, path: str, now: float) -> list[Action]:
        """keep_alive 0 without a prompt: idle workers of `path` stop now, busy ones when idle."""
        actions: list[Action] = []
        for worker in self._sorted_workers():
            if worker.spec.path != path or worker.state is WorkerState.STOPPING:
                continue
            worker.keep_alive = KeepAlive(0.0)
            worker.unload_requested = True
            if worker.is_idle:
                actions.append(self._stop(worker, "unload requested"))
        return actions + self._settle(now)

    def on_tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for worker in self._sorted_workers():  # 12
            if worker.is_idle and worker.expires_at is not None and worker.expires_at <= now:
                actions.append(self._stop(worker, "keep-alive expired"))
        return actions + self._settle(now)

    # -- queries --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest finite expires_at of an idle worker: when to call on_tick next."""
        deadlines = [
            w.expires_at
            for w in self._workers.values()
            if w.is_idle and w.expires_at is not None and math.isfinite(w.expires_at)
        ]
        return min(deadlines, default=None)

    def snapshot(self, now: float) -> list[LoadedModel]:
        """Every worker alive, by worker id. `now` is accepted for the runtime's convenience."""
        return [
            LoadedModel(
                w.id, w.spec, w.state, len(w.active), w.memory_bytes, w.expires_at, w.keep_alive
            )  # fmt: skip
            for w in self._sorted_workers()
        ]

    # -- decisions ------------------------------------------------------------------------

    def _settle(self, now: float) -> list[Action]:
        actions = self._assign_waiting()
        actions += self._handle_idle(now)
        actions += self._start_loads()
        return actions

    def _assign_waiting(self) -> list[Action]:
        actions: list[Action] = []
        for req in list(self._queue):
            worker = self._usable_worker(req.spec)
            if worker is not None and worker.has_free_slot:  # 5
                self._queue.remove(req)
                actions.append(self._assign(req, worker))
        return actions

    def _handle_idle(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for worker in self._sorted_workers():  # 11
            if not worker.is_idle or worker.expires_at is not None:
                continue
            if worker.retiring:
                actions.append(self._stop(worker, "options changed"))
            elif worker.keep_alive.unloads_now:
                reason = "unload requested" if worker.unload_requested else "keep-alive 0"
                actions.append(self._stop(worker, reason))
            else:
                worker.expires_at = now + worker.keep_alive.seconds
        return actions

    def _start_loads(self) -> list[Action]:
        actions: list[Action] = []
        for req in list(self._queue):
            if self._usable_worker(req.spec) is not None:  # 5
                continue
            if not self._try_load(req, actions):  # 6: later loads wait behind this one
                break
        return actions

    def _try_load(self, req: PendingRequest, actions: list[Action]) -> bool:
        """Steps 7-10 for one request; True when it spawned."""
        spec = req.spec
        holders = [w for w in self._workers.values() if w.spec.path == spec.path]
        if holders:  # 7
            for worker in holders:
                if worker.state is WorkerState.READY and not worker.retiring:
                    worker.retiring = True
                    if worker.is_idle:
                        actions.append(self._stop(worker, "options changed"))
            return False
        live = [w for w in self._workers.values() if w.state is not WorkerState.STOPPING]
        stopping_bytes = sum(w.memory_bytes for w in self._workers.values()
                             if w.state is WorkerState.STOPPING)  # fmt: skip
        need = min(spec.estimate_bytes, self._budget)  # leniency
        over_count = len(live) + 1 - self._max_loaded if self._max_loaded else 0
        usages = [LoadedUsage(w.id, w.spec.name, w.memory_bytes, w.keep_alive, not w.is_idle)
                  for w in live]  # fmt: skip
        plan = plan_eviction(need, self._budget - stopping_bytes, usages, max(0, over_count))
        if plan is None:  # 10
            return False
        for worker_id in plan:  # 9
            actions.append(self._stop(self._workers[worker_id], f"evicted for {spec.name}"))
        if plan or (self._max_loaded and len(self._workers) >= self._max_loaded):
            return False
        actions.append(self._spawn(req))  # 8
        return True

    # -- state changes --------------------------------------------------------------------

    def _forget(self, worker_id: WorkerId, message: str, now: float) -> list[Action]:
        worker = self._workers.pop(worker_id, None)
        actions: list[Action] = []
        if worker is not None:
            for request_id in worker.active:
                self._assigned.pop(request_id, None)
            if worker.state is WorkerState.STARTING:
                for req in [q for q in self._queue if q.spec.key == worker.spec.key]:
                    self._queue.remove(req)
                    actions.append(Reject(req.id, RejectReason.LOAD_FAILED, message))
        return actions + self._settle(now)

    def _usable_worker(self, spec: ModelSpec) -> _Worker | None:
        """A starting or ready worker for spec.key that is not marked for reload."""
        for worker in self._sorted_workers():
            if (worker.spec.key == spec.key and not worker.retiring
                    and worker.state is not WorkerState.STOPPING):  # fmt: skip
                return worker
        return None

    def _spawn(self, req: PendingRequest) -> Spawn:
        worker_id = WorkerId(self._next_id)
        self._next_id += 1
        keep_alive = self._default_keep_alive if req.keep_alive is None else req.keep_alive
        self._workers[worker_id] = _Worker(worker_id, req.spec, keep_alive,
                                           req.spec.estimate_bytes)  # fmt: skip
        return Spawn(worker_id, req.spec, keep_alive)

    def _assign(self, req: PendingRequest, worker: _Worker) -> Assign:
        worker.active.add(req.id)
        worker.expires_at = None
        if req.keep_alive is not None:
            worker.keep_alive = req.keep_alive
            worker.unload_requested = False
        self._assigned[req.id] = worker.id
        return Assign(req.id, worker.id)

    def _stop(self, worker: _Worker, reason: str) -> Stop:
        worker.state = WorkerState.STOPPING
        worker.expires_at = None
        return Stop(worker.id, reason)

    def _sorted_workers(self) -> list[_Worker]:
        return [self._workers[k] for k in sorted(self._workers)]
