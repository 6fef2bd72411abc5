"""``corral run``: one streamed answer to a prompt or piped input, or an interactive chat (§6.2)."""

from __future__ import annotations

import json
import sys

import click

from cli.client import ApiError, Client, ShowResponse
from cli.commands import AppState, CommandError, pass_state
from cli.commands.transfer import pull_model
from cli.render import stats_block
from cli.repl import THINK_LEVELS
from cli.response import AnswerPrinter, stream_answer
from cli.session import ChatSession, RunOptions, infer_think


class _RunCommand(click.Command):
    """Lets ``--think`` stand alone (meaning true), as Ollama's flag does; a level must be
    attached with ``=`` (``--think=high``) so that the next word stays part of the prompt."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        fixed: list[str] = []
        for index, arg in enumerate(args):
            if arg == "--":
                fixed.extend(args[index:])
                break
            fixed.append("--think=true" if arg == "--think" else arg)
        return super().parse_args(ctx, fixed)


def parse_think(value: str) -> bool | str:
    """A ``--think`` value as the API takes it."""
    if value not in THINK_LEVELS:
        raise CommandError(
            f'invalid value for --think: "{value}" (must be true, false, high, medium, low, or max)'
        )
    return THINK_LEVELS[value]


def ensure_model(client: Client, state: AppState, opts: RunOptions) -> ShowResponse:
    """``show`` the model, pulling it first when the server does not have it."""
    try:
        return client.show(opts.model)
    except ApiError as exc:
        if exc.status != 404:
            raise
    pull_model(client, state.err, opts.model, insecure=opts.insecure)
    return client.show(opts.model)


def embed_once(client: Client, state: AppState, opts: RunOptions) -> None:
    """Embedding models: print the prompt's vector as a JSON array."""
    if not opts.prompt:
        raise CommandError(
            f'embedding models require input text. Usage: corral run {opts.model} "your text here"'
        )
    payload: dict[str, object] = {"model": opts.model, "input": opts.prompt}
    if opts.keep_alive is not None:
        payload["keep_alive"] = opts.keep_alive
    vectors = client.embed(payload).get("embeddings") or [[]]
    state.out.print(json.dumps(vectors[0], separators=(",", ":")), markup=False)


def answer_once(client: Client, state: AppState, opts: RunOptions) -> None:
    """Stream the answer to ``opts.prompt`` from /api/generate, then a blank line; the
    ``--verbose`` statistics go to stderr."""
    wrap = state.out.width if opts.wordwrap and state.out.is_terminal else None
    printer = AnswerPrinter(state.out, wrap_width=wrap, hide_thinking=opts.hide_thinking)
    final, cancelled = stream_answer(
        client.generate(opts.payload() | {"prompt": opts.prompt}), printer, chat=False
    )
    state.out.print("\n", end="" if cancelled else "\n")
    if cancelled:
        raise click.exceptions.Exit(130)
    if opts.verbose and final is not None:
        state.err.print(stats_block(final), end="", markup=False)


@click.command("run", cls=_RunCommand)
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--format", "format_", default="", help="Response format (e.g. json)")
@click.option("--keepalive", default=None, help="How long to keep the model loaded (e.g. 5m)")
@click.option("--verbose", is_flag=True, help="Show timings for the response")
@click.option("--nowordwrap", is_flag=True, help="Don't wrap words to the next line")
@click.option(
    "--think",
    default=None,
    metavar="[=LEVEL]",
    help="Reasoning: bare for true, or =false/low/medium/high/max",
)
@click.option("--hidethinking", is_flag=True, help="Hide the model's reasoning")
@click.option("--insecure", is_flag=True, help="Allow a plain-http registry when pulling")
@pass_state
def run(
    state: AppState,
    model: str,
    prompt: tuple[str, ...],
    format_: str,
    keepalive: str | None,
    verbose: bool,
    nowordwrap: bool,
    think: str | None,
    hidethinking: bool,
    insecure: bool,
) -> None:
    """Run a model: answer PROMPT, or chat interactively."""
    opts = RunOptions(
        model,
        format=format_,
        keep_alive=keepalive,
        verbose=verbose,
        wordwrap=not nowordwrap,
        hide_thinking=hidethinking,
        insecure=insecure,
    )
    if think is not None:
        opts.think, opts.think_explicit = parse_think(think), True
    prompts = list(prompt)
    interactive = not prompts and sys.stdout.isatty()
    stdin = sys.stdin
    if not stdin.isatty():
        interactive, opts.wordwrap = False, False
        piped = stdin.read()
        if piped:
            prompts.insert(0, piped)
    opts.prompt = " ".join(prompts)
    client = state.client()
    info = ensure_model(client, state, opts)
    capabilities = info.get("capabilities") or []
    if "embedding" in capabilities and "completion" not in capabilities:
        embed_once(client, state, opts)
        return
    opts.think = infer_think(opts, capabilities, state.err)
    if interactive:
        ChatSession(state, opts, info).run()
    else:
        answer_once(client, state, opts)
