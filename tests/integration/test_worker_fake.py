"""Real `python -m worker --backend fake` processes: handshake, stream, cancel, ping, crashes."""

from __future__ import annotations

import asyncio
import math
import os
import signal

import pytest

from tests.support.worker_harness import WorkerExited, run_worker
from worker.protocol import (
    EXIT_ENGINE_FAILED,
    EXIT_LOAD_FAILED,
    EXIT_OK,
    EXIT_PROTOCOL_ERROR,
    PROTOCOL_VERSION,
    Cancel,
    Chunk,
    Done,
    Embed,
    Embeddings,
    ErrorCode,
    Failed,
    Generate,
    LoadFailed,
    Ping,
    Pong,
    Reply,
    Shutdown,
    Tokenize,
    Tokens,
)

pytestmark = pytest.mark.integration

DEFAULT_TEXT = "Hello, world! café"  # the fake's canned output
MANY = [f"t{i} " for i in range(30)]  # a long stream, for slow-stream tests


def _text(replies: list[Reply]) -> str:
    return "".join(r.text for r in replies if isinstance(r, Chunk))


def _terminal(replies: list[Reply]) -> Reply:
    assert replies, "no replies"
    return replies[-1]


def _failed_with(reply: Reply, code: ErrorCode) -> bool:
    return isinstance(reply, Failed) and reply.error.code is code


async def test_worker_handshake_sends_ready() -> None:
    async with run_worker(num_ctx=512, num_parallel=2, model_name="fake:7b") as w:
        assert w.ready is not None
        assert w.ready.protocol_version == PROTOCOL_VERSION
        assert w.ready.pid == w.proc.pid
        assert w.ready.model == "fake:7b"
        assert (w.ready.n_ctx, w.ready.n_parallel) == (512, 2)
        assert w.ready.memory_bytes > 0


async def test_worker_generate_streams_chunks_then_one_done() -> None:
    async with run_worker() as w:
        replies = await w.request(Generate(id=1, prompt="hi"))
    assert all(isinstance(r, Chunk) for r in replies[:-1]) and len(replies) > 1
    done = _terminal(replies)
    assert isinstance(done, Done)
    assert _text(replies) == DEFAULT_TEXT  # the split "é" arrives whole
    assert done.done_reason == "stop"
    assert done.eval_count == 7
    assert done.prompt_eval_count > len("hi")  # templated, plus BOS
    assert len(done.context) == done.prompt_eval_count + done.eval_count
    assert done.prompt_eval_duration_ns >= 0 and done.eval_duration_ns >= 0


async def test_worker_raw_generate_tokenizes_prompt_as_is_and_has_no_context() -> None:
    async with run_worker(tokens=["a", "b"]) as w:
        done = _terminal(await w.request(Generate(id=1, prompt="abc", raw=True)))
    assert isinstance(done, Done)
    assert done.prompt_eval_count == 4  # BOS + one token per byte
    assert done.context == []


@pytest.mark.parametrize(
    ("options", "text", "reason", "eval_count"),
    [
        ({"num_predict": 2}, "Hello,", "length", 2),
        ({"stop": [" world"]}, "Hello,", "stop", 3),
        ({"temperature": 0, "seed": 42, "num_predict": -1}, DEFAULT_TEXT, "stop", 7),
    ],
    ids=["num_predict", "stop_string", "defaults"],
)
async def test_worker_generate_honours_options(
    options: dict[str, object], text: str, reason: str, eval_count: int
) -> None:
    async with run_worker() as w:
        replies = await w.request(Generate(id=1, prompt="hi", options=options))
    done = _terminal(replies)
    assert isinstance(done, Done)
    assert (_text(replies), done.done_reason, done.eval_count) == (text, reason, eval_count)


async def test_worker_generate_splits_thinking_from_content() -> None:
    async with run_worker(tokens=["<think>", "hmm", "</think>", "ok"]) as w:
        replies = await w.request(Generate(id=1, prompt="hi", think=True))
    thinking = "".join(r.thinking for r in replies if isinstance(r, Chunk))
    assert (thinking.strip(), _text(replies).strip()) == ("hmm", "ok")


async def test_worker_chat_returns_tool_calls_on_done() -> None:
    function = {"name": "get", "parameters": {"type": "object"}}
    tool: dict[str, object] = {"type": "function", "function": function}
    messages: list[dict[str, object]] = [{"role": "user", "content": "weather?"}]
    async with run_worker(tokens=["<function=get>", '{"city": "Oslo"}']) as w:
        replies = await w.request(Generate(id=1, messages=messages, tools=[tool], chat=True))
    done = _terminal(replies)
    assert isinstance(done, Done)
    assert [c["function"] for c in done.tool_calls] == [
        {"index": 0, "name": "get", "arguments": {"city": "Oslo"}}
    ]
    assert done.context == []  # chat replies carry no context


async def test_worker_generate_stops_at_the_context_limit() -> None:
    async with run_worker(num_ctx=8, tokens=list("abcdefgh")) as w:
        done = _terminal(await w.request(Generate(id=1, prompt="abc", raw=True)))
    assert isinstance(done, Done)
    assert (done.prompt_eval_count, done.eval_count, done.done_reason) == (4, 4, "length")


async def test_worker_generate_json_format_uses_grammar() -> None:
    async with run_worker() as w:
        replies = await w.request(Generate(id=1, prompt="hi", format="json"))
    assert _text(replies) == '{"hello": "world"}'


async def test_worker_prompt_over_context_fails_without_truncate() -> None:
    async with run_worker(num_ctx=64) as w:
        replies = await w.request(Generate(id=1, prompt="x" * 100, raw=True, truncate=False))
        after = await w.request(Generate(id=2, prompt="x" * 10, raw=True, truncate=False))
    failed = _terminal(replies)
    assert _failed_with(failed, ErrorCode.CONTEXT_OVERFLOW)
    assert isinstance(failed, Failed)
    assert failed.error.message.startswith("the prompt is longer than the context length")
    assert isinstance(_terminal(after), Done)


async def test_worker_prompt_over_context_is_cut_with_truncate() -> None:
    async with run_worker(num_ctx=64) as w:
        done = _terminal(await w.request(Generate(id=1, prompt="x" * 100, raw=True)))
        assert isinstance(done, Done)
        assert done.prompt_eval_count < 64
        assert "event=prompt_truncated" in "".join(w.stderr_lines)


async def test_worker_bad_option_fails_that_request_only() -> None:
    async with run_worker() as w:
        bad = await w.request(Generate(id=1, prompt="hi", options={"temperature": "hot"}))
        good = await w.request(Generate(id=2, prompt="hi"))
    assert _failed_with(_terminal(bad), ErrorCode.BAD_REQUEST)
    assert isinstance(_terminal(good), Done)


async def test_worker_runs_two_generations_in_flight() -> None:
    async with run_worker(delay_ms=20) as w:
        await w.send(Generate(id=1, prompt="one"))
        await w.send(Generate(id=2, prompt="two", options={"num_predict": 3}))
        first = [r async for r in w.replies_for(1)]
        second = [r async for r in w.replies_for(2)]
    assert isinstance(_terminal(first), Done) and _text(first) == DEFAULT_TEXT
    assert isinstance(_terminal(second), Done) and _text(second) == "Hello, world"


async def test_worker_parallel_slots_serve_requests_side_by_side() -> None:
    async with run_worker(num_parallel=2, tokens=MANY, delay_ms=20) as w:
        assert w.ready is not None and w.ready.n_parallel == 2
        await w.send(Generate(id=1, prompt="long"))
        await w.send(Generate(id=2, prompt="short", options={"num_predict": 3}))
        first = [r async for r in w.replies_for(1)]
        second = [r async for r in w.replies_for(2)]
        ends = [r.id for r in w.received if isinstance(r, Done)]
    assert isinstance(_terminal(first), Done) and _text(first) == "".join(MANY)
    assert isinstance(_terminal(second), Done) and _text(second) == "t0 t1 t2 "
    assert ends == [2, 1]  # the short one did not wait for the long one's slot


async def test_worker_prompt_reuse_shows_in_prompt_eval_count() -> None:
    async with run_worker(tokens=["a", "b"]) as w:
        first = _terminal(await w.request(Generate(id=1, prompt="abcdef", raw=True)))
        second = _terminal(await w.request(Generate(id=2, prompt="abcdefgh", raw=True)))
        again = _terminal(await w.request(Generate(id=3, prompt="abcdefgh", raw=True)))
    assert isinstance(first, Done) and isinstance(second, Done) and isinstance(again, Done)
    assert first.prompt_eval_count == 7  # BOS + 6 bytes
    assert second.prompt_eval_count == 2  # only "gh": BOS + "abcdef" were cached
    assert again.prompt_eval_count == 1  # the last prompt token always runs again


async def test_worker_answers_ping_during_a_slow_generation() -> None:
    async with run_worker(tokens=MANY, delay_ms=100) as w:
        await w.send(Generate(id=1, prompt="hi"))
        stream = w.replies_for(1)
        assert isinstance(await anext(stream), Chunk)  # generation is under way
        await w.send(Ping(seq=5))
        assert await w.pong() == Pong(seq=5)
        assert not any(isinstance(r, Done | Failed) for r in w.received)
        await w.send(Cancel(id=1))
        rest = [r async for r in stream]
    assert _failed_with(_terminal(rest), ErrorCode.CANCELLED)


async def test_worker_cancel_mid_stream_stops_within_a_few_tokens() -> None:
    async with run_worker(tokens=MANY, delay_ms=200) as w:
        await w.send(Generate(id=1, prompt="cancel me"))
        await w.send(Generate(id=2, prompt="finish me", options={"num_predict": 3}))
        stream = w.replies_for(1)
        for _ in range(2):
            assert isinstance(await anext(stream), Chunk)
        await w.send(Cancel(id=1))
        rest = [r async for r in stream]
        other = [r async for r in w.replies_for(2)]
    assert _failed_with(_terminal(rest), ErrorCode.CANCELLED)
    assert len(rest) - 1 <= 3  # chunks that were already on their way
    assert isinstance(_terminal(other), Done) and _text(other) == "t0 t1 t2 "


async def test_worker_cancel_of_queued_request_answers_without_running_it() -> None:
    async with run_worker(hang="stream") as w:
        await w.send(Generate(id=1, prompt="hangs"))
        await w.send(Generate(id=2, prompt="queued behind it"))
        await w.send(Cancel(id=2))
        queued = [r async for r in w.replies_for(2)]
        assert len(queued) == 1 and _failed_with(queued[0], ErrorCode.CANCELLED)
        assert not any(getattr(r, "id", None) == 1 for r in w.received)  # still running
        await w.send(Cancel(id=1))
        running = [r async for r in w.replies_for(1)]
    assert len(running) == 1 and _failed_with(running[0], ErrorCode.CANCELLED)


async def test_worker_cancel_of_unknown_id_gets_no_reply() -> None:
    async with run_worker() as w:
        await w.send(Cancel(id=99))
        await w.send(Ping(seq=1))
        await w.pong()
        assert w.received == [w.ready, Pong(seq=1)]


async def test_worker_embed_returns_unit_vectors() -> None:
    async with run_worker() as w:
        first = await w.request(Embed(id=1, inputs=["hello", "world", ""]))
        again = await w.request(Embed(id=2, inputs=["hello"]))
    reply, repeat = _terminal(first), _terminal(again)
    assert isinstance(reply, Embeddings) and isinstance(repeat, Embeddings)
    assert len(reply.vectors) == 3
    for vector in reply.vectors:
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)
    assert reply.vectors[0] != reply.vectors[1]
    assert repeat.vectors[0] == reply.vectors[0]  # deterministic
    assert reply.prompt_eval_count == 6 + 6 + 1  # BOS + bytes, per input


async def test_worker_embed_over_context() -> None:
    async with run_worker(num_ctx=32) as w:
        refused = await w.request(Embed(id=1, inputs=["x" * 50], truncate=False))
        cut = await w.request(Embed(id=2, inputs=["x" * 50], truncate=True))
    failed = _terminal(refused)
    assert isinstance(failed, Failed) and failed.error.code is ErrorCode.BAD_REQUEST
    assert failed.error.message == "the input length exceeds the context length"
    embeddings = _terminal(cut)
    assert isinstance(embeddings, Embeddings) and embeddings.prompt_eval_count == 32


async def test_worker_tokenize() -> None:
    async with run_worker() as w:
        assert await w.request(Tokenize(id=1, text="hi")) == [Tokens(id=1, tokens=[104, 105])]


async def test_worker_crash_during_load_exits_with_message() -> None:
    async with run_worker(crash="load", wait_ready=False) as w:
        code = await w.wait_exit()
        stderr = await w.stderr_text()
    assert code == 1
    assert "crashing during load" in stderr
    assert w.received == []


async def test_worker_load_error_sends_load_failed_and_exits_3() -> None:
    async with run_worker(crash="load-error", wait_ready=False) as w:
        first = await w.handshake()
        code = await w.wait_exit()
        stderr = await w.stderr_text()
    assert isinstance(first, LoadFailed) and first.error.code is ErrorCode.LOAD_FAILED
    assert code == EXIT_LOAD_FAILED
    assert "event=load_failed" in stderr


async def test_worker_crash_mid_stream_kills_the_process() -> None:
    async with run_worker(crash="stream", crash_after=2) as w:
        await w.send(Generate(id=1, prompt="hi"))
        with pytest.raises(WorkerExited):
            _ = [r async for r in w.replies_for(1)]
        code = await w.wait_exit()
        stderr = await w.stderr_text()
    assert code == 1
    assert "crashing mid-stream after 2 tokens" in stderr


async def test_worker_shutdown_exits_0_and_cancels_work_in_flight() -> None:
    async with run_worker(hang="stream") as w:
        await w.send(Generate(id=1, prompt="hangs"))
        await w.send(Shutdown())
        replies = [r async for r in w.replies_for(1)]
        assert await w.wait_exit() == EXIT_OK
    assert len(replies) == 1 and _failed_with(replies[0], ErrorCode.CANCELLED)


async def test_worker_exits_4_on_a_message_it_must_not_receive() -> None:
    async with run_worker() as w:
        await w.channel.send(Pong(seq=1))
        assert await w.wait_exit() == EXIT_PROTOCOL_ERROR
        assert "event=protocol_error" in await w.stderr_text()


async def test_worker_ignore_sigterm_switch_keeps_it_serving() -> None:
    async with run_worker(ignore_sigterm=True) as w:
        os.kill(w.proc.pid, signal.SIGTERM)
        await w.send(Ping(seq=1))
        assert await w.pong() == Pong(seq=1)
        assert w.proc.returncode is None


async def test_worker_dies_on_sigterm_by_default() -> None:
    async with run_worker() as w:
        os.kill(w.proc.pid, signal.SIGTERM)
        assert await w.wait_exit() == -signal.SIGTERM


async def test_worker_whose_engine_thread_dies_exits_5_instead_of_hanging() -> None:
    # A cancel makes the engine release the slot, which raises outside every per-request
    # guard: the worker must say so and exit, so the supervisor fails what is in flight.
    async with run_worker(crash="release", hang="stream") as w:
        await w.send(Generate(id=1, prompt="hangs"))
        await asyncio.sleep(0.3)  # running: the engine claimed it and keeps stepping
        await w.send(Cancel(id=1))
        with pytest.raises(WorkerExited):
            _ = [r async for r in w.replies_for(1)]
        code = await w.wait_exit()
        stderr = await w.stderr_text()
    assert code == EXIT_ENGINE_FAILED
    assert "event=engine_crash" in stderr and "release failed as asked" in stderr
