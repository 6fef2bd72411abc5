"""Worker loop: handshake, hand requests to the engine thread, Cancel/Ping/Shutdown.

Threads and owners:

- The asyncio loop (main thread) owns the channel's receiving side and the table of
  requests in flight (`_jobs`). It answers Ping and Cancel at once, even during a step
  (llama_decode releases the GIL).
- The engine thread (`EngineThread`) owns the backend and the `Engine` (worker/engine.py).
  Every backend call happens there: load, tokenize, start, step, embed, close (DESIGN.md,
  "one thread for llama.cpp"). While a request runs or waits for a slot it steps the
  engine, running queued work (new requests) between steps; otherwise it blocks on its
  queue. All running requests share each step: continuous batching.
- The engine thread sends each step's replies itself, as one frame (`Channel.post`: the
  socket is shared under a lock and the send never blocks), so a streamed token never
  waits for the loop. It tells the loop which requests it has answered, and the loop
  forgets them. Each request gets exactly one terminal reply because the loop answers
  only requests the engine never claimed (`Job.start` and `Job.cancel` decide under a
  lock) and the engine answers only those it claimed. If the engine thread dies of an
  unexpected error, the worker exits with EXIT_ENGINE_FAILED (nothing could answer).

A request's life: QUEUED (in `_jobs`, on the engine queue or waiting for a slot) ->
RUNNING (claimed by the engine) -> answered.
Cancel while QUEUED: the loop answers Failed(CANCELLED) and the engine skips the request.
Cancel while RUNNING: a flag the engine checks before every step; the engine answers and
frees the request's slot within one step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from worker.backend import Backend, BackendError, LoadOptions
from worker.engine import Engine, Job, JobReply, Work, cancelled, describe
from worker.protocol import (
    EXIT_ENGINE_FAILED,
    EXIT_LOAD_FAILED,
    EXIT_OK,
    EXIT_PROTOCOL_ERROR,
    PROTOCOL_VERSION,
    TERMINAL_REPLIES,
    Cancel,
    Embed,
    ErrorCode,
    ErrorInfo,
    Generate,
    LoadFailed,
    Ping,
    Pong,
    ProtocolError,
    Ready,
    Shutdown,
    Tokenize,
)
from worker.transport import Channel, ChannelError

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOSE_TIMEOUT_S = 30.0  # how long shutdown waits for the engine to finish and close
PARENT_POLL_S = 1.0  # how often the worker checks that its supervisor is still alive


class EngineThread:
    """The one long-lived thread that makes every backend call, fed by a FIFO queue.

    `submit` and `call` may be used from the loop; the work itself runs on the thread.
    Once `attach`ed to an Engine, the thread steps it while it is busy, running queued
    work between steps. `stop` lets the thread finish the queued work and exit.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._engine: Engine | None = None  # touched on the engine thread only
        # Called on the engine thread if it dies of an unexpected error (set before attach).
        self.on_crash: Callable[[], None] | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, work: Callable[[], None]) -> None:
        self._queue.put(work)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the engine thread and await its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def work() -> None:
            try:
                result = fn()
            except Exception as exc:  # handed to the awaiting coroutine, not swallowed
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

        self.submit(work)
        return await future

    def attach(self, engine: Engine) -> None:
        """Step `engine` from now on; queued, so the engine thread alone touches it."""
        self.submit(partial(setattr, self, "_engine", engine))

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        try:
            while self._run_queued(block=not self._busy()):
                if self._busy():
                    assert self._engine is not None
                    self._engine.step()
        except Exception:  # a bug outside the per-request guards: say so, never die unseen
            log.exception("event=engine_crash")
            if self.on_crash is not None:
                self.on_crash()

    def _busy(self) -> bool:
        return self._engine is not None and self._engine.busy

    def _run_queued(self, *, block: bool) -> bool:
        """Run all queued work, first waiting for some if `block`; False once stopped."""
        try:
            work = self._queue.get(block=block)
        except queue.Empty:
            return True
        while work is not None:
            work()
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                return True
        return False


def _settle(future: asyncio.Future[T], result: T | None, exc: Exception | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


async def serve(
    channel: Channel, options: LoadOptions, load: Callable[[], Backend], parent_pid: int
) -> int:
    """Load on the engine thread, send Ready or LoadFailed, then serve; return the exit code.

    `parent_pid` is the supervisor's pid as seen at process start: when it goes away (we
    are re-parented), the worker shuts itself down, in any phase, so none outlives it.
    """
    engine = EngineThread()
    engine.start()
    parent = asyncio.create_task(parent_gone(parent_pid), name="parent-watch")
    try:
        started = time.perf_counter()
        loading = asyncio.ensure_future(engine.call(load))
        await asyncio.wait({loading, parent}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():
            log.warning("event=parent_gone phase=load action=exit")
            loading.cancel()
            return EXIT_OK
        backend = await _loaded(channel, loading)
        if backend is None:
            engine.stop()
            return EXIT_LOAD_FAILED
        facts = backend.facts
        log.info(
            "event=ready model=%s n_ctx=%d n_parallel=%d memory_bytes=%d load_ms=%d",
            options.model_name, facts.n_ctx, backend.n_slots, facts.memory_bytes,
            (time.perf_counter() - started) * 1000,
        )
        ready = Ready(
            protocol_version=PROTOCOL_VERSION,
            pid=os.getpid(),
            model=options.model_name,
            n_ctx=facts.n_ctx,
            n_parallel=backend.n_slots,
            memory_bytes=facts.memory_bytes,
        )
        server = WorkerServer(channel, engine, backend, options.stream_interval_ms / 1000)
        await channel.send(ready)
        return await server.run(parent)
    finally:
        parent.cancel()


async def _loaded(channel: Channel, loading: asyncio.Future[Backend]) -> Backend | None:
    """The loaded backend, or None after telling the supervisor why loading failed."""
    try:
        return loading.result()
    except BackendError as exc:
        log.error("event=load_failed code=%s message=%r", exc.error.code, exc.error.message)
        error = exc.error
    except Exception as exc:  # any load failure must reach the supervisor as LoadFailed
        log.exception("event=load_failed code=%s", ErrorCode.LOAD_FAILED)
        error = ErrorInfo(ErrorCode.LOAD_FAILED, describe(exc))
    await channel.send(LoadFailed(error))
    return None


class WorkerServer:
    """Serves requests after the handshake; `run` returns the exit code.

    Mutated only on the event loop, except `Job` flags (see module docstring).
    """

    def __init__(
        self, channel: Channel, engine: EngineThread, backend: Backend, hold_s: float = 0.0
    ) -> None:
        self._channel = channel
        self._engine = engine
        self._jobs: dict[int, Job] = {}
        self._loop = asyncio.get_running_loop()
        self._engine_failed: asyncio.Future[None] = self._loop.create_future()
        self._stepper = Engine(backend, self._emit, hold_s=hold_s)
        engine.on_crash = self._on_engine_crash
        engine.attach(self._stepper)

    async def run(self, parent: asyncio.Task[None]) -> int:
        """Serve until Shutdown, a protocol error, or `parent` (the supervisor's death)."""
        receiver = asyncio.create_task(self._receive_loop(), name="receiver")
        failed = self._engine_failed
        waited: set[asyncio.Future[Any]] = {receiver, parent, failed}
        try:
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                # Nothing can answer what is in flight: exit, and the supervisor fails it.
                log.error("event=fatal reason=engine_crash in_flight=%d", len(self._jobs))
                return EXIT_ENGINE_FAILED
            code = receiver.result() if receiver.done() else EXIT_OK
            if parent.done():
                log.warning("event=parent_gone action=shutdown")
        finally:
            receiver.cancel()
        await self._stop_engine()
        try:
            await asyncio.wait_for(self._channel.drain(), CLOSE_TIMEOUT_S)
        except TimeoutError:  # the supervisor stopped reading: what is left is dropped
            log.error("event=drain_timeout timeout_s=%s", CLOSE_TIMEOUT_S)
        return code

    async def _receive_loop(self) -> int:
        while True:
            try:
                msg = await self._channel.recv()
            except ProtocolError as exc:
                log.error("event=protocol_error message=%r", str(exc))
                return EXIT_PROTOCOL_ERROR
            if isinstance(msg, Generate | Embed | Tokenize):
                self._accept(msg)
            elif isinstance(msg, Cancel):
                self._cancel(msg.id)
            elif isinstance(msg, Ping):
                self._channel.post([Pong(msg.seq)])
            elif isinstance(msg, Shutdown):
                log.info("event=shutdown reason=requested in_flight=%d", len(self._jobs))
                return EXIT_OK
            else:
                log.error("event=protocol_error message=%r", f"unexpected {msg.TAG} from peer")
                return EXIT_PROTOCOL_ERROR

    def _accept(self, request: Work) -> None:
        if request.id in self._jobs:
            # A reply naming this id would be taken for the first request's: drop it, loudly.
            log.error("event=duplicate_id id=%d kind=%s action=dropped", request.id, request.TAG)
            return
        job = Job(request)
        self._jobs[request.id] = job
        self._engine.submit(partial(self._stepper.accept, job))

    def _cancel(self, request_id: int) -> None:
        job = self._jobs.get(request_id)
        if job is None:
            return  # already answered: Cancel gets no reply of its own
        if job.cancel():
            log.info("event=cancel id=%d state=queued", request_id)
            del self._jobs[request_id]
            self._channel.post([cancelled(request_id)])
        else:
            log.info("event=cancel id=%d state=running", request_id)

    async def _stop_engine(self) -> None:
        for request_id in list(self._jobs):
            self._cancel(request_id)
        try:
            await asyncio.wait_for(self._engine.call(self._stepper.shutdown), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.error("event=close_timeout timeout_s=%s", CLOSE_TIMEOUT_S)
        self._engine.stop()

    def _on_engine_crash(self) -> None:
        """Engine thread, dying: wake `run`."""
        self._to_loop(_settle, self._engine_failed, None, None)

    def _forget(self, request_ids: list[int]) -> None:
        """Loop: the engine has sent these requests' terminal replies."""
        for request_id in request_ids:
            self._jobs.pop(request_id, None)

    def _emit(self, replies: list[JobReply]) -> None:
        """Engine thread: send one step's replies, then let the loop forget finished requests."""
        try:
            self._channel.post(replies)
        except ChannelError as exc:  # the socket is gone: the worker is exiting
            log.warning("event=reply_dropped count=%d reason=%r", len(replies), str(exc))
        ended = [r.id for r in replies if isinstance(r, TERMINAL_REPLIES)]
        if ended:
            self._to_loop(self._forget, ended)

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Engine thread: run `fn(*args)` on the loop, unless the loop is already closed
        (the worker is exiting and nobody is left to tell)."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass


async def parent_gone(parent_pid: int) -> None:
    """Return once the supervisor has died (we were re-parented), so no worker outlives it."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_POLL_S)
