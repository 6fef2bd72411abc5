"""WorkerHandle: one worker process: spawn, handshake, request multiplexing, stop, stderr tail.

Lifecycle (owned by the event loop; not thread-safe):

    STARTING --start() gets Ready--> READY --stop()--> STOPPING --process gone--> EXITED
        \\--LoadFailed / exit / load timeout: start() raises WorkerLoadError --> EXITED

- `start()` in STARTING: spawns `python -m worker` in a new session (its own process
  group), or adopts a `SpareWorker` by sending it Load, and waits for Ready. Anything
  else (LoadFailed, the process exiting, the timeout, a protocol version mismatch) stops
  the process and raises WorkerLoadError whose message quotes the worker's last stderr.
- `request(msg)` in READY: sends the message and yields every reply for its id up to the
  terminal one. Leaving early (the client went away) sends Cancel. If the process dies
  first, it raises WorkerCrashed naming the model and quoting stderr.
- `stop()` in any state: Shutdown, grace, SIGTERM to the group, SIGKILL to the group,
  and always reaps. Idempotent.
- `exited` is set once the process is reaped, whatever the cause; `on_exit` is called then.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import psutil

from worker import protocol as p
from worker.transport import Channel, ChannelError, bind_channel, ipc_endpoint

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 12
_TERMINAL = (p.Done, p.Failed, p.Embeddings, p.Tokens)


class Inbox:
    """Messages for one reader, in arrival order; None is put when the worker is gone.

    What asyncio.Queue does, without its bookkeeping (unfinished-task counts, putters to
    wake, an Event cleared on every put), which each streamed token would pay for: a
    deque and the reader's one pending future.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[p.Message | None] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: p.Message | None) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> p.Message | None:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    EXITED = "exited"


class WorkerLoadError(Exception):
    """The worker did not become ready; the message says why, with its stderr tail."""


class WorkerCrashed(Exception):
    """The worker died with this request in flight."""


@dataclass(frozen=True, slots=True)
class WorkerCommand:
    """Everything needed to start one worker; becomes its argv."""

    model_name: str
    model_path: str
    backend: str
    num_ctx: int
    num_parallel: int
    num_batch: int = 512
    num_gpu: int = -1
    num_thread: int = 0
    use_mmap: bool = True
    embedding: bool = False
    stream_interval_ms: int = 0
    extra_args: tuple[str, ...] = ()

    def argv(self, endpoint: str) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "worker",
            "--endpoint",
            endpoint,
            "--supervisor-pid",
            str(os.getpid()),
            "--model",
            self.model_path,
            "--model-name",
            self.model_name,
            "--backend",
            self.backend,
            "--num-ctx",
            str(self.num_ctx),
            "--num-parallel",
            str(self.num_parallel),
            "--num-batch",
            str(self.num_batch),
            "--num-gpu",
            str(self.num_gpu),
            "--num-thread",
            str(self.num_thread),
            "--stream-interval-ms",
            str(self.stream_interval_ms),
        ]
        args.append("--use-mmap" if self.use_mmap else "--no-mmap")
        if self.embedding:
            args.append("--embedding")
        return args + list(self.extra_args)

    def load_message(self) -> p.Load:
        """What a spare worker gets instead of the model part of `argv` (same field names)."""
        return p.Load(**{f.name: getattr(self, f.name) for f in dataclasses.fields(p.Load)})


class SpareWorker:
    """A `python -m worker --spare` started ahead of need: interpreter up, backend imported.

    `WorkerHandle.start(spare=...)` adopts it (sends Load) instead of spawning a process, so
    a cold model skips the worker's start-up. Until adopted nothing reads from it; `stop()`
    ends it (Shutdown, then the process group is killed) and always reaps.
    """

    def __init__(self, proc: asyncio.subprocess.Process, channel: Channel) -> None:
        self.proc = proc
        self.channel = channel

    @classmethod
    async def spawn(
        cls, runtime_dir: str, name: str, backend: str, extra_args: tuple[str, ...]
    ) -> SpareWorker:
        channel = bind_channel(ipc_endpoint(runtime_dir, name))
        argv = [sys.executable, "-m", "worker", "--spare", "--endpoint", channel.endpoint,
                "--supervisor-pid", str(os.getpid()), "--backend", backend,
                *extra_args]  # fmt: skip
        try:
            proc = await _spawn(argv)
        except BaseException:
            channel.close()
            raise
        log.info("spare worker started pid=%d", proc.pid)
        return cls(proc, channel)

    @property
    def alive(self) -> bool:
        """Running; a spare that died but is not reaped yet (a zombie) counts as dead."""
        if self.proc.returncode is not None:
            return False
        try:
            return psutil.Process(self.proc.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    async def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.channel.send(p.Shutdown()), 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 2.0)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        self.channel.close()


async def _spawn(argv: list[str]) -> asyncio.subprocess.Process:
    """Start a worker process in its own session (process group), stderr piped to us."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


class WorkerHandle:
    """One worker process; see the module docstring for its states."""

    def __init__(self, worker_id: int, command: WorkerCommand, runtime_dir: str) -> None:
        self.worker_id = worker_id
        self.command = command
        self.state = WorkerState.STARTING
        self.ready: p.Ready | None = None
        self.exited = asyncio.Event()
        self.exit_code: int | None = None
        self.on_exit: Callable[[WorkerHandle], None] | None = None
        self._endpoint = ipc_endpoint(runtime_dir, f"w{worker_id}")
        self._channel: Channel | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._inboxes: dict[int, Inbox] = {}
        self._handshake = Inbox()
        self._tasks: list[asyncio.Task[None]] = []
        self._next_id = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def name(self) -> str:
        return self.command.model_name

    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    async def start(self, load_timeout_s: float, spare: SpareWorker | None = None) -> p.Ready:
        """Spawn the worker, or adopt `spare` (a live one), and wait for its handshake."""
        if spare is not None:
            self._channel, self._proc = spare.channel, spare.proc
        else:
            self._channel = bind_channel(self._endpoint)
            self._proc = await _spawn(self.command.argv(self._endpoint))
        how = "adopting spare" if spare is not None else "starting"
        log.info("worker %s model=%s pid=%d", how, self.name, self._proc.pid)
        self._channel.listen(self._route, self._bad_frame)
        self._tasks = [
            asyncio.create_task(self._read_stderr()),
            asyncio.create_task(self._watch_exit()),
        ]
        if spare is not None:
            with contextlib.suppress(ChannelError):  # a dead spare shows as an exit below
                await self._channel.send(self.command.load_message())
        timeout = None if load_timeout_s == float("inf") else load_timeout_s
        try:
            first = await asyncio.wait_for(self._handshake.get(), timeout)
        except TimeoutError:
            await self.stop()
            raise WorkerLoadError(
                self._why(f"timed out after {load_timeout_s:g}s loading")
            ) from None
        if isinstance(first, p.Ready) and first.protocol_version == p.PROTOCOL_VERSION:
            self.ready = first
            self.state = WorkerState.READY
            return first
        await self.stop()
        if isinstance(first, p.LoadFailed):
            raise WorkerLoadError(self._why(first.error.message))
        if isinstance(first, p.Ready):
            raise WorkerLoadError(f"worker speaks protocol {first.protocol_version}")
        await self.exited.wait()
        raise WorkerLoadError(self._why(f"worker exited with code {self.exit_code} while loading"))

    def next_request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def request(self, msg: p.Generate | p.Embed | p.Tokenize) -> AsyncIterator[p.Message]:
        """Send `msg` and yield its replies through the terminal one."""
        if self.state is not WorkerState.READY or self._channel is None:
            raise WorkerCrashed(self._why("worker is not running"))
        inbox = self._inboxes[msg.id] = Inbox()
        finished = False
        try:
            await self._channel.send(msg)
            while True:
                reply = await inbox.get()
                if reply is None:
                    raise WorkerCrashed(self._why(f"worker exited with code {self.exit_code}"))
                yield reply
                if isinstance(reply, _TERMINAL):
                    finished = True
                    return
        finally:
            self._inboxes.pop(msg.id, None)
            if not finished and self.state is WorkerState.READY:
                with contextlib.suppress(Exception):
                    await self._channel.send(p.Cancel(id=msg.id))

    async def ping(self, timeout_s: float) -> bool:
        """Liveness check kept for the runtime; the Pong is routed as request id 0."""
        if self._channel is None or self.state is not WorkerState.READY:
            return False
        inbox = self._inboxes[-1] = Inbox()
        try:
            await self._channel.send(p.Ping(seq=1))
            return isinstance(await asyncio.wait_for(inbox.get(), timeout_s), p.Pong)
        except TimeoutError:
            return False
        finally:
            self._inboxes.pop(-1, None)

    async def stop(self, grace_s: float = 5.0, term_s: float = 3.0) -> None:
        if self._proc is None:
            self.state = WorkerState.EXITED
            return
        if self.state is not WorkerState.EXITED:
            self.state = WorkerState.STOPPING
        if self._channel is not None and self._proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.send(p.Shutdown()), 1.0)
        for sig, wait_s in ((None, grace_s), (signal.SIGTERM, term_s), (signal.SIGKILL, None)):
            if self._proc.returncode is not None:
                break
            if sig is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited.wait()), wait_s)
        await self.exited.wait()

    def _why(self, what: str) -> str:
        tail = self.stderr_tail()
        return f"model {self.name}: {what}" + (f"; worker said: {tail}" if tail else "")

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        prefix = f"[worker model={self.name} pid={self._proc.pid}]"
        while line := await self._proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._tail.append(text)
                log.info("%s %s", prefix, text)

    def _route(self, msg: p.Message) -> None:
        """Called by the channel for each message from the worker, as it arrives."""
        if isinstance(msg, (p.Ready, p.LoadFailed)):
            self._handshake.put(msg)
        elif isinstance(msg, p.Pong):
            if (inbox := self._inboxes.get(-1)) is not None:
                inbox.put(msg)
        elif (inbox := self._inboxes.get(getattr(msg, "id", -2))) is not None:
            inbox.put(msg)
        # Replies for ids no longer tracked (cancelled, timed out) are dropped.

    def _bad_frame(self, exc: p.ProtocolError) -> None:
        log.error("protocol error model=%s error=%s", self.name, exc)

    async def _watch_exit(self) -> None:
        assert self._proc is not None
        code = await self._proc.wait()
        # Let the stderr reader drain so crash messages can quote the last lines.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._tasks[0]), 2.0)
        self.exit_code = code
        self.state = WorkerState.EXITED
        log.info("worker exited model=%s pid=%d code=%d", self.name, self._proc.pid, code)
        self._handshake.put(None)
        for inbox in self._inboxes.values():
            inbox.put(None)
        if self._channel is not None:
            self._channel.close()
        self.exited.set()
        if self.on_exit is not None:
            self.on_exit(self)
