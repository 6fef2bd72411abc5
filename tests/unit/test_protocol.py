"""worker.protocol: every message round-trips; malformed bytes raise ProtocolError."""

from __future__ import annotations

import typing

import msgpack  # type: ignore[import-untyped]
import pytest

from worker.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Chunk,
    Done,
    Embed,
    Embeddings,
    ErrorCode,
    ErrorInfo,
    Failed,
    Generate,
    Load,
    LoadFailed,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Ready,
    Reply,
    Request,
    Shutdown,
    Tokenize,
    Tokens,
    decode,
    decode_frame,
    encode,
    encode_batch,
)

SAMPLES: list[Message] = [
    Generate(
        id=1,
        messages=[{"role": "user", "content": "hi", "images": ["aGk="]}],
        prompt="",
        raw=False,
        suffix="",
        template="{{ .Prompt }}",
        system="be brief",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        think="high",
        format={"type": "object", "properties": {"a": {"type": "string"}}},
        options={"temperature": 0.2, "stop": ["\n"], "num_predict": 8},
        truncate=False,
        chat=True,
    ),
    Generate(id=2, prompt="why is the sky blue?", think=False, format="json"),
    Embed(id=3, inputs=["a", "b c"], truncate=True),
    Tokenize(id=4, text="<s>hello"),
    Cancel(id=1),
    Ping(seq=7),
    Shutdown(),
    Load(
        model_path="/m.gguf", model_name="m:latest", num_ctx=2048, num_parallel=2,
        num_batch=512, num_gpu=-1, num_thread=0, use_mmap=True, embedding=False,
    ),
    Ready(
        protocol_version=PROTOCOL_VERSION, pid=42, model="m", n_ctx=2048, n_parallel=2,
        memory_bytes=1 << 30,
    ),
    LoadFailed(ErrorInfo(ErrorCode.LOAD_FAILED, "bad magic", {"path": "/x.gguf"})),
    Chunk(id=1, text="héllo", thinking=""),
    Chunk(id=1, text="", thinking="hmm"),
    Done(
        id=1, done_reason="length", prompt_eval_count=5, prompt_eval_duration_ns=1_000,
        eval_count=3, eval_duration_ns=2_000,
        tool_calls=[{"function": {"name": "f", "arguments": {"x": 1}}}], context=[1, 2, 3],
    ),
    Failed(id=1, error=ErrorInfo(ErrorCode.CANCELLED, "request cancelled")),
    Embeddings(id=3, vectors=[[0.6, 0.8], [1.0, 0.0]], prompt_eval_count=4),
    Tokens(id=4, tokens=[256, 104]),
    Pong(seq=7),
]


def test_protocol_samples_cover_every_message() -> None:
    every = {*typing.get_args(Request), *typing.get_args(Reply)}
    assert {type(m) for m in SAMPLES} == every


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: f"{m.TAG}")
def test_protocol_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


def test_protocol_error_code_survives_as_enum() -> None:
    decoded = decode(encode(Failed(9, ErrorInfo(ErrorCode.CONTEXT_OVERFLOW, "too long"))))
    assert isinstance(decoded, Failed)
    assert decoded.error.code is ErrorCode.CONTEXT_OVERFLOW


def test_protocol_encoding_is_tag_and_field_map() -> None:
    assert msgpack.unpackb(encode(Ping(seq=3))) == ["ping", {"seq": 3}]


def _packed(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


_ERROR = {"code": "internal", "message": "x", "detail": {}}

MALFORMED: list[tuple[str, bytes]] = [
    ("not msgpack", b"\xc1\xc1\xc1"),
    ("truncated", encode(Ping(seq=1))[:-1]),
    ("trailing bytes", encode(Ping(seq=1)) + b"\x00"),
    ("not a list", _packed({"ping": {"seq": 1}})),
    ("three items", _packed(["ping", {"seq": 1}, 0])),
    ("fields not a map", _packed(["ping", [1]])),
    ("unknown tag", _packed(["load_model", {}])),
    ("tag not a string", _packed([1, {}])),
    ("missing field", _packed(["ping", {}])),
    ("extra field", _packed(["ping", {"seq": 1, "x": 2}])),
    ("wrong type", _packed(["ping", {"seq": "1"}])),
    ("bool for int", _packed(["cancel", {"id": True}])),
    ("float for int", _packed(["cancel", {"id": 1.0}])),
    ("int for str", _packed(["chunk", {"id": 1, "text": 1, "thinking": ""}])),
    ("bad list item", _packed(["tokens", {"id": 1, "tokens": [1, "2"]}])),
    ("bad literal", _packed(["done", {
        "id": 1, "done_reason": "load", "prompt_eval_count": 0, "prompt_eval_duration_ns": 0,
        "eval_count": 0, "eval_duration_ns": 0, "tool_calls": [], "context": [],
    }])),
    ("unknown error code", _packed(["failed", {"id": 1, "error": {**_ERROR, "code": "oops"}}])),
    ("error missing key", _packed(["failed", {"id": 1, "error": {"code": "internal"}}])),
    ("error not a map", _packed(["load_failed", {"error": "boom"}])),
    ("non-string map key", _packed(["ping", {1: 1}])),
]


@pytest.mark.parametrize(("case", "data"), MALFORMED, ids=[case for case, _ in MALFORMED])
def test_protocol_rejects_malformed(case: str, data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(data)


def test_protocol_batch_frame_keeps_order_and_types() -> None:
    msgs: list[Message] = [Chunk(1, "a"), Chunk(2, "b"), Done(
        id=1, done_reason="stop", prompt_eval_count=1, prompt_eval_duration_ns=1,
        eval_count=1, eval_duration_ns=1, tool_calls=[], context=[],
    )]  # fmt: skip
    assert decode_frame(encode_batch(msgs)) == msgs
    assert decode_frame(encode(Ping(seq=2))) == [Ping(seq=2)]


@pytest.mark.parametrize(
    "data",
    [
        _packed([]),
        _packed([["ping", {"seq": 1}], ["ping", {}]]),
        _packed([["nope", {}]]),
        _packed([["ping", {"seq": 1}], "ping"]),
    ],
    ids=["empty batch", "one bad message", "unknown tag in batch", "not a message in batch"],
)
def test_protocol_batch_frame_rejects_any_bad_message(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_frame(data)
