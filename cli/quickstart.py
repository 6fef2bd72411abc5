"""``make run``: start the server, import a GGUF as a model, answer one prompt, keep serving.

``python -m cli.quickstart --gguf PATH --model NAME --prompt TEXT`` runs
``python -m supervisor`` as a child with this environment, waits for it to answer, creates
the model exactly as ``corral create`` would (unless it exists), prints the ``list``
table, streams an answer to the prompt, then waits on the server, passing SIGINT and
SIGTERM on to it, and exits with its status.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO

import click

from cli.client import Client, ClientError
from cli.commands import AppState, CommandError, error_message
from cli.commands.models import create_model, list_table
from cli.commands.run import answer_once
from cli.hostaddr import client_base_url
from cli.session import RunOptions
from registry.errors import RegistryError
from registry.modelfile import parse_modelfile, to_create_spec

STARTUP_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.2
TAIL_LINES = 200


class ServerOutput:
    """Drains the child's output: kept (a bounded tail) until ``forward()``, then copied
    to our stderr, so the demo's own output is not interleaved with the server's log."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._forward = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            if self._forward.is_set():
                sys.stderr.write(line)
                sys.stderr.flush()
            else:
                self.tail.append(line)

    def forward(self) -> None:
        self._forward.set()

    def text(self) -> str:
        self._thread.join(timeout=2.0)
        return "".join(self.tail)


def wait_ready(client: Client, child: subprocess.Popen[bytes], output: ServerOutput) -> None:
    """Poll ``HEAD /`` until the server answers; fail with its output if it exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if child.poll() is not None:
            raise click.ClickException(
                f"the server exited with status {child.returncode}:\n{output.text()}"
            )
        try:
            client.heartbeat()
            return
        except ClientError:
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the server did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{output.text()}"
                ) from None
            time.sleep(POLL_INTERVAL_S)


def _has_model(client: Client, name: str) -> bool:
    wanted = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
    return any(m.get("name", "").lower() == wanted.lower() for m in client.tags())


def demo(state: AppState, gguf: Path, model: str, prompt: str) -> None:
    """Import the GGUF unless present, show the list, answer the prompt if the server can."""
    client = state.client()
    if not _has_model(client, model):
        spec = to_create_spec(parse_modelfile(f"FROM {gguf.resolve()}\n"))
        create_model(client, state.err, model, spec, gguf.resolve().parent)
    state.out.print(list_table(client, state), markup=False)
    state.out.print()
    if client.has_route("POST", "/api/generate"):
        state.out.print(f">>> {prompt}", markup=False)
        answer_once(client, state, RunOptions(model, prompt=prompt, wordwrap=True))


def _forward_signals(child: subprocess.Popen[bytes]) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@click.command()
@click.option("--gguf", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True, help="Name to create the model under")
@click.option("--prompt", required=True, help="Prompt to answer once the model is ready")
def main(gguf: Path, model: str, prompt: str) -> None:
    """Serve corral with GGUF imported as MODEL, and answer PROMPT once."""
    base_url = client_base_url()
    state = AppState(make_client=lambda: Client(base_url))
    # Own session: a Ctrl+C in the terminal reaches only us, and we pass it on once.
    child = subprocess.Popen(
        [sys.executable, "-m", "supervisor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert child.stdout is not None
    output = ServerOutput(child.stdout)
    try:
        wait_ready(state.client(), child, output)
        demo(state, gguf, model, prompt)
    except BaseException as exc:
        child.terminate()
        child.wait()
        if isinstance(exc, KeyboardInterrupt):
            sys.exit(130)
        if isinstance(exc, ClientError | CommandError | RegistryError):
            raise click.ClickException(error_message(exc)) from None
        raise
    state.out.print(f"corral is running at {base_url} (Ctrl+C stops it).", markup=False)
    state.out.print("In another terminal, try: .venv/bin/corral list", markup=False)
    output.forward()
    _forward_signals(child)
    code = child.wait()
    sys.exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
