"""What every command shares: the per-invocation ``AppState`` (client factory, consoles, clock).

Tests build an ``AppState`` whose ``make_client`` returns a ``Client`` on an
``httpx.MockTransport`` and pass it as click's ``obj``; nothing is patched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import click
from rich.console import Console

from cli.client import ApiError, Client, ClientError
from cli.hostaddr import client_base_url
from cli.render import make_console
from registry.errors import RegistryError


class CommandError(Exception):
    """A failure the command explains in one line; printed as ``Error: <message>``."""


def error_message(exc: BaseException) -> str:
    """One readable line for any failure."""
    if isinstance(exc, ApiError):
        return exc.message
    if isinstance(exc, ClientError | CommandError | RegistryError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def default_client() -> Client:
    """A client for the server named by CORRAL_HOST / OLLAMA_HOST."""
    return Client(client_base_url())


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AppState:
    """Built once per invocation (click's ``obj``); the commands' only way to the world."""

    make_client: Callable[[], Client] = default_client
    out: Console = field(default_factory=make_console)
    err: Console = field(default_factory=lambda: make_console(stderr=True))
    now: Callable[[], datetime] = utc_now
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        """The one client of this invocation, made on first use."""
        if self._client is None:
            self._client = self.make_client()
        return self._client


pass_state = click.make_pass_decorator(AppState, ensure=True)
