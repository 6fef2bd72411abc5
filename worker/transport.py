"""A DEALER channel on the event loop: endpoints, LINGER=0, send/recv protocol messages.

Both sides import this module so socket options cannot drift apart. The supervisor binds an
`ipc://` endpoint in a private runtime directory before it spawns the worker; the worker
connects to the endpoint it got on argv. A frame holds one message or a batch of them
(worker/protocol.py); `recv` hands them out one at a time.

The socket is a plain (blocking-API) zmq socket driven without blocking: the loop watches
zmq's notification descriptor with `add_reader`, and every send and receive uses NOBLOCK.
This costs a fraction of zmq.asyncio's per-message futures, which matters because every
streamed token crosses here. zmq's descriptor only says "something may have changed";
the truth is `ZMQ_EVENTS`, so the rules are: receive until EAGAIN before waiting, and after
any send re-check `ZMQ_EVENTS` for a waiting receiver (a send may have taken the
notification that would have woken it).

Sending: `post` queues a frame from any thread and never blocks; it goes out at once
unless earlier frames still wait for the peer (past zmq's high-water mark), in which case
it joins them and a task on the loop sends them in order. So the worker's engine thread
hands each step's replies straight to zmq without waking the event loop. One lock covers
every socket call, the backlog and the waiters, which makes sharing the socket between
the loop and one other thread safe (zmq sockets need a full memory barrier between users).
`send` and `send_batch` post and then wait for the backlog to drain.

Receiving: `recv` awaits the next message; or `listen` hands every message to a callback
straight from the descriptor's callback, which saves a task wake-up per frame (the
supervisor receives every streamed token this way). Receiving and everything else belong to
the event loop that first uses the channel.
"""

from __future__ import annotations

import asyncio
import collections
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import cast

import zmq

from worker.protocol import Message, ProtocolError, decode_frame, encode, encode_batch

# Unix socket paths are limited to 108 bytes including the terminating NUL (sun_path).
_MAX_IPC_PATH = 107
# ZMQ_EVENTS bits as plain ints: pyzmq's flag enums cost a Python-level enum operation per
# `&` or `|`, and these tests run for every streamed token.
POLLIN = int(zmq.POLLIN)
POLLOUT = int(zmq.POLLOUT)


class ChannelError(Exception):
    """The socket failed (closed, or the zmq context went away)."""


class Channel:
    """One DEALER socket that sends and receives protocol messages.

    When the channel created its own zmq context, `close` also terminates it.
    """

    def __init__(
        self, socket: zmq.Socket[bytes], endpoint: str, owned: zmq.Context[zmq.Socket[bytes]] | None
    ) -> None:
        self._socket = socket
        self._owned_context = owned
        self.endpoint = endpoint
        self._inbox: collections.deque[Message] = collections.deque()
        self._lock = threading.Lock()  # the socket, _backlog and _waiters
        self._backlog: collections.deque[bytes] = collections.deque()  # frames not yet sent
        self._flusher: asyncio.Task[None] | None = None
        self._failure: ChannelError | None = None  # a send failed: the channel is unusable
        self._waiters: dict[int, asyncio.Future[None]] = {}  # POLLIN / POLLOUT -> waiter
        self._consumer: Callable[[Message], None] | None = None  # see listen()
        self._on_bad_frame: Callable[[ProtocolError], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set once the fd is watched
        self._loop_thread = 0
        self._closed = False
        self._fd = cast(int, socket.getsockopt(zmq.FD))

    def post(self, msgs: Sequence[Message]) -> None:
        """Any thread: send `msgs` as one frame now, or after the frames still waiting.

        Never blocks. ChannelError once the channel is closed or a send has failed.
        """
        frame = encode(msgs[0]) if len(msgs) == 1 else encode_batch(msgs)
        with self._lock:
            if self._failure is not None or self._closed:
                raise self._failure or ChannelError(f"{self.endpoint}: closed")
            if not self._backlog and self._try_send(frame):
                due = self._due()
            else:
                self._backlog.append(frame)
                due = len(self._backlog) == 1  # the flusher starts with the first frame
        if due:
            self._call_on_loop(self._kick)

    async def send(self, msg: Message) -> None:
        """Send one message; waits only when the peer is slower than the high-water mark."""
        await self.send_batch([msg])

    async def send_batch(self, msgs: Sequence[Message]) -> None:
        """Send several messages as one frame (one message goes as a plain frame)."""
        self._watch()
        self.post(msgs)
        await self.drain()

    async def drain(self) -> None:
        """Wait until every posted frame has left; ChannelError if one could not."""
        self._watch()
        while self._failure is None:
            if self._flusher is None:
                if not self._backlog:
                    return
                self._kick()  # posted from another thread, and its kick is still queued
                if self._flusher is None:
                    break  # closed meanwhile
            else:
                await asyncio.shield(self._flusher)
        if self._failure is not None:
            raise self._failure
        raise ChannelError(f"{self.endpoint}: closed")

    async def recv(self) -> Message:
        """Wait for the next message; ProtocolError if a frame is not exactly one valid frame."""
        while not self._inbox:
            try:
                with self._lock:
                    data = self._read_message()
            except zmq.Again:
                await self._wait(POLLIN)
                continue
            except zmq.ZMQError as exc:
                raise ChannelError(f"recv on {self.endpoint}: {exc}") from exc
            self._inbox.extend(decode_frame(data))
        return self._inbox.popleft()

    def listen(
        self, consumer: Callable[[Message], None], on_bad_frame: Callable[[ProtocolError], None]
    ) -> None:
        """Loop: from now on call `consumer(msg)` for every message, in order, as it arrives.

        A frame that does not decode goes to `on_bad_frame` and the next one is read. Do not
        mix with `recv`. Once the channel is closed nothing more is delivered.
        """
        self._watch()
        self._consumer, self._on_bad_frame = consumer, on_bad_frame
        self._on_ready()  # whatever arrived before

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; queued messages get at most `linger_ms` to leave.

        Anyone waiting to send or receive gets ChannelError. With an owned context this
        blocks until the queued messages left or `linger_ms` passed. Frames still in the
        backlog (the peer stopped reading) are dropped.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._loop is not None and not self._loop.is_closed():
                    self._loop.remove_reader(self._fd)
                for waiter in self._waiters.values():
                    if not waiter.done():
                        waiter.set_exception(ChannelError(f"{self.endpoint}: closed"))
                self._backlog.clear()
                self._consumer = None
                self._socket.close(linger=linger_ms)
        if self._owned_context is not None:
            self._owned_context.term()
            self._owned_context = None

    # ---- the loop's side ----

    def _watch(self) -> None:
        """Bind the channel to the running loop and watch zmq's descriptor (once)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            self._loop.add_reader(self._fd, self._on_ready)

    def _kick(self) -> None:
        """Loop: wake due waiters and start the flusher if frames wait and none runs."""
        self._on_ready()
        if self._backlog and self._flusher is None and not self._closed:
            assert self._loop is not None
            self._flusher = self._loop.create_task(self._flush(), name="channel-flush")

    async def _flush(self) -> None:
        """Send the backlog in order, waiting for the peer as zmq asks."""
        try:
            while True:
                with self._lock:
                    if not self._backlog:
                        return
                    sent = self._try_send(self._backlog[0])
                    if sent:
                        self._backlog.popleft()
                if not sent:
                    await self._wait(POLLOUT)
        except ChannelError as exc:
            with self._lock:
                self._failure = exc
                self._backlog.clear()
        finally:
            self._flusher = None

    async def _wait(self, event: int) -> None:
        """Return once `event` (POLLIN or POLLOUT) may be possible; ChannelError if closed."""
        self._watch()
        assert self._loop is not None
        waiter = self._loop.create_future()
        with self._lock:
            if self._closed:
                raise ChannelError(f"{self.endpoint}: closed")
            try:
                if self._events() & event:
                    return
            except zmq.ZMQError as exc:
                raise ChannelError(f"{self.endpoint}: {exc}") from exc
            # Registered under the lock: a send from another thread sees this waiter.
            self._waiters[event] = waiter
        try:
            await waiter
        finally:
            with self._lock:
                if self._waiters.get(event) is waiter:
                    del self._waiters[event]

    def _on_ready(self) -> None:
        """The fd fired (or a send may have consumed its notice): wake whoever can proceed."""
        with self._lock:
            if self._closed:
                return
            try:
                events = self._events()
            except zmq.ZMQError:
                events = POLLIN | POLLOUT  # let the waiters meet the error themselves
            ready = [w for e, w in self._waiters.items() if events & e and not w.done()]
        for waiter in ready:
            waiter.set_result(None)
        if self._consumer is not None and events & POLLIN:
            self._deliver()

    def _deliver(self) -> None:
        """Hand every waiting message to the listener (see `listen`); ZMQ_EVENTS has just
        shown one. Reads while ZMQ_EVENTS says another waits: the rule "receive until
        EAGAIN", without raising and catching zmq.Again for every frame (~8 us each)."""
        while (consumer := self._consumer) is not None:
            try:
                with self._lock:
                    data = self._read_message()
                    more = self._events() & POLLIN
                msgs = decode_frame(data)
            except zmq.ZMQError:
                return  # nothing after all (a stale notice), or closed
            except ProtocolError as exc:
                assert self._on_bad_frame is not None
                self._on_bad_frame(exc)
                continue  # read on until zmq has nothing more
            for msg in msgs:
                consumer(msg)
            if not more:
                return

    # ---- under the lock ----

    def _read_message(self) -> bytes:
        """The next message's one frame, without blocking (zmq.Again if none). Caller holds
        the lock. A message of several frames (never sent by this protocol) is read whole
        and raises ProtocolError. Receiving without copy puts the more-flag on the frame,
        which saves a getsockopt per message."""
        frame = self._socket.recv(zmq.NOBLOCK, copy=False)
        parts = 1
        while frame.more:
            frame = self._socket.recv(zmq.NOBLOCK, copy=False)
            parts += 1
        if parts != 1:
            raise ProtocolError(f"expected one frame per message, got {parts}")
        return frame.bytes

    def _try_send(self, frame: bytes) -> bool:
        """Send without blocking; False if zmq would block. Caller holds the lock."""
        try:
            self._socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            raise ChannelError(f"send on {self.endpoint}: {exc}") from exc
        return True

    def _due(self) -> bool:
        """After a send: does a waiter's or the listener's event now hold? Caller holds the
        lock. (The send may have taken zmq's notice of it, so the fd may never fire.)"""
        wanted = POLLIN if self._consumer is not None else 0
        for event in self._waiters:
            wanted |= event
        if not wanted:
            return False
        try:
            return bool(self._events() & wanted)
        except zmq.ZMQError:
            return True

    def _events(self) -> int:
        events = self._socket.getsockopt(zmq.EVENTS)
        assert isinstance(events, int)  # typing.cast would cost a Python call per token
        return events

    def _call_on_loop(self, fn: Callable[[], None]) -> None:
        if self._loop is None:
            raise ChannelError(f"{self.endpoint}: not yet used on an event loop")
        if threading.get_ident() == self._loop_thread:
            fn()
            return
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed: the process is exiting, nobody waits
            pass


def bind_channel(endpoint: str, context: zmq.Context[zmq.Socket[bytes]] | None = None) -> Channel:
    """The supervisor's side: bind before spawning the worker.

    Without `context` the channel gets its own, terminated by `close`.
    """
    channel = _dealer(endpoint, context)
    try:
        channel._socket.bind(endpoint)
    except zmq.ZMQError as exc:
        channel.close()
        raise ChannelError(f"bind {endpoint}: {exc}") from exc
    return channel


def connect_channel(
    endpoint: str, context: zmq.Context[zmq.Socket[bytes]] | None = None
) -> Channel:
    """The worker's side: connect to the endpoint given on argv."""
    channel = _dealer(endpoint, context)
    try:
        channel._socket.connect(endpoint)
    except zmq.ZMQError as exc:
        channel.close()
        raise ChannelError(f"connect {endpoint}: {exc}") from exc
    return channel


def private_runtime_dir(parent: str | None = None) -> str:
    """Create a fresh directory only the current user can enter (0700) for ipc sockets.

    The caller owns it and removes it (shutil.rmtree) when done.
    """
    path = tempfile.mkdtemp(prefix="corral-", dir=parent)
    os.chmod(path, 0o700)
    return path


def ipc_endpoint(runtime_dir: str, name: str) -> str:
    """The `ipc://` endpoint for socket `name` inside `runtime_dir`."""
    path = os.path.join(runtime_dir, f"{name}.sock")
    if len(os.fsencode(path)) > _MAX_IPC_PATH:
        raise ValueError(f"ipc socket path too long ({len(path)} bytes): {path}")
    return f"ipc://{path}"


def _dealer(endpoint: str, context: zmq.Context[zmq.Socket[bytes]] | None) -> Channel:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context() if context is None else context
    socket = ctx.socket(zmq.DEALER)
    # LINGER=0: closing never blocks process exit waiting for a peer that is gone.
    socket.setsockopt(zmq.LINGER, 0)
    return Channel(socket, endpoint, ctx if context is None else None)
