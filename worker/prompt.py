"""Build the prompt text for a Generate request: raw, suffix, Go template or Jinja, truncated.

Ollama's rules (reference §9): a Go TEMPLATE runs once over `.Messages` when it uses them,
else turn by turn in legacy mode with the last turn cut at `{{ .Response }}`; without a
TEMPLATE the GGUF's Jinja chat template renders OpenAI-style messages; without either the
prompt is `{{ .Prompt }}`. With `truncate`, the oldest non-system messages are dropped until
the prompt fits the context, always keeping the last message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from worker.backend import ModelFacts
from worker.capability import capabilities, tool_call_tag
from worker.chat_template import render_chat_template
from worker.gotemplate import GoTemplate, Record, TypeList
from worker.gotemplate_parse import TemplateError
from worker.protocol import Generate

__all__ = ["RenderedPrompt", "TemplateError", "build_prompt", "capabilities", "go_template",
           "tool_call_tag"]

DEFAULT_TEMPLATE = "{{ .Prompt }}"
THINK_OPEN = "<think>"

Message = Mapping[str, object]
Renderer = Callable[[list[Message]], str]


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """The text to tokenize, plus what rendering found out."""

    text: str
    truncated_messages: int  # messages dropped from the front to fit the context
    thinking_open: bool  # the prompt ends inside an opened <think> block


@functools.lru_cache(maxsize=16)
def go_template(text: str) -> GoTemplate:
    """Parse a Go template with Ollama's fix-up: append `{{ .Response }}` when the template
    mentions neither `.Messages` nor `.Response`."""
    parsed = GoTemplate.parse(text)
    names = parsed.identifiers()
    if "messages" not in names and "response" not in names:
        parsed = GoTemplate.parse(text + "{{ .Response }}")
    return parsed


def _think_values(think: bool | str | None) -> dict[str, object]:
    on = think is True or (isinstance(think, str) and think != "")
    level = think if isinstance(think, str) else ("medium" if think is True else "")
    return {"Think": on, "ThinkLevel": level, "IsThinkSet": think is not None}


# --- Go data model ----------------------------------------------------------------------


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _go_property(prop: Mapping[str, object]) -> Record:
    kind = prop.get("type")
    any_of = prop.get("anyOf")
    fields = {
        "AnyOf": [_go_property(p) for p in any_of if isinstance(p, Mapping)]
        if isinstance(any_of, list) else [],
        "Type": TypeList([kind] if isinstance(kind, str) else
                         [str(k) for k in kind] if isinstance(kind, list) else []),
        "Items": prop.get("items"),
        "Description": prop.get("description", ""),
        "Enum": prop.get("enum") or [],
        "Properties": _go_properties(prop.get("properties")),
        "Required": prop.get("required") or [],
    }
    return Record(fields, prop)


def _go_properties(props: object) -> Record | None:
    if not isinstance(props, Mapping):
        return None
    named = {str(k): _go_property(_mapping(v)) for k, v in props.items()}
    return Record(named, props, struct=False)


def _go_tool(tool: Mapping[str, object]) -> Record:
    function = _mapping(tool.get("function"))
    params = _mapping(function.get("parameters"))
    go_params = Record({
        "Type": params.get("type", ""), "Defs": params.get("$defs"), "Items": params.get("items"),
        "Required": params.get("required") or [],
        "Properties": _go_properties(params.get("properties")),
    }, params)
    go_function = Record({"Name": function.get("name", ""),
                          "Description": function.get("description", ""),
                          "Parameters": go_params}, function)
    return Record({"Type": tool.get("type", "function"), "Items": tool.get("items"),
                   "Function": go_function}, tool)


def _go_tool_call(call: Mapping[str, object], index: int) -> Record:
    function = _mapping(call.get("function"))
    arguments = _mapping(function.get("arguments"))
    go_function = Record({"Index": function.get("index", index), "Name": function.get("name", ""),
                          "Arguments": Record(arguments, arguments, struct=False)}, function)
    return Record({"ID": call.get("id", ""), "Function": go_function}, call)


def _go_message(message: Message) -> dict[str, object]:
    calls = message.get("tool_calls")
    return {
        "Role": message.get("role", ""),
        "Content": message.get("content", "") or "",
        "Thinking": message.get("thinking", "") or "",
        "Images": message.get("images") or [],
        "ToolCalls": [_go_tool_call(_mapping(c), i) for i, c in enumerate(calls)]
        if isinstance(calls, list) else [],
        "ToolName": message.get("tool_name", "") or "",
        "ToolCallID": message.get("tool_call_id", "") or "",
    }


def _collate(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    """Join system texts; merge consecutive same-role messages (not tool): contents with a
    blank line between them, images and tool calls appended."""
    system: list[str] = []
    collated: list[dict[str, object]] = []
    for message in messages:
        role = message.get("role", "")
        content = str(message.get("content", "") or "")
        if role == "system":
            system.append(content)
        if collated and collated[-1].get("role") == role and role != "tool":
            merged = collated[-1]
            merged["content"] = f"{merged.get('content', '') or ''}\n\n{content}"
            for key in ("images", "tool_calls"):
                extra = message.get(key)
                if isinstance(extra, list) and extra:
                    before = merged.get(key)
                    merged[key] = [*(before if isinstance(before, list) else []), *extra]
            continue
        collated.append(dict(message))
    return "\n\n".join(system), list(collated)


def render_go(template: GoTemplate, messages: Sequence[Message],
              tools: Sequence[Mapping[str, object]] | None, think: bool | str | None) -> str:
    """Ollama's Template.Execute for a message list (Messages mode or legacy mode)."""
    system, collated = _collate(messages)
    thinking = _think_values(think)
    if "messages" in template.identifiers():
        return template.execute({
            "System": system, "Messages": [_go_message(m) for m in collated],
            "Tools": [_go_tool(t) for t in tools] if tools else [], "Response": "", **thinking,
        })
    out: list[str] = []
    slots = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(template.execute({**slots, **thinking}))
        slots.update(System="", Prompt="", Response="")

    for message in collated:
        role, content = message.get("role"), str(message.get("content", "") or "")
        if role == "system":
            if slots["Prompt"] or slots["Response"]:
                flush()
            slots["System"] = content
        elif role == "user":
            if slots["Response"]:
                flush()
            slots["Prompt"] = content
        elif role == "assistant":
            slots["Response"] = content
    out.append(template.execute({**slots, **thinking}, stop_at_response=True))
    return "".join(out)


# --- request modes ------------------------------------------------------------------------


def _strip_bos(text: str, facts: ModelFacts) -> str:
    if facts.add_bos and facts.bos_token and text.startswith(facts.bos_token):
        return text[len(facts.bos_token):]
    return text


def _renderer(req: Generate, facts: ModelFacts) -> Renderer:
    if req.template or not facts.chat_template:
        template = go_template(req.template or DEFAULT_TEMPLATE)
        return lambda msgs: _strip_bos(render_go(template, msgs, req.tools, req.think), facts)
    source = facts.chat_template
    return lambda msgs: _strip_bos(
        render_chat_template(source, msgs, tools=req.tools, bos_token=facts.bos_token,
                             eos_token=facts.eos_token, think=req.think),
        facts,
    )


def _messages(req: Generate) -> list[Message]:
    if req.chat:
        return list(req.messages)
    head: list[Message] = [{"role": "system", "content": req.system}] if req.system else []
    return [*head, *req.messages, {"role": "user", "content": req.prompt}]


def _fit(messages: list[Message], render: Renderer, count_tokens: Callable[[str], int],
         n_ctx: int, truncate: bool) -> tuple[str, int]:
    """Render from the first start index whose prompt fits; system messages always stay."""
    last = max(len(messages) - 1, 0)
    for start in range(last + 1):
        if 0 < start < last and messages[start - 1].get("role") == "system":
            continue  # same kept list as the previous start, which did not fit
        kept_system = [m for m in messages[:start] if m.get("role") == "system"]
        text = render(kept_system + messages[start:])
        if not truncate or start == last or count_tokens(text) <= n_ctx:
            return text, start - len(kept_system)
    raise AssertionError("unreachable")  # pragma: no cover


def build_prompt(req: Generate, facts: ModelFacts,
                 count_tokens: Callable[[str], int]) -> RenderedPrompt:
    """The prompt for `req`; raises TemplateError when a template fails to parse or render."""
    if req.raw:
        text, dropped = req.prompt, 0
    elif req.suffix and not req.chat:
        template = go_template(req.template or DEFAULT_TEMPLATE)
        values = {"Prompt": req.prompt, "Suffix": req.suffix, "Response": "",
                  **_think_values(req.think)}
        text, dropped = _strip_bos(template.execute(values), facts), 0
    else:
        text, dropped = _fit(_messages(req), _renderer(req, facts), count_tokens, facts.n_ctx,
                             req.truncate)
    return RenderedPrompt(text, dropped, text.rstrip().endswith(THINK_OPEN))
