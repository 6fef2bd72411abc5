"""Registry authentication: parse WWW-Authenticate, decide what may be sent where, hold tokens.

Policy (the fixes for CVE-2025-51471 and Ollama's missing Basic auth, reference §3.4 and §6):

1. Credentials are configured per registry host (``host[:port]``, lower case) and are only
   ever sent to that host, or to an alias of it (``hf.co`` and ``huggingface.co``).
2. A ``Basic`` challenge is answered with the host's credentials; with none configured it is
   an ``Unauthorized`` error naming the host.
3. A ``Bearer`` challenge sends a GET to its realm with the challenge's ``service`` and each
   ``scope``. The realm must be https (http only for an insecure pull or push). The host's
   Basic credentials go with that GET only when the realm is on the registry's own host (or
   an alias); a realm elsewhere is asked anonymously, never with credentials.
4. The answer (a ``Basic`` header, or ``Bearer <token>``) is kept per registry host and sent
   with later requests to that host only; the caller never attaches it to another host.

An ``Authenticator`` is used on one event loop; it is not thread-safe.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import httpx

from registry.errors import RemoteError, Unauthorized

logger = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 64 * 1024
# Hosts that are one site under two names; credentials may cross between them.
_ALIASES = {"hf.co": "huggingface.co", "huggingface.co": "hf.co"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')
_SCHEME_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)(?=\s|$)")


class Credential(NamedTuple):
    """A user name and password for one registry host."""

    username: str
    password: str


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: the scheme (lower case) and its params."""

    scheme: str
    params: Mapping[str, str]


# (url, headers) -> (status, body capped at MAX_TOKEN_BYTES); supplied by the client.
TokenFetch = Callable[[httpx.URL, dict[str, str]], Awaitable[tuple[int, bytes]]]


def authority(url: httpx.URL) -> str:
    """The ``host[:port]`` of ``url``, lower case, with the scheme's default port left out."""
    host = url.host.lower()
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is None or port == _DEFAULT_PORTS.get(url.scheme):
        return host
    return f"{host}:{port}"


def normalise_host(host: str) -> str:
    """A configured host as ``authority`` spells it (``Registry:443`` -> ``registry``)."""
    text = host.strip().lower()
    for port in (":443", ":80"):
        if text.endswith(port):
            return text[: -len(port)]
    return text


def same_site(a: str, b: str) -> bool:
    """Whether two authorities are one host, or aliases of each other."""
    return a == b or _ALIASES.get(a) == b


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Parse WWW-Authenticate header values into challenges; junk is skipped, not raised."""
    challenges: list[Challenge] = []
    for value in values:
        rest = value
        while rest.strip():
            scheme = _SCHEME_RE.match(rest)
            if scheme is None:
                break
            rest = rest[scheme.end() :]
            params: dict[str, str] = {}
            while (match := _PARAM_RE.match(rest)) is not None and match.group(0).strip():
                raw = match.group(2)
                if raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                params[match.group(1).lower()] = raw
                rest = rest[match.end() :]
            challenges.append(Challenge(scheme.group(1).lower(), params))
            rest = rest.lstrip(" ,")
    return challenges


def basic_header(credential: Credential) -> str:
    """The ``Authorization`` value for Basic credentials."""
    raw = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def token_url(challenge: Challenge, insecure: bool) -> httpx.URL:
    """The token request URL of a Bearer challenge; ``Unauthorized`` for an unusable realm."""
    realm = challenge.params.get("realm", "")
    try:
        url = httpx.URL(realm)
    except httpx.InvalidURL as exc:
        raise Unauthorized(f"registry named an invalid token realm {realm!r}") from exc
    allowed = {"https", "http"} if insecure else {"https"}
    if url.scheme not in allowed or not url.host:
        raise Unauthorized(f"refusing token realm {realm!r}: it must be an https URL")
    params: list[tuple[str, str]] = []
    if challenge.params.get("service"):
        params.append(("service", challenge.params["service"]))
    params += [("scope", scope) for scope in challenge.params.get("scope", "").split()]
    return url.copy_merge_params(tuple(params)) if params else url


def _token_of(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteError("token response is not JSON") from exc
    token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
        raise RemoteError("token response holds no token")
    return token


class Authenticator:
    """Answers challenges for registry hosts and remembers the answers (see module doc)."""

    def __init__(self, credentials: Mapping[str, Credential] | None = None) -> None:
        self._credentials = {normalise_host(k): v for k, v in (credentials or {}).items()}
        self._answers: dict[str, str] = {}

    def header_for(self, host: str) -> str | None:
        """The Authorization value to send to ``host``, if one was earned."""
        return self._answers.get(host)

    def _credential(self, host: str) -> Credential | None:
        found = self._credentials.get(host)
        if found is None and host in _ALIASES:
            found = self._credentials.get(_ALIASES[host])
        return found

    async def answer(self, values: list[str], host: str, insecure: bool, fetch: TokenFetch) -> None:
        """Answer a 401's challenges for registry ``host``; raise ``Unauthorized`` if we can't."""
        challenges = parse_challenges(values)
        by_scheme = {c.scheme: c for c in reversed(challenges)}
        if "bearer" in by_scheme:
            token = await self._bearer(by_scheme["bearer"], host, insecure, fetch)
            self._answers[host] = f"Bearer {token}"
        elif "basic" in by_scheme:
            credential = self._credential(host)
            if credential is None:
                raise Unauthorized(
                    f"registry {host} asks for a user name and password; none is configured"
                )
            self._answers[host] = basic_header(credential)
        else:
            raise Unauthorized(f"registry {host} refused access and offers no usable login")
        logger.info("registry_auth host=%s scheme=%s", host, next(iter(by_scheme), ""))

    async def _bearer(
        self, challenge: Challenge, host: str, insecure: bool, fetch: TokenFetch
    ) -> str:
        url = token_url(challenge, insecure)
        headers: dict[str, str] = {}
        credential = self._credential(host)
        if credential is not None and same_site(authority(url), host):
            headers["Authorization"] = basic_header(credential)
        status, body = await fetch(url, headers)
        if status in (401, 403):
            raise Unauthorized(f"unauthorized: the token service of {host} refused access")
        if status != 200:
            raise RemoteError(f"token request for {host} failed with status {status}", status)
        return _token_of(body)
