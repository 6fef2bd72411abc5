"""Loaded-model commands: ps (what is in memory, until when) and stop (unload now)."""

from __future__ import annotations

import click

from cli.client import ApiError, Client
from cli.commands import AppState, CommandError, pass_state
from cli.commands.models import unload
from cli.render import format_table, human_bytes, processor, until

PS_HEADERS = ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]


def ps_table(client: Client, state: AppState, prefix: str | None = None) -> str:
    """The ``ps`` table; ``prefix`` filters names, case-sensitively (as Ollama does)."""
    now = state.now()
    rows = [
        [
            model.get("name", ""),
            model.get("digest", "")[:12],
            human_bytes(model.get("size", 0)),
            processor(model),
            str(model.get("context_length", 0)),
            until(model.get("expires_at"), now),
        ]
        for model in client.ps()
        if not prefix or model.get("name", "").startswith(prefix)
    ]
    return format_table(PS_HEADERS, rows)


@click.command("ps")
@click.argument("prefix", required=False)
@pass_state
def ps(state: AppState, prefix: str | None) -> None:
    """List running models."""
    state.out.print(ps_table(state.client(), state, prefix), markup=False)


@click.command("stop")
@click.argument("model")
@pass_state
def stop(state: AppState, model: str) -> None:
    """Stop a running model."""
    try:
        unload(state.client(), model)
    except ApiError as exc:
        if "not found" in exc.message.lower():
            raise CommandError(f'couldn\'t find model "{model}" to stop') from exc
        raise
