"""zmq.asyncio DEALER channel: endpoints, LINGER=0, send/recv protocol messages.

Both sides import this module so socket options cannot drift apart. The supervisor binds an
`ipc://` endpoint in a private runtime directory before it spawns the worker; the worker
connects to the endpoint it got on argv. One protocol message travels in one ZMQ frame.

A `Channel` belongs to the event loop that created it and is not thread-safe.
"""

from __future__ import annotations

import os
import tempfile

import zmq
import zmq.asyncio

from worker.protocol import Message, ProtocolError, decode, encode

# Unix socket paths are limited to 108 bytes including the terminating NUL (sun_path).
_MAX_IPC_PATH = 107


class ChannelError(Exception):
    """The socket failed (closed, or the zmq context went away)."""


class Channel:
    """One DEALER socket that sends and receives protocol messages.

    When the channel created its own zmq context, `close` also terminates it.
    """

    def __init__(
        self, socket: zmq.asyncio.Socket, endpoint: str, owned: zmq.asyncio.Context | None
    ) -> None:
        self._socket = socket
        self._owned_context = owned
        self.endpoint = endpoint

    async def send(self, msg: Message) -> None:
        """Queue one message; waits only when the peer is slower than the high-water mark."""
        try:
            await self._socket.send(encode(msg))
        except zmq.ZMQError as exc:
            raise ChannelError(f"send on {self.endpoint}: {exc}") from exc

    async def recv(self) -> Message:
        """Wait for the next message; ProtocolError if it is not exactly one valid frame."""
        try:
            frames = await self._socket.recv_multipart()
        except zmq.ZMQError as exc:
            raise ChannelError(f"recv on {self.endpoint}: {exc}") from exc
        if len(frames) != 1:
            raise ProtocolError(f"expected one frame per message, got {len(frames)}")
        return decode(frames[0])

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; queued messages get at most `linger_ms` to leave.

        With an owned context this blocks until they left or `linger_ms` passed.
        """
        self._socket.close(linger=linger_ms)
        if self._owned_context is not None:
            self._owned_context.term()
            self._owned_context = None


def bind_channel(endpoint: str, context: zmq.asyncio.Context | None = None) -> Channel:
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


def connect_channel(endpoint: str, context: zmq.asyncio.Context | None = None) -> Channel:
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


def _dealer(endpoint: str, context: zmq.asyncio.Context | None) -> Channel:
    ctx = zmq.asyncio.Context() if context is None else context
    socket = ctx.socket(zmq.DEALER)
    # LINGER=0: closing never blocks process exit waiting for a peer that is gone.
    socket.setsockopt(zmq.LINGER, 0)
    return Channel(socket, endpoint, ctx if context is None else None)
