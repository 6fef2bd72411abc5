"""The step loop's state: which request runs in which slot, and the requests waiting for one.

Engine thread only (DESIGN.md, "one thread for llama.cpp"): the server's engine thread
calls `accept` for each new request and `step` while `busy`, and every backend call
happens inside those. Replies leave through `emit`, one list per call, so all the chunks
of one step leave as one frame.

A request's life here, as numbered in the code:

1. `accept`: Tokenize is answered at once; Generate and Embed wait, in arrival order,
   for a free slot.
2. Admission (whenever a slot is free): `job.start()` claims the request (False: it was
   cancelled while waiting, and the loop has answered it). An Embed runs to the end in a
   free slot, between steps. A Generate is prepared, then started in the free slot whose
   cache shares the longest prefix with its prompt (`slots.choose_slot`).
3. `step`: running requests that were cancelled release their slots first, so a cancel
   frees its slot within one step; free slots admit waiting requests; then one backend
   step runs every active slot, and each event goes to its request's stream. A request
   that reaches a stop string or its budget releases its slot at once.
4. A failure is its request's alone: a bad prompt fails in admission, a slot's failed
   decode arrives as SlotFailed, and only an unexpected error of the whole step fails
   every running request.

Streamed chunks may wait up to `hold_s` (CORRAL_STREAM_INTERVAL_MS) so that the tokens of
a few steps leave as one frame, each request's run of chunks joined into one (`coalesce`).
Every frame wakes zmq's threads, the supervisor, its HTTP stack and the client, on the same
cores as llama.cpp's threads: at ~100 tokens/s on two cores that was ~0.8 ms of CPU per
token, taken from the decode (~0.2 ms with 50 ms). A step's chunks leave at once when
waiting for one more step like it would pass `hold_s`, and so do a request's first chunk
(time to first token), any reply that ends a request (with the chunks before it), and
everything held when a new request arrives (its prompt may make the next step long).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from worker.backend import Backend, BackendError, Ended, Sampled, SlotEvent
from worker.generation import Generation, GenerationStream, embed_inputs
from worker.protocol import (
    Chunk,
    Done,
    Embed,
    Embeddings,
    ErrorCode,
    ErrorInfo,
    Failed,
    Generate,
    Tokenize,
    Tokens,
)
from worker.slots import SlotCandidate, choose_slot

log = logging.getLogger(__name__)

Work = Generate | Embed | Tokenize
JobReply = Chunk | Done | Failed | Embeddings | Tokens


class Job:
    """One request in flight. Only the started/cancelled pair crosses threads (locked)."""

    __slots__ = ("request", "started_at", "_lock", "_started", "_cancelled")

    def __init__(self, request: Work) -> None:
        self.request = request
        self.started_at = 0.0  # perf_counter at start(), for the request_end log line
        self._lock = threading.Lock()
        self._started = False
        self._cancelled = False

    def start(self) -> bool:
        """Engine thread: claim the job; False if it was cancelled while waiting."""
        with self._lock:
            self._started = not self._cancelled
            self.started_at = time.perf_counter()
            return self._started

    def cancel(self) -> bool:
        """Loop: flag the job; True if it had not started (the caller answers it)."""
        with self._lock:
            self._cancelled = True
            return not self._started

    def is_cancelled(self) -> bool:
        with self._lock:
            return self._cancelled


def cancelled(request_id: int) -> Failed:
    return Failed(request_id, ErrorInfo(ErrorCode.CANCELLED, "request cancelled"))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(slots=True)
class _Running:
    job: Job
    stream: GenerationStream
    shown: bool = False  # a chunk of it has been queued


class Engine:
    """Slot table, waiting queue and event dispatch over one Backend (engine thread only)."""

    def __init__(
        self,
        backend: Backend,
        emit: Callable[[list[JobReply]], None],
        *,
        hold_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._generation = Generation(backend)
        self._emit = emit
        self._waiting: deque[Job] = deque()
        self._running: dict[int, _Running] = {}  # slot -> its request
        self._last_used = [0] * backend.n_slots
        self._tick = 0  # steps run; orders slots by last use
        self._out: list[JobReply] = []  # replies not yet emitted (held chunks included)
        self._hold_s = hold_s
        self._clock = clock
        self._urgent = False  # the next flush sends whatever _out holds
        self._emitted_at = float("-inf")  # clock() at the last emit
        self._step_s = 0.0  # how long the last backend step took

    @property
    def busy(self) -> bool:
        """True while a request runs or waits: the thread should keep stepping."""
        return bool(self._running or self._waiting)

    def accept(self, job: Job) -> None:
        """Take a new request (1)."""
        self._urgent = True
        request = job.request
        if isinstance(request, Tokenize):
            if job.start():
                self._answer(job, partial(self._tokenize, request))
        else:
            self._waiting.append(job)
            self._admit()
        self._flush()

    def step(self) -> None:
        """One step over every running request (3)."""
        self._reap_cancelled()
        self._admit()
        if self._running:
            self._tick += 1
            started = self._clock()
            try:
                events = self._backend.step()
            except Exception as exc:  # (4) a bug or engine fault: fail the step's requests
                log.exception("event=step_error running=%d", len(self._running))
                self._fail_running(ErrorInfo(ErrorCode.INTERNAL, describe(exc)))
            else:
                self._step_s = self._clock() - started
                for event in events:
                    self._on_event(event)
        self._flush()

    def shutdown(self) -> None:
        """Answer what still runs as cancelled, drop what waits, and close the backend."""
        for slot, running in list(self._running.items()):
            self._backend.release(slot)
            self._vacate(slot)
            self._finish(running.job, cancelled(running.job.request.id))
        self._waiting.clear()  # not started: the loop answers those (Job.cancel)
        self._flush()
        self._backend.close()

    # ---- admission (2) ----

    def _free_slots(self) -> list[int]:
        return [s for s in range(self._backend.n_slots) if s not in self._running]

    def _candidates(self, free: list[int]) -> list[SlotCandidate]:
        return [SlotCandidate(s, self._backend.cached(s), self._last_used[s]) for s in free]

    def _admit(self) -> None:
        while self._waiting:
            free = self._free_slots()
            if not free:
                return
            job = self._waiting.popleft()
            if not job.start():
                continue
            request = job.request
            if isinstance(request, Generate):
                self._begin(job, request, free)
            elif isinstance(request, Embed):
                slot, _ = choose_slot(self._candidates(free), [])
                self._answer(job, partial(self._embed, slot, request, job))

    def _begin(self, job: Job, request: Generate, free: list[int]) -> None:
        try:
            stream = self._generation.prepare(request)
            if stream.budget <= 0:
                self._end(job, stream.done(None))
                return
            slot, _ = choose_slot(self._candidates(free), stream.prompt)
            reused = self._backend.start(slot, stream.prompt, stream.sampling)
        except Exception as exc:  # the request loop's broad except (STYLE.md §4.8)
            self._finish(job, Failed(request.id, _error_info(job, exc)))
            return
        stream.begin(reused)
        self._running[slot] = _Running(job, stream)
        log.info(
            "event=slot_start id=%d slot=%d prompt_tokens=%d reused=%d",
            request.id, slot, len(stream.prompt), reused,
        )  # fmt: skip

    def _tokenize(self, request: Tokenize) -> Tokens:
        tokens = self._backend.tokenize(request.text, add_special=False, parse_special=True)
        return Tokens(request.id, tokens)

    def _embed(self, slot: int, request: Embed, job: Job) -> Embeddings:
        self._last_used[slot] = self._tick
        vectors, count = embed_inputs(self._backend, slot, request, job.is_cancelled)
        return Embeddings(request.id, vectors, count)

    def _answer(self, job: Job, compute: Callable[[], Tokens | Embeddings]) -> None:
        """Run a single-shot request now and answer it, whatever happens."""
        try:
            reply: JobReply = compute()
        except Exception as exc:  # the request loop's broad except (STYLE.md §4.8)
            reply = Failed(job.request.id, _error_info(job, exc))
        self._finish(job, reply)

    # ---- steps (3) ----

    def _reap_cancelled(self) -> None:
        for slot, running in list(self._running.items()):
            if running.job.is_cancelled():
                self._backend.release(slot)
                self._vacate(slot)
                self._finish(running.job, cancelled(running.job.request.id))

    def _on_event(self, event: SlotEvent) -> None:
        running = self._running.get(event.slot)
        if running is None:
            return  # the request already ended in this step
        if isinstance(event, Sampled):
            chunks, complete = running.stream.on_piece(event.piece)
            if chunks:
                self._urgent |= not running.shown  # the first one: time to first token
                running.shown = True
                self._out.extend(chunks)
            if complete:
                self._backend.release(event.slot)
                self._end(self._vacate(event.slot).job, running.stream.done(None))
        elif isinstance(event, Ended):
            self._end(self._vacate(event.slot).job, running.stream.done(event.reason))
        else:
            self._vacate(event.slot)
            log.warning("event=slot_failed slot=%d code=%s", event.slot, event.error.code)
            self._finish(running.job, Failed(running.job.request.id, event.error))

    def _fail_running(self, error: ErrorInfo) -> None:
        for slot, running in list(self._running.items()):
            self._backend.release(slot)
            self._vacate(slot)
            self._finish(running.job, Failed(running.job.request.id, error))

    def _vacate(self, slot: int) -> _Running:
        self._last_used[slot] = self._tick
        return self._running.pop(slot)

    # ---- replies ----

    def _end(self, job: Job, replies: list[Chunk | Done]) -> None:
        self._out.extend(replies[:-1])
        self._finish(job, replies[-1])

    def _finish(self, job: Job, reply: JobReply) -> None:
        """Queue a request's terminal reply and log its end."""
        request = job.request
        outcome = reply.error.code if isinstance(reply, Failed) else "ok"
        log.info(
            "event=request_end id=%d kind=%s outcome=%s duration_ms=%d",
            request.id, request.TAG, outcome, (time.perf_counter() - job.started_at) * 1000,
        )  # fmt: skip
        self._out.append(reply)
        self._urgent = True

    def _flush(self) -> None:
        """Emit what `_out` holds, unless it is only chunks that may wait for another step."""
        if not self._out:
            return
        now = self._clock()
        if not self._urgent and now + self._step_s < self._emitted_at + self._hold_s:
            return
        replies, self._out = coalesce(self._out), []
        self._urgent = False
        self._emitted_at = now
        self._emit(replies)


def coalesce(replies: Sequence[JobReply]) -> list[JobReply]:
    """`replies` with each request's chunks joined into as few chunks as keep their order.

    A request's chunks join into the first of them, which keeps its place ahead of the
    request's later replies; one whose thinking would follow text already joined (a model
    that thinks again after answering) starts a new chunk instead.
    """
    out: list[JobReply] = []
    joined: dict[int, int] = {}  # request id -> index in `out` of its open chunk
    for reply in replies:
        if isinstance(reply, Chunk):
            at = joined.get(reply.id)
            if at is not None:
                head = out[at]
                assert isinstance(head, Chunk)
                if not (head.text and reply.thinking):
                    text, thinking = head.text + reply.text, head.thinking + reply.thinking
                    out[at] = Chunk(reply.id, text, thinking)
                    continue
            joined[reply.id] = len(out)
        else:
            joined.pop(reply.id, None)
        out.append(reply)
    return out


def _error_info(job: Job, exc: Exception) -> ErrorInfo:
    """The protocol error for an exception raised while serving `job`."""
    if isinstance(exc, BackendError):
        return exc.error
    if isinstance(exc, MemoryError):
        return ErrorInfo(ErrorCode.OUT_OF_MEMORY, "out of memory")
    log.exception("event=request_error id=%d kind=%s", job.request.id, job.request.TAG)
    return ErrorInfo(ErrorCode.INTERNAL, describe(exc))
