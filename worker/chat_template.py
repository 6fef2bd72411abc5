"""Render a GGUF's Jinja `tokenizer.chat_template` in a sandbox, Hugging Face style."""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Iterable, Mapping, Sequence

import jinja2
import jinja2.sandbox

from worker.gotemplate_parse import TemplateError

__all__ = ["JsonArguments", "TemplateError", "openai_messages", "render_chat_template"]


class JsonArguments(dict[str, object]):
    """Tool-call arguments: a dict to templates that iterate or `tojson` them, and their JSON
    text to templates that concatenate them to strings (Functionary, DeepSeek R1)."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)

    def __add__(self, other: object) -> str:
        if isinstance(other, str):
            return str(self) + other
        return NotImplemented

    def __radd__(self, other: object) -> str:
        if isinstance(other, str):
            return other + str(self)
        return NotImplemented


def _plain(value: object) -> object:
    """Generators and other iterables (e.g. the output of `map`) become lists for JSON."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, str | bytes | int | float | bool) or value is None:
        return value
    if isinstance(value, jinja2.Undefined):
        raise TemplateError("tojson of an undefined value")
    if isinstance(value, Iterable):
        return [_plain(v) for v in value]
    return value


def _tojson(value: object, indent: int | None = None, separators: tuple[str, str] | None = None,
            sort_keys: bool = False, ensure_ascii: bool = False) -> str:
    return json.dumps(_plain(value), indent=indent, separators=separators, sort_keys=sort_keys,
                      ensure_ascii=ensure_ascii)


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@functools.cache
def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"chat template: line {exc.lineno}: {exc.message}") from exc


def _tool_calls(calls: Sequence[object]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for call in calls:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        arguments = function.get("arguments")
        entry: dict[str, object] = {
            "type": "function",
            "function": {
                "name": function.get("name", ""),
                "arguments": JsonArguments(arguments if isinstance(arguments, Mapping) else {}),
            },
        }
        if call.get("id"):
            entry = {"id": call["id"], **entry}
        out.append(entry)
    return out


def openai_messages(messages: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """Ollama messages in the OpenAI shape HF templates read; absent keys stay absent.

    An assistant turn that only calls tools gets `content: None`, as llama.cpp sends it.
    """
    out: list[dict[str, object]] = []
    for message in messages:
        item: dict[str, object] = {"role": message.get("role", ""),
                                   "content": message.get("content", "") or ""}
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            item["tool_calls"] = _tool_calls(calls)
            if item["content"] == "":
                item["content"] = None
        if message.get("tool_name"):
            item["name"] = message["tool_name"]
        if message.get("tool_call_id"):
            item["tool_call_id"] = message["tool_call_id"]
        out.append(item)
    return out


def render_chat_template(
    source: str,
    messages: Sequence[Mapping[str, object]],
    *,
    tools: Sequence[Mapping[str, object]] | None = None,
    bos_token: str = "",
    eos_token: str = "",
    think: bool | str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render `source` over Ollama-shaped messages; raises TemplateError on any failure."""
    context: dict[str, object] = {
        "messages": openai_messages(messages),
        "add_generation_prompt": add_generation_prompt,
        "bos_token": bos_token,
        "eos_token": eos_token,
    }
    if tools:
        context["tools"] = [dict(t) for t in tools]
    if think is not None:
        context["enable_thinking"] = think is not False and think != ""
        if isinstance(think, str):
            context["reasoning_effort"] = think
    template = _compile(source)
    try:
        return _render(template, context)
    except TemplateError:
        converted = context["messages"]
        assert isinstance(converted, list)
        if not any(m["content"] is None for m in converted):
            raise
    # Like llama.cpp, fall back to "" content for templates that cannot take null content.
    context["messages"] = [{**m, "content": m["content"] or ""} for m in converted]
    return _render(template, context)


def _render(template: jinja2.Template, context: Mapping[str, object]) -> str:
    try:
        return template.render(context)
    except TemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateError(f"chat template: {exc}") from exc
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise TemplateError(f"chat template: {type(exc).__name__}: {exc}") from exc
