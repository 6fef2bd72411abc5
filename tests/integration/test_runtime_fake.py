"""The supervisor running real worker processes with the fake backend: lifecycle and failures."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import psutil
import pytest

from tests.support.models import create_from_gguf
from tests.support.server import ServerProcess, run_server, wait_for
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SLOW = "--fake-delay-ms 50 --fake-tokens " + ",".join(f"t{i}" for i in range(400))


def _workers(server: ServerProcess) -> list[psutil.Process]:
    children = psutil.Process(server.proc.pid).children(recursive=True)
    return [c for c in children if "worker" in c.cmdline()]


@pytest.fixture
def fake_server(
    models_dir: Path, tiny_gguf: Path, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    marker = request.node.get_closest_marker("worker_args")
    env = {"CORRAL_WORKER_BACKEND": "fake", "CORRAL_NUM_PARALLEL": "1"}
    if marker is not None:
        env["CORRAL_WORKER_ARGS"] = marker.args[0]
    with run_server(models_dir, env=env) as srv:
        with ollama.Client(host=srv.url) as client:
            create_from_gguf(client, "tiny", tiny_gguf)
        yield srv


def test_generate_and_chat_stream_through_the_ollama_client(fake_server: ServerProcess) -> None:
    with ollama.Client(host=fake_server.url) as client:
        parts = list(client.generate(model="tiny", prompt="hi", stream=True))
        assert "".join(p.response for p in parts) == "Hello, world! café"
        assert parts[-1].done and parts[-1].done_reason == "stop"
        assert parts[-1].eval_count and parts[-1].prompt_eval_count
        chat = list(
            client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True)
        )
        assert "".join(c.message.content or "" for c in chat) == "Hello, world! café"
        whole = client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}])
        assert whole.message.content == "Hello, world! café" and whole.done
        loaded = client.ps().models
        assert [m.model for m in loaded] == ["tiny:latest"]
        assert loaded[0].context_length and loaded[0].size_vram == 0


def test_empty_prompt_loads_and_keep_alive_zero_unloads(fake_server: ServerProcess) -> None:
    with ollama.Client(host=fake_server.url) as client:
        loaded = client.generate(model="tiny", prompt="")
        assert loaded.done_reason == "load"
        assert len(_workers(fake_server)) == 1
        unloaded = client.generate(model="tiny", prompt="", keep_alive=0)
        assert unloaded.done_reason == "unload"
        wait_for(lambda: not _workers(fake_server))
        wait_for(lambda: client.ps().models == [])


@pytest.mark.worker_args("--fake-delay-ms 100")
def test_two_models_each_in_its_own_process(fake_server: ServerProcess, tmp_path: Path) -> None:
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=7)
    with ollama.Client(host=fake_server.url) as client:
        create_from_gguf(client, "other", other)
        client.generate(model="tiny", prompt="x")
        stream = client.generate(model="other", prompt="x", stream=True, keep_alive=0)
        next(stream)
        assert sorted(m.model for m in client.ps().models) == ["other:latest", "tiny:latest"]
        procs = _workers(fake_server)
        assert len(procs) == 2 and len({p.pid for p in procs}) == 2
        assert {p.cmdline()[p.cmdline().index("--model-name") + 1] for p in procs} == {
            "tiny:latest",
            "other:latest",
        }
        for _ in stream:
            pass
        wait_for(lambda: [m.model for m in client.ps().models] == ["tiny:latest"])
        wait_for(lambda: len(_workers(fake_server)) == 1)


@pytest.mark.worker_args(SLOW)
def test_worker_killed_mid_stream_is_an_error_line_then_recovers(
    fake_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=fake_server.url, timeout=60) as http:
        with http.stream("POST", "/api/generate", json={"model": "tiny", "prompt": "x"}) as resp:
            lines = resp.iter_lines()
            assert json.loads(next(lines))["done"] is False
            (worker,) = _workers(fake_server)
            worker.send_signal(signal.SIGKILL)
            rest = [json.loads(line) for line in lines if line]
        assert resp.status_code == 200
        assert "error" in rest[-1] and "tiny:latest" in rest[-1]["error"]
        assert fake_server.proc.poll() is None
        again = http.post(
            "/api/generate",
            json={"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 2}},
        )
        assert again.status_code == 200 and again.json()["done"] is True


@pytest.mark.worker_args(SLOW)
def test_client_disconnect_cancels_the_request_in_the_worker(fake_server: ServerProcess) -> None:
    with httpx.Client(base_url=fake_server.url, timeout=60) as http:
        with http.stream("POST", "/api/generate", json={"model": "tiny", "prompt": "x"}) as resp:
            lines = resp.iter_lines()
            next(lines)
            next(lines)
        # The single slot frees only if the worker stopped the first stream (20 s of tokens).
        started = time.monotonic()
        quick = http.post(
            "/api/generate",
            json={"model": "tiny", "prompt": "y", "stream": False, "options": {"num_predict": 2}},
        )
        assert quick.status_code == 200
        assert time.monotonic() - started < 10


@pytest.mark.worker_args("--fake-crash load")
def test_worker_crash_during_load_names_the_model_and_quotes_stderr(
    fake_server: ServerProcess,
) -> None:
    answer = httpx.post(
        fake_server.url + "/api/generate",
        json={"model": "tiny", "prompt": "x", "stream": False},
        timeout=60,
    )
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert "tiny:latest" in error and "crashing during load" in error
    assert fake_server.proc.poll() is None
    assert httpx.get(fake_server.url + "/api/tags").status_code == 200


def test_killed_supervisor_leaves_no_worker_behind(fake_server: ServerProcess) -> None:
    httpx.post(fake_server.url + "/api/generate", json={"model": "tiny", "prompt": ""}, timeout=60)
    (worker,) = _workers(fake_server)
    fake_server.proc.send_signal(signal.SIGKILL)
    fake_server.proc.wait()
    wait_for(
        lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, timeout_s=20
    )


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/api/generate", {"model": "nosuch", "prompt": "x"}, 404, "model 'nosuch' not found"),
        ("/api/generate", {"model": "", "prompt": "x"}, 404, "model '' not found"),
        ("/api/chat", {"model": "", "messages": []}, 400, "model is required"),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "think": True},
            400,
            '"tiny:latest" does not support thinking',
        ),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "think": "loud"},
            400,
            'invalid think value: "loud"',
        ),
        (
            "/api/chat",
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            400,
            "does not support tools",
        ),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "keep_alive": "3600"},
            400,
            'time: missing unit in duration "3600"',
        ),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "format": "yaml"},
            400,
            "invalid format",
        ),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "options": {"num_ctx": "big"}},
            400,
            'option "num_ctx" must be of type integer',
        ),
        ("/api/generate", {"model": "tiny", "prompt": 7}, 400, '"prompt"'),
        (
            "/api/generate",
            {"model": "tiny", "prompt": "x", "raw": True, "system": "s"},
            400,
            "raw mode does not support template, system, or context",
        ),
        ("/api/embed", {"model": "tiny", "input": [1, 2]}, 400, "invalid input type"),
        ("/api/embeddings", {"model": "", "prompt": "x"}, 400, "model is required"),
    ],
)
def test_inference_requests_are_validated_before_loading(
    fake_server: ServerProcess, path: str, body: dict[str, object], status: int, message: str
) -> None:
    answer = httpx.post(fake_server.url + path, json=body, timeout=60)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert _workers(fake_server) == []


def test_format_schema_and_options_reach_the_worker(fake_server: ServerProcess) -> None:
    schema = {"type": "object", "properties": {"hello": {"type": "string"}}}
    with ollama.Client(host=fake_server.url) as client:
        answer = client.generate(model="tiny", prompt="x", format=schema)
        assert json.loads(answer.response) == {"hello": "world"}  # the fake's grammar output
        short = client.generate(model="tiny", prompt="x", options={"num_predict": 2})
        assert short.done_reason == "length" and short.eval_count == 2


@pytest.mark.worker_args("--fake-delay-ms 20")
def test_two_requests_for_a_cold_model_load_it_once(fake_server: ServerProcess) -> None:
    import concurrent.futures

    body = {"model": "tiny", "prompt": "x", "stream": False}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.post(fake_server.url + "/api/generate", json=body, timeout=60),
                range(2),
            )
        )
    assert [a.status_code for a in answers] == [200, 200]
    assert fake_server.log().count("worker starting model=tiny:latest") == 1


def test_load_timeout_kills_a_hung_worker(models_dir: Path, tiny_gguf: Path) -> None:
    env = {
        "CORRAL_WORKER_BACKEND": "fake",
        "CORRAL_WORKER_ARGS": "--fake-hang load",
        "CORRAL_LOAD_TIMEOUT": "2s",
    }
    with run_server(models_dir, env=env) as srv:
        with ollama.Client(host=srv.url) as client:
            create_from_gguf(client, "tiny", tiny_gguf)
        answer = httpx.post(
            srv.url + "/api/generate",
            json={"model": "tiny", "prompt": "x", "stream": False},
            timeout=60,
        )
        assert answer.status_code == 500 and "timed out after 2s loading" in answer.json()["error"]
        wait_for(lambda: not _workers(srv))
