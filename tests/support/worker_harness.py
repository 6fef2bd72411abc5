"""Async context manager: start a real worker subprocess, yield a typed client.

    async with run_worker(backend="fake", tokens=["a", "b"]) as w:
        await w.send(Generate(id=1, prompt="x"))
        replies = [r async for r in w.replies_for(1)]

The harness binds the channel in a private runtime directory, spawns
`python -m worker` in its own session with stderr captured, and (unless
`wait_ready=False`) waits for Ready. A reader task files every reply by request id, so
several requests can be in flight at once. On exit it sends Shutdown, waits, kills the
process group if needed, and always reaps the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from worker.protocol import (
    TERMINAL_REPLIES,
    Embed,
    Generate,
    LoadFailed,
    Pong,
    Ready,
    Reply,
    Request,
    Shutdown,
    Tokenize,
)
from worker.transport import Channel, ChannelError, bind_channel, ipc_endpoint, private_runtime_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0  # generous: a loaded 2-core machine starts Python slowly
REPLY_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 30.0
LATE_REPLY_GRACE_S = 2.0  # replies sent just before an exit may trail the exit itself


class WorkerExited(Exception):
    """The worker process ended while a reply was awaited."""


class WorkerClient:
    """A typed client of one worker process; every method runs on the test's event loop."""

    def __init__(self, proc: asyncio.subprocess.Process, channel: Channel) -> None:
        self.proc = proc
        self.channel = channel
        self.ready: Ready | None = None
        self.received: list[Reply] = []  # every reply, in arrival order
        self.stderr_lines: list[str] = []
        self._handshake: asyncio.Queue[Reply] = asyncio.Queue()
        self._pongs: asyncio.Queue[Reply] = asyncio.Queue()
        self._by_id: dict[int, asyncio.Queue[Reply]] = {}
        self._exit = asyncio.ensure_future(proc.wait())
        self._reader = asyncio.ensure_future(self._read_replies())
        self._stderr = asyncio.ensure_future(self._read_stderr())

    async def send(self, msg: Request) -> None:
        await self.channel.send(msg)

    async def handshake(self, timeout_s: float = READY_TIMEOUT_S) -> Ready | LoadFailed:
        """The worker's first message: Ready or LoadFailed."""
        reply = await self._next(self._handshake, timeout_s)
        assert isinstance(reply, Ready | LoadFailed), reply
        if isinstance(reply, Ready):
            self.ready = reply
        return reply

    async def replies_for(
        self, request_id: int, timeout_s: float = REPLY_TIMEOUT_S
    ) -> AsyncIterator[Reply]:
        """Yield the replies to one request, ending with (and including) its terminal reply."""
        queue = self._queue(request_id)
        while True:
            reply = await self._next(queue, timeout_s)
            yield reply
            if isinstance(reply, TERMINAL_REPLIES):
                return

    async def request(self, msg: Request, timeout_s: float = REPLY_TIMEOUT_S) -> list[Reply]:
        """Send a request and collect all its replies."""
        await self.send(msg)
        assert isinstance(msg, Generate | Embed | Tokenize), msg
        return [reply async for reply in self.replies_for(msg.id, timeout_s)]

    async def pong(self, timeout_s: float = REPLY_TIMEOUT_S) -> Pong:
        reply = await self._next(self._pongs, timeout_s)
        assert isinstance(reply, Pong)
        return reply

    async def wait_exit(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        return await asyncio.wait_for(asyncio.shield(self._exit), timeout_s)

    async def stderr_text(self, timeout_s: float = EXIT_TIMEOUT_S) -> str:
        """All of stderr; waits for the process to exit and the pipe to close."""
        await self.wait_exit(timeout_s)
        await asyncio.wait_for(asyncio.shield(self._stderr), timeout_s)
        return "".join(self.stderr_lines)

    def _queue(self, request_id: int) -> asyncio.Queue[Reply]:
        return self._by_id.setdefault(request_id, asyncio.Queue())

    async def _next(self, queue: asyncio.Queue[Reply], timeout_s: float) -> Reply:
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait({getter, self._exit}, timeout=timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
            if not getter.done() and self._exit.done():
                await asyncio.wait({getter}, timeout=LATE_REPLY_GRACE_S)
            if getter.done():
                return getter.result()
        finally:
            getter.cancel()
        if self._exit.done():
            stderr = "".join(self.stderr_lines)
            raise WorkerExited(f"worker exited with {self._exit.result()}; stderr:\n{stderr}")
        raise TimeoutError(f"no reply within {timeout_s} s")

    async def _read_replies(self) -> None:
        with contextlib.suppress(ChannelError):
            while True:
                reply = await self.channel.recv()
                assert not isinstance(reply, Request), f"worker sent a request: {reply}"
                self.received.append(reply)
                if isinstance(reply, Ready | LoadFailed):
                    self._handshake.put_nowait(reply)
                elif isinstance(reply, Pong):
                    self._pongs.put_nowait(reply)
                else:
                    self._queue(reply.id).put_nowait(reply)

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_lines.append(line.decode(errors="replace"))

    async def close(self, grace_s: float = EXIT_TIMEOUT_S) -> None:
        """Shutdown, wait, SIGKILL the group if needed; always reap and release everything."""
        try:
            if not self._exit.done():
                with contextlib.suppress(ChannelError):
                    await self.channel.send(Shutdown())
                await asyncio.wait({self._exit}, timeout=grace_s)
            if not self._exit.done():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            await self._exit
            await asyncio.wait({self._stderr}, timeout=grace_s)
        finally:
            for task in (self._reader, self._stderr):
                task.cancel()
            await asyncio.gather(self._reader, self._stderr, return_exceptions=True)
            self.channel.close()


def worker_argv(
    endpoint: str,
    backend: str,
    *,
    model: str,
    model_name: str,
    num_ctx: int,
    num_parallel: int,
    tokens: Sequence[str] | None,
    delay_ms: int,
    crash: str | None,
    crash_after: int | None,
    hang: str | None,
    ignore_sigterm: bool,
) -> list[str]:
    argv = [
        sys.executable, "-m", "worker", "--endpoint", endpoint, "--backend", backend,
        "--model", model, "--model-name", model_name, "--num-ctx", str(num_ctx),
        "--num-parallel", str(num_parallel), "--num-batch", "512", "--num-gpu", "0",
        "--num-thread", "1",
    ]
    if tokens is not None:
        argv += ["--fake-tokens", ",".join(tokens)]
    if delay_ms:
        argv += ["--fake-delay-ms", str(delay_ms)]
    if crash is not None:
        argv += ["--fake-crash", crash]
    if crash_after is not None:
        argv += ["--fake-crash-after", str(crash_after)]
    if hang is not None:
        argv += ["--fake-hang", hang]
    if ignore_sigterm:
        argv.append("--fake-ignore-sigterm")
    return argv


@contextlib.asynccontextmanager
async def run_worker(
    backend: str = "fake",
    *,
    model: str = "fake.gguf",
    model_name: str = "fake:latest",
    num_ctx: int = 2048,
    num_parallel: int = 1,
    tokens: Sequence[str] | None = None,
    delay_ms: int = 0,
    crash: str | None = None,
    crash_after: int | None = None,
    hang: str | None = None,
    ignore_sigterm: bool = False,
    wait_ready: bool = True,
    stop_grace_s: float = EXIT_TIMEOUT_S,
) -> AsyncIterator[WorkerClient]:
    """Start `python -m worker` on a freshly bound channel; yield its client.

    With `wait_ready` (the default) the client's `ready` is set, or this raises when the
    worker sends LoadFailed or dies first. Otherwise call `handshake()` yourself.
    On exit the worker gets Shutdown and `stop_grace_s` to exit before SIGKILL.
    """
    runtime_dir = private_runtime_dir()
    channel = bind_channel(ipc_endpoint(runtime_dir, "worker"))
    try:
        argv = worker_argv(
            channel.endpoint, backend, model=model, model_name=model_name, num_ctx=num_ctx,
            num_parallel=num_parallel, tokens=tokens, delay_ms=delay_ms, crash=crash,
            crash_after=crash_after, hang=hang, ignore_sigterm=ignore_sigterm,
        )
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO_ROOT, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except BaseException:
        channel.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)
        raise
    client = WorkerClient(proc, channel)
    try:
        if wait_ready:
            first = await client.handshake()
            if not isinstance(first, Ready):
                raise WorkerExited(f"worker failed to load: {first}")
        yield client
    finally:
        await client.close(stop_grace_s)
        shutil.rmtree(runtime_dir, ignore_errors=True)
