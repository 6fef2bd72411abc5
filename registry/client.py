"""The registry's HTTP side: requests with auth, manifests, blob location and ranges, uploads.

Every httpx error becomes a ``TransferError`` subclass in one place, ``map_http_errors``
(STYLE §4.8); the seam for tests is the injected httpx transport (STYLE §4.9).

Rules kept here (reference §2.2, §6):

- Non-blob bodies (manifests, error bodies, tokens) are read with a cap, counted after
  decompression, and ``Accept-Encoding: identity`` is asked for on every request.
- httpx never follows redirects. A blob GET follows them by hand: with credentials while it
  stays on the repository's host, and never again once it has left it. An https registry
  may not redirect to plain http unless the transfer is insecure.
- Credentials go only to URLs on the repository's own host (``Authenticator`` decides what).
- A blob URL that answers 200 serves the blob itself (Ollama's client fails there).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn

import httpx

from registry.auth import Authenticator, authority
from registry.errors import (
    InsecureProtocol,
    InvalidName,
    ModelNotFound,
    RegistryUnavailable,
    RemoteError,
    ResponseTooLarge,
    Unauthorized,
)
from registry.manifest import MAX_MANIFEST_BYTES, MEDIA_TYPE_MANIFEST, MEDIA_TYPE_OCI_MANIFEST
from registry.names import ModelName

MANIFEST_ACCEPT = f"{MEDIA_TYPE_MANIFEST}, {MEDIA_TYPE_OCI_MANIFEST}"
MAX_ERROR_BYTES = 64 * 1024
MAX_REDIRECTS = 10
_CONTENT_RANGE_RE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*\Z")

Body = bytes | Callable[[], AsyncIterator[bytes]] | None
"""A request body: bytes, or a factory of a fresh stream (a 401 retry sends it again)."""


@dataclass(frozen=True)
class Repository:
    """One repository on one registry. ``host`` is the authority that may get credentials."""

    scheme: str
    host: str
    path: str
    insecure: bool

    def url(self, tail: str) -> httpx.URL:
        """The URL of ``/v2/<path>/<tail>`` on this registry."""
        return httpx.URL(f"{self.scheme}://{self.host}/v2/{self.path}/{tail}")


def repository_for(name: ModelName, insecure: bool) -> Repository:
    """Where ``name`` lives; ``InsecureProtocol`` for an http name without ``insecure``.

    As Ollama does, ``insecure`` means plain http for every request (reference §4.1).
    """
    host, namespace, model, _ = name.parts()
    if name.scheme == "http" and not insecure:
        raise InsecureProtocol()
    scheme = "http" if insecure else "https"
    try:
        base = httpx.URL(f"{scheme}://{host}/")
    except httpx.InvalidURL as exc:
        raise InvalidName(f'invalid model name "{name}"') from exc
    return Repository(scheme, authority(base), f"{namespace}/{model}", insecure)


@dataclass(frozen=True)
class Timeouts:
    """Network limits in seconds; ``stall_s`` is how long a read may get no byte at all."""

    connect_s: float = 30.0
    stall_s: float = 30.0


@dataclass(frozen=True)
class BlobLocation:
    """Where a blob's bytes are served, whether credentials may go there, whether Range works."""

    url: httpx.URL
    authenticated: bool
    ranges: bool


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def map_http_errors(action: str) -> Iterator[None]:
    """Translate httpx's exceptions into ``TransferError`` subclasses, prefixed by ``action``."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RegistryUnavailable(f"{action}: timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise RegistryUnavailable(f"{action}: {_describe(exc)}") from exc
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        raise RemoteError(f"{action}: {_describe(exc)}") from exc


async def read_capped(response: httpx.Response, cap: int, what: str) -> bytes:
    """Read a whole (decoded) body, refusing more than ``cap`` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ResponseTooLarge(f"{what} larger than {cap} bytes")
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > cap:
            raise ResponseTooLarge(f"{what} larger than {cap} bytes")
    return bytes(data)


def _error_text(body: bytes) -> str:
    """The message of a distribution (``errors``) or Ollama (``error``) error body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace").strip()[:300]
    if isinstance(doc, dict) and isinstance(doc.get("errors"), list) and doc["errors"]:
        first = doc["errors"][0]
        if isinstance(first, dict):
            return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return ""


class _Borrowed(httpx.AsyncBaseTransport):
    """An injected transport shared by a client and its forks; its owner closes it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        return None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs tens of milliseconds; every client shares one context.
    return httpx.create_ssl_context()


class RegistryClient:
    """Talks to registries over one httpx connection pool; use with ``async with``."""

    def __init__(
        self,
        auth: Authenticator | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeouts: Timeouts | None = None,
        user_agent: str = "corral",
    ) -> None:
        self.auth = auth or Authenticator()
        self._transport = transport
        self._timeouts = timeouts or Timeouts()
        self._user_agent = user_agent
        t = self._timeouts
        self._http = httpx.AsyncClient(
            transport=_Borrowed(transport) if transport is not None else None,
            verify=_tls_context(),
            follow_redirects=False,
            timeout=httpx.Timeout(t.stall_s, connect=t.connect_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        )

    def fork(self) -> RegistryClient:
        """A client with its own connections, sharing the credentials and earned tokens."""
        return RegistryClient(self.auth, self._transport, self._timeouts, self._user_agent)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- manifests -------------------------------------------------------------------------

    async def get_manifest(self, repo: Repository, tag: str) -> bytes:
        """The manifest's raw bytes; ``ModelNotFound`` on 404, capped at 4 MiB."""
        action = "pull model manifest"
        headers = {"Accept": MANIFEST_ACCEPT}
        async with self.stream(repo, "GET", repo.url(f"manifests/{tag}"), action, headers) as r:
            if r.status_code == 404:
                raise ModelNotFound(f"{action}: file does not exist")
            if r.status_code != 200:
                await self.fail(r, action)
            return await read_capped(r, MAX_MANIFEST_BYTES, f"{action}: manifest")

    async def put_manifest(self, repo: Repository, tag: str, raw: bytes, media_type: str) -> None:
        """Store manifest bytes unchanged under ``tag``."""
        action = "push manifest"
        url = repo.url(f"manifests/{tag}")
        async with self.stream(repo, "PUT", url, action, {"Content-Type": media_type}, raw) as r:
            if r.status_code not in (200, 201, 202):
                await self.fail(r, action)

    # -- requests --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def stream(
        self,
        repo: Repository,
        method: str,
        url: httpx.URL,
        action: str,
        headers: dict[str, str] | None = None,
        body: Body = None,
        authed: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """Send a request and yield its unread response; httpx errors become TransferErrors.

        Credentials go along only when ``authed`` and ``url`` is on the repository's host;
        a 401 there is answered once (``Authenticator``) and the request sent again.
        """
        with map_http_errors(action):
            response = await self._send(repo, method, url, headers or {}, body, authed)
            try:
                yield response
            finally:
                await response.aclose()

    async def _send(
        self,
        repo: Repository,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        body: Body,
        authed: bool,
    ) -> httpx.Response:
        """Send (streaming) and answer at most one challenge; the caller closes the response."""
        on_host = authed and authority(url) == repo.host
        for attempt in (1, 2):
            sent = dict(headers)
            answer = self.auth.header_for(repo.host) if on_host else None
            if answer:
                sent["Authorization"] = answer
            content = body() if callable(body) else body
            request = self._http.build_request(method, url, headers=sent, content=content)
            response = await self._http.send(request, stream=True)
            if response.status_code != 401 or not on_host or attempt == 2:
                return response
            challenges = response.headers.get_list("www-authenticate")
            await response.aclose()
            await self.auth.answer(challenges, repo.host, repo.insecure, self._fetch_token)
        raise AssertionError("unreachable")

    async def _fetch_token(self, url: httpx.URL, headers: dict[str, str]) -> tuple[int, bytes]:
        with map_http_errors("token request"):
            request = self._http.build_request("GET", url, headers=headers)
            response = await self._http.send(request, stream=True)
            try:
                if response.status_code != 200:
                    return response.status_code, b""
                return 200, await read_capped(response, MAX_ERROR_BYTES, "token response")
            finally:
                await response.aclose()

    def redirect_target(
        self, repo: Repository, current: httpx.URL, r: httpx.Response, action: str
    ) -> httpx.URL:
        """Where a redirect points; a downgrade to plain http is refused unless insecure."""
        return self._join(repo, current, r.headers.get("location", ""), action)

    def session_url(
        self, repo: Repository, current: httpx.URL, r: httpx.Response, action: str
    ) -> httpx.URL:
        """The next URL of an upload session, from a POST or PATCH answer."""
        # Ollama's registry names the next session URL in Docker-Upload-Location.
        location = r.headers.get("docker-upload-location") or r.headers.get("location", "")
        return self._join(repo, current, location, action)

    @staticmethod
    def _join(repo: Repository, current: httpx.URL, location: str, action: str) -> httpx.URL:
        if not location:
            raise RemoteError(f"{action}: the registry's answer has no Location")
        try:
            target = current.join(location)
        except httpx.InvalidURL as exc:
            raise RemoteError(f"{action}: invalid Location {location[:100]!r}") from exc
        if target.scheme != "https" and not (repo.insecure and target.scheme == "http"):
            raise RemoteError(f"{action}: refusing a redirect to a {target.scheme or '?'} URL")
        return target

    async def fail(self, r: httpx.Response, action: str) -> NoReturn:
        """Raise the error a failed response stands for, with its (capped) message."""
        body = b""
        with contextlib.suppress(ResponseTooLarge):
            body = await read_capped(r, MAX_ERROR_BYTES, "error body")
        message = _error_text(body) or r.reason_phrase or "no message"
        if r.status_code in (401, 403):
            raise Unauthorized(f"{action}: unauthorized: {message}")
        raise RemoteError(f"{action}: {r.status_code} {message}", r.status_code)
