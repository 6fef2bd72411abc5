"""Execute Ollama's Go text/template prompts over Python data (missingkey=zero semantics)."""

from __future__ import annotations

import datetime
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from worker.gotemplate_parse import (
    Action,
    Branch,
    Command,
    Control,
    Dot,
    Field,
    Function,
    Literal,
    Pipe,
    TemplateError,
    Text,
    cut_after_response,
    parse,
    walk,
)
from worker.gotemplate_value import (
    Record,
    TypeList,
    go_json,
    go_print,
    go_printf,
    is_true,
    to_wire,
    typescript_type,
)

__all__ = ["GoTemplate", "Record", "TemplateError", "TypeList", "is_true", "walk"]


class _Break(Exception):
    """{{ break }} unwinding to its range."""


class _Continue(Exception):
    """{{ continue }} unwinding to its range."""


@dataclass(slots=True)
class _State:
    out: list[str]
    vars: list[list[object]]  # [name, value] pairs; a stack with marks per scope

    def find(self, name: str) -> list[object]:
        """The innermost [name, value] entry of a variable."""
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry
        raise TemplateError(f"template: undefined variable: {name}")


class GoTemplate:
    """A parsed Go template; execute it over a mapping with Go-style capitalised keys."""

    __slots__ = ("_nodes", "_cut", "_names", "source")

    def __init__(self, nodes: tuple[object, ...], source: str) -> None:
        self._nodes = nodes
        self._cut: tuple[object, ...] | None = None
        self._names: frozenset[str] | None = None
        self.source = source

    @classmethod
    def parse(cls, text: str) -> GoTemplate:
        return cls(parse(text), text)

    @property
    def nodes(self) -> tuple[object, ...]:
        return self._nodes

    def identifiers(self) -> set[str]:
        """Lower-cased field names the template mentions (Ollama's capability detection)."""
        if self._names is None:
            self._names = frozenset(
                name.lower()
                for node in walk(self._nodes)
                if isinstance(node, Field)
                for name in node.names
            )
        return set(self._names)

    def execute(self, data: Mapping[str, object], *, stop_at_response: bool = False) -> str:
        """Render; with stop_at_response, everything after the first `.Response` is cut."""
        nodes = self._nodes
        if stop_at_response:
            if self._cut is None:
                self._cut = cut_after_response(self._nodes, [False])
            nodes = self._cut
        state = _State([], [["$", data]])
        try:
            _run_list(state, nodes, data)
        except (_Break, _Continue) as exc:  # pragma: no cover - parser forbids it
            raise TemplateError("template: break/continue outside range") from exc
        except RecursionError as exc:
            raise TemplateError("template: nesting too deep") from exc
        return "".join(state.out)


def _run_list(state: _State, nodes: Sequence[object], dot: object) -> None:
    for node in nodes:
        if isinstance(node, Text):
            state.out.append(node.text)
        elif isinstance(node, Action):
            value = _eval_pipe(state, node.pipe, dot)
            if not node.pipe.decl:
                state.out.append(go_print(value))
        elif isinstance(node, Branch):
            _run_branch(state, node, dot)
        elif isinstance(node, Control):
            raise _Break() if node.kind == "break" else _Continue()


def _run_branch(state: _State, node: Branch, dot: object) -> None:
    mark = len(state.vars)
    try:
        value = _eval_pipe(state, node.pipe, dot)
        if node.kind == "range":
            _run_range(state, node, value, dot, mark)
        elif is_true(value):
            _run_list(state, node.body, value if node.kind == "with" else dot)
        else:
            _run_list(state, node.else_body, dot)
    finally:
        del state.vars[mark:]


def _range_items(value: object) -> list[tuple[object, object]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return [(i, i) for i in range(value)]
    raise TemplateError(f"template: range can't iterate over {go_print(value)}")


def _run_range(state: _State, node: Branch, value: object, dot: object, mark: int) -> None:
    items = _range_items(value)
    if not items:
        del state.vars[mark:]
        _run_list(state, node.else_body, dot)
        return
    decl = node.pipe.decl
    base = len(state.vars)
    for key, elem in items:
        del state.vars[base:]
        if len(decl) == 1:
            state.vars[base - 1][1] = elem
        elif len(decl) == 2:
            state.vars[base - 2][1] = key
            state.vars[base - 1][1] = elem
        try:
            _run_list(state, node.body, elem)
        except _Break:
            break
        except _Continue:
            continue


def _eval_pipe(state: _State, pipe: Pipe, dot: object) -> object:
    value: object = None
    has_final = False
    try:
        for cmd in pipe.cmds:
            value = _eval_command(state, cmd, dot, value, has_final)
            has_final = True
    except TemplateError as exc:
        message = str(exc)
        if message.startswith("template: line "):
            raise
        located = message.replace("template:", f"template: line {pipe.line}:", 1)
        raise TemplateError(located) from None
    if pipe.decl:
        if pipe.is_assign:
            state.find(pipe.decl[-1])[1] = value
        else:
            for name in pipe.decl:
                state.vars.append([name, value])
    return value


def _eval_command(
    state: _State, cmd: Command, dot: object, final: object, has_final: bool
) -> object:
    head = cmd.args[0]
    if isinstance(head, Function):
        if head.name in ("and", "or"):
            return _and_or(state, head.name, cmd.args[1:], dot, final, has_final)
        args = [_eval_arg(state, a, dot) for a in cmd.args[1:]]
        if has_final:
            args.append(final)
        return _call(head.name, args)
    if len(cmd.args) > 1 or has_final:
        raise TemplateError("template: can't give argument to non-function")
    return _eval_arg(state, head, dot)


def _and_or(
    state: _State,
    name: str,
    arg_nodes: Sequence[object],
    dot: object,
    final: object,
    has_final: bool,
) -> object:
    """Go's short-circuit and/or: the first decisive argument, else the last one."""
    if not arg_nodes and not has_final:
        raise TemplateError(f"template: wrong number of args for {name}")
    value: object = None
    for index in range(len(arg_nodes) + has_final):
        value = _eval_arg(state, arg_nodes[index], dot) if index < len(arg_nodes) else final
        if is_true(value) == (name == "or"):
            return value
    return value


def _eval_arg(state: _State, arg: object, dot: object) -> object:
    if isinstance(arg, Literal):
        return arg.value
    if isinstance(arg, Dot):
        return dot
    if isinstance(arg, Pipe):
        mark = len(state.vars)
        try:
            return _eval_pipe(state, arg, dot)
        finally:
            del state.vars[mark:]
    if isinstance(arg, Field):
        if arg.var is not None:
            value = state.find(arg.var)[1]
        elif arg.base is not None:
            value = _eval_arg(state, arg.base, dot)
        else:
            value = dot
        for name in arg.names:
            value = _field(value, name)
        return value
    if isinstance(arg, Function):
        return _call(arg.name, [])
    raise TemplateError(f"template: can't evaluate {arg!r}")


def _field(value: object, name: str) -> object:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get(name)
    raise TemplateError(f"template: can't evaluate field {name} in {type(value).__name__}")


# --- functions ------------------------------------------------------------------------


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(a: object, b: object) -> bool:
    if _is_num(a) and _is_num(b):
        return a == b
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, Mapping | list) or isinstance(b, Mapping | list):
        raise TemplateError("template: error calling eq: non-comparable type")
    return type(a) is type(b) and a == b or (a is None and b is None)


def _order(name: str) -> Callable[[object, object], bool]:
    def compare(a: object, b: object) -> bool:
        if not ((_is_num(a) and _is_num(b)) or (isinstance(a, str) and isinstance(b, str))):
            raise TemplateError(f"template: error calling {name}: incompatible types")
        return bool(getattr(operator, name)(a, b))

    return compare


def _length(v: object) -> int:
    if v is None:
        return 0
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, list | tuple | Mapping):
        return len(v)
    raise TemplateError(f"template: error calling len: len of type {type(v).__name__}")


def _index(item: object, *keys: object) -> object:
    for key in keys:
        if item is None:
            return None
        if isinstance(item, Mapping):
            item = item.get(key)
        elif isinstance(item, list | tuple | str) and _is_num(key):
            if not 0 <= int(key) < len(item):  # type: ignore[call-overload]
                raise TemplateError(f"template: error calling index: index out of range: {key}")
            item = item[int(key)]  # type: ignore[call-overload]
        else:
            raise TemplateError(f"template: error calling index: can't index {go_print(item)}")
    return item


def _slice(item: object, *bounds: object) -> object:
    if not isinstance(item, list | tuple | str) or len(bounds) > 2:
        raise TemplateError(f"template: error calling slice: can't slice {go_print(item)}")
    start, stop = [*bounds, 0, len(item)][:2] if bounds else (0, len(item))
    if len(bounds) == 1:
        stop = len(item)
    if not (_is_num(start) and _is_num(stop) and 0 <= start <= stop <= len(item)):  # type: ignore[operator]
        raise TemplateError(f"template: error calling slice: bad indexes {list(bounds)}")
    return item[int(start) : int(stop)]  # type: ignore[call-overload]


def _date(days_ago: int) -> str:
    return (datetime.date.today() - datetime.timedelta(days=days_ago)).isoformat()


def _print(*args: object) -> str:
    parts: list[str] = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            parts.append(" ")
        parts.append(go_print(a))
    return "".join(parts)


_FUNCS: dict[str, Callable[..., object]] = {
    "not": lambda v: not is_true(v),
    "eq": lambda a, *bs: any(_equal(a, b) for b in bs),
    "ne": lambda a, b: not _equal(a, b),
    **{name: _order(name) for name in ("lt", "le", "gt", "ge")},
    "len": _length,
    "index": _index,
    "slice": _slice,
    "printf": lambda fmt, *args: go_printf(fmt, list(args)),
    "print": _print,
    "println": lambda *args: " ".join(go_print(a) for a in args) + "\n",
    "json": go_json,
    "currentDate": lambda: _date(0),
    "yesterdayDate": lambda: _date(1),
    "toTypeScriptType": lambda v: typescript_type(to_wire(v)),
}


def _call(name: str, args: list[object]) -> object:
    func = _FUNCS.get(name)
    if func is None:
        raise TemplateError(f'template: function "{name}" is not supported')
    try:
        return func(*args)
    except TypeError as exc:
        raise TemplateError(f"template: wrong number of args for {name}: {exc}") from exc
    except (ValueError, OverflowError) as exc:
        raise TemplateError(f"template: error calling {name}: {exc}") from exc
