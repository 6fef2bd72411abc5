"""Jinja chat templates: the corpus renders in the sandbox, tools and tool calls included."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.chat_template import TemplateError, openai_messages, render_chat_template

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "chat-templates"
TEMPLATES = sorted(CORPUS.glob("*.jinja"))

SIMPLE: list[dict[str, object]] = [
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "Fine, thanks."},
    {"role": "user", "content": "Tell me a joke."},
]
TOOLS: list[dict[str, object]] = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}]
TOOL_CONVERSATION: list[dict[str, object]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call12345", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
    ]},
    {"role": "tool", "content": "sunny, 22C", "tool_name": "get_weather",
     "tool_call_id": "call12345"},
]
# Templates that refuse these conversations by design (SOURCES.md): FireFunction v2 needs a
# `functions` variable no standard renderer passes; Gemma 2 rejects system and tool roles.
REFUSES = {
    ("fireworks-ai-llama-3-firefunction-v2", "simple"),
    ("fireworks-ai-llama-3-firefunction-v2", "tools"),
    ("google-gemma-2-2b-it", "tools"),
}


def test_chat_template_corpus_is_present() -> None:
    assert len(TEMPLATES) == 17


@pytest.mark.parametrize("kind", ["simple", "tools"])
@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_chat_template_renders_corpus(path: Path, kind: str) -> None:
    messages, tools = (SIMPLE, None) if kind == "simple" else (TOOL_CONVERSATION, TOOLS)
    source = path.read_text()
    if (path.stem, kind) in REFUSES:
        with pytest.raises(TemplateError):
            render_chat_template(source, messages, tools=tools, bos_token="<s>",
                                 eos_token="</s>")
        return
    out = render_chat_template(source, messages, tools=tools, bos_token="<s>", eos_token="</s>")
    assert "Tell me a joke." in out if kind == "simple" else "Paris" in out
    if kind == "tools" and "tool" in source:
        assert "get_weather" in out


def test_chat_template_tool_call_arguments_render_as_json() -> None:
    qwen = (CORPUS / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
    out = render_chat_template(qwen, TOOL_CONVERSATION, tools=TOOLS)
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in out
    assert out.endswith("<|im_start|>assistant\n")


def test_chat_template_string_concatenated_arguments() -> None:
    functionary = (CORPUS / "meetkai-functionary-medium-v3.1.jinja").read_text()
    out = render_chat_template(functionary, TOOL_CONVERSATION, tools=TOOLS)
    assert '<function=get_weather>{"city": "Paris"}</function>' in out


def test_chat_template_tojson_keeps_order_and_does_not_escape_html() -> None:
    source = ("{% set value = {'z': '<b>&', 'a': 1} %}"
              "{{ value | tojson }}|{{ value | tojson(indent=2) }}")
    out = render_chat_template(source, [])
    assert out == '{"z": "<b>&", "a": 1}|{\n  "z": "<b>&",\n  "a": 1\n}'


def test_chat_template_tojson_accepts_generators() -> None:
    out = render_chat_template("{{ tools | map(attribute='function') | map(attribute='name')"
                               " | tojson }}", [], tools=TOOLS)
    assert out == '["get_weather"]'


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.__class__ }}",
        "{{ bos_token.format.__globals__ }}",
        "{% set _ = messages.append(1) %}",
        "{{ messages[0].update({'role': 'x'}) }}",
    ],
)
def test_chat_template_sandbox_blocks_unsafe_access(source: str) -> None:
    try:
        out = render_chat_template(source, [{"role": "user", "content": "x"}])
    except TemplateError:
        return
    assert out == ""  # the sandbox turns unsafe attributes into undefined values


def test_chat_template_raise_exception_and_syntax_errors_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="no system please"):
        render_chat_template("{{ raise_exception('no system please') }}", [])
    with pytest.raises(TemplateError, match="line 1"):
        render_chat_template("{% if %}", [])


def test_chat_template_variables() -> None:
    source = ("{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}"
              "{{ enable_thinking }}{{ reasoning_effort }}{{ tools is defined }}"
              "{{ strftime_now('%Y') | length }}")
    assert render_chat_template(source, [], bos_token="<s>", eos_token="</s>",
                                think="high") == "<s></s>TrueTruehighFalse4"
    assert render_chat_template("{{ enable_thinking is defined }}", []) == "False"
    assert render_chat_template("{{ enable_thinking }}", [], think=False) == "False"


def test_chat_template_trim_and_lstrip_blocks() -> None:
    source = ("{% for m in messages %}\n    {% if m.role %}\n[{{ m.content }}]\n"
              "    {% endif %}\n{% endfor %}")
    assert render_chat_template(source, SIMPLE[:2]) == "[Hello, how are you?]\n[Fine, thanks.]\n"


def test_chat_template_loop_controls() -> None:
    source = ("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
              "{{ m.content }}{% endfor %}")
    assert render_chat_template(source, SIMPLE) == "Hello, how are you?"


def test_chat_template_openai_messages_shape() -> None:
    converted = openai_messages(TOOL_CONVERSATION)
    assert converted[0] == {"role": "system", "content": "You are a helpful assistant."}
    call_turn = converted[2]
    assert call_turn["content"] is None
    assert call_turn["tool_calls"] == [{"id": "call12345", "type": "function",
                                        "function": {"name": "get_weather",
                                                     "arguments": {"city": "Paris"}}}]
    assert converted[3] == {"role": "tool", "content": "sunny, 22C", "name": "get_weather",
                            "tool_call_id": "call12345"}


def test_chat_template_null_content_falls_back_to_empty_string() -> None:
    source = "{% for m in messages %}{{ m.role + ':' + m.content + ';' }}{% endfor %}"
    assert render_chat_template(source, TOOL_CONVERSATION[1:3]) == \
        "user:What is the weather in Paris?;assistant:;"
