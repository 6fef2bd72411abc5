"""CORRAL_HOST / OLLAMA_HOST for the CLI: the one place the CLI reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from registry.hostaddr import HostAddr, parse_host

__all__ = ["ENV_NAMES", "HostAddr", "client_base_url", "host_value", "parse_host"]

ENV_NAMES = ("CORRAL_HOST", "OLLAMA_HOST")


def host_value(environ: Mapping[str, str]) -> str:
    """The raw host setting: CORRAL_HOST when set and not blank, else OLLAMA_HOST."""
    for name in ENV_NAMES:
        value = environ.get(name, "")
        if value.strip().strip("\"'").strip():
            return value
    return ""


def client_base_url(environ: Mapping[str, str] = os.environ) -> str:
    """The base URL the CLI talks to, from the environment, unspecified hosts as loopback."""
    return parse_host(host_value(environ)).for_client().base_url
