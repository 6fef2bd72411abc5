"""Modelfile text: parsing it into instructions, their meaning, and rendering one back.

The grammar is Ollama's (``parser/parser.go``), read one character at a time:

* An instruction is ASCII letters (any case) directly followed by a space or tab, then
  its argument. ``PARAMETER`` is followed by a name (letters, digits, ``_``; case kept),
  ``MESSAGE`` by a role (exactly ``system``, ``user`` or ``assistant``).
* ``#`` at the start of a line (after optional blanks) begins a comment; elsewhere it is text.
* An argument ends at a line break once its trimmed text is either unquoted or a closed
  ``"..."`` / ``\"\"\"...\"\"\"``; until then line breaks belong to it. Quotes are removed
  and what they held is kept exactly; there are no escapes.
* Non-printable characters other than tab, CR and LF are dropped from arguments.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto

from registry.errors import InvalidOption, ModelfileError
from registry.options import format_params, go_value

COMMANDS = frozenset(
    "from license template system adapter draft renderer parser parameter message requires".split()
)
ROLES = frozenset({"system", "user", "assistant"})

_INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
_INVALID_REQUIRES = "requires must be a valid semver (e.g. 0.14.0)"
_UNEXPECTED_EOF = "unexpected EOF"
_DEFAULT_TEMPLATE = "{{ .Prompt }}"

# golang.org/x/mod/semver: vMAJOR[.MINOR[.PATCH[-pre][+build]]], no leading zeros.
_NUMBER = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"v{_NUMBER}(?:\.{_NUMBER}(?:\.{_NUMBER}"
    rf"(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?)?)?"
)


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Modelfile instruction.

    ``kind`` is the lower-cased instruction (``"from"``, ``"parameter"``, ...); ``name`` is
    the parameter name for PARAMETER, the role for MESSAGE, ``""`` otherwise; ``value`` is
    the argument with its quotes removed; ``line`` is the 1-based line it starts on.
    """

    kind: str
    name: str
    value: str
    line: int


class _State(Enum):
    START = auto()  # between instructions
    COMMENT = auto()
    COMMAND = auto()  # reading the instruction word
    PARAMETER = auto()  # reading a PARAMETER's name
    ROLE = auto()  # reading a MESSAGE's role
    VALUE = auto()  # reading the argument


class _Scanner:
    """The character-by-character state machine; ``feed`` each character, then ``finish``."""

    def __init__(self) -> None:
        self.instructions: list[Instruction] = []
        self._state = _State.START
        self._buffer: list[str] = []
        # Bounds of the argument's non-blank text, so a line break costs O(1) to judge.
        self._first: int | None = None
        self._last = -1
        self._kind = ""
        self._name = ""
        self._line = 1
        self._start_line = 1
        self._after_cr = False

    def feed(self, char: str) -> None:
        if self._state is _State.START:
            self._at_start(char)
        elif self._state is _State.COMMENT:
            if char in "\r\n":
                self._state = _State.START
        elif self._state is _State.COMMAND:
            self._in_command(char)
        elif self._state is _State.VALUE:
            self._in_value(char)
        else:
            self._in_word(char)
        # CR, LF and CRLF each end one line.
        if char == "\r" or (char == "\n" and not self._after_cr):
            self._line += 1
        self._after_cr = char == "\r"

    def finish(self) -> list[Instruction]:
        if self._state is _State.VALUE and self._is_complete():
            self._emit()
        elif self._state not in (_State.START, _State.COMMENT):
            raise ModelfileError(_UNEXPECTED_EOF, self._start_line)
        return self.instructions

    def _at_start(self, char: str) -> None:
        if char == "#":
            self._state = _State.COMMENT
        elif char not in " \t\r\n":
            if not _is_ascii_letter(char):
                raise ModelfileError(_INVALID_COMMAND, self._line)
            self._state, self._buffer, self._start_line = _State.COMMAND, [char], self._line
            self._kind = self._name = ""

    def _in_command(self, char: str) -> None:
        if _is_ascii_letter(char):
            self._buffer.append(char)
            return
        command = "".join(self._buffer).lower()
        if char not in " \t" or command not in COMMANDS:
            raise ModelfileError(_INVALID_COMMAND, self._line)
        self._kind, self._buffer, self._first = command, [], None
        self._state = {"parameter": _State.PARAMETER, "message": _State.ROLE}.get(
            command, _State.VALUE
        )

    def _in_word(self, char: str) -> None:
        """A PARAMETER name or a MESSAGE role, which ends at the first blank."""
        if _is_ascii_letter(char) or (
            self._state is _State.PARAMETER and (char == "_" or "0" <= char <= "9")
        ):
            self._buffer.append(char)
            return
        if char not in " \t":
            # Ollama reports a name cut short (e.g. by a line break) as an unexpected EOF.
            raise ModelfileError(_UNEXPECTED_EOF, self._line)
        self._name, self._buffer, self._first = "".join(self._buffer), [], None
        if self._state is _State.ROLE and self._name not in ROLES:
            raise ModelfileError(_INVALID_ROLE, self._line)
        self._state = _State.VALUE

    def _in_value(self, char: str) -> None:
        if char in "\r\n" and self._is_complete():
            self._emit()
        elif char in " \t\r\n":
            self._buffer.append(char)
        elif char.isprintable():
            if self._first is None:
                self._first = len(self._buffer)
            self._last = len(self._buffer)
            self._buffer.append(char)

    def _is_complete(self) -> bool:
        """Whether the trimmed argument is unquoted or its quote is closed."""
        if self._first is None:
            return True
        first, last, text = self._first, self._last, self._buffer
        length = last - first + 1
        if "".join(text[first : first + 3]) == '"""':
            return length >= 6 and "".join(text[last - 2 : last + 1]) == '"""'
        if text[first] == '"':
            return length >= 2 and text[last] == '"'
        return True

    def _emit(self) -> None:
        value = _unquote(_trim("".join(self._buffer)))
        assert value is not None
        if self._kind == "requires" and _normalize_requires(value) is None:
            raise ModelfileError(_INVALID_REQUIRES, self._start_line)
        self.instructions.append(Instruction(self._kind, self._name, value, self._start_line))
        self._state, self._buffer = _State.START, []


def _is_ascii_letter(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def _trim(text: str) -> str:
    # Arguments hold no other whitespace: every non-printable character was dropped.
    return text.strip(" \t\r\n")


def _unquote(text: str) -> str | None:
    """The argument without its quotes; None while a quote is still open."""
    if text.startswith('"""'):
        return text[3:-3] if len(text) >= 6 and text.endswith('"""') else None
    if text.startswith('"'):
        return text[1:-1] if len(text) >= 2 and text.endswith('"') else None
    return text


def _decode(data: bytes) -> str:
    """Bytes to text, honouring a UTF-8 or UTF-16 byte-order mark; UTF-8 otherwise."""
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, "replace")
    return data.decode("utf-8", "replace")


def parse_modelfile(text: str | bytes) -> list[Instruction]:
    """Parse a Modelfile into its instructions, in file order.

    ``text`` may be bytes (decoded as UTF-8 unless a BOM says UTF-16) or str (a leading
    U+FEFF is dropped). Raises ModelfileError with the offending line, or ``no FROM line``.
    """
    source = _decode(text) if isinstance(text, bytes) else text.removeprefix("\ufeff")
    scanner = _Scanner()
    for char in source:
        scanner.feed(char)
    instructions = scanner.finish()
    if not any(instruction.kind == "from" for instruction in instructions):
        raise ModelfileError("no FROM line")
    return instructions


def _normalize_requires(value: str) -> str | None:
    """A REQUIRES version without its optional ``v``; None if it is not semver."""
    version = value if value.startswith("v") else "v" + value
    return version[1:] if _SEMVER.fullmatch(version) else None


@dataclass
class CreateSpec:
    """What a Modelfile asks to create, before FROM/ADAPTER paths are resolved.

    ``froms`` keeps every FROM argument in order (a model name or a path, decided later);
    TEMPLATE, SYSTEM, RENDERER, PARSER and REQUIRES keep the last one given; LICENSE,
    MESSAGE and ADAPTER lines accumulate. ``parameters`` are typed; repeated ``stop`` lines
    accumulate and any other repeated parameter keeps the last value. ``warnings`` are
    human-readable (deprecated parameters).
    """

    froms: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    drafts: list[str] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    license: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    parameters: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    requires: str | None = None
    renderer: str | None = None
    parser: str | None = None


def to_create_spec(instructions: Iterable[Instruction]) -> CreateSpec:
    """The meaning of parsed instructions. Raises ModelfileError (with the line) for an
    unknown or badly typed PARAMETER, or a REQUIRES that is not semver."""
    spec = CreateSpec()
    lists = {"from": spec.froms, "adapter": spec.adapters, "draft": spec.drafts}
    for item in instructions:
        if item.kind in lists:
            lists[item.kind].append(item.value)
        elif item.kind == "license":
            spec.license.append(item.value)
        elif item.kind == "message":
            spec.messages.append({"role": item.name, "content": item.value})
        elif item.kind == "parameter":
            _add_parameter(spec, item)
        elif item.kind == "requires":
            spec.requires = _normalize_requires(item.value)
            if spec.requires is None:
                raise ModelfileError(_INVALID_REQUIRES, item.line)
        elif item.kind in ("template", "system", "renderer", "parser"):
            setattr(spec, item.kind, item.value)
        else:
            raise ModelfileError(_INVALID_COMMAND, item.line)
    return spec


def _add_parameter(spec: CreateSpec, item: Instruction) -> None:
    try:
        typed, warnings = format_params({item.name: [item.value]})
    except InvalidOption as exc:
        raise ModelfileError(str(exc), item.line) from exc
    spec.warnings.extend(warnings)
    for name, value in typed.items():
        previous = spec.parameters.get(name)
        if isinstance(previous, list) and isinstance(value, list):
            previous.extend(value)
        else:
            spec.parameters[name] = value


def quote(value: str) -> str:
    """An argument as a Modelfile writes it (Ollama's ``quote``).

    Values with a line break or a leading or trailing blank are wrapped: in
    ``\"\"\"...\"\"\"`` if they contain ``"``, else in ``"..."``; anything else is bare.
    Beyond Ollama, a CR, a leading or trailing tab and a leading ``"`` also cause wrapping,
    since the bare form would not read back the same. Values that can never read back:
    non-printable characters (dropped by the parser), and a multi-line value containing
    ``"`` in which a line ends with ``\"\"\"`` (the quote would close early).
    """
    if "\n" in value or "\r" in value or value[:1] in (" ", "\t", '"') or value[-1:] in (" ", "\t"):
        return f'"""{value}"""' if '"' in value else f'"{value}"'
    return value


def render_modelfile(
    *,
    model_from: str,
    adapters: Sequence[str] = (),
    projectors: Sequence[str] = (),
    template: str | None,
    system: str | None,
    parameters: Mapping[str, object],
    licenses: Sequence[str],
    messages: Sequence[Mapping[str, str]],
    requires: str | None = None,
    short_name: str | None = None,
    drafts: Sequence[str] = (),
    renderer: str | None = None,
    parser: str | None = None,
) -> str:
    """The Modelfile ``ollama show --modelfile`` prints for a stored model.

    ``model_from`` and ``projectors`` are blob paths; ``short_name`` (e.g.
    ``llama3.2:latest``) goes into the header comment. PARAMETER lines are sorted by name,
    one per element for lists, values printed as Go's ``%v`` would.
    """
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {short_name if short_name is not None else '<model name>'}",
        "",
        f"FROM {model_from}",
        *(f"ADAPTER {quote(path)}" for path in adapters),
        *(f"DRAFT {quote(path)}" for path in drafts),
        *(f"FROM {path}" for path in projectors),
        f"TEMPLATE {quote(_DEFAULT_TEMPLATE if template is None else template)}",
    ]
    for keyword, text in (
        ("SYSTEM", system),
        ("RENDERER", renderer),
        ("PARSER", parser),
        ("REQUIRES", requires),
    ):
        if text:
            lines.append(f"{keyword} {quote(text)}")
    for name in sorted(parameters):
        value = parameters[name]
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None:
                lines.append(f"PARAMETER {name} {quote(go_value(item))}")
    lines.extend(f"LICENSE {quote(text)}" for text in licenses)
    lines.extend(f"MESSAGE {m['role']} {quote(m['content'])}" for m in messages)
    return "".join(line + "\n" for line in lines)
