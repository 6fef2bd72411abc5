"""Registry transfers: pull and push, with a progress bar per layer."""

from __future__ import annotations

import contextlib

import click
from rich.console import Console, RenderableType
from rich.progress import ProgressColumn, Task, TimeRemainingColumn, TransferSpeedColumn
from rich.text import Text

from cli.client import Client, Progress, Stream
from cli.commands import AppState, pass_state
from cli.progress import ProgressView


class _ForBytes(ProgressColumn):
    """Shows the wrapped column only on byte bars (layers), not on status lines."""

    def __init__(self, inner: ProgressColumn) -> None:
        super().__init__()
        self._inner = inner

    def render(self, task: Task) -> RenderableType:
        return self._inner.render(task) if task.fields.get("bytes") else Text("")


class TransferView(ProgressView):
    """A ProgressView whose layer bars also show speed and time left, as Ollama's do."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        speed, left = TransferSpeedColumn(), TimeRemainingColumn(compact=True)
        self._progress.columns = (*self._progress.columns, _ForBytes(speed), _ForBytes(left))

    def bar(self, key: str, description: str, total: int, completed: int) -> None:
        if key not in self._bars:
            # A resumed layer starts part-way: count its speed from there, not from zero.
            super().bar(key, description, total, 0)
            self._progress.reset(self._bars[key], total=total, completed=completed)
        super().bar(key, description, total, completed)


def follow(lines: Stream[Progress], err: Console) -> None:
    """Show a pull/push progress stream until it ends; the stream is closed on the way
    out, so Ctrl+C (handled at the top level) also stops the transfer on the server,
    and a later pull resumes what was downloaded."""
    with contextlib.closing(lines), TransferView(err) as view:
        for line in lines:
            view.show(line)


def pull_model(client: Client, err: Console, name: str, *, insecure: bool = False) -> None:
    """Pull ``name`` from its registry, showing progress on ``err``."""
    follow(client.pull(name, insecure=insecure), err)


@click.command("pull")
@click.argument("name")
@click.option("--insecure", is_flag=True, help="Allow a plain-http registry")
@pass_state
def pull(state: AppState, name: str, insecure: bool) -> None:
    """Pull a model from a registry."""
    pull_model(state.client(), state.err, name, insecure=insecure)


@click.command("push")
@click.argument("name")
@click.option("--insecure", is_flag=True, help="Allow a plain-http registry")
@pass_state
def push(state: AppState, name: str, insecure: bool) -> None:
    """Push a model to a registry."""
    follow(state.client().push(name, insecure=insecure), state.err)
