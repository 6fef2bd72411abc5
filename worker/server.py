"""Worker loop: handshake, dispatch requests to the engine thread, Cancel/Ping/Shutdown.

Threads and owners:

- The asyncio loop (main thread) owns the channel, the table of requests in flight
  (`_jobs`) and the outbox. It answers Ping and Cancel at once, even during generation.
- The engine thread (`EngineThread`) owns the backend. Every backend call happens there:
  load, tokenize, generate, embed, close (DESIGN.md, "one thread for llama.cpp"). It takes
  work from a FIFO queue, so requests run one at a time, in arrival order.
- The engine thread hands replies back only through `loop.call_soon_threadsafe`. The loop
  forwards a reply only while its request is still in `_jobs` and removes the request with
  its terminal reply: so each request gets exactly one terminal reply, whoever races.

A request's life: QUEUED (in `_jobs`, waiting on the engine queue) -> RUNNING -> answered.
Cancel while QUEUED: the loop answers Failed(CANCELLED) and the engine skips the request.
Cancel while RUNNING: a flag that generation checks between tokens; the engine answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from worker.backend import Backend, BackendError, LoadOptions
from worker.generation import Generation, embed_inputs
from worker.protocol import (
    EXIT_LOAD_FAILED,
    EXIT_OK,
    EXIT_PROTOCOL_ERROR,
    PROTOCOL_VERSION,
    TERMINAL_REPLIES,
    Cancel,
    Chunk,
    Done,
    Embed,
    Embeddings,
    ErrorCode,
    ErrorInfo,
    Failed,
    Generate,
    LoadFailed,
    Ping,
    Pong,
    ProtocolError,
    Ready,
    Reply,
    Shutdown,
    Tokenize,
    Tokens,
)
from worker.transport import Channel

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Generate | Embed | Tokenize
JobReply = Chunk | Done | Failed | Embeddings | Tokens

CLOSE_TIMEOUT_S = 30.0  # how long shutdown waits for the engine to finish and close
PARENT_POLL_S = 1.0  # how often the worker checks that its supervisor is still alive


class EngineThread:
    """The one long-lived thread that makes every backend call, fed by a FIFO queue.

    `submit` and `call` may be used from the loop; the work itself runs on the thread.
    `stop` lets the thread finish the queued work and exit.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

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

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            work()


def _settle(future: asyncio.Future[T], result: T | None, exc: Exception | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class _Job:
    """One request in flight. Only the started/cancelled pair crosses threads (locked)."""

    __slots__ = ("request", "_lock", "_started", "_cancelled")

    def __init__(self, request: Work) -> None:
        self.request = request
        self._lock = threading.Lock()
        self._started = False
        self._cancelled = False

    def start(self) -> bool:
        """Engine thread: claim the job; False if it was cancelled while queued."""
        with self._lock:
            self._started = not self._cancelled
            return self._started

    def cancel(self) -> bool:
        """Loop: flag the job; True if it had not started (the caller answers it)."""
        with self._lock:
            self._cancelled = True
            return not self._started

    def is_cancelled(self) -> bool:
        with self._lock:
            return self._cancelled


async def serve(
    channel: Channel, options: LoadOptions, load: Callable[[], Backend], parent_pid: int
) -> int:
    """Load on the engine thread, send Ready or LoadFailed, then serve; return the exit code.

    `parent_pid` is the supervisor's pid as seen at process start: when it goes away (we
    are re-parented), the worker shuts itself down, in any phase, so none outlives it.
    """
    engine = EngineThread()
    engine.start()
    parent = asyncio.create_task(_parent_gone(parent_pid), name="parent-watch")
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
            options.model_name, facts.n_ctx, options.num_parallel, facts.memory_bytes,
            (time.perf_counter() - started) * 1000,
        )
        ready = Ready(
            protocol_version=PROTOCOL_VERSION,
            pid=os.getpid(),
            model=options.model_name,
            n_ctx=facts.n_ctx,
            n_parallel=options.num_parallel,
            memory_bytes=facts.memory_bytes,
        )
        await channel.send(ready)
        return await WorkerServer(channel, engine, backend).run(parent)
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
        error = ErrorInfo(ErrorCode.LOAD_FAILED, _describe(exc))
    await channel.send(LoadFailed(error))
    return None


class WorkerServer:
    """Serves requests after the handshake; `run` returns the exit code.

    Mutated only on the event loop, except `_Job` flags (see module docstring).
    """

    def __init__(self, channel: Channel, engine: EngineThread, backend: Backend) -> None:
        self._channel = channel
        self._engine = engine
        self._backend = backend
        self._generation = Generation(backend)
        self._jobs: dict[int, _Job] = {}
        self._outbox: asyncio.Queue[Reply | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    async def run(self, parent: asyncio.Task[None]) -> int:
        """Serve until Shutdown, a protocol error, or `parent` (the supervisor's death)."""
        sender = asyncio.create_task(self._send_loop(), name="sender")
        receiver = asyncio.create_task(self._receive_loop(), name="receiver")
        try:
            await asyncio.wait({receiver, parent, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done():
                sender.result()  # a send failure (the socket is gone) ends the worker here
            code = receiver.result() if receiver.done() else EXIT_OK
            if parent.done():
                log.warning("event=parent_gone action=shutdown")
        finally:
            receiver.cancel()
        await self._stop_engine()
        self._outbox.put_nowait(None)
        await sender
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
                self._outbox.put_nowait(Pong(msg.seq))
            elif isinstance(msg, Shutdown):
                log.info("event=shutdown reason=requested in_flight=%d", len(self._jobs))
                return EXIT_OK
            else:
                log.error("event=protocol_error message=%r", f"unexpected {msg.TAG} from peer")
                return EXIT_PROTOCOL_ERROR

    def _accept(self, request: Work) -> None:
        if request.id in self._jobs:
            log.warning("event=duplicate_id id=%d", request.id)
            error = ErrorInfo(ErrorCode.BAD_REQUEST, f"request id {request.id} is already in use")
            self._outbox.put_nowait(Failed(request.id, error))
            return
        job = _Job(request)
        self._jobs[request.id] = job
        self._engine.submit(lambda: self._run_job(job))

    def _cancel(self, request_id: int) -> None:
        job = self._jobs.get(request_id)
        if job is None:
            return  # already answered: Cancel gets no reply of its own
        if job.cancel():
            log.info("event=cancelled id=%d state=queued", request_id)
            self._deliver(_cancelled(request_id))

    async def _stop_engine(self) -> None:
        for request_id in list(self._jobs):
            self._cancel(request_id)
        try:
            await asyncio.wait_for(self._engine.call(self._backend.close), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.error("event=close_timeout timeout_s=%s", CLOSE_TIMEOUT_S)
        self._engine.stop()

    async def _send_loop(self) -> None:
        while (reply := await self._outbox.get()) is not None:
            await self._channel.send(reply)

    def _deliver(self, reply: JobReply) -> None:
        """Loop: forward a reply of a tracked request; the terminal one untracks it."""
        if reply.id not in self._jobs:
            return  # the request was already answered (e.g. cancelled while queued)
        if isinstance(reply, TERMINAL_REPLIES):
            del self._jobs[reply.id]
        self._outbox.put_nowait(reply)

    def _emit(self, reply: JobReply) -> None:
        """Engine thread: hand a reply to the loop."""
        try:
            self._loop.call_soon_threadsafe(self._deliver, reply)
        except RuntimeError:  # the loop is closed: the worker is exiting
            log.warning("event=reply_dropped id=%d reason=loop_closed", reply.id)

    def _run_job(self, job: _Job) -> None:
        """Engine thread: run one request and emit exactly one terminal reply."""
        if not job.start():
            return  # cancelled while queued; the loop has answered
        request = job.request
        started = time.perf_counter()
        try:
            reply = self._execute(request, job)
        except BackendError as exc:
            reply = Failed(request.id, exc.error)
        except MemoryError:
            reply = Failed(request.id, ErrorInfo(ErrorCode.OUT_OF_MEMORY, "out of memory"))
        except Exception as exc:  # the request loop's one broad except (STYLE.md §4.8)
            log.exception("event=request_error id=%d kind=%s", request.id, request.TAG)
            reply = Failed(request.id, ErrorInfo(ErrorCode.INTERNAL, _describe(exc)))
        outcome = reply.error.code if isinstance(reply, Failed) else "ok"
        log.info(
            "event=request_end id=%d kind=%s outcome=%s duration_ms=%d",
            request.id, request.TAG, outcome, (time.perf_counter() - started) * 1000,
        )
        self._emit(reply)

    def _execute(self, request: Work, job: _Job) -> Done | Failed | Embeddings | Tokens:
        if job.is_cancelled():
            return _cancelled(request.id)
        if isinstance(request, Generate):
            return self._generation.run(request, job.is_cancelled, self._emit)
        if isinstance(request, Embed):
            vectors, count = embed_inputs(self._backend, request, job.is_cancelled)
            return Embeddings(request.id, vectors, count)
        tokens = self._backend.tokenize(request.text, add_special=False, parse_special=True)
        return Tokens(request.id, tokens)


def _cancelled(request_id: int) -> Failed:
    return Failed(request_id, ErrorInfo(ErrorCode.CANCELLED, "request cancelled"))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _parent_gone(parent_pid: int) -> None:
    """Return once the supervisor has died (we were re-parented), so no worker outlives it."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_POLL_S)
