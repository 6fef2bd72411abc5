"""The interactive prompt's grammar, pure: multi-line input and the slash commands (§6.4).

``InputBuffer`` joins the lines of a ``\"\"\"`` block into one entry; ``parse_command``
turns a ``/...`` line into one of the command records below. Neither does any I/O, so
the session (``cli/session.py``) only has to act on the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import InvalidOption
from registry.options import format_params

QUOTES = '"""'
THINK_LEVELS: dict[str, bool | str] = {
    "true": True,
    "false": False,
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
}
_SET_SYSTEM_RE = re.compile(r"/set\s+system\s+")

HELP = """Commands:
  /set            Change a session setting (/? set for the list)
  /show           Look at the model (/? show for the list)
  /load <model>   Switch to another model, starting a fresh conversation
  /save <model>   Store this conversation and its settings as a new model
  /clear          Forget the conversation so far
  /list           List the models on the server
  /bye, /exit     Leave
  /?, /help       This text; /? set, /? show, /? shortcuts for more

Start a message with \"\"\" to write several lines; end it with \"\"\".
"""

HELP_SET = """/set commands:
  /set parameter <name> <value...>   Change a model option for this session
  /set system <text>                 Replace the system message
  /set history | nohistory           Keep or stop keeping input history
  /set wordwrap | nowordwrap         Wrap answers at the terminal width, or not
  /set format json | noformat        Ask for JSON answers, or free text
  /set verbose | quiet               Print timing statistics after answers, or not
  /set think [level] | nothink       Let the model reason first (low, medium, high, max), or not
"""

HELP_SHOW = """/show commands:
  /show info         Architecture, size, capabilities
  /show license      The model's license text
  /show modelfile    A Modelfile that rebuilds the model
  /show parameters   Options stored in the model and set in this session
  /show system       The system message in use
  /show template     The prompt template
"""

HELP_SHORTCUTS = """Keys:
  Ctrl+C   Stop the answer being written (on an empty prompt: a reminder of how to leave)
  Ctrl+D   Leave, on an empty prompt
  Up/Down  Earlier input, when history is on
"""

HELP_PARAMETERS = """Usage: /set parameter <name> <value...>   Some options:
  temperature <float>      Higher is more varied, 0 always picks the likeliest token
  top_k <int>, top_p <float>, min_p <float>   Limit which tokens may be sampled
  num_predict <int>        Stop after this many tokens (-1: no limit)
  num_ctx <int>            Context window in tokens (reloads the model)
  seed <int>               Fix the random seed for repeatable answers
  repeat_penalty <float>, repeat_last_n <int>   Discourage repetition
  stop <string> ...        Strings that end the answer
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One complete input: ``quoted`` text came from a ``\"\"\"`` block and is always a
    message, never a command."""

    text: str
    quoted: bool = False


class InputBuffer:
    """Assembles lines into entries.

    * A line starting with ``\"\"\"`` (or ``/set system \"\"\"``) opens a block; the block
      ends at a line that ends with ``\"\"\"``, whose text before the quotes is kept. Lines
      are joined with ``\\n``. ``\"\"\"abc\"\"\"`` on one line is the entry ``abc``.
    * Any other line is an entry as it is.
    """

    def __init__(self) -> None:
        self._parts: list[str] | None = None
        self._head = ""

    @property
    def continuing(self) -> bool:
        """True inside an open block (the prompt becomes ``... ``)."""
        return self._parts is not None

    def reset(self) -> None:
        self._parts, self._head = None, ""

    def _entry(self, body: str) -> Entry:
        head = self._head
        self.reset()
        return Entry(head + body) if head else Entry(body, quoted=True)

    def feed(self, line: str) -> Entry | None:
        """The entry ``line`` completes, or None while a block is open."""
        if self._parts is not None:
            before, closed = _cut_suffix(line, QUOTES)
            self._parts.append(before)
            return self._entry("\n".join(self._parts)) if closed else None
        match = _SET_SYSTEM_RE.match(line)
        if match and line[match.end() :].startswith(QUOTES):
            self._head, line = line[: match.end()], line[match.end() :]
        elif not line.startswith(QUOTES):
            return Entry(line)
        body, closed = _cut_suffix(line[len(QUOTES) :], QUOTES)
        if closed:
            return self._entry(body)
        self._parts = [body]
        return None


def _cut_suffix(text: str, suffix: str) -> tuple[str, bool]:
    return (text[: -len(suffix)], True) if text.endswith(suffix) else (text, False)


@dataclass(frozen=True, slots=True)
class Exit:
    """``/bye``, ``/exit``."""


@dataclass(frozen=True, slots=True)
class Notice:
    """A command that only prints ``text`` (help, usage, a refusal)."""

    text: str


@dataclass(frozen=True, slots=True)
class ListModels:
    """``/list``."""


@dataclass(frozen=True, slots=True)
class Clear:
    """``/clear``: forget the history, keep the session system message."""


@dataclass(frozen=True, slots=True)
class Load:
    model: str


@dataclass(frozen=True, slots=True)
class Save:
    model: str


@dataclass(frozen=True, slots=True)
class Show:
    """``/show <what>``: info, license, modelfile, parameters, system or template."""

    what: str


@dataclass(frozen=True, slots=True)
class SetParameter:
    """A typed option for the rest of the session; ``shown`` is the values as typed."""

    name: str
    value: object
    shown: str


@dataclass(frozen=True, slots=True)
class SetSystem:
    text: str


@dataclass(frozen=True, slots=True)
class SetMode:
    """A switch: history, nohistory, wordwrap, nowordwrap, verbose, quiet, noformat,
    nothink, or ``format`` (json)."""

    mode: str


@dataclass(frozen=True, slots=True)
class SetThink:
    """``/set think [level]``; ``level`` is the word typed, ``""`` when none."""

    value: bool | str
    level: str


Command = (
    Exit
    | Notice
    | ListModels
    | Clear
    | Load
    | Save
    | Show
    | SetParameter
    | SetSystem
    | SetMode
    | SetThink
)

_SWITCHES = {
    "history",
    "nohistory",
    "wordwrap",
    "nowordwrap",
    "verbose",
    "quiet",
    "noformat",
    "nothink",
}
_SHOWABLE = {"info", "license", "modelfile", "parameters", "system", "template"}


def _unknown(text: str) -> Notice:
    return Notice(f"Unknown command '{text}'. Type /? for help")


def _parse_set(line: str, args: list[str]) -> Command:
    if len(args) < 2:
        return Notice(HELP_SET)
    what = args[1]
    if what == "parameter":
        if len(args) < 4:
            return Notice(HELP_PARAMETERS)
        name, values = args[2], args[3:]
        try:
            typed, _ = format_params({name: values})
        except InvalidOption as exc:
            return Notice(f"Couldn't set parameter: {str(exc)!r}")
        if name not in typed:
            return Notice(f"Couldn't set parameter: 'parameter {name} is deprecated'")
        return SetParameter(name, typed[name], ", ".join(values))
    if what == "system":
        match = _SET_SYSTEM_RE.match(line)
        if len(args) < 3 or match is None:
            return Notice(HELP_SET)
        text = line[match.end() :]
        return SetSystem(text if "\n" in text else " ".join(text.split()))
    if what == "format":
        if len(args) < 3 or args[2] != "json":
            return Notice("Invalid or missing format. For 'json' mode use '/set format json'")
        return SetMode("format")
    if what == "think":
        level = args[2] if len(args) > 2 else ""
        if (level or "true") not in THINK_LEVELS:
            return Notice(f"Invalid think level '{level}'. Use one of: low, medium, high, max")
        return SetThink(THINK_LEVELS[level or "true"], level)
    if what in _SWITCHES:
        return SetMode(what)
    return _unknown(f"/set {what}")


def _parse_help(args: list[str]) -> Command:
    topic = args[1].lstrip("/") if len(args) > 1 else ""
    if topic == "set":
        return Notice(HELP_SET)
    if topic == "show":
        return Notice(HELP_SHOW)
    if topic in ("shortcut", "shortcuts"):
        return Notice(HELP_SHORTCUTS)
    return Notice(HELP)


def _one_argument(args: list[str], make: type[Load] | type[Save]) -> Command:
    if len(args) != 2:
        return Notice(f"Usage:\n  {args[0]} <modelname>")
    return make(args[1])


def parse_command(line: str) -> Command:
    """The command a ``/`` line asks for (an unknown one gives a Notice saying so)."""
    args = line.split()
    verb = args[0] if args else line
    if verb in ("/bye", "/exit"):
        return Exit()
    if verb in ("/?", "/help"):
        return _parse_help(args)
    if verb == "/list":
        return ListModels()
    if verb == "/clear":
        return Clear()
    if verb == "/load":
        return _one_argument(args, Load)
    if verb == "/save":
        return _one_argument(args, Save)
    if verb == "/show":
        if len(args) < 2:
            return Notice(HELP_SHOW)
        return Show(args[1]) if args[1] in _SHOWABLE else _unknown(f"/show {args[1]}")
    if verb == "/set":
        return _parse_set(line, args)
    return _unknown(verb)
