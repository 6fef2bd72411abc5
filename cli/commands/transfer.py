"""Registry transfers: pull and push, with a progress bar per layer."""

from __future__ import annotations

import contextlib

import click
from rich.console import Console

from cli.client import Client, Progress, Stream
from cli.commands import AppState, pass_state
from cli.progress import ProgressView


def follow(lines: Stream[Progress], err: Console) -> None:
    """Show a pull/push progress stream until it ends; the stream is closed on the way
    out, so Ctrl+C (handled at the top level) also stops the transfer on the server."""
    with contextlib.closing(lines), ProgressView(err) as view:
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
