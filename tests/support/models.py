"""Put models into a running server through its own API, the way `corral create` does."""

from __future__ import annotations

from pathlib import Path

import ollama


def create_from_gguf(client: ollama.Client, name: str, gguf: Path, **fields: object) -> None:
    """Upload `gguf` as a blob (if missing) and create model `name` from it."""
    digest = client.create_blob(gguf)
    done = client.create(model=name, files={gguf.name: digest}, **fields)  # type: ignore[arg-type]
    assert done.status == "success"
