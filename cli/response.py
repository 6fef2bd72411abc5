"""Streaming a model's answer to the terminal: word wrap, the thinking display, Ctrl+C.

Thinking is shown as Ollama shows it (§6.2 item 7): ``Thinking...`` in bold grey, the
reasoning in grey, ``...done thinking.`` and a blank line, then the answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from rich.console import Console

from cli.client import Chunk, Stream

THINKING_STYLE = "bold bright_black"
THOUGHT_STYLE = "bright_black"


class WordWrapper:
    """Breaks streamed text at spaces so no line exceeds ``width``; a word longer than
    the width is left for the terminal to break. Words are held until they end."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._column = 0
        self._word = ""

    def _place_word(self) -> str:
        out = ""
        if self._word:
            if self._column > 0 and self._column + len(self._word) > self.width:
                out, self._column = "\n", 0
            out += self._word
            self._column += len(self._word)
            self._word = ""
        return out

    def feed(self, text: str) -> str:
        """The part of ``text`` that can be printed now."""
        out: list[str] = []
        for char in text:
            if char == "\n":
                out.append(self._place_word() + "\n")
                self._column = 0
            elif char == " ":
                out.append(self._place_word())
                if self._column < self.width:
                    out.append(" ")
                    self._column += 1
            else:
                self._word += char
        return "".join(out)

    def flush(self) -> str:
        """Whatever is still held back."""
        return self._place_word()


class AnswerPrinter:
    """Prints thinking and content chunks as they arrive; ``wrap_width`` None: no wrap."""

    def __init__(self, out: Console, *, wrap_width: int | None, hide_thinking: bool) -> None:
        self._out = out
        self._wrap_width = wrap_width
        self._hide_thinking = hide_thinking
        self._wrapper = self._new_wrapper()
        self._in_thinking = False
        self.thinking = ""
        self.content = ""

    def _new_wrapper(self) -> WordWrapper | None:
        return WordWrapper(self._wrap_width) if self._wrap_width else None

    def _write(self, text: str, style: str | None = None) -> None:
        if self._wrapper is not None:
            text = self._wrapper.feed(text)
        if text:
            self._out.print(text, end="", style=style, markup=False)

    def _flush(self, style: str | None = None) -> None:
        if self._wrapper is not None:
            rest = self._wrapper.flush()
            if rest:
                self._out.print(rest, end="", style=style, markup=False)
            self._wrapper = self._new_wrapper()

    def _end_thinking(self) -> None:
        if self._in_thinking:
            self._flush(THOUGHT_STYLE)
            self._out.print("\n...done thinking.\n", style=THINKING_STYLE, markup=False)
            self._in_thinking = False

    def add(self, thinking: str, content: str) -> None:
        """One chunk's reasoning and answer text."""
        if thinking:
            self.thinking += thinking
            if not self._hide_thinking:
                if not self._in_thinking and not self.content:
                    self._out.print("Thinking...", style=THINKING_STYLE, markup=False)
                    self._in_thinking = True
                if self._in_thinking:
                    self._write(thinking, THOUGHT_STYLE)
        if content:
            self._end_thinking()
            self.content += content
            self._write(content)

    def finish(self) -> None:
        """End of the answer: print what the wrapper still holds."""
        self._end_thinking()
        self._flush()


def stream_answer(
    chunks: Stream[Chunk],
    printer: AnswerPrinter,
    *,
    chat: bool,
    on_first: Callable[[], None] | None = None,
) -> tuple[Chunk | None, bool]:
    """Print a generate (``chat=False``) or chat stream; returns (final chunk, cancelled).

    ``on_first`` runs when the first chunk arrives (to stop a spinner). Ctrl+C closes the
    stream, which the server takes as a cancel, and counts as cancelled.
    """
    final: Chunk | None = None
    with contextlib.closing(chunks):
        try:
            for chunk in chunks:
                if on_first is not None:
                    on_first()
                    on_first = None
                if chat:
                    message = chunk.get("message") or {}
                    printer.add(
                        str(message.get("thinking") or ""), str(message.get("content") or "")
                    )
                else:
                    printer.add(chunk.get("thinking", ""), chunk.get("response", ""))
                if chunk.get("done"):
                    final = chunk
        except KeyboardInterrupt:
            printer.finish()
            return None, True
    printer.finish()
    return final, False
