"""THE boundary: message dataclasses, ErrorInfo/ErrorCode, exit codes, encode/decode.

Rules of the protocol:

- **One model per worker for life.** The model path and the load options arrive on argv,
  or, for a spare worker (started ahead of need with `--spare`, its imports done), in one
  `Load` message, the only message a spare accepts and only before its handshake. Either
  way a worker loads once: a request that needs other load options gets a new worker
  (Ollama's needsReload), which keeps the worker's state machine trivial.
- **Handshake.** The worker connects and sends exactly one `Ready` (protocol version, pid,
  model, context size, parallel slots, memory). If loading fails it sends `LoadFailed`
  instead and exits with `EXIT_LOAD_FAILED`; the supervisor does not restart it in a loop.
  The supervisor waits at most its load timeout, and kills a worker whose protocol version
  does not match.
- **Request ids.** Every request carries `id`, unique per worker, and every reply names the
  `id` it answers. Each request gets exactly one terminal reply: `Done`, `Failed`, or the
  single-shot `Embeddings` / `Tokens`. The supervisor quietly drops replies for ids it no
  longer tracks, because a cancelled or timed-out request may still answer late.
- **Streaming.** Zero or more `Chunk` replies, then `Done` with counts and durations in ns.
- **Cancellation.** `Cancel(id)` gets no reply of its own. The worker sets a flag that the
  engine thread checks before every step; the request ends with `Failed(CANCELLED)`, or
  with `Done` if it had already finished, and its slot is free for the next step. A request
  cancelled while still queued never runs.
- **Liveness.** `Ping(seq)` is answered with `Pong(seq)` at once, even during generation,
  because generation runs on its own thread. The supervisor also watches the process exit
  as a second, independent death signal.

Encoding is msgpack of `[TAG, {field: value}]`. A transport frame holds one message, or a
batch: an array of one or more of those (the worker sends all the replies of one engine step
together, so N streams cost one frame per step rather than N). Decoding looks the tag up
in a table built from the `Request` and `Reply` unions; an unknown tag, a missing or extra
field, or a field of the wrong shape raises `ProtocolError`. Never pickle.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import msgpack  # type: ignore[import-untyped]

PROTOCOL_VERSION = 1

EXIT_OK = 0
EXIT_LOAD_FAILED = 3
EXIT_PROTOCOL_ERROR = 4
EXIT_ENGINE_FAILED = 5  # the engine thread died of an unexpected error


class ProtocolError(Exception):
    """Bytes that are not a valid message of this protocol version."""


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad_request"
    CONTEXT_OVERFLOW = "context_overflow"
    OUT_OF_MEMORY = "out_of_memory"
    LOAD_FAILED = "load_failed"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a load or a request failed; encoded as a nested map."""

    code: ErrorCode  # closed set; the supervisor maps it to an HTTP status
    message: str  # user-facing text, Ollama's wording where Ollama has one
    detail: dict[str, str] = field(default_factory=dict)  # extra context for logs


# ---- requests (supervisor -> worker) ----


@dataclass(frozen=True, slots=True)
class Generate:
    """Render a prompt, generate, and stream Chunks then one Done (or Failed)."""

    TAG: ClassVar[str] = "generate"
    id: int  # request id, unique per worker
    messages: list[dict[str, object]] = field(default_factory=list)  # chat: the final list;
    # generate: the model's MESSAGE history placed before the prompt
    prompt: str = ""  # generate: the user text (raw: the exact text to tokenize)
    raw: bool = False  # True: no templating; the prompt is tokenized as is
    suffix: str = ""  # fill-in-the-middle text after the cursor ("" none)
    template: str = ""  # Go text/template; "" means the GGUF's Jinja chat template
    system: str = ""  # generate: system text ("" none)
    tools: list[dict[str, object]] | None = None  # tool definitions, Ollama's shape
    think: bool | str | None = None  # thinking switch or level ("low"/"medium"/"high"/"max")
    format: str | dict[str, object] | None = None  # "json", a JSON schema, or None
    options: dict[str, object] = field(default_factory=dict)  # Ollama predict options;
    # missing keys mean Ollama's defaults
    truncate: bool = True  # trim over-long input instead of failing
    chat: bool = False  # True for /api/chat (messages), False for /api/generate (prompt)


@dataclass(frozen=True, slots=True)
class Embed:
    """Embed each input; answered with one Embeddings (or Failed)."""

    TAG: ClassVar[str] = "embed"
    id: int  # request id
    inputs: list[str]  # texts to embed, one vector each
    truncate: bool = True  # cut over-long inputs to the context instead of failing


@dataclass(frozen=True, slots=True)
class Tokenize:
    """Tokenize text (no BOS/EOS added); answered with one Tokens (or Failed)."""

    TAG: ClassVar[str] = "tokenize"
    id: int  # request id
    text: str  # text to tokenize; special-token text is parsed as special tokens


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop request `id` as soon as possible; no reply of its own."""

    TAG: ClassVar[str] = "cancel"
    id: int  # id of the request to cancel


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness probe, answered at once with Pong(seq)."""

    TAG: ClassVar[str] = "ping"
    seq: int  # echoed in the Pong


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Stop accepting, cancel everything, close the model and exit with EXIT_OK."""

    TAG: ClassVar[str] = "shutdown"


@dataclass(frozen=True, slots=True)
class Load:
    """A spare worker's one model: what argv carries for any other (worker/__main__.py)."""

    TAG: ClassVar[str] = "load"
    model_path: str  # GGUF file
    model_name: str  # display name, echoed in Ready
    num_ctx: int  # context per sequence, tokens
    num_parallel: int  # slots
    num_batch: int  # most tokens per decode call
    num_gpu: int  # layers to offload; -1 auto, 0 CPU only
    num_thread: int  # CPU threads; 0 lets the engine pick
    use_mmap: bool
    embedding: bool
    stream_interval_ms: int = 0  # longest a streamed chunk waits to share a frame


# ---- replies (worker -> supervisor) ----


@dataclass(frozen=True, slots=True)
class Ready:
    """The model is loaded; sent exactly once, first."""

    TAG: ClassVar[str] = "ready"
    protocol_version: int  # PROTOCOL_VERSION of the worker
    pid: int  # worker process id
    model: str  # model name from argv
    n_ctx: int  # context size per sequence, tokens
    n_parallel: int  # sequences the worker serves at once
    memory_bytes: int  # memory the loaded model holds (weights + KV cache), bytes


@dataclass(frozen=True, slots=True)
class LoadFailed:
    """The model could not be loaded; the worker exits with EXIT_LOAD_FAILED next."""

    TAG: ClassVar[str] = "load_failed"
    error: ErrorInfo  # why


@dataclass(frozen=True, slots=True)
class Chunk:
    """Streamed output of request `id`; never splits a UTF-8 character."""

    TAG: ClassVar[str] = "chunk"
    id: int  # request id this chunk answers
    text: str  # content text for one or more tokens ("" none)
    thinking: str = ""  # reasoning text split off the content ("" none)


@dataclass(frozen=True, slots=True)
class Done:
    """Terminal reply of a generation, with Ollama's statistics."""

    TAG: ClassVar[str] = "done"
    id: int  # request id
    done_reason: Literal["stop", "length"]  # end of generation / stop string, or limit hit
    prompt_eval_count: int  # prompt tokens evaluated for this request: the prompt less the
    # prefix its slot's KV cache already held (prompt reuse; at least 1). Ollama counts the
    # whole prompt; corral counts the work done, so reuse shows.
    prompt_eval_duration_ns: int  # prompt processing through the first sampled token, ns
    eval_count: int  # generated tokens
    eval_duration_ns: int  # generation after the first token, ns
    tool_calls: list[dict[str, object]] = field(default_factory=list)  # parsed tool calls
    context: list[int] = field(default_factory=list)  # prompt + generated token ids
    # (empty for raw and chat requests)


@dataclass(frozen=True, slots=True)
class Failed:
    """Terminal reply of a request that did not complete."""

    TAG: ClassVar[str] = "failed"
    id: int  # request id
    error: ErrorInfo  # why


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Terminal reply of Embed."""

    TAG: ClassVar[str] = "embeddings"
    id: int  # request id
    vectors: list[list[float]]  # one L2-normalized vector per input, in input order
    prompt_eval_count: int  # tokens embedded, summed over the inputs


@dataclass(frozen=True, slots=True)
class Tokens:
    """Terminal reply of Tokenize."""

    TAG: ClassVar[str] = "tokens"
    id: int  # request id
    tokens: list[int]  # token ids


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to Ping."""

    TAG: ClassVar[str] = "pong"
    seq: int  # the Ping's seq


Request = Generate | Embed | Tokenize | Cancel | Ping | Shutdown | Load
Reply = Ready | LoadFailed | Chunk | Done | Failed | Pong | Embeddings | Tokens
Message = Request | Reply

TERMINAL_REPLIES: tuple[type[Reply], ...] = (Done, Failed, Embeddings, Tokens)

_BY_TAG: dict[str, type[Message]] = {
    cls.TAG: cls for cls in (*typing.get_args(Request), *typing.get_args(Reply))
}


def encode(msg: Message) -> bytes:
    """Serialize one message as msgpack `[TAG, {fields}]`."""
    fields = {name: _plain(getattr(msg, name)) for name in _names(type(msg))}
    packed: bytes = msgpack.packb([msg.TAG, fields], use_bin_type=True)
    return packed


def encode_batch(msgs: Sequence[Message]) -> bytes:
    """Serialize several messages into one frame: an array of `[TAG, {fields}]`."""
    packed: bytes = msgpack.packb(
        [[m.TAG, {name: _plain(getattr(m, name)) for name in _names(type(m))}] for m in msgs],
        use_bin_type=True,
    )
    return packed


def decode(data: bytes) -> Message:
    """Parse one message; anything that is not exactly a known message is a ProtocolError."""
    return _message(_unpack(data))


def decode_frame(data: bytes) -> list[Message]:
    """Parse a frame: one message, or a batch of them, in order."""
    obj = _unpack(data)
    if isinstance(obj, list) and obj and isinstance(obj[0], list):  # a message starts with its tag
        return [_message(item) for item in obj]
    if obj == []:
        raise ProtocolError("empty batch")
    return [_message(obj)]


def _unpack(data: bytes) -> object:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"not msgpack: {exc}") from exc


def _message(obj: object) -> Message:
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], dict)):
        raise ProtocolError("expected [tag, {fields}]")
    tag, fields = obj
    cls = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ProtocolError(f"unknown tag {tag!r}")
    return _build(cls, fields)


def _plain(value: object) -> object:
    if isinstance(value, ErrorInfo):
        return {"code": str(value.code), "message": value.message, "detail": value.detail}
    return value


def _build(cls: type[Message], fields: dict[str, object]) -> Message:
    names, checks = _SPECS.get(cls) or _spec(cls)
    if fields.keys() != names:
        missing = names - fields.keys()
        extra = fields.keys() - names
        raise ProtocolError(
            f"{cls.TAG}: missing fields {sorted(missing)}, extra fields {sorted(map(str, extra))}"
        )
    values: dict[str, object] = {}
    for name, hint, exact in checks:
        value = fields[name]
        if exact is not None:
            if type(value) not in exact:
                raise ProtocolError(f"{cls.TAG}.{name}: unexpected {type(value).__name__}")
        elif hint is ErrorInfo:
            value = _error_info(value)
        elif not _has_shape(value, hint):
            raise ProtocolError(f"{cls.TAG}.{name}: unexpected {type(value).__name__}")
        values[name] = value
    return cls(**values)  # type: ignore[arg-type]


def _error_info(value: object) -> ErrorInfo:
    if not isinstance(value, dict) or set(value) != {"code", "message", "detail"}:
        raise ProtocolError("error: expected {code, message, detail}")
    code, message, detail = value["code"], value["message"], value["detail"]
    if code not in set(ErrorCode) or not isinstance(message, str):
        raise ProtocolError(f"error: bad code or message {code!r}")
    if not _has_shape(detail, dict[str, str]):
        raise ProtocolError("error.detail: expected a map of strings")
    return ErrorInfo(ErrorCode(code), message, detail)


def _has_shape(value: object, hint: object) -> bool:
    """Check the outer type of a decoded value, and element types of list[int]/list[str]."""
    # Plain types first: they are most fields of the per-token Chunk, and get_origin is slow.
    if hint is str or hint is bool:
        return isinstance(value, hint)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, float | int) and not isinstance(value, bool)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_shape(value, arm) for arm in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_has_shape(v, item) for v in value)
    if origin is dict:
        _, item = typing.get_args(hint)
        return isinstance(value, dict) and all(
            isinstance(k, str) and (item is object or _has_shape(v, item)) for k, v in value.items()
        )
    return hint is object


_NAMES: dict[type[Message], tuple[str, ...]] = {}
# Per class: its field names, and per field (name, hint, exact types or None). A plain field
# is checked by its value's exact type, as msgpack builds only exact str/int/float/bool
# (what `_has_shape` decides for those hints, without a call per field: this runs for every
# streamed token).
_Check = tuple[str, object, tuple[type, ...] | None]
_SPECS: dict[type[Message], tuple[frozenset[str], tuple[_Check, ...]]] = {}
_EXACT: dict[object, tuple[type, ...]] = {
    str: (str,),
    bool: (bool,),
    int: (int,),
    float: (float, int),
}


def _spec(cls: type[Message]) -> tuple[frozenset[str], tuple[_Check, ...]]:
    hints = typing.get_type_hints(cls)
    names = _names(cls)
    checks = tuple((name, hints[name], _EXACT.get(hints[name])) for name in names)
    spec = _SPECS[cls] = (frozenset(names), checks)
    return spec


def _names(cls: type[Message]) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names

