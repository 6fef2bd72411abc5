"""Put models into a running server through its own API, the way `corral create` does."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import ollama

from tests.support.server import ServerProcess, run_server


def create_from_gguf(client: ollama.Client, name: str, gguf: Path, **fields: object) -> None:
    """Upload `gguf` as a blob (if missing) and create model `name` from it."""
    digest = client.create_blob(gguf)
    done = client.create(model=name, files={gguf.name: digest}, **fields)  # type: ignore[arg-type]
    assert done.status == "success"


SMOL = "smollm2:135m"


@contextlib.contextmanager
def smol_and_embed_server(root: Path, smollm2: Path, embed: Path) -> Iterator[ServerProcess]:
    """A real-engine server holding SmolLM2 (as `smollm2:135m`) and the tiny embedding model."""
    models = root / "models"
    models.mkdir()
    env = {"CORRAL_CONTEXT_LENGTH": "1024", "CORRAL_NUM_PARALLEL": "1"}
    with run_server(models, env=env) as srv:
        with ollama.Client(host=srv.url) as client:
            create_from_gguf(client, SMOL, smollm2)
            create_from_gguf(client, "tiny-embed", embed)
        yield srv


# What the fake backend says as an agent: a thought, then one tool call, in pieces that
# cut the JSON (so parsing must reassemble it).
AGENT_PIECES = [
    "<think>",
    "Need the weather.",
    "</think>",
    "<tool_call>\n",
    '{"name": "get_weather", ',
    '"arguments": {"city": "Paris"}}',
    "\n</tool_call>",
]


def fake_agent_env(root: Path) -> dict[str, str]:
    """Server settings for fake-backend workers that answer with AGENT_PIECES."""
    pieces = root / "pieces.json"
    pieces.write_text(json.dumps(AGENT_PIECES))
    return {
        "CORRAL_WORKER_BACKEND": "fake",
        "CORRAL_NUM_PARALLEL": "1",
        "CORRAL_WORKER_ARGS": f"--fake-tokens-file {pieces}",
    }
