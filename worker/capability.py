"""What a model's templates allow (tools, insert, thinking) and where its tool calls start.

Pure and light: the supervisor imports this for /api/show and request checks, so it must
not import jinja2 or llama_cpp.
"""

from __future__ import annotations

import functools

from worker.gotemplate import GoTemplate, walk
from worker.gotemplate_parse import Action, Branch, Field, TemplateError, Text

__all__ = ["capabilities", "thinking_tags", "tool_call_tag"]

_JINJA_TOOL_TAGS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>")


@functools.lru_cache(maxsize=32)
def _parsed(template: str) -> GoTemplate | None:
    try:
        return GoTemplate.parse(template)
    except TemplateError:
        return None


def _ranges_over_messages(node: Branch) -> bool:
    return any(isinstance(n, Field) and "Messages" in n.names for n in walk([node.pipe]))


def _mentions_thinking(node: object) -> bool:
    pipes = [node.pipe] if isinstance(node, Action | Branch) else []
    return any(
        isinstance(n, Field) and n.var is None and n.base is None
        and n.names[:1] == ("Thinking",)
        for n in walk(pipes)
    )


def _scan_thinking(nodes: tuple[object, ...], in_messages: bool, found: list[str]) -> None:
    """Ollama's heuristic: for each `.Thinking` whose nearest enclosing range is over
    `.Messages`, the first and last texts of its node list are the tags (last one wins)."""
    for node in nodes:
        if in_messages and _mentions_thinking(node):
            first, last = nodes[0], nodes[-1]
            found[:] = [
                first.text.strip() if isinstance(first, Text) else "",
                last.text.strip() if isinstance(last, Text) else "",
            ]
        if isinstance(node, Branch):
            inside = _ranges_over_messages(node) if node.kind == "range" else in_messages
            _scan_thinking(node.body, inside, found)
            _scan_thinking(node.else_body, inside, found)


def thinking_tags(template: str) -> tuple[str, str] | None:
    """The (opening, closing) thinking tags a Go template puts around `.Thinking`, if any."""
    parsed = _parsed(template)
    if parsed is None:
        return None
    found = ["", ""]
    _scan_thinking(parsed.nodes, False, found)
    return (found[0], found[1]) if found[0] and found[1] else None


def capabilities(template: str, chat_template: str | None, is_embedding: bool,
                 has_vision: bool) -> list[str]:
    """Ollama's capability list (§1.8): the Go template when there is one, else the Jinja one."""
    caps = ["embedding" if is_embedding else "completion"]
    if has_vision:
        caps.append("vision")
    if template:
        parsed = _parsed(template)
        names = parsed.identifiers() if parsed is not None else set()
        caps += [cap for name, cap in (("tools", "tools"), ("suffix", "insert")) if name in names]
        if thinking_tags(template) is not None:
            caps.append("thinking")
    elif chat_template:
        if "tools" in chat_template or "tool_call" in chat_template:
            caps.append("tools")
        if "<think>" in chat_template and "</think>" in chat_template:
            caps.append("thinking")
    return caps


def _tool_calls_branch(nodes: tuple[object, ...]) -> Branch | None:
    """The first `{{ if .ToolCalls }}` (its own condition names the field), depth first."""
    for node in nodes:
        if not isinstance(node, Branch):
            continue
        if node.kind == "if" and any(
            isinstance(arg, Field) and arg.var is None and arg.base is None
            and "ToolCalls" in arg.names
            for cmd in node.pipe.cmds for arg in cmd.args
        ):
            return node
        found = _tool_calls_branch(node.body) or _tool_calls_branch(node.else_body)
        if found is not None:
            return found
    return None


def _first_text(nodes: tuple[object, ...]) -> str | None:
    """The first non-blank text, searching into branches but stopping at any action."""
    for node in nodes:
        if isinstance(node, Text) and node.text.strip():
            return node.text
        if isinstance(node, Action):
            return None
        if isinstance(node, Branch):
            return _first_text(node.body) or _first_text(node.else_body)
    return None


def _go_tool_tag(parsed: GoTemplate) -> str:
    branch = _tool_calls_branch(parsed.nodes)
    text = _first_text(branch.body) if branch is not None else None
    tag = (text or "").replace("\r\n", "\n").split("{", 1)[0].strip()
    return tag or "{"


def tool_call_tag(template: str, chat_template: str | None = None) -> str:
    """Text that opens a tool call in the model's output.

    For a Go template: the first text inside `{{ if .ToolCalls }}` up to any `{` (Ollama's
    rule), or `{`. Without one, a known tag the Jinja template mentions, or `{`.
    """
    if template:
        parsed = _parsed(template)
        return _go_tool_tag(parsed) if parsed is not None else "{"
    for tag in _JINJA_TOOL_TAGS:
        if chat_template and tag in chat_template:
            return tag
    return "{"
