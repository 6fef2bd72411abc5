"""Start a real `python -m supervisor` on a free loopback port for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen[bytes]
    models_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_server(
    models_dir: Path, env: Mapping[str, str] | None = None, startup_s: float = 60.0
) -> Iterator[ServerProcess]:
    """Run the server until the block ends; SIGTERM, then SIGKILL, and always reap."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "OLLAMA_"))}
    full_env.update({"CORRAL_HOST": f"127.0.0.1:{port}", "CORRAL_MODELS": str(models_dir)})
    # Tests that count or kill worker processes expect no spare beside them; the spare's
    # own tests (test_spare_worker.py) turn it on.
    full_env["CORRAL_SPARE_WORKER"] = "0"
    full_env.update(env or {})
    log_path = models_dir.parent / f"server-{port}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor"],
            cwd=REPO,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, models_dir, log_path)
    try:
        _wait_ready(server, startup_s)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(server: ServerProcess, startup_s: float) -> None:
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.head(server.url + "/", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling an OS fact (a socket accepting), not our own state
    raise RuntimeError(f"server did not answer within {startup_s}s:\n{server.log()}")


def wait_for(
    condition: Callable[[], object], what: str = "condition", timeout_s: float = 30
) -> None:
    """Poll an OS-level fact (processes, files, the server's log) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
