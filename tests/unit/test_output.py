"""Output parsing: UTF-8 pieces, stop strings, thinking split and tool-call formats."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from worker.output import Delta, OutputParser, parse_tool_calls


def run(pieces: Sequence[bytes], *, stop: Sequence[str] = (), think: bool = False,
        thinking_open: bool = False, tool_tag: str | None = None
        ) -> tuple[list[Delta], OutputParser]:
    parser = OutputParser(list(stop), think, thinking_open, tool_tag)
    deltas: list[Delta] = []
    for piece in pieces:
        deltas += parser.feed(piece)
    deltas += parser.finish()
    return deltas, parser


def text_of(deltas: Sequence[Delta]) -> str:
    return "".join(d.text for d in deltas)


def thinking_of(deltas: Sequence[Delta]) -> str:
    return "".join(d.thinking for d in deltas)


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_output_stop_split_across_pieces_never_leaks(size: int) -> None:
    parser = OutputParser(["<|im_end|>", "###"], False, False, None)
    sent = ""
    for piece in split_every(b"Hello <|im world <|im_end|> after", size):
        for delta in parser.feed(piece):
            sent += delta.text
            assert "<|im_end" not in sent.replace("<|im world", "")
    sent += text_of(parser.finish())
    assert sent == "Hello <|im world "
    assert parser.stopped


def test_output_earliest_stop_wins_and_feed_after_stop_is_ignored() -> None:
    parser = OutputParser(["b", "a"], False, False, None)
    assert parser.feed(b"xxab") == [Delta("xx", "")]
    assert parser.stopped
    assert parser.feed(b"more") == []
    assert parser.finish() == []


def test_output_ambiguous_tail_released_when_it_is_no_stop() -> None:
    parser = OutputParser(["STOP"], False, False, None)
    assert parser.feed(b"abc ST") == [Delta("abc ", "")]
    assert parser.feed(b"ART") == [Delta("START", "")]
    assert parser.feed(b" ST") == [Delta(" ", "")]
    assert parser.finish() == [Delta("ST", "")]
    assert not parser.stopped


@pytest.mark.parametrize("size", [1, 2, 3])
def test_output_multibyte_characters_split_across_pieces(size: int) -> None:
    data = "héllo 世界 🙂!".encode()
    parser = OutputParser([], False, False, None)
    deltas: list[Delta] = []
    for piece in split_every(data, size):
        deltas += parser.feed(piece)
    deltas += parser.finish()
    assert all("\ufffd" not in d.text for d in deltas)
    assert text_of(deltas) == "héllo 世界 🙂!"


def test_output_truncated_character_at_the_end_becomes_replacement() -> None:
    deltas, _ = run(["a🙂".encode()[:-1]])
    assert text_of(deltas) == "a\ufffd"


@pytest.mark.parametrize("size", [1, 4, 100])
def test_output_think_split(size: int) -> None:
    data = b"  <think>\n Let me see.</think>\n\nThe answer."
    deltas, _ = run(split_every(data, size), think=True)
    assert thinking_of(deltas) == "Let me see."
    assert text_of(deltas) == "The answer."


def test_output_think_open_starts_inside_thinking() -> None:
    deltas, _ = run([b"\nhmm </th", b"ink> ok"], think=True, thinking_open=True)
    assert (thinking_of(deltas), text_of(deltas)) == ("hmm ", "ok")


def test_output_think_without_tags_is_content() -> None:
    deltas, _ = run([b"<thi", b"s is content"], think=True)
    assert (thinking_of(deltas), text_of(deltas)) == ("", "<this is content")


def test_output_think_off_leaves_tags_in_content() -> None:
    deltas, _ = run([b"<think>x</think>y"])
    assert text_of(deltas) == "<think>x</think>y"


def test_output_unclosed_thinking_is_flushed_as_thinking() -> None:
    deltas, _ = run([b"<think>still going </th"], think=True)
    assert thinking_of(deltas) == "still going </th"


def test_output_stop_inside_thinking() -> None:
    deltas, parser = run([b"<think>abc<|end|>def"], think=True, stop=["<|end|>"])
    assert thinking_of(deltas) == "abc" and parser.stopped


@pytest.mark.parametrize(
    ("tag", "output", "calls", "content"),
    [
        ("<tool_call>",
         '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
         '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
         [("get_weather", {"city": "Paris"}), ("get_time", {})], ""),
        ("[TOOL_CALLS]",
         '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
         [("get_weather", {"city": "Oslo"})], ""),
        ("{", '\n{"name": "get_weather", "parameters": {"city": "Rome"}}',
         [("get_weather", {"city": "Rome"})], ""),
        ("<|python_tag|>", '<|python_tag|>{"name": "f", "parameters": {"a": 1}}',
         [("f", {"a": 1})], ""),
        ("Action: ```json\n[",
         'Action: ```json\n[\n    {\n        "tool_name": "search",\n'
         '        "parameters": {"q": "x"}\n    }\n]```', [("search", {"q": "x"})], ""),
        ("{", '<function=get_weather>{"city": "Lima"}</function>',
         [("get_weather", {"city": "Lima"})], ""),
        ("<tool_call>", 'Let me check. <tool_call>{"name": "f", "arguments": "{\\"a\\": 2}"}'
         '</tool_call>', [("f", {"a": 2})], "Let me check. "),
    ],
)
def test_output_tool_call_formats(tag: str, output: str, calls: list[tuple[str, object]],
                                  content: str) -> None:
    for size in (1, 7, len(output)):
        deltas, parser = run(split_every(output.encode(), size), tool_tag=tag)
        assert text_of(deltas) == content
        assert parser.tool_calls == [
            {"function": {"index": i, "name": name, "arguments": args}}
            for i, (name, args) in enumerate(calls)
        ]


def test_output_tool_text_that_is_no_call_is_sent_at_finish() -> None:
    deltas, parser = run([b"<tool_call>not json</tool_call>"], tool_tag="<tool_call>")
    assert parser.tool_calls == []
    assert text_of(deltas) == "<tool_call>not json</tool_call>"


def test_output_json_content_mid_answer_is_not_held() -> None:
    parser = OutputParser([], False, False, "{")
    assert parser.feed(b"Use ") == [Delta("Use ", "")]
    assert parser.feed(b'{"a": 1}') == [Delta('{"a": 1}', "")]
    assert parser.finish() == []
    assert parser.tool_calls == []


def test_output_no_tool_tag_means_no_tool_parsing() -> None:
    deltas, parser = run([b'{"name": "f", "arguments": {}}'])
    assert parser.tool_calls == [] and text_of(deltas) == '{"name": "f", "arguments": {}}'


def test_output_thinking_then_tool_call() -> None:
    deltas, parser = run([b"<think>need weather</think>",
                          b'<tool_call>{"name": "w", "arguments": {}}</tool_call>'],
                         think=True, tool_tag="<tool_call>")
    assert thinking_of(deltas) == "need weather" and text_of(deltas) == ""
    assert parser.tool_calls == [{"function": {"index": 0, "name": "w", "arguments": {}}}]


def test_output_parse_tool_calls_skips_objects_without_a_name() -> None:
    assert parse_tool_calls('{"arguments": {}} {"name": "", "arguments": {}} [1, 2]') == []
