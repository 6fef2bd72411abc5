"""A real OCI registry for tests (Debian's docker-registry) and a byte-counting TCP gate.

``run_registry`` starts CNCF distribution on a free loopback port with a generated config
(filesystem storage in a scratch directory, optional htpasswd auth), waits for ``/v2/`` to
answer, and always kills and reaps it. ``TcpGate`` forwards a loopback port to another,
counts the bytes sent back to clients, and can hold them back after a budget, which lets a
test stop a download part-way without timing games.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.support.server import free_port

BINARY = "docker-registry"


@dataclass
class OciRegistry:
    """A running registry: ``host`` is ``127.0.0.1:<port>``, ``root`` its storage."""

    host: str
    root: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def blob_data(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        hex_ = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def _config(root: Path, port: int, htpasswd: Path | None) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {json.dumps(str(root))}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {secrets.token_hex(16)}",
    ]
    if htpasswd is not None:
        path = json.dumps(str(htpasswd))
        lines += ["auth:", "  htpasswd:", "    realm: basic-realm", f"    path: {path}"]
    return "\n".join(lines) + "\n"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    """True once /v2/ answers; False if the process died (a port taken meanwhile)."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/v2/", timeout=2).status_code in (200, 401):
                return True
        time.sleep(0.02)  # polling an OS fact: the socket accepting
    raise RuntimeError(f"docker-registry did not answer on {url} in time")


@contextlib.contextmanager
def run_registry(
    workdir: Path, htpasswd: tuple[str, str] | None = None, startup_s: float = 30.0
) -> Iterator[OciRegistry]:
    """Run a registry until the block ends; ``htpasswd`` is (user, bcrypt hash)."""
    binary = shutil.which(BINARY) or f"/usr/bin/{BINARY}"
    if not Path(binary).exists():
        pytest.skip("docker-registry is not installed (make system-deps installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    auth_file = None
    if htpasswd is not None:
        auth_file = workdir / "htpasswd"
        auth_file.write_text(f"{htpasswd[0]}:{htpasswd[1]}\n")
    deadline = time.monotonic() + startup_s
    for attempt in range(5):
        port = free_port()
        config = workdir / "config.yml"
        config.write_text(_config(workdir / "storage", port, auth_file))
        log_path = workdir / f"registry-{attempt}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log_file, stderr=subprocess.STDOUT
            )
        registry = OciRegistry(f"127.0.0.1:{port}", workdir / "storage", log_path, proc)
        try:
            if _wait_ready(proc, registry.url, deadline):
                yield registry
                return
        finally:
            _stop(proc)
    raise RuntimeError(f"docker-registry would not start:\n{registry.log()}")


class TcpGate:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target>; counts and can hold downstream bytes.

    The forwarding runs on an event loop in a thread of its own; the methods are called
    from the test's thread and wait until the loop has applied them.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.downstream_bytes = 0
        self._limit: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    def __enter__(self) -> TcpGate:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def connections(self) -> int:
        """Client connections open through the gate right now."""
        return len(self._tasks)

    def hold_after(self, budget: int | None) -> None:
        """Let ``budget`` more bytes through to clients, then hold the rest; None releases."""
        self._call(self._set_limit(budget))

    def reset(self) -> None:
        """Start counting from zero."""
        self._call(self._reset())

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _set_limit(self, budget: int | None) -> None:
        assert self._open is not None
        self._limit = None if budget is None else self.downstream_bytes + budget
        if budget is None:
            self._open.set()

    async def _reset(self) -> None:
        self.downstream_bytes = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        pumps = {
            asyncio.create_task(self._pump(reader, up_writer, down=False)),
            asyncio.create_task(self._pump(up_reader, writer, down=True)),
        }
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(64 * 1024):
                view = memoryview(data)
                while view:
                    piece = view
                    if down and self._limit is not None:
                        allowed = self._limit - self.downstream_bytes
                        if allowed <= 0:
                            assert self._open is not None
                            self._open.clear()
                            await self._open.wait()
                            continue
                        piece = view[:allowed]
                    dst.write(piece)
                    await dst.drain()
                    if down:
                        self.downstream_bytes += len(piece)
                    view = view[len(piece) :]
