"""The event-loop zmq channel over a real ipc socket pair in one process."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest
import zmq

from worker.protocol import Chunk, Message, Ping, Pong, ProtocolError, encode
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


async def test_transport_post_from_another_thread_arrives_in_order(pair: Pair) -> None:
    server, client = pair
    await client.send(Ping(seq=0))  # the channel now belongs to this loop

    def post_all() -> None:
        for i in range(200):
            client.post([Chunk(1, str(i))])

    sender = threading.Thread(target=post_all)
    sender.start()
    await asyncio.to_thread(sender.join)
    got = await recv_n(server, 201)
    assert got == [Ping(seq=0), *(Chunk(1, str(i)) for i in range(200))]


async def test_transport_receiver_wakes_when_another_thread_sends(pair: Pair) -> None:
    # Another thread's send may take zmq's notice of an arriving message (the loop is
    # blocked here on purpose while it happens); the parked receiver must still wake.
    server, client = pair
    await client.send(Pong(seq=-1))
    waiting = asyncio.ensure_future(recv_n(client, 20))
    await asyncio.sleep(0.01)  # the receiver is parked on the fd
    for seq in range(20):
        await server.send(Ping(seq=seq))
        time.sleep(0.003)  # blocking: zmq delivers the ping and raises the fd
        other = threading.Thread(target=client.post, args=([Chunk(1, str(seq))],))
        other.start()
        other.join()  # blocking: the other thread's send runs before the loop polls
    assert await asyncio.wait_for(waiting, 5) == [Ping(seq=s) for s in range(20)]
    assert await recv_n(server, 21) == [Pong(seq=-1), *(Chunk(1, str(s)) for s in range(20))]


async def test_transport_post_never_blocks_and_a_slow_peer_gets_everything(pair: Pair) -> None:
    # Far past zmq's high-water marks: post queues what zmq refuses, drain sends it in order.
    server, client = pair
    await client.send(Ping(seq=0))
    count = 20_000
    started = time.monotonic()
    for i in range(count):
        client.post([Chunk(1, str(i))])
    assert time.monotonic() - started < 10
    draining = asyncio.ensure_future(client.drain())
    await asyncio.sleep(0.05)
    assert not draining.done()  # the peer has read nothing yet
    got = await recv_n(server, count + 1)
    await asyncio.wait_for(draining, 5)
    assert got == [Ping(seq=0), *(Chunk(1, str(i)) for i in range(count))]


async def test_transport_post_after_close_is_a_channel_error(pair: Pair) -> None:
    _, client = pair
    client.close()
    with pytest.raises(ChannelError):
        client.post([Pong(seq=1)])


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_transport_listener_gets_every_message_in_order_and_skips_bad_frames(
    pair: Pair,
) -> None:
    server, client = pair
    endpoint = client.endpoint
    got: list[Message] = []
    bad: list[ProtocolError] = []
    await client.send(Ping(seq=0))  # arrives before anyone listens
    await asyncio.sleep(0.05)
    server.listen(got.append, bad.append)
    await until(lambda: len(got) == 1)
    stranger: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect(endpoint)
    try:
        stranger.send(b"\xc1")  # not msgpack
        await until(lambda: len(bad) == 1)
        stranger.send_multipart([encode(Ping(seq=8)), encode(Ping(seq=9))])  # one message, 2 frames
        await until(lambda: len(bad) == 2)
        await client.send_batch([Chunk(1, "a"), Chunk(2, "b")])
        await client.send(Pong(seq=3))
        await until(lambda: len(got) == 4)
    finally:
        stranger.close()
    assert got == [Ping(seq=0), Chunk(1, "a"), Chunk(2, "b"), Pong(seq=3)]
    assert "expected one frame per message, got 2" in str(bad[1])


async def test_transport_listener_wakes_when_its_own_sends_interleave(pair: Pair) -> None:
    server, client = pair
    got: list[Message] = []
    server.listen(got.append, lambda exc: None)
    for seq in range(50):
        await client.send(Ping(seq=seq))
        time.sleep(0.002)  # blocking on purpose: zmq delivers before the loop polls the fd
        await server.send(Pong(seq=seq))
    await until(lambda: len(got) == 50)
    assert got == [Ping(seq=s) for s in range(50)]
