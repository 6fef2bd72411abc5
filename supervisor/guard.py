"""The request guard in front of every route: CORS, then the Host-header (DNS-rebinding) check.

Ollama's rules (reference §0 and §4, OLLAMA_ORIGINS):

- CORS. A request without `Origin`, or whose `Origin` is `http(s)://<Host>`, is not a
  cross-origin request and passes untouched. Otherwise the origin must be allowed (the
  CORRAL_ORIGINS entries, then the defaults below, `*` allows all; a pattern may hold one
  `*`; browser-extension schemes are always allowed) or the answer is a bare 403. An
  allowed preflight (OPTIONS) is answered 204 with the allowed methods and headers; any
  other allowed request gets `Access-Control-Allow-Origin` on its answer.
- Host guard. Only while the server listens on a loopback address, the `Host` a request
  names must be local: an IP that is loopback, private, unspecified or on one of this
  machine's interfaces; `localhost` or this machine's hostname; or a name under
  `.localhost`, `.local` or `.internal`. A web page on another name that resolves to
  127.0.0.1 (DNS rebinding) gets a bare 403. OPTIONS to an allowed *name* is answered 204.

The decisions are pure functions (`host_allowed`, `origin_allowed`); `RequestGuard` is the
ASGI middleware that applies them and adds no work to a request that is neither
cross-origin nor refused.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable, Sequence

import psutil
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_ORIGINS: tuple[str, ...] = (
    *(
        f"{scheme}://{host}{port}"
        for host in ("localhost", "127.0.0.1", "0.0.0.0")
        for scheme in ("http", "https")
        for port in ("", ":*")
    ),
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)
BROWSER_EXTENSIONS = ("chrome-extension://", "safari-extension://", "moz-extension://",
                      "ms-browser-extension://")  # fmt: skip
ALLOWED_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
ALLOWED_HEADERS = ", ".join(
    [
        "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With",
        "OpenAI-Beta", "x-stainless-arch", "x-stainless-async",
        "x-stainless-custom-poll-interval", "x-stainless-helper-method", "x-stainless-lang",
        "x-stainless-os", "x-stainless-package-version", "x-stainless-poll-helper",
        "x-stainless-retry-count", "x-stainless-runtime", "x-stainless-runtime-version",
        "x-stainless-timeout",
    ]
)  # fmt: skip
PREFLIGHT_MAX_AGE_S = 12 * 3600
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def is_loopback_bind(host: str) -> bool:
    """True when the server listens on a loopback address (the guard applies)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # "" (every interface) or a name: reachable from elsewhere on purpose


def split_host(header: str) -> str:
    """The host part of a Host header: no port, no IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header[1:]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header  # a bare name, or an unbracketed IPv6 address


def host_allowed(host: str, local_ips: Iterable[str], hostname: str) -> bool:
    """Whether a request naming `host` (from `split_host`) may reach a loopback-bound server."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host_name_allowed(host, hostname)
    return ip.is_loopback or ip.is_private or ip.is_unspecified or str(ip) in set(local_ips)


def host_name_allowed(host: str, hostname: str) -> bool:
    return (
        host in ("", "localhost")
        or (bool(hostname) and host == hostname.lower())
        or host.endswith(LOCAL_SUFFIXES)
    )


def origin_allowed(origin: str, patterns: Sequence[str]) -> bool:
    """Whether a cross-origin request from `origin` may pass (patterns hold at most one `*`)."""
    origin = origin.lower()
    if origin.startswith(BROWSER_EXTENSIONS):
        return True
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern == "*" or pattern == origin:
            return True
        if "*" in pattern:
            prefix, _, suffix = pattern.partition("*")
            if origin.startswith(prefix) and origin.endswith(suffix):
                return True
    return False


@functools.cache
def local_ips() -> frozenset[str]:
    """The addresses of this machine's interfaces (read once)."""
    found = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.add(address.address.split("%", 1)[0])  # drop an IPv6 zone
    return frozenset(found)


class RequestGuard:
    """ASGI middleware: CORS first (as Ollama's router orders them), then the Host guard."""

    def __init__(self, app: ASGIApp, *, bind_host: str, origins: Sequence[str]) -> None:
        self.app = app
        self.check_host = is_loopback_bind(bind_host)
        self.origins = (*origins, *DEFAULT_ORIGINS)
        self.allow_all = "*" in self.origins
        self.hostname = socket.gethostname()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host_header = headers.get("host", "")
        origin = headers.get("origin", "")
        method = scope["method"]
        cross_origin = bool(origin) and origin.lower() not in (
            f"http://{host_header}".lower(),
            f"https://{host_header}".lower(),
        )
        if cross_origin:
            if not origin_allowed(origin, self.origins):
                await _bare(send, 403)
                return
            if method == "OPTIONS":
                await _bare(send, 204, self._preflight_headers(origin))
                return
        if self.check_host:
            host = split_host(host_header)
            if not host_allowed(host, local_ips(), self.hostname):
                await _bare(send, 403)
                return
            if method == "OPTIONS" and _is_name(host):
                await _bare(send, 204)
                return
        if cross_origin:
            send = self._with_cors_headers(send, origin)
        await self.app(scope, receive, send)

    def _allow_origin(self, origin: str) -> bytes:
        return b"*" if self.allow_all else origin.encode("latin-1")

    def _preflight_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        return [
            (b"access-control-allow-origin", self._allow_origin(origin)),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode()),
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        ]

    def _with_cors_headers(self, send: Send, origin: str) -> Send:
        extra = [(b"access-control-allow-origin", self._allow_origin(origin)), (b"vary", b"Origin")]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return send_with_cors


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


async def _bare(send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """An empty answer, as gin's AbortWithStatus gives."""
    headers = [*(headers or []), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
