"""The event-loop zmq channel over a real ipc socket pair in one process."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator

import pytest

from worker.protocol import Chunk, Message, Ping, Pong
from worker.transport import (
    Channel,
    ChannelError,
    bind_channel,
    connect_channel,
    ipc_endpoint,
    private_runtime_dir,
)

Pair = tuple[Channel, Channel]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    runtime = private_runtime_dir()
    endpoint = ipc_endpoint(runtime, "t")
    server = bind_channel(endpoint)
    client = connect_channel(endpoint)
    try:
        yield server, client
    finally:
        client.close()
        server.close()
        shutil.rmtree(runtime)


async def recv_n(channel: Channel, n: int) -> list[Message]:
    return [await asyncio.wait_for(channel.recv(), 5) for _ in range(n)]


async def test_transport_batch_arrives_as_separate_messages_in_order(pair: Pair) -> None:
    server, client = pair
    await client.send_batch([Chunk(1, "a"), Chunk(2, "b"), Chunk(1, "c")])
    await client.send(Pong(seq=4))
    assert await recv_n(server, 4) == [Chunk(1, "a"), Chunk(2, "b"), Chunk(1, "c"), Pong(seq=4)]


async def test_transport_waiting_receiver_wakes_for_a_later_message(pair: Pair) -> None:
    server, client = pair
    waiting = asyncio.ensure_future(server.recv())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await client.send(Ping(seq=1))
    assert await asyncio.wait_for(waiting, 5) == Ping(seq=1)


async def test_transport_receiver_wakes_when_its_own_sends_interleave(pair: Pair) -> None:
    # Sends on the waiting side may take zmq's notification; the channel must re-check.
    server, client = pair
    waiting = asyncio.ensure_future(recv_n(server, 50))
    await asyncio.sleep(0.01)  # the receiver is parked on the fd
    for seq in range(50):
        await client.send(Ping(seq=seq))
        time.sleep(0.002)  # blocking on purpose: zmq delivers before the loop polls the fd
        await server.send(Pong(seq=seq))
    assert await asyncio.wait_for(waiting, 5) == [Ping(seq=s) for s in range(50)]
    assert await recv_n(client, 50) == [Pong(seq=s) for s in range(50)]


async def test_transport_close_fails_a_waiting_receiver(pair: Pair) -> None:
    server, _ = pair
    waiting = asyncio.ensure_future(server.recv())
    await asyncio.sleep(0.05)
    server.close()
    with pytest.raises(ChannelError):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(ChannelError):
        await server.recv()
