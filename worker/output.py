"""Turn sampled token bytes into content and thinking deltas: UTF-8, stops, think tags, tools.

The stages run in Ollama's order: bytes are decoded without ever splitting a character;
stop strings are cut from the raw text (a possible stop prefix is held back, never sent);
`<think>…</think>` is split off as thinking; and, when tools are offered, content from a
tool-call opening on is held and parsed into tool calls when generation finishes.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Delta", "OutputParser", "parse_tool_calls"]

_KNOWN_TOOL_TAGS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "<function=")
_FUNCTION_TAG = re.compile(r"<function=([^>\s]+)>")


@dataclass(frozen=True, slots=True)
class Delta:
    text: str  # content
    thinking: str  # reasoning text


def _held_tail(text: str, tags: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper prefix of one of `tags`."""
    best = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:size]):
                best = size
                break
    return best


def _as_call(obj: object) -> tuple[str, dict[str, object]] | None:
    if not isinstance(obj, dict):
        return None
    inner = obj.get("function")
    if isinstance(inner, dict) and "name" in inner:
        obj = inner
    name = obj.get("name", obj.get("tool_name"))
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        return None
    return name, args


def parse_tool_calls(text: str) -> list[dict[str, object]]:
    """Tool calls in model output: JSON objects (or lists of them) with a name and
    arguments/parameters, in Hermes, Mistral, Llama 3.1, Command R or Functionary form."""
    found: list[tuple[str, dict[str, object]]] = []
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(text):
        tag = _FUNCTION_TAG.match(text, pos)
        if tag is not None:
            try:
                args, end = decoder.raw_decode(text, tag.end())
            except ValueError:
                args, end = None, tag.end()
            if isinstance(args, dict):
                found.append((tag.group(1), args))
            pos = end
            continue
        if text[pos] not in "{[":
            pos += 1
            continue
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos += 1
            continue
        for item in value if isinstance(value, list) else [value]:
            call = _as_call(item)
            if call is not None:
                found.append(call)
        pos = end
    return [{"function": {"index": i, "name": name, "arguments": args}}
            for i, (name, args) in enumerate(found)]


class OutputParser:
    """Incremental parser for one generation; feed piece bytes, then call finish() once."""

    def __init__(self, stop: Sequence[str], think: bool, thinking_open: bool,
                 tool_tag: str | None, *, think_tags: tuple[str, str] = ("<think>", "</think>")):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in stop if s]
        self._pending = ""  # decoded text that might start a stop string
        self.stopped = False
        self._open, self._close = think_tags
        self._state = ("open_ws" if thinking_open else "looking") if think else "content"
        self._think_buf = ""
        self._tool_tag = tool_tag
        self._openers = [] if tool_tag is None else [
            t for t in dict.fromkeys((tool_tag, *_KNOWN_TOOL_TAGS)) if t != "{"]
        self._tool_pending = ""  # content that might start a tool-call opener
        self._tool_text: str | None = None  # held tool-call text, once an opener appeared
        self._sent_content = False  # non-whitespace content has been released
        self.tool_calls: list[dict[str, object]] = []

    def feed(self, piece_bytes: bytes) -> list[Delta]:
        if self.stopped:
            return []
        return self._emit(self._stop_stage(self._decoder.decode(piece_bytes), final=False),
                          final=False)

    def finish(self) -> list[Delta]:
        text = "" if self.stopped else self._decoder.decode(b"", final=True)
        return self._emit(self._stop_stage(text, final=True), final=True)

    # --- stages ----------------------------------------------------------------------

    def _emit(self, raw: str, final: bool) -> list[Delta]:
        content, thinking = self._think_stage(raw, final)
        content = self._tool_stage(content, final)
        return [Delta(content, thinking)] if content or thinking else []

    def _stop_stage(self, text: str, final: bool) -> str:
        pending = self._pending + text
        hits = [i for i in (pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped, self._pending = True, ""
            return pending[: min(hits)]
        keep = 0 if final else _held_tail(pending, self._stops)
        self._pending = pending[len(pending) - keep:] if keep else ""
        return pending[: len(pending) - keep]

    def _think_stage(self, text: str, final: bool) -> tuple[str, str]:
        buf = self._think_buf + text
        self._think_buf = ""
        content, thinking = "", ""
        while buf:
            state = self._state
            if state in ("looking", "open_ws", "close_ws"):
                trimmed = buf.lstrip()
                if state != "looking" or not trimmed:
                    if trimmed:
                        self._state = "thinking" if state == "open_ws" else "content"
                    buf = trimmed
                    continue
                if trimmed.startswith(self._open):
                    self._state, buf = "open_ws", trimmed[len(self._open):]
                elif self._open.startswith(trimmed) and not final:
                    self._think_buf = buf
                    buf = ""
                else:
                    self._state, buf = "content", trimmed
            elif state == "thinking":
                end = buf.find(self._close)
                if end >= 0:
                    thinking += buf[:end]
                    self._state, buf = "close_ws", buf[end + len(self._close):]
                    continue
                keep = 0 if final else _held_tail(buf, [self._close])
                thinking += buf[: len(buf) - keep]
                self._think_buf = buf[len(buf) - keep:]
                buf = ""
            else:
                content += buf
                buf = ""
        return content, thinking

    def _tool_stage(self, content: str, final: bool) -> str:
        if self._tool_tag is None:
            return content
        if self._tool_text is not None:
            self._tool_text += content
            return self._finish_tools() if final else ""
        text = self._tool_pending + content
        self._tool_pending = ""
        starts = [i for i in (text.find(t) for t in self._openers) if i >= 0]
        if not self._sent_content and text.strip().startswith("{"):
            starts.append(text.index("{"))
        if starts:
            cut = min(starts)
            if not self._sent_content and not text[:cut].strip():
                cut = 0  # leading whitespace goes with the call (sent only if it is no call)
            head, self._tool_text = text[:cut], text[cut:]
            self._sent_content = self._sent_content or bool(head.strip())
            return head + (self._finish_tools() if final else "")
        keep = 0 if final else _held_tail(text, self._openers)
        if not final and not self._sent_content and not text.strip():
            keep = len(text)  # leading whitespace: a bare JSON call may follow
        self._tool_pending = text[len(text) - keep:] if keep else ""
        released = text[: len(text) - keep]
        self._sent_content = self._sent_content or bool(released.strip())
        return released

    def _finish_tools(self) -> str:
        held, self._tool_text = self._tool_text or "", None
        self.tool_calls = parse_tool_calls(held)
        return "" if self.tool_calls else held
