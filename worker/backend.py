"""The engine seam: the slot-based Backend Protocol, its value types, and the factory by name.

A backend holds one loaded model and `n_slots` KV-cache sequences ("slots"). The engine
starts a generation in a free slot, then calls `step()` while any slot is active: one step
evaluates the pending input of every active slot together (one decode) and reports what
each slot sampled. Every Backend method is called from ONE dedicated long-lived engine
thread (DESIGN.md, "one thread for llama.cpp"), never from the event loop.
"""

from __future__ import annotations

import enum
import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

from worker.protocol import ErrorCode, ErrorInfo


class BackendError(Exception):
    """A load or request failure that already carries its protocol ErrorInfo.

    Backends translate their engine's exceptions into this once (STYLE.md §4.8); the server
    sends `error` unchanged in LoadFailed or Failed.
    """

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How to load the one model of this worker (from argv)."""

    model_path: str  # GGUF file
    model_name: str  # display name, echoed in Ready
    num_ctx: int  # context per sequence, tokens
    num_parallel: int  # sequences served at once (slots)
    num_batch: int  # most tokens per decode call (prompt chunks plus running tokens)
    num_gpu: int  # layers to offload; -1 auto, 0 CPU only
    num_thread: int  # CPU threads; 0 lets the engine pick
    use_mmap: bool  # map the weights instead of reading them
    embedding: bool  # load for embeddings (pooling on)
    stream_interval_ms: int = 0  # streamed chunks may wait this long to share a frame


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the server needs to know about the loaded model."""

    n_ctx: int  # context per sequence, tokens
    n_ctx_train: int  # context the model was trained with, tokens
    chat_template: str | None  # GGUF tokenizer.chat_template (Jinja), None if absent
    bos_token: str  # text of the BOS token ("" if none)
    eos_token: str  # text of the EOS token ("" if none)
    add_bos: bool  # the tokenizer adds BOS when add_special is true
    memory_bytes: int  # memory held by weights + KV cache, bytes


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampler settings for one generation (Ollama's predict options, defaults applied)."""

    temperature: float = 0.8  # 0 means greedy
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64  # tokens looked back for penalties; 0 disables
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1  # -1 random
    num_predict: int = -1  # most tokens to generate; -1 unbounded
    grammar: str | None = None  # GBNF text; None means unconstrained

    @classmethod
    def from_options(
        cls, options: Mapping[str, object], *, n_ctx: int, num_predict: int, grammar: str | None
    ) -> Sampling:
        """Map Ollama's options onto a Sampling; missing or null keys keep the defaults.

        `num_predict` is the already-capped token budget. A wrong type raises BackendError
        (BAD_REQUEST); integer options accept any number and truncate fractions (Ollama).
        """
        repeat_last_n = _int(options, "repeat_last_n", 64)
        return cls(
            temperature=_float(options, "temperature", 0.8),
            top_k=_int(options, "top_k", 40),
            top_p=_float(options, "top_p", 0.9),
            min_p=_float(options, "min_p", 0.0),
            typical_p=_float(options, "typical_p", 1.0),
            # Ollama: -1 means the whole context.
            repeat_last_n=n_ctx if repeat_last_n < 0 else repeat_last_n,
            repeat_penalty=_float(options, "repeat_penalty", 1.0),
            presence_penalty=_float(options, "presence_penalty", 0.0),
            frequency_penalty=_float(options, "frequency_penalty", 0.0),
            seed=_int(options, "seed", -1),
            num_predict=num_predict,
            grammar=grammar,
        )


def option_number(options: Mapping[str, object], name: str) -> float | None:
    """The numeric option `name`, None when missing or null; BackendError on another type."""
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        message = f"option {name!r} must be a number, got {type(value).__name__}"
        raise BackendError(ErrorInfo(ErrorCode.BAD_REQUEST, message))
    if not math.isfinite(value):
        raise BackendError(ErrorInfo(ErrorCode.BAD_REQUEST, f"option {name!r} must be finite"))
    return value


def _float(options: Mapping[str, object], name: str, default: float) -> float:
    value = option_number(options, name)
    return default if value is None else float(value)


def _int(options: Mapping[str, object], name: str, default: int) -> int:
    value = option_number(options, name)
    return default if value is None else int(value)


@dataclass(frozen=True, slots=True)
class Piece:
    """One sampled token: its id and its bytes (possibly part of a UTF-8 character)."""

    text_bytes: bytes
    token: int


class StopReason(enum.StrEnum):
    """Why a backend ended a slot's generation by itself."""

    STOP = "stop"  # the model produced an end-of-generation token
    LENGTH = "length"  # num_predict reached, or the slot's context is full


@dataclass(frozen=True, slots=True)
class Sampled:
    """Step event: `slot` sampled `piece`; it stays active and decodes that token next step."""

    slot: int
    piece: Piece


@dataclass(frozen=True, slots=True)
class Ended:
    """Step event: `slot` finished by itself (`reason`) and is free again."""

    slot: int
    reason: StopReason


@dataclass(frozen=True, slots=True)
class SlotFailed:
    """Step event: `slot` failed (its decode could not run) and is free again; others go on."""

    slot: int
    error: ErrorInfo


SlotEvent: TypeAlias = Sampled | Ended | SlotFailed


@dataclass(frozen=True, slots=True)
class FakeSwitches:
    """Behaviour switches of the fake backend (tests only; from `--fake-*` argv)."""

    tokens: tuple[str, ...] | None = None  # canned output, one Piece each; None: the default
    delay_ms: int = 0  # sleep in each step, before its tokens (a slow stream)
    crash: Literal["load", "load-error", "stream", "release"] | None = None  # where to fail:
    # load: hard exit during load; load-error: orderly LoadFailed; stream: hard exit mid-stream;
    # release: releasing a slot raises (an unexpected error on the engine thread)
    crash_after: int = 2  # tokens streamed before a "stream" crash
    hang: Literal["load", "stream"] | None = None  # never finish loading / never sample
    # (a "stream" hang keeps stepping without output, so cancel and release still work)
    ignore_sigterm: bool = False  # the worker process ignores SIGTERM


class Backend(Protocol):
    """An inference engine holding one loaded model and `n_slots` slots. Engine thread only.

    A slot is free or active. `start` makes a free slot active; it becomes free again when
    `step` reports it `Ended` or `SlotFailed`, or when the engine calls `release`. A free
    slot keeps the KV cache of the tokens it evaluated (`cached`), for prefix reuse.
    """

    facts: ModelFacts
    n_slots: int  # slots (KV-cache sequences), ids 0 .. n_slots - 1

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def cached(self, slot: int) -> Sequence[int]:
        """The tokens whose KV the slot holds, from position 0 (read-only)."""
        ...

    def start(self, slot: int, prompt: Sequence[int], sampling: Sampling) -> int:
        """Begin generating in free `slot`; return the prompt tokens reused from its cache.

        The cache keeps the longest prefix it shares with `prompt` (never the last prompt
        token, whose logits are needed); the rest is evaluated by the following steps.
        Raises BackendError (the slot stays free): BAD_REQUEST (bad tokens or grammar,
        an embedding-only model), CONTEXT_OVERFLOW (prompt longer than the slot's context).
        """
        ...

    def step(self) -> list[SlotEvent]:
        """Evaluate every active slot's pending input together; the events, in slot order.

        A slot that sampled a token gets `Sampled`, possibly followed by `Ended` (LENGTH)
        when that token used up num_predict or the context; an end-of-generation token
        gives `Ended` (STOP) alone.
        """
        ...

    def release(self, slot: int) -> None:
        """End the slot's generation now (cancel, stop string, budget); no-op if free."""
        ...

    def embed(self, slot: int, tokens: Sequence[int]) -> list[float]:
        """The raw pooled vector of `tokens`, computed in free `slot` (its cache is dropped)."""
        ...

    def json_grammar(self, schema: dict[str, object] | None) -> str:
        """GBNF text for any JSON value (schema None) or for a JSON schema."""
        ...

    def close(self) -> None: ...


def preload_backend(name: str) -> None:
    """Import what loading with backend `name` needs (a spare worker, ahead of its model)."""
    if name == "llama":
        importlib.import_module("worker.llama_backend")
    elif name == "fake":
        importlib.import_module("worker.fake_backend")
    else:
        raise ValueError(f"unknown backend {name!r} (expected llama or fake)")


def load_backend(name: str, options: LoadOptions, fake: FakeSwitches | None) -> Backend:
    """Load the model with the named backend ("llama" or "fake"). Engine thread only."""
    if name == "fake":
        from worker.fake_backend import FakeBackend

        return FakeBackend(options, fake or FakeSwitches())
    if name == "llama":
        # Imported lazily: only a llama worker may pull in llama_cpp (and its OpenMP runtime).
        module = importlib.import_module("worker.llama_backend")
        backend: Backend = module.LlamaBackend(options)
        return backend
    raise ValueError(f"unknown backend {name!r} (expected llama or fake)")
