"""Typed client for corral's own HTTP API (httpx), with the NDJSON stream reader.

Errors, translated once here from httpx and from the server's answers::

    ClientError
    ├── ApiError            a non-2xx answer, or an {"error": ...} line mid-stream
    └── ServerUnreachable   the connection could not be made

Streaming methods return generators that hold the HTTP response open; closing the
generator (or leaving the ``for`` loop by an exception) closes the response, which the
server takes as a cancel.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, TypedDict, TypeVar, cast

import httpx

T = TypeVar("T")
Stream = Generator[T, None, None]
"""A response stream; ``close()`` it to stop reading (and cancel on the server)."""

UPLOAD_CHUNK_BYTES = 1024 * 1024
CONNECT_TIMEOUT_S = 10.0


class ClientError(Exception):
    """Base of everything the client raises."""


class ApiError(ClientError):
    """The server answered with an error; ``status`` is the HTTP status (200 mid-stream)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServerUnreachable(ClientError):
    """No connection to the server could be made."""

    def __init__(self, base_url: str) -> None:
        super().__init__(f"could not connect to corral server at {base_url}, is it running?")
        self.base_url = base_url


class ModelDetails(TypedDict, total=False):
    """The ``details`` object of tags, show and ps entries."""

    parent_model: str
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str


class ModelEntry(TypedDict, total=False):
    """One ``/api/tags`` entry; ``modified_at`` is RFC 3339."""

    name: str
    model: str
    remote_model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class RunningModel(TypedDict, total=False):
    """One ``/api/ps`` entry; sizes in bytes, ``expires_at`` RFC 3339."""

    name: str
    model: str
    size: int
    size_vram: int
    digest: str
    details: ModelDetails
    expires_at: str
    context_length: int


class ShowResponse(TypedDict, total=False):
    """``/api/show``; ``parameters`` is text, one ``key value`` per line."""

    license: str
    modelfile: str
    parameters: str
    template: str
    system: str
    details: ModelDetails
    messages: list[dict[str, str]]
    model_info: dict[str, Any]
    projector_info: dict[str, Any]
    tensors: list[dict[str, Any]]
    capabilities: list[str]
    modified_at: str
    requires: str


class Progress(TypedDict, total=False):
    """A create/pull/push progress line; ``total``/``completed`` in bytes."""

    status: str
    digest: str
    total: int
    completed: int


class Chunk(TypedDict, total=False):
    """A generate or chat stream line; durations in nanoseconds, on the final chunk."""

    model: str
    response: str
    thinking: str
    message: dict[str, Any]
    done: bool
    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


def _error_message(response: httpx.Response) -> str:
    """The ``error`` of a JSON body, else the body text, else the status phrase."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return text or f"{response.status_code} {response.reason_phrase}".strip()


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    raise ApiError(response.status_code, _error_message(response))


class Client:
    """One server's API. ``transport`` is the test seam (``httpx.MockTransport``);
    ``timeout`` (seconds) bounds each read, None for none (generation can be slow)."""

    def __init__(
        self,
        base_url: str,
        transport: httpx.BaseTransport | None = None,
        timeout: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
            headers={"User-Agent": "corral-cli"},
        )

    def close(self) -> None:
        self._http.close()

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise ServerUnreachable(self.base_url) from exc
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {self.base_url} failed: {exc}") from exc

    def _request(self, method: str, path: str, payload: object = None) -> httpx.Response:
        with self._translate():
            response = self._http.request(method, path, json=payload)
        _raise_for_status(response)
        return response

    def _json(self, method: str, path: str, payload: object = None) -> Any:
        response = self._request(method, path, payload)
        return response.json() if response.content else {}

    def _stream(
        self, method: str, path: str, payload: object
    ) -> Generator[dict[str, Any], None, None]:
        """Read NDJSON lines; an ``{"error": ...}`` line raises ApiError."""
        with self._translate(), self._http.stream(method, path, json=payload) as response:
            _raise_for_status(response)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and "error" in item:
                    raise ApiError(response.status_code, str(item["error"]))
                yield item

    def heartbeat(self) -> None:
        """``HEAD /``: raise if the server does not answer."""
        self._request("HEAD", "/")

    def version(self) -> str:
        return str(self._json("GET", "/api/version").get("version", ""))

    def tags(self) -> list[ModelEntry]:
        return cast(list[ModelEntry], self._json("GET", "/api/tags").get("models") or [])

    def ps(self) -> list[RunningModel]:
        return cast(list[RunningModel], self._json("GET", "/api/ps").get("models") or [])

    def show(
        self,
        name: str,
        *,
        verbose: bool = False,
        system: str | None = None,
        options: Mapping[str, object] | None = None,
    ) -> ShowResponse:
        payload: dict[str, object] = {"model": name, "verbose": verbose}
        if system:
            payload["system"] = system
        if options:
            payload["options"] = dict(options)
        return cast(ShowResponse, self._json("POST", "/api/show", payload))

    def copy(self, source: str, destination: str) -> None:
        self._request("POST", "/api/copy", {"source": source, "destination": destination})

    def delete(self, name: str) -> None:
        self._request("DELETE", "/api/delete", {"model": name})

    def blob_exists(self, digest: str) -> bool:
        try:
            self._request("HEAD", f"/api/blobs/{digest}")
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def push_blob(
        self, digest: str, path: Path, on_progress: Callable[[int], None] | None = None
    ) -> None:
        """Upload a file as the blob ``digest``, streamed; ``on_progress`` gets bytes sent."""
        size = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            sent = 0
            with path.open("rb") as file:
                while chunk := file.read(UPLOAD_CHUNK_BYTES):
                    yield chunk
                    sent += len(chunk)
                    if on_progress is not None:
                        on_progress(sent)

        with self._translate():
            response = self._http.post(
                f"/api/blobs/{digest}", content=chunks(), headers={"Content-Length": str(size)}
            )
        _raise_for_status(response)

    def create(self, payload: Mapping[str, object]) -> Stream[Progress]:
        return cast(Stream[Progress], self._stream("POST", "/api/create", dict(payload)))

    def pull(self, name: str, *, insecure: bool = False) -> Stream[Progress]:
        payload = {"model": name, "insecure": insecure, "stream": True}
        return cast(Stream[Progress], self._stream("POST", "/api/pull", payload))

    def push(self, name: str, *, insecure: bool = False) -> Stream[Progress]:
        payload = {"model": name, "insecure": insecure, "stream": True}
        return cast(Stream[Progress], self._stream("POST", "/api/push", payload))

    def generate(self, payload: Mapping[str, object]) -> Stream[Chunk]:
        return cast(Stream[Chunk], self._stream("POST", "/api/generate", dict(payload)))

    def chat(self, payload: Mapping[str, object]) -> Stream[Chunk]:
        return cast(Stream[Chunk], self._stream("POST", "/api/chat", dict(payload)))

    def embed(self, payload: Mapping[str, object]) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("POST", "/api/embed", dict(payload)))

    def has_route(self, method: str, path: str) -> bool:
        """Whether the server implements ``method path``: an empty JSON body gets anything
        but 405, or a 404 that is not a JSON error (a missing route answers plain text)."""
        with self._translate():
            response = self._http.request(method, path, json={})
        if response.status_code == 405:
            return False
        if response.status_code == 404:
            try:
                return isinstance(response.json(), dict) and "error" in response.json()
            except ValueError:
                return False
        return True
