"""The ``corral`` command: the click group, ``--version``, and the one top-level error handler.

Every failure below the group becomes a single ``Error: ...`` line on stderr and exit
status 1 (130 for Ctrl+C); a traceback is never shown.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import click
from rich.text import Text

from cli.client import ClientError
from cli.commands import AppState, error_message
from cli.commands.models import copy, create, list_models, remove, show
from cli.commands.ps import ps, stop
from cli.commands.run import run
from cli.commands.serve import serve
from cli.commands.transfer import pull, push


def client_version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class CorralGroup(click.Group):
    """A group whose ``invoke`` is the CLI's single catch-all (STYLE §4.8)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
        except Exception as exc:  # the CLI's top level: one line, never a traceback
            state = ctx.ensure_object(AppState)
            state.err.print(Text("Error: ", style="bold red") + Text(error_message(exc)))
            raise click.exceptions.Exit(1) from None


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    state = ctx.ensure_object(AppState)
    server = ""
    try:
        server = state.client().version()
    except (ClientError, OSError):
        state.out.print("Warning: could not connect to a running corral instance")
    if server:
        state.out.print(f"corral version is {server}", markup=False)
    if server != client_version():
        state.out.print(f"Warning: client version is {client_version()}", markup=False)
    ctx.exit(0)


@click.group(cls=CorralGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the server and client versions",
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """corral: run and manage local language models (an Ollama-compatible server)."""
    ctx.ensure_object(AppState)


for _command in (serve, create, show, run, stop, pull, push, list_models, ps, copy, remove):
    main.add_command(_command)
main.add_command(list_models, "ls")
main.add_command(serve, "start")

if __name__ == "__main__":
    main()
