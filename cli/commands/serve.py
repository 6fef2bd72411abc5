"""``corral serve``: replace this process with the server, ``python -m supervisor``."""

from __future__ import annotations

import os
import sys

import click


@click.command("serve")
def serve() -> None:
    """Start the corral server (settings come from CORRAL_* / OLLAMA_* variables)."""
    # execv keeps the pid and the environment, so signals and CORRAL_* reach the server.
    os.execv(sys.executable, [sys.executable, "-m", "supervisor"])
