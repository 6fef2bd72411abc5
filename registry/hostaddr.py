"""Server addresses: parse ``[scheme://]host[:port][/path]`` exactly as Ollama does.

Rules (Ollama's ``envconfig.Host``):

1. The value is trimmed of blanks, then of surrounding ``"`` / ``'``, then of blanks again.
2. No ``scheme://`` means http with port 11434 (the bare value ``ollama.com`` means
   ``https://ollama.com:443``); ``http://`` without a port means 80, ``https://`` 443, and
   any other scheme keeps 11434.
3. Everything after the first ``/`` is the path.
4. ``host:port`` splits like Go's ``net.SplitHostPort``; when that fails the whole text is
   the host (an IP in brackets loses them), and an empty host is ``127.0.0.1``.
5. A port that is not an integer in 0..65535 falls back to the default of rule 2.

A parsed address keeps an unspecified host (``""``, ``0.0.0.0``, ``::``) so a server can
bind every interface; ``for_client`` turns it into loopback. The server's config and the
CLI both parse with this module; neither reads the environment here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

DEFAULT_PORT = 11434
_PORT_RE = re.compile(r"[+-]?[0-9]+")
_UNSPECIFIED = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True, slots=True)
class HostAddr:
    """Where a server listens or a client connects.

    ``host`` has no brackets (``::1``) and may be ``""`` (every interface); ``path`` is
    ``""`` or starts with ``/`` (a reverse-proxy prefix).
    """

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def netloc(self) -> str:
        """``host:port`` with an IPv6 host in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``scheme://host:port[/path]``, the prefix of every API URL."""
        return f"{self.scheme}://{self.netloc}{self.path}"

    @property
    def bind(self) -> tuple[str, int]:
        """(host, port) for a listening socket; ``""`` becomes ``0.0.0.0``."""
        return (self.host or "0.0.0.0", self.port)

    def for_client(self) -> HostAddr:
        """The same address with an unspecified host replaced by loopback."""
        return replace(self, host=_UNSPECIFIED.get(self.host, self.host))


def _trim(value: str) -> str:
    return value.strip().strip("\"'").strip()


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``; None where it would return an error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or hostport[end + 1 : end + 2] != ":":
            return None
        host, port = hostport[1:end], hostport[end + 2 :]
        if "[" in hostport[1:] or "]" in hostport[end + 1 :]:
            return None
        return host, port
    host, sep, port = hostport.rpartition(":")
    if not sep or ":" in host or "[" in hostport or "]" in hostport:
        return None
    return host, port


def _normalize_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_host(value: str) -> HostAddr:
    """Parse one CORRAL_HOST / OLLAMA_HOST value (rules 1-5 of the module docstring)."""
    text = _trim(value)
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport, slash, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        host, port_text = "127.0.0.1", ""
        ip = _normalize_ip(hostport.strip("[]"))
        if ip is not None:
            host = ip
        elif hostport:
            host = hostport
    else:
        host, port_text = split
    port = default_port
    if _PORT_RE.fullmatch(port_text) and 0 <= int(port_text) <= 65535:
        port = int(port_text)
    return HostAddr(scheme, host, port, f"/{path}" if slash and path else "")
