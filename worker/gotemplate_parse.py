"""Parse Go text/template source into a tree of frozen nodes; walk and cut that tree."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

FUNCTION_NAMES = frozenset(
    "and or not eq ne lt le gt ge len index slice printf print println html urlquery js call "
    "json currentDate yesterdayDate toTypeScriptType".split()
)
_SPACE = " \t\r\n"


class TemplateError(Exception):
    """A prompt template (Go or Jinja) failed to parse or to render."""


# --- nodes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Field:
    """`.A.B` applied to dot, or `$x.A.B` (var set) or `(pipe).A` (base set)."""

    names: tuple[str, ...]
    var: str | None = None
    base: Pipe | None = None


@dataclass(frozen=True, slots=True)
class Literal:
    value: object  # str, int, float, bool or None (nil)


@dataclass(frozen=True, slots=True)
class Dot:
    pass


@dataclass(frozen=True, slots=True)
class Function:
    name: str


Arg = Field | Literal | Dot | Function


@dataclass(frozen=True, slots=True)
class Command:
    args: tuple[object, ...]  # Arg or Pipe (parenthesised)


@dataclass(frozen=True, slots=True)
class Pipe:
    line: int
    decl: tuple[str, ...] = ()
    is_assign: bool = False
    cmds: tuple[Command, ...] = ()


@dataclass(frozen=True, slots=True)
class Action:
    pipe: Pipe


@dataclass(frozen=True, slots=True)
class Branch:
    """`if`, `range` or `with` (kind) with its body and optional else body."""

    kind: str
    pipe: Pipe
    body: tuple[object, ...]
    else_body: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class Control:
    kind: str  # "break" or "continue"


Node = Text | Action | Branch | Control


# --- lexing ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<close>[ \t\r\n]+-\}\}|\}\})
      |(?P<space>[ \t\r\n]+)
      |(?P<raw>`[^`]*`)
      |(?P<str>"(?:[^"\\\n]|\\.)*")
      |(?P<char>'(?:[^'\\\n]|\\.)+')
      |(?P<op>:=|=|\||\(|\)|,)
      |(?P<var>\$[A-Za-z0-9_]*)
      |(?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?
               |\.\d+(?:[eE][+-]?\d+)?))
      |(?P<field>\.[A-Za-z_][A-Za-z0-9_]*)
      |(?P<dot>\.)
      |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)""",
    re.VERBOSE,
)


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str
    spaced: bool  # whitespace came right before this token


@dataclass(slots=True)
class _Segment:
    """One piece of source: text, or an action's tokens."""

    pos: int  # offset in the source, for error positions
    text: str | None = None
    toks: list[_Tok] = field(default_factory=list)


def _line_at(src: str, pos: int) -> int:
    return src.count("\n", 0, pos) + 1


def _fail(src: str, pos: int, message: str) -> TemplateError:
    line = _line_at(src, pos)
    col = pos - (src.rfind("\n", 0, pos) + 1) + 1
    return TemplateError(f"template: line {line}, column {col}: {message}")


def _lex(src: str) -> list[_Segment]:
    segments: list[_Segment] = []
    pos, trim_next = 0, False
    while pos <= len(src):
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            segments.append(_Segment(pos, text=text))
            break
        inner = start + 2
        if src[inner : inner + 1] == "-" and src[inner + 1 : inner + 2] in tuple(_SPACE):
            text, inner = text.rstrip(_SPACE), inner + 2
        segments.append(_Segment(pos, text=text))
        if src.startswith("/*", inner):
            pos, trim_next = _skip_comment(src, inner)
            continue
        seg = _Segment(start)
        pos, trim_next = _lex_action(src, inner, seg.toks)
        segments.append(seg)
    return [s for s in segments if s.text != ""]


def _skip_comment(src: str, inner: int) -> tuple[int, bool]:
    end = src.find("*/", inner + 2)
    if end < 0:
        raise _fail(src, inner, "unclosed comment")
    end += 2
    if src.startswith("}}", end):
        return end + 2, False
    if src[end : end + 1] in tuple(_SPACE) and src.startswith("-}}", end + 1):
        return end + 4, True
    raise _fail(src, end, "comment ends before closing delimiter")


def _lex_action(src: str, pos: int, toks: list[_Tok]) -> tuple[int, bool]:
    spaced = False
    while True:
        m = _TOKEN.match(src, pos)
        if m is None:
            if pos >= len(src):
                raise _fail(src, pos, "unclosed action")
            raise _fail(src, pos, f"unexpected {src[pos]!r} in command")
        kind, text = m.lastgroup or "", m.group()
        pos = m.end()
        if kind == "close":
            return pos, text[0] != "}"
        if kind == "space":
            spaced = True
            continue
        toks.append(_Tok(kind, text, spaced))
        spaced = False


# --- parsing --------------------------------------------------------------------------

_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "template", "define",
             "block"}


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.segs = _lex(src)
        self.i = 0
        self.range_depth = 0

    def error(self, seg: _Segment | None, message: str) -> TemplateError:
        return _fail(self.src, len(self.src) if seg is None else seg.pos, message)

    def parse_list(
        self, closers: frozenset[str]
    ) -> tuple[tuple[object, ...], str, _Segment | None]:
        """Nodes up to a closing keyword in `closers`; returns (nodes, keyword, its segment)."""
        nodes: list[object] = []
        while self.i < len(self.segs):
            seg = self.segs[self.i]
            self.i += 1
            if seg.text is not None:
                nodes.append(Text(seg.text))
                continue
            if not seg.toks:
                raise self.error(seg, "missing value for command")
            head = seg.toks[0]
            word = head.text if head.kind == "ident" and head.text in _KEYWORDS else ""
            if word in ("end", "else"):
                if word not in closers:
                    raise self.error(seg, f"unexpected {{{{{word}}}}}")
                return tuple(nodes), word, seg
            nodes.append(self.parse_keyword(word, seg) if word else
                         Action(self.full_pipe(seg, 0)))
        if closers:
            raise self.error(None, "unexpected EOF")
        return tuple(nodes), "", None

    def parse_keyword(self, word: str, seg: _Segment) -> object:
        if word in ("break", "continue"):
            if self.range_depth == 0:
                raise self.error(seg, f"{{{{{word}}}}} outside {{{{range}}}}")
            if len(seg.toks) > 1:
                raise self.error(seg, f"unexpected token in {{{{{word}}}}}")
            return Control(word)
        if word in ("if", "range", "with"):
            return self.parse_branch(word, seg, 1)
        raise self.error(seg, f"{{{{{word}}}}} is not supported")

    def parse_branch(self, kind: str, seg: _Segment, start: int) -> Branch:
        if start >= len(seg.toks):
            raise self.error(seg, f"missing value for {kind}")
        pipe = self.full_pipe(seg, start, in_range=kind == "range")
        self.range_depth += kind == "range"
        body, word, closer = self.parse_list(frozenset({"end", "else"}))
        self.range_depth -= kind == "range"
        else_body: tuple[object, ...] = ()
        if word == "else" and closer is not None:
            toks = closer.toks
            if len(toks) > 1 and toks[1].kind == "ident" and toks[1].text in ("if", "with"):
                else_body = (self.parse_branch(toks[1].text, closer, 2),)
            elif len(toks) > 1:
                raise self.error(closer, "unexpected token in {{else}}")
            else:
                else_body, _, _ = self.parse_list(frozenset({"end"}))
        return Branch(kind, pipe, body, else_body)

    def full_pipe(self, seg: _Segment, start: int, *, in_range: bool = False) -> Pipe:
        pipe, i = self.pipe(seg, seg.toks, start, allow_decl=True, in_range=in_range)
        if i < len(seg.toks):
            raise self.error(seg, f"unexpected {seg.toks[i].text!r} in command")
        return pipe

    def pipe(self, seg: _Segment, toks: list[_Tok], i: int, *, allow_decl: bool = False,
             in_range: bool = False) -> tuple[Pipe, int]:
        decl: list[str] = []
        is_assign = False
        names: list[str] = []
        j = i
        while allow_decl and j < len(toks) and toks[j].kind == "var":
            names.append(toks[j].text)
            nxt = toks[j + 1].text if j + 1 < len(toks) else ""
            if nxt in (":=", "="):
                if len(names) > (2 if in_range else 1):
                    raise self.error(seg, "too many declarations")
                decl, is_assign, i = names, nxt == "=", j + 2
                break
            if nxt != "," or not in_range:
                break
            j += 2
        cmds: list[Command] = []
        while True:
            cmd, i = self.command(seg, toks, i)
            if not cmd.args:
                raise self.error(seg, "missing value for command")
            cmds.append(cmd)
            if i < len(toks) and toks[i].text == "|":
                i += 1
                continue
            return Pipe(_line_at(self.src, seg.pos), tuple(decl), is_assign, tuple(cmds)), i

    def command(self, seg: _Segment, toks: list[_Tok], i: int) -> tuple[Command, int]:
        args: list[object] = []
        while i < len(toks) and toks[i].text not in ("|", ")"):
            arg, i = self.operand(seg, toks, i)
            args.append(arg)
        return Command(tuple(args)), i

    def operand(self, seg: _Segment, toks: list[_Tok], i: int) -> tuple[object, int]:
        tok = toks[i]
        i += 1
        node: object
        if tok.kind == "op" and tok.text == "(":
            node, i = self.pipe(seg, toks, i)
            if i >= len(toks) or toks[i].text != ")":
                raise self.error(seg, "unclosed left paren")
            i += 1
        else:
            node = self.term(seg, tok)
        names: list[str] = []
        while i < len(toks) and toks[i].kind == "field" and not toks[i].spaced:
            names.append(toks[i].text[1:])
            i += 1
        if not names:
            return node, i
        if isinstance(node, Field):
            return Field(node.names + tuple(names), node.var, node.base), i
        if isinstance(node, Pipe):
            return Field(tuple(names), base=node), i
        raise self.error(seg, f"unexpected . after term {tok.text!r}")

    def term(self, seg: _Segment, tok: _Tok) -> object:
        kind, text = tok.kind, tok.text
        if kind == "field":
            return Field((text[1:],))
        if kind == "var":
            return Field((), var=text)
        if kind == "dot":
            return Dot()
        if kind in ("str", "char"):
            return Literal(_unquote(text, kind, _line_at(self.src, seg.pos)))
        if kind == "raw":
            return Literal(text[1:-1])
        if kind == "num":
            return Literal(_number(text, _line_at(self.src, seg.pos)))
        if kind == "ident":
            if text in ("true", "false"):
                return Literal(text == "true")
            if text == "nil":
                return Literal(None)
            if text in FUNCTION_NAMES:
                return Function(text)
            raise self.error(seg, f'function "{text}" not defined')
        raise self.error(seg, f"unexpected {text!r} in operand")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _unquote(text: str, kind: str, line: int) -> str | int:
    body = text[1:-1]

    def escape(m: re.Match[str]) -> str:
        s = m.group(1)
        if s[0] in "xuU":
            return chr(int(s[1:], 16))
        if s[0].isdigit() and len(s) == 3:
            return chr(int(s, 8))
        return _ESCAPES[s]

    try:
        value = re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)",
                       escape, body)
    except KeyError as exc:
        raise TemplateError(f"template: line {line}: bad escape in {text}") from exc
    if kind == "char":
        if len(value) != 1:
            raise TemplateError(f"template: line {line}: malformed character constant {text}")
        return ord(value)
    return value


def _number(text: str, line: int) -> int | float:
    clean = text.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?0[xXbBoO].*", clean):
            return int(clean, 0)
        if re.fullmatch(r"[+-]?\d+", clean):
            return int(clean, 10)
        return float(clean)
    except ValueError as exc:
        raise TemplateError(f"template: line {line}: bad number syntax: {text!r}") from exc


def walk(nodes: Sequence[object]) -> Iterator[object]:
    """Every node, pipe, command and argument under `nodes`, depth first, in source order."""
    for node in nodes:
        yield node
        if isinstance(node, Action):
            yield from walk([node.pipe])
        elif isinstance(node, Branch):
            yield from walk([node.pipe])
            yield from walk(node.body)
            yield from walk(node.else_body)
        elif isinstance(node, Pipe):
            yield from walk(node.cmds)
        elif isinstance(node, Command):
            yield from walk(node.args)
        elif isinstance(node, Field) and node.base is not None:
            yield from walk([node.base])


def cut_after_response(nodes: Sequence[object], cut: list[bool]) -> tuple[object, ...]:
    """Ollama's legacy cut: keep the `.Response` action, drop every node walked after it."""
    kept: list[object] = []
    for node in nodes:
        if cut[0]:
            break
        if isinstance(node, Branch):
            body = cut_after_response(node.body, cut)
            else_body = () if cut[0] else cut_after_response(node.else_body, cut)
            kept.append(replace(node, body=body, else_body=else_body))
            continue
        kept.append(node)
        if isinstance(node, Action) and any(
            isinstance(n, Field) and "Response" in n.names for n in walk([node.pipe])
        ):
            cut[0] = True
    return tuple(kept)


def parse(src: str) -> tuple[object, ...]:
    """Parse template source into a tuple of nodes; raises TemplateError."""
    parser = _Parser(src)
    nodes, _, _ = parser.parse_list(frozenset())
    return nodes
