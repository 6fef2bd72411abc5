"""CORRAL_STREAM_INTERVAL_MS from the server's environment to the worker's engine.

The fake backend's steps take microseconds, so with a long interval everything after the
first chunk waits for the request's end and leaves joined into one line; with 0 every
piece is its own line. The text is the same either way. The setting reaches a worker by
argv, or by the Load message when a spare worker is adopted; both are run.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import ollama
import pytest

from tests.support.models import create_from_gguf
from tests.support.server import run_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BODY = {"model": "tiny", "prompt": "hi", "raw": True, "stream": True}


def _stream_lines(tmp_path: Path, tiny_gguf: Path, env: dict[str, str]) -> list[dict[str, object]]:
    models = tmp_path / "models"
    models.mkdir()
    env = {"CORRAL_WORKER_BACKEND": "fake", "CORRAL_NUM_PARALLEL": "1", **env}
    with run_server(models, env=env) as srv:
        with ollama.Client(host=srv.url) as client:
            create_from_gguf(client, "tiny", tiny_gguf)
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            with http.stream("POST", "/api/generate", json=BODY) as response:
                assert response.status_code == 200
                return [json.loads(line) for line in response.iter_lines() if line]


def _text(lines: list[dict[str, object]]) -> str:
    return "".join(str(line["response"]) for line in lines)


def test_interval_zero_sends_each_piece_as_its_own_line(tmp_path: Path, tiny_gguf: Path) -> None:
    lines = _stream_lines(tmp_path, tiny_gguf, {"CORRAL_STREAM_INTERVAL_MS": "0"})
    assert _text(lines) == "Hello, world! café"
    assert [line["response"] for line in lines[:4]] == ["Hello", ",", " world", "!"]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 7


@pytest.mark.parametrize("spare", ["0", "1"], ids=["argv", "spare"])
def test_a_long_interval_joins_what_follows_the_first_chunk(
    tmp_path: Path, tiny_gguf: Path, spare: str
) -> None:
    env = {"CORRAL_STREAM_INTERVAL_MS": "60000", "CORRAL_SPARE_WORKER": spare}
    lines = _stream_lines(tmp_path, tiny_gguf, env)
    assert [line["response"] for line in lines] == ["Hello", ", world! café", ""]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 7
