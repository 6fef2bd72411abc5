"""The benchmarks' streaming client: one streamed HTTP/1.1 POST, each line timed as it arrives.

Used for corral (NDJSON) and llama-server (server-sent events) alike; see `StreamClient`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stream:
    """One streamed request as the client saw it (perf_counter seconds) and the server said."""

    sent: float = 0.0
    first: float = 0.0  # first chunk carrying a token
    last: float = 0.0  # last chunk carrying a token
    end: float = 0.0  # final chunk
    chunks: int = 0
    tokens: int = 0  # generated tokens, as the server counted them
    prompt_tokens: int = 0
    text: str = ""
    final: dict[str, Any] = field(default_factory=dict)

    @property
    def ttft_s(self) -> float:
        return self.first - self.sent if self.chunks else float("nan")

    @property
    def server_decode_tps(self) -> float:
        """Decode speed as corral's final record reports it (eval_count / eval_duration)."""
        return float(self.final["eval_count"]) / float(self.final["eval_duration"]) * 1e9

    @property
    def decode_tps(self) -> float:
        """Tokens after the first, over the time between the first and the last one."""
        span = self.last - self.first
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else float("nan")


def _take_chunk(stream: Stream, text: str) -> None:
    now = time.perf_counter()
    if stream.chunks == 0:
        stream.first = now
    stream.last = now
    stream.chunks += 1
    stream.text += text


LineHandler = Callable[[bytes], bool]
"""Called with each line of a reply's body as it arrives; True ends the request."""


class StreamClient:
    """A minimal HTTP/1.1 client for streamed POSTs: one connection per request.

    The benchmarks run the client on the same two cores as the server and the engine, so
    its own CPU per streamed line is taken from both sides of every comparison (and, in
    benchmark 1, from corral's side alone: the in-process reference has no client). So it
    is an asyncio protocol that takes the bytes in the loop's own callback and hands each
    complete line straight to the caller's handler, with no stream reader, future or task
    switch per line: httpx spent ~0.7 ms per line here, asyncio streams ~0.15 ms, this
    ~0.05 ms. `post_blocking` feeds the same parser from a blocking socket, for benchmark 1's
    single stream. It handles exactly what the two servers send: a status line, headers,
    then a chunked or length-delimited body.
    """

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def post(self, path: str, body: dict[str, Any], on_line: LineHandler) -> None:
        """POST `body` as JSON to `path`; `on_line` gets the reply's lines (no newlines)."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        reply = _Reply(path, on_line, lambda exc: _settle(finished, exc))
        transport, _ = await loop.create_connection(lambda: reply, self.host, self.port)
        try:
            transport.write(self._request(path, body))
            await finished
        finally:
            transport.close()

    def post_blocking(
        self, path: str, body: dict[str, Any], on_line: LineHandler, poll_s: float = 0.0
    ) -> None:
        """`post` on a blocking socket, for one stream at a time: no event loop wakes per
        line (about 30 us less client CPU per line here, taken from the engine's cores).
        With `poll_s`, the socket is read only every `poll_s` seconds, so the client wakes
        a few times a second instead of once per line (line times are then that coarse)."""
        outcome: list[BaseException | None] = []
        reply = _Reply(path, on_line, outcome.append)
        with socket.create_connection((self.host, self.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(self._request(path, body))
            while not outcome:
                if poll_s:
                    time.sleep(poll_s)
                data = sock.recv(65536)
                if not data:
                    reply.connection_lost(None)
                    break
                reply.data_received(data)
        if outcome[0] is not None:
            raise outcome[0]

    def _request(self, path: str, body: dict[str, Any]) -> bytes:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode() + payload


def _settle(finished: asyncio.Future[None], exc: BaseException | None) -> None:
    if exc is None:
        finished.set_result(None)
    else:
        finished.set_exception(exc)


class _Reply(asyncio.Protocol):
    """One HTTP/1.1 response, parsed as its bytes arrive (see StreamClient)."""

    def __init__(
        self, path: str, on_line: LineHandler, on_finish: Callable[[BaseException | None], None]
    ) -> None:
        self._on_finish = on_finish  # called once: None, or why the request failed
        self._done = False
        self._path = path
        self._on_line = on_line
        self._buffer = b""  # bytes not yet parsed
        self._pending = b""  # body bytes of a line not yet complete
        self._status = 0  # 0 until the head is parsed
        self._chunked = False
        self._left = -1  # length-delimited: body bytes still to come (-1: until close)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        try:
            if not self._status and not self._head():
                return
            if self._chunked:
                self._chunks()
            else:
                self._plain()
        except Exception as exc:  # a malformed reply fails the request, not the loop
            self._finish(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._status and not self._chunked and self._left < 0:
            self._end_body()  # delimited by the close itself
        self._finish(exc or RuntimeError(f"{self._path}: connection closed mid-reply"))

    def _head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        status_line, *lines = self._buffer[:end].decode("latin-1").split("\r\n")
        self._buffer = self._buffer[end + 4 :]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._status = int(status_line.split()[1])
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self._left = int(headers.get("content-length", -1))
        return True

    def _chunks(self) -> None:
        """Take every complete chunk: "<hex size>[;ext] CRLF <data> CRLF"; size 0 ends."""
        buffer, body = self._buffer, list[bytes]()
        while (eol := buffer.find(b"\r\n")) >= 0:
            size = int(buffer[:eol].split(b";")[0], 16)
            if size == 0:
                self._body(b"".join(body))
                self._end_body()
                return
            if len(buffer) < eol + 2 + size + 2:
                break
            body.append(buffer[eol + 2 : eol + 2 + size])
            buffer = buffer[eol + 2 + size + 2 :]
        self._buffer = buffer
        self._body(b"".join(body))

    def _plain(self) -> None:
        data, self._buffer = self._buffer, b""
        if self._left >= 0:
            data = data[: self._left]
            self._left -= len(data)
        self._body(data)
        if self._left == 0:
            self._end_body()

    def _body(self, data: bytes) -> None:
        if not data or self._done:
            return
        *complete, self._pending = (self._pending + data).split(b"\n")
        if self._status != 200:
            return  # kept whole for the error message
        for line in complete:
            if line and self._on_line(line):
                self._finish(None)
                return

    def _end_body(self) -> None:
        if self._status != 200:
            self._finish(RuntimeError(f"{self._path}: {self._status} {self._pending!r}"))
        elif self._pending and not self._done:
            line, self._pending = self._pending, b""
            self._on_line(line)
        self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        if not self._done:
            self._done = True
            self._on_finish(exc)


async def stream_corral(client: StreamClient, path: str, body: dict[str, Any]) -> Stream:
    """POST an Ollama-style streaming request (/api/generate or /api/chat) and time it."""
    out, on_line = _corral_reader(path)
    await client.post(path, {**body, "stream": True}, on_line)
    return out


def stream_corral_blocking(
    client: StreamClient, path: str, body: dict[str, Any], poll_s: float = 0.0
) -> Stream:
    """`stream_corral` on a blocking socket (`StreamClient.post_blocking`): one stream."""
    out, on_line = _corral_reader(path)
    client.post_blocking(path, {**body, "stream": True}, on_line, poll_s)
    return out


def _corral_reader(path: str) -> tuple[Stream, LineHandler]:
    out = Stream(sent=time.perf_counter())

    def on_line(line: bytes) -> bool:
        record = json.loads(line)
        if "error" in record:
            raise RuntimeError(f"{path}: {record['error']}")
        piece = record.get("response")
        if piece is None:
            piece = record.get("message", {}).get("content", "")
        if not record.get("done"):
            _take_chunk(out, piece)
            return False
        if piece:
            _take_chunk(out, piece)
        out.end, out.final = time.perf_counter(), record
        out.tokens = int(record.get("eval_count", 0))
        out.prompt_tokens = int(record.get("prompt_eval_count", 0))
        return True

    return out, on_line


async def stream_llama_server(client: StreamClient, body: dict[str, Any]) -> Stream:
    """POST llama-server's /completion with stream=true (server-sent events) and time it."""
    out = Stream(sent=time.perf_counter())

    def on_line(line: bytes) -> bool:
        if not line.startswith(b"data: "):
            return False
        record = json.loads(line[len(b"data: ") :])
        if not record.get("stop"):
            _take_chunk(out, record.get("content", ""))
            return False
        if record.get("content"):
            _take_chunk(out, record["content"])
        out.end, out.final = time.perf_counter(), record
        timings = record.get("timings", {})
        out.tokens = int(timings.get("predicted_n", record.get("tokens_predicted", 0)))
        out.prompt_tokens = int(timings.get("prompt_n", 0))
        return True

    await client.post("/completion", {**body, "stream": True}, on_line)
    return out
