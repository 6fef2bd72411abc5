"""The per-request Inbox the supervisor's reply routing fills: order, waiting, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from supervisor.workers import Inbox
from worker import protocol as p


async def test_inbox_hands_out_in_arrival_order_what_was_put_before_the_read() -> None:
    inbox = Inbox()
    for i in range(3):
        inbox.put(p.Chunk(id=1, text=str(i)))
    inbox.put(None)
    got = [await inbox.get() for _ in range(4)]
    assert got == [p.Chunk(id=1, text="0"), p.Chunk(id=1, text="1"), p.Chunk(id=1, text="2"), None]


async def test_inbox_reader_waits_until_a_put_from_a_callback() -> None:
    inbox = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    asyncio.get_running_loop().call_soon(inbox.put, p.Pong(seq=7))
    assert await asyncio.wait_for(reader, 5) == p.Pong(seq=7)


async def test_inbox_timed_out_read_leaves_nothing_behind() -> None:
    inbox = Inbox()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(inbox.get(), 0.01)
    inbox.put(p.Pong(seq=1))  # no cancelled waiter to trip over
    inbox.put(p.Pong(seq=2))
    assert await asyncio.wait_for(inbox.get(), 5) == p.Pong(seq=1)
    assert await asyncio.wait_for(inbox.get(), 5) == p.Pong(seq=2)


async def test_inbox_several_puts_before_the_reader_runs_are_all_read() -> None:
    inbox = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put(p.Chunk(id=2, text="a"))
    inbox.put(p.Chunk(id=2, text="b"))  # the waiter is already done: just queued
    assert await asyncio.wait_for(reader, 5) == p.Chunk(id=2, text="a")
    assert await asyncio.wait_for(inbox.get(), 5) == p.Chunk(id=2, text="b")
