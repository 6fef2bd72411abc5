"""Prompt building: modes, message order, Go vs Jinja, truncation, capabilities."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.backend import ModelFacts
from worker.capability import capabilities, thinking_tags, tool_call_tag
from worker.prompt import RenderedPrompt, TemplateError, build_prompt
from worker.protocol import Generate

CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
          "{{ end }}<|im_start|>assistant\n")
LEGACY = ("{{ if .System }}<<SYS>>{{ .System }}<</SYS>>{{ end }}[INST] {{ .Prompt }} [/INST]"
          " {{ .Response }}</s>")
JINJA_CHATML = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
THINKING_GO = ("{{- range .Messages }}<|{{ .Role }}|>{{ if .Thinking }}<think>{{ .Thinking }}"
               "</think>{{ end }}{{ .Content }}{{ end }}<|assistant|>")


def facts(chat_template: str | None = None, n_ctx: int = 4096, bos: str = "",
          add_bos: bool = False) -> ModelFacts:
    return ModelFacts(n_ctx=n_ctx, n_ctx_train=n_ctx, chat_template=chat_template,
                      bos_token=bos, eos_token="</s>", add_bos=add_bos, memory_bytes=0)


def words(text: str) -> int:
    return len(text.split())


def build(req: Generate, model: ModelFacts | None = None,
          count: Callable[[str], int] = words) -> RenderedPrompt:
    return build_prompt(req, model or facts(), count)


def msg(role: str, content: str) -> dict[str, object]:
    return {"role": role, "content": content}


def test_prompt_raw_is_sent_as_is() -> None:
    req = Generate(id=1, prompt="{{ .Prompt }} <think>", raw=True, template=CHATML, system="s")
    assert build(req) == RenderedPrompt("{{ .Prompt }} <think>", 0, True)


def test_prompt_suffix_mode_uses_prompt_and_suffix_only() -> None:
    template = "{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ else }}x{{ end }}"
    req = Generate(id=1, prompt="def f(", suffix="return 1", template=template, system="ignored")
    assert build(req).text == "<PRE> def f( <SUF>return 1 <MID>"


def test_prompt_generate_orders_system_history_prompt() -> None:
    req = Generate(id=1, prompt="third", system="sys", template=CHATML,
                   messages=[msg("user", "first"), msg("assistant", "second")])
    assert build(req).text == (
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nfirst<|im_end|>\n"
        "<|im_start|>assistant\nsecond<|im_end|>\n<|im_start|>user\nthird<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_prompt_chat_uses_messages_as_given_and_collates_same_roles() -> None:
    req = Generate(id=1, chat=True, template="{{ .System }}|{{ range .Messages }}"
                   "{{ .Role }}={{ .Content }};{{ end }}",
                   messages=[msg("system", "a"), msg("system", "b"), msg("user", "x"),
                             msg("user", "y"), msg("tool", "t1"), msg("tool", "t2")])
    assert build(req).text == "a\n\nb|system=a\n\nb;user=x\n\ny;tool=t1;tool=t2;"


def test_prompt_collation_keeps_tool_calls_of_merged_messages() -> None:
    call: dict[str, object] = {"function": {"name": "f", "arguments": {}}}
    req = Generate(id=1, chat=True,
                   template="{{ range .Messages }}{{ .Content }}|{{ len .ToolCalls }}{{ end }}",
                   messages=[msg("assistant", "a"),
                             {"role": "assistant", "content": "b", "tool_calls": [call]}])
    assert build(req).text == "a\n\nb|1"


def test_prompt_legacy_template_renders_turns_and_cuts_at_response() -> None:
    req = Generate(id=1, chat=True, template=LEGACY,
                   messages=[msg("system", "S"), msg("user", "u1"), msg("assistant", "a1"),
                             msg("user", "u2")])
    assert build(req).text == "<<SYS>>S<</SYS>>[INST] u1 [/INST] a1</s>[INST] u2 [/INST] "


def test_prompt_legacy_template_continues_a_final_assistant_message() -> None:
    req = Generate(id=1, chat=True, template=LEGACY,
                   messages=[msg("user", "u1"), msg("assistant", "partial")])
    assert build(req).text == "[INST] u1 [/INST] partial"


def test_prompt_default_template_appends_response() -> None:
    req = Generate(id=1, chat=True, messages=[msg("user", "a"), msg("assistant", "b"),
                                              msg("user", "c")])
    assert build(req).text == "abc"
    assert build(Generate(id=1, prompt="just this", system="sys")).text == "just this"


def test_prompt_jinja_used_without_go_template_and_bos_deduplicated() -> None:
    req = Generate(id=1, prompt="hi", system="sys")
    model = facts(JINJA_CHATML, bos="<s>", add_bos=True)
    assert build(req, model).text == (
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert build(req, facts(JINJA_CHATML, bos="<s>", add_bos=False)).text.startswith("<s><|im")


def test_prompt_thinking_open_when_template_opens_think() -> None:
    req = Generate(id=1, chat=True, think=True, messages=[msg("user", "q")])
    model = facts("{{ messages[0].content }}{% if enable_thinking %}<think>\n{% endif %}")
    assert build(req, model) == RenderedPrompt("q<think>\n", 0, True)
    no_think = Generate(id=1, chat=True, think=False, messages=[msg("user", "q")])
    assert build(no_think, model).thinking_open is False


@pytest.mark.parametrize(
    ("think", "expected"),
    [(None, "false--false"), (True, "true-medium-true"), (False, "false--true"),
     ("high", "true-high-true")],
)
def test_prompt_think_values(think: bool | str | None, expected: str) -> None:
    template = "{{ .Think }}-{{ .ThinkLevel }}-{{ .IsThinkSet }}{{ if .Messages }}{{ end }}"
    req = Generate(id=1, chat=True, template=template, think=think, messages=[msg("user", "x")])
    assert build(req).text == expected


def test_prompt_go_template_sees_tools_and_tool_calls() -> None:
    template = ("{{ range .Tools }}T:{{ . }} {{ .Function.Name }} "
                "{{ range $k, $p := .Function.Parameters.Properties }}{{ $k }}:{{ $p.Type }}"
                "{{ end }}{{ end }}|{{ range .Messages }}{{ range .ToolCalls }}"
                "{{ .Function.Name }}{{ .Function.Arguments }}{{ end }}{{ end }}")
    tool: dict[str, object] = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}}}
    call = {"function": {"name": "f", "arguments": {"b": "x<y", "a": 1}}}
    turn: dict[str, object] = {"role": "assistant", "content": "", "tool_calls": [call]}
    req = Generate(id=1, chat=True, template=template, tools=[tool], messages=[turn])
    assert build(req).text == (
        'T:{"type":"function","function":{"name":"f","parameters":{"type":"object",'
        '"properties":{"b":{"type":"string"},"a":{"type":"integer"}}}}} f b:stringa:integer|'
        'f{"b":"x\\u003cy","a":1}'
    )


def test_prompt_truncation_drops_oldest_non_system_and_keeps_last() -> None:
    messages = [msg("system", "sys"), msg("user", "one two three"), msg("assistant", "four five"),
                msg("user", "six")]
    template = "{{ range .Messages }}{{ .Content }} {{ end }}"
    req = Generate(id=1, chat=True, template=template, messages=messages)
    assert build(req, facts(n_ctx=7)) == RenderedPrompt("sys one two three four five six ", 0,
                                                          False)
    assert build(req, facts(n_ctx=4)) == RenderedPrompt("sys four five six ", 1, False)
    assert build(req, facts(n_ctx=2)) == RenderedPrompt("sys six ", 2, False)
    assert build(req, facts(n_ctx=0)) == RenderedPrompt("sys six ", 2, False)


def test_prompt_truncation_off_keeps_everything() -> None:
    req = Generate(id=1, chat=True, template=CHATML, truncate=False,
                   messages=[msg("user", "a b c d"), msg("user", "e")])
    counted: list[str] = []

    def count(text: str) -> int:
        counted.append(text)
        return 99

    result = build(req, facts(n_ctx=1), count)
    assert result.truncated_messages == 0 and "a b c d" in result.text and counted == []


def test_prompt_truncation_applies_to_jinja_and_generate_history() -> None:
    req = Generate(id=1, prompt="now", system="sys",
                   messages=[msg("user", "old " * 50), msg("assistant", "older " * 50)])
    result = build(req, facts(JINJA_CHATML, n_ctx=20))
    assert result.truncated_messages == 2
    assert "old" not in result.text and "sys" in result.text and "now" in result.text


def test_prompt_template_errors_surface() -> None:
    with pytest.raises(TemplateError):
        build(Generate(id=1, prompt="x", template="{{ if .Prompt }}"))
    with pytest.raises(TemplateError):
        build(Generate(id=1, prompt="x"), facts("{{ raise_exception('no') }}"))


@pytest.mark.parametrize(
    ("template", "chat_template", "embedding", "vision", "expected"),
    [
        (CHATML, None, False, False, ["completion"]),
        ("{{ .Prompt }}{{ .Suffix }}{{ .Tools }}", None, False, True,
         ["completion", "vision", "tools", "insert"]),
        (THINKING_GO, None, False, False, ["completion", "thinking"]),
        ("", "{% if tools %}<tool_call>{% endif %}<think></think>", False, False,
         ["completion", "tools", "thinking"]),
        ("", None, True, False, ["embedding"]),
        ("{{ if", "tools", False, False, ["completion"]),
    ],
)
def test_prompt_capabilities(template: str, chat_template: str | None, embedding: bool,
                             vision: bool, expected: list[str]) -> None:
    assert capabilities(template, chat_template, embedding, vision) == expected


def test_prompt_thinking_tags_inferred_from_go_template() -> None:
    assert thinking_tags(THINKING_GO) == ("<think>", "</think>")
    assert thinking_tags("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}") is None
    assert thinking_tags(CHATML) is None


@pytest.mark.parametrize(
    ("template", "chat_template", "expected"),
    [
        ("{{ if .ToolCalls }}<tool_call>\n{{ range .ToolCalls }}{\"name\": {{ end }}{{ end }}",
         None, "<tool_call>"),
        ("{{ if .ToolCalls }}[TOOL_CALLS] [{{ range .ToolCalls }}{{ end }}{{ end }}", None,
         "[TOOL_CALLS] ["),
        ("{{ if .ToolCalls }}{{ range .ToolCalls }}{\"name\"{{ end }}{{ end }}", None, "{"),
        (CHATML, None, "{"),
        ("{{ if .ToolCalls }}\n{{ range .ToolCalls }}<tool_call>{{ end }}{{ end }}", None,
         "<tool_call>"),
        ("{{ if .ToolCalls }}{{ .X }}<tool_call>{{ end }}", None, "{"),
        ("{{ if .Content }}c{{ else if .ToolCalls }}\nAction: ```json\n[{{ end }}", None,
         "Action: ```json\n["),
        ("", "[TOOL_CALLS]{{ x }}", "[TOOL_CALLS]"),
        ("", None, "{"),
    ],
)
def test_prompt_tool_call_tag(template: str, chat_template: str | None, expected: str) -> None:
    assert tool_call_tag(template, chat_template) == expected


def test_prompt_capability_module_stays_light() -> None:
    code = ("import sys, worker.capability; "
            "sys.exit(int(any(m in sys.modules for m in ('jinja2', 'llama_cpp'))))")
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
