"""The interactive chat of ``corral run``: preload, stored history, then the REPL on /api/chat.

The session owns the conversation (every message is sent with each turn), the options
set with ``/set parameter`` and the modes; the grammar of what is typed is ``cli/repl.py``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from cli.client import ApiError, ShowResponse
from cli.commands import AppState
from cli.commands.models import list_table
from cli.render import show_sections, stats_block
from cli.repl import (
    Clear,
    Command,
    Exit,
    InputBuffer,
    ListModels,
    Load,
    Notice,
    Save,
    SetMode,
    SetParameter,
    SetSystem,
    SetThink,
    Show,
    parse_command,
)
from cli.response import AnswerPrinter, stream_answer
from registry.options import go_value

PROMPT = ">>> "
CONTINUATION = "... "


@dataclass
class RunOptions:
    """What ``run`` was asked for; the REPL's /set commands change it."""

    model: str
    prompt: str = ""
    format: str = ""
    keep_alive: str | None = None
    think: bool | str | None = None
    think_explicit: bool = False
    hide_thinking: bool = False
    verbose: bool = False
    wordwrap: bool = True
    insecure: bool = False

    def payload(self) -> dict[str, object]:
        """The fields every generate/chat request of this run carries."""
        payload: dict[str, object] = {"model": self.model, "stream": True}
        if self.format:
            payload["format"] = self.format
        if self.keep_alive is not None:
            payload["keep_alive"] = self.keep_alive
        if self.think is not None:
            payload["think"] = self.think
        return payload


def infer_think(opts: RunOptions, capabilities: list[str], err: Console) -> bool | str | None:
    """Think by default on a thinking model; warn (and send nothing) when asked to think
    on a model that cannot."""
    supported = "thinking" in capabilities
    if not opts.think_explicit:
        return True if supported else None
    if not supported and opts.think not in (None, False):
        err.print(f'warning: model "{opts.model}" does not support thinking output', markup=False)
        return None
    return opts.think


def _go_value(value: object) -> str:
    if isinstance(value, list):
        return "[" + " ".join(go_value(item) for item in value) + "]"
    return go_value(value)


class ChatSession:
    """One interactive conversation with a model."""

    def __init__(self, state: AppState, opts: RunOptions, info: ShowResponse) -> None:
        self.state, self.opts, self.info = state, opts, info
        self.client = state.client()
        self.out, self.err = state.out, state.err
        self.messages: list[dict[str, Any]] = []
        self.options: dict[str, object] = {}
        self.system = ""

    def _wrap_width(self) -> int | None:
        return self.out.width if self.opts.wordwrap and self.out.is_terminal else None

    def _spinner(self) -> contextlib.AbstractContextManager[Any]:
        return self.err.status("") if self.err.is_terminal else contextlib.nullcontext()

    def preload(self) -> None:
        """Load the model before the first prompt (an empty generate)."""
        with self._spinner():
            for _ in self.client.generate(self.opts.payload()):
                pass

    def print_stored_history(self) -> None:
        for message in self.info.get("messages") or []:
            if message.get("role") == "user":
                self.out.print(f">>> {message.get('content', '')}", markup=False)
            elif message.get("role") == "assistant":
                printer = AnswerPrinter(self.out, wrap_width=self._wrap_width(), hide_thinking=True)
                printer.add("", str(message.get("content", "")))
                printer.finish()
                self.out.print("\n", end="")
                self.out.print()

    def run(self) -> None:
        """Preload, replay the stored messages, then read and answer until /bye or Ctrl+D."""
        self.preload()
        self.print_stored_history()
        buffer = InputBuffer()
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
        while True:
            try:
                line = input(CONTINUATION if buffer.continuing else PROMPT)
            except EOFError:
                self.out.print()
                return
            except KeyboardInterrupt:
                self.out.print("\nUse Ctrl + d or /bye to exit.", markup=False)
                buffer.reset()
                continue
            entry = buffer.feed(line)
            if entry is None:
                continue
            if not entry.quoted and entry.text.startswith("/"):
                if not self.execute(parse_command(entry.text)):
                    return
            elif entry.text.strip():
                self.send(entry.text)

    def send(self, text: str) -> None:
        """One turn: the user's message, the streamed answer, the stats."""
        self.messages.append({"role": "user", "content": text})
        payload = self.opts.payload() | {"messages": self.messages}
        if self.options:
            payload["options"] = self.options
        printer = AnswerPrinter(
            self.out, wrap_width=self._wrap_width(), hide_thinking=self.opts.hide_thinking
        )
        spinner = self.err.status("") if self.err.is_terminal else None
        if spinner is not None:
            spinner.start()
        try:
            final, cancelled = stream_answer(
                self.client.chat(payload),
                printer,
                chat=True,
                on_first=spinner.stop if spinner is not None else None,
            )
        except ApiError as exc:
            self.messages.pop()
            self.err.print(f"Error: {exc.message}", style="red", markup=False)
            return
        finally:
            if spinner is not None:
                spinner.stop()
        self.out.print("\n", end="" if cancelled else "\n")
        if cancelled:
            return
        if self.opts.verbose and final is not None:
            self.err.print(stats_block(final), end="", markup=False)
        answer: dict[str, Any] = {"role": "assistant", "content": printer.content}
        if printer.thinking:
            answer["thinking"] = printer.thinking
        self.messages.append(answer)

    def execute(self, command: Command) -> bool:
        """Carry out one slash command; False means leave the session."""
        match command:
            case Exit():
                return False
            case Notice(text):
                self.out.print(text.rstrip("\n"), markup=False)
            case ListModels():
                self.out.print(list_table(self.client, self.state), markup=False)
            case Clear():
                self.messages = [{"role": "system", "content": self.system}] if self.system else []
                self.out.print("Cleared session context")
            case Load(model):
                self.load(model)
            case Save(model):
                self.save(model)
            case Show(what):
                self.show(what)
            case SetParameter(name, value, shown):
                self.options[name] = value
                self.out.print(f"Set parameter '{name}' to '{shown}'", markup=False)
            case SetSystem(text):
                self.set_system(text)
            case SetThink(value, level):
                self.opts.think, self.opts.think_explicit = value, True
                self.opts.think = infer_think(
                    self.opts, self.info.get("capabilities", []), self.err
                )
                said = f" to '{level}'" if level else ""
                self.out.print(f"Set 'think' mode{said}.", markup=False)
            case SetMode(mode):
                self.set_mode(mode)
        return True

    def set_system(self, text: str) -> None:
        self.system = text
        message = {"role": "system", "content": text}
        if self.messages and self.messages[-1].get("role") == "system":
            self.messages[-1] = message
        else:
            self.messages.append(message)
        self.out.print("Set system message.")

    def set_mode(self, mode: str) -> None:
        if mode == "format":
            self.opts.format = "json"
            self.out.print("Set format to 'json' mode.", markup=False)
            return
        if mode == "noformat":
            self.opts.format = ""
            self.out.print("Disabled format.")
            return
        if mode in ("history", "nohistory"):
            with contextlib.suppress(ImportError):
                import readline

                readline.set_auto_history(mode == "history")
        elif mode in ("wordwrap", "nowordwrap"):
            self.opts.wordwrap = mode == "wordwrap"
        elif mode in ("verbose", "quiet"):
            self.opts.verbose = mode == "verbose"
        elif mode == "nothink":
            self.opts.think, self.opts.think_explicit = False, True
        self.out.print(f"Set '{mode}' mode.", markup=False)

    def load(self, model: str) -> None:
        self.out.print(f"Loading model '{model}'", markup=False)
        try:
            info = self.client.show(model)
        except ApiError as exc:
            if exc.status == 404 or "not found" in exc.message.lower():
                self.out.print(f"Couldn't find model '{model}'", markup=False)
                return
            raise
        previous = (self.opts.model, self.opts.think, self.info, self.messages)
        self.opts.model, self.info, self.messages = model, info, []
        self.opts.think = infer_think(self.opts, info.get("capabilities", []), self.err)
        try:
            self.preload()
        except ApiError as exc:
            self.opts.model, self.opts.think, self.info, self.messages = previous
            self.out.print(f"error: {exc.message}", markup=False)

    def save(self, model: str) -> None:
        # Based on the current model (not its parent, as Ollama does) so that the saved
        # model keeps this model's template and parameters under the session's changes.
        payload: dict[str, object] = {"model": model, "from": self.opts.model, "stream": True}
        if self.system:
            payload["system"] = self.system
        if self.options:
            payload["parameters"] = self.options
        messages = list(self.info.get("messages") or []) + self.messages
        if messages:
            payload["messages"] = messages
        try:
            for _ in self.client.create(payload):
                pass
        except ApiError as exc:
            if "invalid model name" in exc.message.lower():
                self.out.print(f"error: The model name '{model}' is invalid", markup=False)
                return
            raise
        self.out.print(f"Created new model '{model}'", markup=False)

    def show(self, what: str) -> None:
        info = self.client.show(self.opts.model, system=self.system or None, options=self.options)
        out = self.out
        if what == "info":
            self.err.print(show_sections(info), end="", markup=False)
        elif what == "license":
            out.print(
                info.get("license") or "No license was specified for this model.", markup=False
            )
        elif what == "modelfile":
            out.print(info.get("modelfile", ""), markup=False)
        elif what == "parameters":
            out.print("Model defined parameters:")
            lines = (info.get("parameters") or "").splitlines()
            for line in lines or ["No additional parameters were specified for this model."]:
                out.print(f"  {line}", markup=False)
            out.print()
            if self.options:
                out.print("User defined parameters:")
                for name, value in self.options.items():
                    out.print(f"  {name:<30} {_go_value(value)}", markup=False)
                out.print()
        elif what == "system":
            text = self.system or info.get("system", "")
            out.print(
                f"{text}\n" if text else "No system message was specified for this model.",
                markup=False,
            )
        elif what == "template":
            out.print(
                info.get("template") or "No prompt template was specified for this model.",
                markup=False,
            )
