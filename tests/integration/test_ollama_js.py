"""The real `ollama` JavaScript library (npm, pinned in tests/js) against corral, run with Node.js.

The package comes from whatever npm registry the machine is configured with: `npm ci` into
tests/js/node_modules (git-ignored) when it is missing or holds another version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.models import SMOL, smol_and_embed_server
from tests.support.server import REPO, ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.llama, pytest.mark.timeout(420)]

JS = REPO / "tests" / "js"


def _installed_version() -> str | None:
    manifest = JS / "node_modules" / "ollama" / "package.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text())["version"])


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed to test the JavaScript client")
    pinned = json.loads((JS / "package.json").read_text())["dependencies"]["ollama"]
    if _installed_version() != pinned:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    assert _installed_version() == pinned
    return node


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, tiny_embed_gguf: Path
) -> Iterator[ServerProcess]:
    pytest.importorskip("llama_cpp")
    root = tmp_path_factory.mktemp("js")
    with smol_and_embed_server(root, smollm2_gguf, tiny_embed_gguf) as srv:
        yield srv


def test_ollama_js_chat_stream_generate_embed_list(node: str, server: ServerProcess) -> None:
    done = subprocess.run(
        [node, "conformance.mjs", server.url, SMOL, "tiny-embed"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    chat = seen["chat"]
    assert chat["parts"] > 1 and chat["roles"] == ["assistant"] and "Paris" in chat["text"]
    assert chat["done"] == [False] * (chat["parts"] - 1) + [True]
    assert chat["last"]["done_reason"] in ("stop", "length") and chat["last"]["eval_count"] > 0
    assert chat["whole"] == chat["text"]
    generate = seen["generate"]
    assert generate["parts"] > 1 and generate["whole"] == generate["text"]
    assert generate["last"]["done"] and generate["last"]["context"]
    assert seen["embed"] == {"model": "tiny-embed", "lengths": [64, 64]}
    assert {SMOL, "tiny-embed:latest"} <= set(seen["list"])
    assert seen["version"]
    assert seen["missing"]["name"] == "ResponseError" and seen["missing"]["status"] == 404
