"""Deterministic slot-based Backend for tests: canned tokens; slow/crash/hang/SIGTERM switches.

The fake's vocabulary:

- ids 0-255 are the bytes of UTF-8 text: `tokenize` gives one token per byte of the text
  (plus BOS first when `add_special`), so a prompt's token count is its UTF-8 length;
- 256 is BOS (`<s>`) and 257 is EOS (`</s>`), recognised in text when `parse_special`;
- 1000 + i is canned output piece i, 2000 + i canned JSON piece i.

Each active slot samples the next canned piece per `step` and ends after the last one, as a
model does at its end-of-generation token (so slots started together run in lockstep, like
a batch). The default pieces spell "Hello, world! café", with the "é" split across two
pieces to exercise UTF-8 reassembly. With a grammar a slot samples a canned JSON object
instead. A slot "evaluates" its whole prompt in `start` and keeps it as its cache, so prefix
reuse shows in the count `start` returns. `embed` returns a raw (not normalized) vector
derived from a hash of the tokens. The switches (`FakeSwitches`) make it slow, crash, or
hang; ignoring SIGTERM is applied by `worker.__main__`, because only the main thread may
set signal handlers.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.backend import (
    BackendError,
    Ended,
    FakeSwitches,
    LoadOptions,
    ModelFacts,
    Piece,
    Sampled,
    Sampling,
    SlotEvent,
    StopReason,
)
from worker.protocol import ErrorCode, ErrorInfo
from worker.slots import reusable_prefix

BOS = 256
EOS = 257
FIRST_PIECE_ID = 1000
FIRST_JSON_ID = 2000
EMBEDDING_DIM = 16

DEFAULT_PIECES: tuple[bytes, ...] = (
    b"Hello",
    b",",
    b" world",
    b"!",
    b" caf",
    "é".encode()[:1],
    "é".encode()[1:],
)
JSON_PIECES: tuple[bytes, ...] = (b'{"', b"hello", b'": ', b'"world"', b"}")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SPECIAL = {"<s>": BOS, "</s>": EOS}
_SPECIAL_RE = re.compile("(<s>|</s>)")
HANG_POLL_S = 0.01  # a hung step's pause, so the engine loop does not spin


@dataclass(slots=True)
class _FakeSlot:
    cached: list[int] = field(default_factory=list)
    active: bool = False
    json: bool = False
    produced: int = 0
    limit: int = 0  # pieces this generation may sample


class FakeBackend:
    """A Backend with canned output; behaviour chosen by FakeSwitches at load time."""

    def __init__(self, options: LoadOptions, switches: FakeSwitches) -> None:
        self._switches = switches
        if switches.crash == "load":
            _die("fake backend: crashing during load as asked (--fake-crash load)")
        if switches.crash == "load-error":
            message = "fake backend: load failed as asked (--fake-crash load-error)"
            raise BackendError(ErrorInfo(ErrorCode.LOAD_FAILED, message))
        if switches.hang == "load":
            threading.Event().wait()  # never set: the supervisor's load timeout must fire
        pieces = switches.tokens
        self._pieces = DEFAULT_PIECES if pieces is None else tuple(p.encode() for p in pieces)
        self.n_slots = max(1, options.num_parallel)
        self._slots = [_FakeSlot() for _ in range(self.n_slots)]
        self.facts = ModelFacts(
            n_ctx=options.num_ctx,
            n_ctx_train=4096,
            chat_template=CHAT_TEMPLATE,
            bos_token="<s>",
            eos_token="</s>",
            add_bos=True,
            memory_bytes=(64 << 20) + options.num_ctx * options.num_parallel * 1024,
        )

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        tokens = [BOS] if add_special and self.facts.add_bos else []
        parts = _SPECIAL_RE.split(text) if parse_special else [text]
        for part in parts:
            if parse_special and part in _SPECIAL:
                tokens.append(_SPECIAL[part])
            else:
                tokens.extend(part.encode())
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self._token_bytes(t) for t in tokens).decode(errors="replace")

    def cached(self, slot: int) -> Sequence[int]:
        return self._slots[slot].cached

    def start(self, slot: int, prompt: Sequence[int], sampling: Sampling) -> int:
        state = self._slots[slot]
        if state.active:
            raise RuntimeError(f"slot {slot} is already active")
        if not prompt:
            raise BackendError(ErrorInfo(ErrorCode.BAD_REQUEST, "empty prompt: nothing to decode"))
        if len(prompt) > self.facts.n_ctx:
            message = f"input of {len(prompt)} tokens exceeds the context of {self.facts.n_ctx}"
            raise BackendError(ErrorInfo(ErrorCode.CONTEXT_OVERFLOW, message))
        reused = reusable_prefix(state.cached, prompt)
        state.cached = list(prompt)
        state.json = sampling.grammar is not None
        pieces = len(JSON_PIECES) if state.json else len(self._pieces)
        state.limit = pieces if sampling.num_predict <= 0 else min(pieces, sampling.num_predict)
        state.produced = 0
        state.active = True
        return reused

    def step(self) -> list[SlotEvent]:
        """One piece for every active slot; slow, hung or crashing as the switches say."""
        if self._switches.delay_ms:
            time.sleep(self._switches.delay_ms / 1000)
        if self._switches.hang == "stream":
            time.sleep(HANG_POLL_S)
            return []
        events: list[SlotEvent] = []
        for slot, state in enumerate(self._slots):
            if state.active:
                events.extend(self._advance(slot, state))
        return events

    def _advance(self, slot: int, state: _FakeSlot) -> list[SlotEvent]:
        index = state.produced
        if self._switches.crash == "stream" and index >= self._switches.crash_after:
            _die(f"fake backend: crashing mid-stream after {index} tokens as asked")
        if index >= state.limit:  # nothing canned left: the end-of-generation token
            state.active = False
            return [Ended(slot, StopReason.STOP)]
        pieces, first_id = (
            (JSON_PIECES, FIRST_JSON_ID) if state.json else (self._pieces, FIRST_PIECE_ID)
        )
        state.produced += 1
        token = first_id + index
        events: list[SlotEvent] = [Sampled(slot, Piece(text_bytes=pieces[index], token=token))]
        if state.produced < state.limit:
            state.cached.append(token)
        else:
            # All canned pieces out: the end-of-generation token follows at once.
            state.active = False
            reason = StopReason.STOP if state.limit == len(pieces) else StopReason.LENGTH
            events.append(Ended(slot, reason))
        return events

    def release(self, slot: int) -> None:
        if self._switches.crash == "release":  # a bug in the engine's own code, in effect
            raise RuntimeError("fake backend: release failed as asked (--fake-crash release)")
        self._slots[slot].active = False

    def embed(self, slot: int, tokens: Sequence[int]) -> list[float]:
        self._slots[slot] = _FakeSlot()
        digest = hashlib.sha256(struct.pack(f"<{len(tokens)}q", *tokens)).digest()
        halves = struct.unpack(f"<{EMBEDDING_DIM}H", digest[: 2 * EMBEDDING_DIM])
        # Spread over [-3, 3): deliberately not unit length, so the server's normalization shows.
        return [(h / 65536 - 0.5) * 6 for h in halves]

    def json_grammar(self, schema: dict[str, object] | None) -> str:
        return 'root ::= "{" [^}]* "}"'

    def close(self) -> None:
        self._pieces = ()

    def _token_bytes(self, token: int) -> bytes:
        if 0 <= token < 256:
            return bytes([token])
        if token == BOS:
            return b"<s>"
        if token == EOS:
            return b"</s>"
        if 0 <= token - FIRST_PIECE_ID < len(self._pieces):
            return self._pieces[token - FIRST_PIECE_ID]
        if 0 <= token - FIRST_JSON_ID < len(JSON_PIECES):
            return JSON_PIECES[token - FIRST_JSON_ID]
        raise BackendError(ErrorInfo(ErrorCode.BAD_REQUEST, f"unknown token id {token}"))


def _die(message: str) -> None:
    """Crash the way a native engine does: no Python cleanup, a last line on stderr."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(1)
