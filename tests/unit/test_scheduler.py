"""The pure scheduler: tables of (event, now) -> expected actions; no sleeps, no processes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from supervisor.keepalive import FOREVER, KeepAlive
from supervisor.scheduler import (
    QUEUE_FULL_MESSAGE,
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
    WorkerState,
)

GIB = 1 << 30
DEFAULT = KeepAlive(300.0)


def spec(name: str, gib: int = 3, parallel: int = 1, num_ctx: int = 2048) -> ModelSpec:
    return ModelSpec(
        name=name,
        path=f"/blobs/{name}",
        digest=f"sha256:{name}",
        runner_options=(("num_parallel", parallel), ("num_ctx", num_ctx)),
        estimate_bytes=gib * GIB,
        num_parallel=parallel,
        is_embedding=False,
    )


A, B, C, D = spec("a"), spec("b"), spec("c"), spec("d")
A2 = spec("a", num_ctx=4096)  # same file as A, other runner options
A_PAR = spec("a", parallel=2)
BIG = spec("big", gib=12)
W1, W2, W3, W4, W5 = (WorkerId(i) for i in range(1, 6))
R1, R2, R3, R4, R5 = (RequestId(i) for i in range(1, 6))


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    id: RequestId
    spec: ModelSpec
    at: float = 0.0
    keep_alive: KeepAlive | None = None


@dataclass(frozen=True)
class Ready:
    worker: WorkerId
    at: float = 0.0
    gib: int = 3


@dataclass(frozen=True)
class Failed:
    worker: WorkerId
    message: str
    at: float = 0.0


@dataclass(frozen=True)
class Exited:
    worker: WorkerId
    at: float = 0.0


@dataclass(frozen=True)
class Finished:
    request: RequestId
    at: float = 0.0


@dataclass(frozen=True)
class Cancelled:
    request: RequestId
    at: float = 0.0


@dataclass(frozen=True)
class Unload:
    path: str
    at: float = 0.0


@dataclass(frozen=True)
class Tick:
    at: float


Event = Req | Ready | Failed | Exited | Finished | Cancelled | Unload | Tick
Step = tuple[Event, list[Action]]


def feed(s: Scheduler, event: Event) -> list[Action]:
    match event:
        case Req(rid, sp, at, keep):
            return s.on_request(PendingRequest(rid, sp, keep, at), at)
        case Ready(wid, at, gib):
            return s.on_worker_ready(wid, gib * GIB, at)
        case Failed(wid, message, at):
            return s.on_worker_failed(wid, message, at)
        case Exited(wid, at):
            return s.on_worker_exited(wid, at)
        case Finished(rid, at):
            return s.on_request_finished(rid, at)
        case Cancelled(rid, at):
            return s.on_request_cancelled(rid, at)
        case Unload(path, at):
            return s.on_unload(path, at)
        case Tick(at):
            return s.on_tick(at)
    raise AssertionError(event)


def play(s: Scheduler, steps: Sequence[Step]) -> None:
    for index, (event, expected) in enumerate(steps):
        assert feed(s, event) == expected, f"step {index}: {event}"


def make(max_loaded: int = 3, max_queue: int = 8, budget_gib: int = 10, **kw: bool) -> Scheduler:
    return Scheduler(max_loaded, max_queue, budget_gib * GIB, DEFAULT, **kw)


def loaded(sp: ModelSpec, rid: RequestId, wid: WorkerId, at: float = 0.0,
           keep: KeepAlive | None = None) -> list[Step]:  # fmt: skip
    """Steps that cold-load `sp` for one request that then finishes, leaving it idle."""
    return [
        (Req(rid, sp, at, keep), [Spawn(wid, sp, DEFAULT if keep is None else keep)]),
        (Ready(wid, at), [Assign(rid, wid)]),
        (Finished(rid, at), []),
    ]


# -- loading and reuse ----------------------------------------------------------------------


def test_scheduler_cold_load_once_for_two_requests() -> None:
    play(make(), [
        (Req(R1, A_PAR), [Spawn(W1, A_PAR, DEFAULT)]),
        (Req(R2, A_PAR, 0.1), []),
        (Ready(W1, 1.0), [Assign(R1, W1), Assign(R2, W1)]),
    ])  # fmt: skip


def test_scheduler_reuses_a_ready_worker() -> None:
    play(make(), [*loaded(A, R1, W1), (Req(R2, A, 5.0), [Assign(R2, W1)])])


def test_scheduler_queues_when_slots_are_full_and_assigns_on_finish() -> None:
    play(make(), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Ready(W1), [Assign(R1, W1)]),
        (Req(R2, A), []),
        (Req(R3, A), []),
        (Finished(R1, 2.0), [Assign(R2, W1)]),
        (Finished(R2, 3.0), [Assign(R3, W1)]),
        (Finished(R3, 4.0), []),
    ])  # fmt: skip


def test_scheduler_loads_two_models_that_fit_side_by_side() -> None:
    play(make(), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Req(R2, B), [Spawn(W2, B, DEFAULT)]),
        (Ready(W2), [Assign(R2, W2)]),
        (Ready(W1), [Assign(R1, W1)]),
    ])  # fmt: skip


# -- keep-alive -----------------------------------------------------------------------------


def test_scheduler_keep_alive_expires_at_exact_boundary() -> None:
    s = make()
    play(s, [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Ready(W1), [Assign(R1, W1)]),
        (Finished(R1, 10.0), []),
    ])  # fmt: skip
    assert s.next_deadline() == 310.0
    play(s, [
        (Tick(309.999), []),
        (Tick(310.0), [Stop(W1, "keep-alive expired")]),
        (Tick(400.0), []),
    ])  # fmt: skip
    assert s.next_deadline() is None
    play(s, [(Exited(W1, 401.0), []), (Req(R2, A, 402.0), [Spawn(W2, A, DEFAULT)])])


def test_scheduler_keep_alive_zero_stops_after_the_request() -> None:
    zero = KeepAlive(0)
    play(make(), [
        (Req(R1, A, keep_alive=zero), [Spawn(W1, A, zero)]),
        (Ready(W1), [Assign(R1, W1)]),
        (Finished(R1, 1.0), [Stop(W1, "keep-alive 0")]),
    ])  # fmt: skip


def test_scheduler_keep_alive_zero_waits_for_queued_requests() -> None:
    zero = KeepAlive(0)
    play(make(), [
        (Req(R1, A, keep_alive=zero), [Spawn(W1, A, zero)]),
        (Req(R2, A), []),
        (Ready(W1), [Assign(R1, W1)]),
        (Finished(R1, 1.0), [Assign(R2, W1)]),
        (Finished(R2, 2.0), [Stop(W1, "keep-alive 0")]),
    ])  # fmt: skip


def test_scheduler_keep_alive_absent_keeps_previous_duration() -> None:
    s = make()
    minute = KeepAlive(60)
    play(s, loaded(A, R1, W1, at=10.0, keep=minute))
    assert s.next_deadline() == 70.0
    play(s, [(Req(R2, A, 20.0), [Assign(R2, W1)]), (Finished(R2, 30.0), [])])
    assert s.next_deadline() == 90.0
    assert s.snapshot(30.0)[0].keep_alive == minute
    play(s, [(Req(R3, A, 40.0, KeepAlive(1)), [Assign(R3, W1)]), (Finished(R3, 41.0), [])])
    assert s.next_deadline() == 42.0


def test_scheduler_keep_alive_forever_never_expires() -> None:
    s = make()
    play(s, loaded(A, R1, W1, keep=FOREVER))
    assert s.next_deadline() is None
    assert s.snapshot(0.0)[0].expires_at == math.inf
    assert feed(s, Tick(1e12)) == []


def test_scheduler_next_deadline_is_the_earliest_idle_timer() -> None:
    s = make()
    assert s.next_deadline() is None
    play(s, [*loaded(A, R1, W1, at=0.0, keep=KeepAlive(100)),
             *loaded(B, R2, W2, at=5.0, keep=KeepAlive(50))])  # fmt: skip
    assert s.next_deadline() == 55.0
    play(s, [(Req(R3, B, 6.0), [Assign(R3, W2)])])  # busy: its timer is off
    assert s.next_deadline() == 100.0


def test_scheduler_request_for_a_stopping_model_waits_for_its_exit() -> None:
    play(make(), [
        *loaded(A, R1, W1),
        (Tick(300.0), [Stop(W1, "keep-alive expired")]),
        (Req(R2, A, 300.5), []),  # one worker per model file: no second copy while it stops
        (Exited(W1, 301.0), [Spawn(W2, A, DEFAULT)]),
    ])  # fmt: skip


# -- eviction -------------------------------------------------------------------------------


def test_scheduler_evicts_shortest_keep_alive_then_name() -> None:
    s = make(budget_gib=10)
    play(s, [
        *loaded(A, R1, W1, keep=KeepAlive(600)),
        *loaded(C, R2, W2, keep=KeepAlive(60)),
        *loaded(B, R3, W3, keep=KeepAlive(60)),
        (Req(R4, D, 1.0), [Stop(W3, "evicted for d")]),  # b: 60 s and before c
        (Exited(W3, 2.0), [Spawn(W4, D, DEFAULT)]),
    ])  # fmt: skip


def test_scheduler_never_evicts_busy_and_loads_after_it_finishes() -> None:
    big_a, big_b = spec("a", gib=6), spec("b", gib=6)
    play(make(budget_gib=10), [
        (Req(R1, big_a), [Spawn(W1, big_a, DEFAULT)]),
        (Ready(W1, gib=6), [Assign(R1, W1)]),
        (Req(R2, big_b, 1.0), []),
        (Tick(2.0), []),
        (Finished(R1, 3.0), [Stop(W1, "evicted for b")]),
        (Exited(W1, 4.0), [Spawn(W2, big_b, DEFAULT)]),
        (Ready(W2, 5.0, gib=6), [Assign(R2, W2)]),
    ])  # fmt: skip


def test_scheduler_loads_start_in_arrival_order() -> None:
    big_a, big_b, small = spec("a", gib=6), spec("b", gib=6), spec("c", gib=2)
    play(make(budget_gib=10), [
        (Req(R1, big_a), [Spawn(W1, big_a, DEFAULT)]),
        (Ready(W1, gib=6), [Assign(R1, W1)]),
        (Req(R2, big_b), []),
        (Req(R3, small), []),  # it would fit, but waits behind b
        (Finished(R1, 1.0), [Stop(W1, "evicted for b")]),
        (Exited(W1, 2.0), [Spawn(W2, big_b, DEFAULT), Spawn(W3, small, DEFAULT)]),
    ])  # fmt: skip


def test_scheduler_max_loaded_evicts_idle() -> None:
    play(make(max_loaded=2, budget_gib=100), [
        *loaded(A, R1, W1, keep=KeepAlive(600)),
        *loaded(B, R2, W2, keep=KeepAlive(60)),
        (Req(R3, C, 1.0), [Stop(W2, "evicted for c")]),
        (Exited(W2, 2.0), [Spawn(W3, C, DEFAULT)]),
    ])  # fmt: skip


def test_scheduler_max_loaded_with_all_busy_waits() -> None:
    play(make(max_loaded=1, budget_gib=100), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Ready(W1), [Assign(R1, W1)]),
        (Req(R2, B), []),
        (Finished(R1, 1.0), [Stop(W1, "evicted for b")]),
        (Exited(W1, 2.0), [Spawn(W2, B, DEFAULT)]),
    ])  # fmt: skip


def test_scheduler_oversize_model_loads_when_alone() -> None:
    play(make(budget_gib=10), [(Req(R1, BIG), [Spawn(W1, BIG, DEFAULT)])])


def test_scheduler_oversize_model_evicts_every_idle_worker_first() -> None:
    play(make(budget_gib=10), [
        *loaded(A, R1, W1, keep=KeepAlive(60)),
        *loaded(B, R2, W2, keep=KeepAlive(30)),
        (Req(R3, BIG, 1.0), [Stop(W2, "evicted for big"), Stop(W1, "evicted for big")]),
        (Exited(W2, 2.0), []),
        (Exited(W1, 3.0), [Spawn(W3, BIG, DEFAULT)]),
    ])  # fmt: skip


def test_scheduler_strict_mode_rejects_too_large() -> None:
    actions = feed(make(budget_gib=10, allow_oversize=False), Req(R1, BIG))
    assert len(actions) == 1 and isinstance(actions[0], Reject)
    assert actions[0].reason is RejectReason.TOO_LARGE
    assert "budget" in actions[0].message


# -- queue limits and failures --------------------------------------------------------------


def test_scheduler_rejects_when_queue_is_full() -> None:
    full = Reject(R4, RejectReason.QUEUE_FULL, QUEUE_FULL_MESSAGE)
    play(make(max_queue=1), [
        (Req(R1, A_PAR), [Spawn(W1, A_PAR, DEFAULT)]),
        (Ready(W1), [Assign(R1, W1)]),
        (Req(R2, B), [Spawn(W2, B, DEFAULT)]),  # R2 now waits for its load
        (Req(R3, A_PAR), [Assign(R3, W1)]),  # a free slot never waits, queue or not
        (Req(R4, C), [full]),
    ])  # fmt: skip


def test_scheduler_max_queue_zero_rejects_anything_that_must_wait() -> None:
    play(make(max_queue=0), [(Req(R1, A), [Reject(R1, RejectReason.QUEUE_FULL,
                                                  QUEUE_FULL_MESSAGE)])])  # fmt: skip


def test_scheduler_load_failure_rejects_waiters_and_runs_the_queue() -> None:
    failed = RejectReason.LOAD_FAILED
    play(make(max_loaded=1), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Req(R2, A), []),
        (Req(R3, B), []),  # waits: one model at a time
        (Failed(W1, "out of memory", 1.0),
         [Reject(R1, failed, "out of memory"), Reject(R2, failed, "out of memory"),
          Spawn(W2, B, DEFAULT)]),
        (Exited(W1, 1.5), []),
        (Ready(W2, 2.0), [Assign(R3, W2)]),
    ])  # fmt: skip


def test_scheduler_exit_during_load_rejects_waiters() -> None:
    message = "worker exited while loading the model"
    play(make(), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Exited(W1, 1.0), [Reject(R1, RejectReason.LOAD_FAILED, message)]),
    ])  # fmt: skip


def test_scheduler_crash_of_busy_worker_forgets_it() -> None:
    s = make()
    play(s, [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Ready(W1), [Assign(R1, W1)]),
        (Req(R2, A), []),
        (Exited(W1, 1.0), [Spawn(W2, A, DEFAULT)]),  # the waiter gets a fresh worker
        (Finished(R1, 1.5), []),  # the runtime failed it; unknown now
    ])  # fmt: skip
    assert [m.worker_id for m in s.snapshot(2.0)] == [W2]


# -- cancellation ---------------------------------------------------------------------------


def test_scheduler_cancel_queued_request_just_leaves_the_queue() -> None:
    play(make(), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Req(R2, A), []),
        (Cancelled(R2), []),
        (Ready(W1), [Assign(R1, W1)]),
        (Finished(R1, 1.0), []),
    ])  # fmt: skip


def test_scheduler_cancel_assigned_request_counts_as_finished() -> None:
    play(make(), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Ready(W1), [Assign(R1, W1)]),
        (Req(R2, A), []),
        (Cancelled(R1, 1.0), [Assign(R2, W1)]),
        (Cancelled(R5, 1.0), []),  # unknown id
    ])  # fmt: skip


def test_scheduler_worker_ready_with_no_waiters_starts_its_timer() -> None:
    s = make()
    play(s, [(Req(R1, A), [Spawn(W1, A, DEFAULT)]), (Cancelled(R1), []), (Ready(W1, 5.0), [])])
    assert s.next_deadline() == 305.0


# -- reload and unload ----------------------------------------------------------------------


def test_scheduler_options_change_reloads_idle_worker() -> None:
    play(make(), [
        *loaded(A, R1, W1),
        (Req(R2, A2, 1.0), [Stop(W1, "options changed")]),
        (Exited(W1, 2.0), [Spawn(W2, A2, DEFAULT)]),
        (Ready(W2, 3.0), [Assign(R2, W2)]),
    ])  # fmt: skip


def test_scheduler_options_change_waits_for_busy_worker() -> None:
    play(make(), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Ready(W1), [Assign(R1, W1)]),
        (Req(R2, A2, 1.0), []),
        (Req(R3, A, 1.5), []),  # the old worker takes no new requests
        (Finished(R1, 2.0), [Stop(W1, "options changed")]),
        (Exited(W1, 3.0), [Spawn(W2, A2, DEFAULT)]),
        (Ready(W2, 4.0), [Assign(R2, W2)]),
        (Finished(R2, 5.0), [Stop(W2, "options changed")]),  # now R3 needs the old options
        (Exited(W2, 6.0), [Spawn(W3, A, DEFAULT)]),
        (Ready(W3, 7.0), [Assign(R3, W3)]),
    ])  # fmt: skip


def test_scheduler_unload_idle_model_stops_it_now() -> None:
    play(make(), [
        *loaded(A, R1, W1),
        (Unload(B.path, 1.0), []),
        (Unload(A.path, 1.0), [Stop(W1, "unload requested")]),
    ])  # fmt: skip


def test_scheduler_unload_busy_model_stops_it_when_idle() -> None:
    play(make(), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Ready(W1), [Assign(R1, W1)]),
        (Unload(A.path, 1.0), []),
        (Finished(R1, 2.0), [Stop(W1, "unload requested")]),
    ])  # fmt: skip


def test_scheduler_unload_while_loading_stops_after_waiters() -> None:
    play(make(), [
        (Req(R1, A), [Spawn(W1, A, DEFAULT)]),
        (Unload(A.path, 0.5), []),
        (Ready(W1, 1.0), [Assign(R1, W1)]),
        (Finished(R1, 2.0), [Stop(W1, "unload requested")]),
    ])  # fmt: skip


# -- snapshot and API edges -----------------------------------------------------------------


def test_scheduler_snapshot_fields() -> None:
    s = make()
    play(s, [(Req(R1, A_PAR), [Spawn(W1, A_PAR, DEFAULT)]), (Req(R2, B), [Spawn(W2, B, DEFAULT)])])
    assert s.snapshot(0.0) == [
        LoadedModel(W1, A_PAR, WorkerState.STARTING, 0, 3 * GIB, None, DEFAULT),
        LoadedModel(W2, B, WorkerState.STARTING, 0, 3 * GIB, None, DEFAULT),
    ]
    play(s, [(Ready(W1, 1.0, gib=2), [Assign(R1, W1)]), (Ready(W2, 1.0), [Assign(R2, W2)]),
             (Finished(R2, 2.0), []), (Tick(302.0), [Stop(W2, "keep-alive expired")])])  # fmt: skip
    assert s.snapshot(303.0) == [
        LoadedModel(W1, A_PAR, WorkerState.READY, 1, 2 * GIB, None, DEFAULT),
        LoadedModel(W2, B, WorkerState.STOPPING, 0, 3 * GIB, None, DEFAULT),
    ]
    play(s, [(Finished(R1, 304.0), [])])
    assert s.snapshot(304.0)[0].expires_at == 604.0


def test_scheduler_events_for_unknown_workers_are_ignored() -> None:
    s = make()
    for event in (Ready(W5), Failed(W5, "x"), Exited(W5), Finished(R5), Tick(1.0)):
        assert feed(s, event) == []


def test_scheduler_rejects_duplicate_request_id() -> None:
    s = make()
    feed(s, Req(R1, A))
    with pytest.raises(ValueError, match="already known"):
        feed(s, Req(R1, A))


def test_scheduler_spec_key_ignores_option_order() -> None:
    one = ModelSpec("m", "/p", "d", (("num_ctx", 1), ("num_batch", 2)), 1, 1, False)
    two = ModelSpec("m", "/p", "d", (("num_batch", 2), ("num_ctx", 1)), 1, 1, False)
    assert one.key == two.key == ("/p", (("num_batch", 2), ("num_ctx", 1)))
    assert A.key != A2.key and A.path == A2.path


@pytest.mark.parametrize(
    ("max_loaded", "max_queue", "budget"), [(-1, 1, 1), (1, -1, 1), (1, 1, 0)]
)
def test_scheduler_rejects_bad_settings(max_loaded: int, max_queue: int, budget: int) -> None:
    with pytest.raises(ValueError):
        Scheduler(max_loaded, max_queue, budget, DEFAULT)
