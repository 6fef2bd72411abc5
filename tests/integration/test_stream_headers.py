"""Raw HTTP: the content types and headers browsers and proxies rely on, and chunks sent one by one.

The fake backend waits between its tokens (--fake-delay-ms), so a server that buffered its
stream would deliver several lines in the first read; one that flushes per chunk delivers
exactly one.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import psutil
import pytest

from tests.support.models import create_from_gguf
from tests.support.server import ServerProcess, run_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PIECES = ["one", "-two", "-three", "-four", "-five"]  # no spaces: the args split on them
SLOW = "--fake-delay-ms 400 --fake-tokens " + ",".join(PIECES)
MESSAGES = [{"role": "user", "content": "count"}]
ONE = {"num_predict": 1}


@pytest.fixture(scope="module")
def fake_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path
) -> Iterator[ServerProcess]:
    models = tmp_path_factory.mktemp("stream-headers") / "models"
    models.mkdir()
    env = {"CORRAL_WORKER_BACKEND": "fake", "CORRAL_NUM_PARALLEL": "1", "CORRAL_WORKER_ARGS": SLOW}
    with run_server(models, env=env) as srv:
        with ollama.Client(host=srv.url) as client:
            create_from_gguf(client, "tiny", tiny_gguf)
        yield srv


def _reads(response: httpx.Response) -> list[bytes]:
    return [chunk for chunk in response.iter_raw() if chunk]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/generate", {"model": "tiny", "prompt": "count"}),
        ("/api/chat", {"model": "tiny", "messages": MESSAGES}),
    ],
)
def test_ndjson_stream_headers_and_one_line_per_chunk(
    fake_server: ServerProcess, path: str, body: dict[str, object]
) -> None:
    with httpx.Client(base_url=fake_server.url, timeout=60) as http:
        with http.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson"
            assert response.headers["x-accel-buffering"] == "no"
            reads = _reads(response)
    first = reads[0]
    assert first.endswith(b"\n") and first.count(b"\n") == 1, first
    assert json.loads(first)["done"] is False
    lines = b"".join(reads).splitlines()
    assert len(lines) == len(PIECES) + 1 and json.loads(lines[-1])["done"] is True
    assert len(reads) > 2  # several flushes, not one buffered body


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {"model": "tiny", "messages": MESSAGES, "stream": True}),
        ("/v1/completions", {"model": "tiny", "prompt": "count", "stream": True}),
    ],
)
def test_sse_stream_headers_and_one_event_per_chunk(
    fake_server: ServerProcess, path: str, body: dict[str, object]
) -> None:
    with httpx.Client(base_url=fake_server.url, timeout=60) as http:
        with http.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["cache-control"] == "no-cache"
            reads = _reads(response)
    first = reads[0]
    assert first.startswith(b"data: {") and first.endswith(b"\n\n") and first.count(b"\n\n") == 1
    events = b"".join(reads).split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    assert all(e.startswith(b"data: ") for e in events[:-1])
    assert len(reads) > 2


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/generate", {"model": "tiny", "prompt": "x", "stream": False, "options": ONE}),
        ("/api/chat", {"model": "tiny", "messages": MESSAGES, "stream": False, "options": ONE}),
        ("/v1/chat/completions", {"model": "tiny", "messages": MESSAGES, "max_tokens": 1}),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 1}),
        ("/v1/chat/completions", {"model": "nosuch", "messages": MESSAGES, "stream": True}),
        ("/api/generate", {"model": "nosuch", "prompt": "x"}),
    ],
)
def test_whole_answers_and_early_errors_are_plain_json(
    fake_server: ServerProcess, path: str, body: dict[str, object]
) -> None:
    response = httpx.post(fake_server.url + path, json=body, timeout=60)
    assert response.headers["content-type"].startswith("application/json")
    assert response.status_code == (404 if body["model"] == "nosuch" else 200)
    assert response.json()


def _kill_worker(server: ServerProcess) -> None:
    children = psutil.Process(server.proc.pid).children(recursive=True)
    (worker,) = [c for c in children if "worker" in c.cmdline()]
    worker.send_signal(signal.SIGKILL)


def test_errors_after_the_first_byte_end_the_stream_in_band(fake_server: ServerProcess) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "stream": True}
    with httpx.Client(base_url=fake_server.url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            reads = response.iter_raw()
            first = next(reads)
            _kill_worker(fake_server)
            rest = b"".join(reads)
    assert response.status_code == 200
    assert json.loads(first.removeprefix(b"data: "))["choices"][0]["delta"]["role"]
    events = [e for e in rest.split(b"\n\n") if e]
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["type"] == "api_error" and "tiny:latest" in last["error"]["message"]


def test_a_rebound_host_name_is_refused_and_local_names_pass(fake_server: ServerProcess) -> None:
    # DNS rebinding: a page on evil.example whose name now points at 127.0.0.1.
    refused = httpx.get(fake_server.url + "/api/tags", headers={"Host": "evil.example"})
    assert refused.status_code == 403 and refused.content == b""
    port = fake_server.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"corral.localhost:{port}", f"127.0.0.1:{port}"):
        assert httpx.get(fake_server.url + "/api/tags", headers={"Host": host}).status_code == 200


def test_cors_marks_an_allowed_origins_stream_and_refuses_others(
    fake_server: ServerProcess,
) -> None:
    body = {"model": "tiny", "prompt": "x", "options": ONE}
    allowed = {"Origin": "http://localhost:5173"}
    with httpx.stream("POST", fake_server.url + "/api/generate", json=body, headers=allowed) as r:
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert r.headers["content-type"] == "application/x-ndjson"
        assert json.loads(r.read().splitlines()[-1])["done"] is True
    evil = {"Origin": "https://evil.example"}
    refused = httpx.post(fake_server.url + "/api/generate", json=body, headers=evil)
    assert refused.status_code == 403 and refused.content == b""
    preflight = httpx.options(
        fake_server.url + "/api/chat",
        headers={**allowed, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
