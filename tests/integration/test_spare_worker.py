"""The spare worker: started ahead of need, adopted by the next cold load, then replaced.

Real supervisor and worker processes with the fake backend; the spare is on (the product's
default; the other suites turn it off so they can count model workers).
"""

from __future__ import annotations

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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _spares(server: ServerProcess) -> list[psutil.Process]:
    """Live spare-started worker processes (an adopted spare keeps `--spare` in its argv)."""
    found = []
    for child in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "--spare" in child.cmdline():
                found.append(child)
        except psutil.Error:  # it exited while we looked
            continue
    return found


def _one_spare(server: ServerProcess) -> psutil.Process:
    wait_for(lambda: len(_spares(server)) == 1)
    (spare,) = _spares(server)
    return spare


@pytest.fixture
def spare_server(
    models_dir: Path, tiny_gguf: Path, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    env = {
        "CORRAL_WORKER_BACKEND": "fake",
        "CORRAL_NUM_PARALLEL": "1",
        "CORRAL_SPARE_WORKER": "1",
    }
    marker = request.node.get_closest_marker("worker_args")
    if marker is not None:
        env["CORRAL_WORKER_ARGS"] = marker.args[0]
    with run_server(models_dir, env=env) as srv:
        with ollama.Client(host=srv.url) as client:
            create_from_gguf(client, "tiny", tiny_gguf)
        yield srv


def _generate(server: ServerProcess) -> str:
    with ollama.Client(host=server.url) as client:
        return client.generate(model="tiny", prompt="hi").response


def test_a_cold_load_adopts_the_spare_and_a_new_spare_follows(
    spare_server: ServerProcess,
) -> None:
    first = _one_spare(spare_server)
    assert _generate(spare_server) == "Hello, world! café"
    log = spare_server.log()
    assert "worker adopting spare model=tiny:latest" in log
    assert "worker starting model=" not in log
    assert "event=start backend=fake model=tiny:latest" in log and "spare=True" in log
    # The adopted process is now tiny's worker; a fresh spare replaces it.
    wait_for(lambda: [p.pid for p in _spares(spare_server)] not in ([], [first.pid]))
    assert first.is_running()
    with ollama.Client(host=spare_server.url) as client:
        assert [m.model for m in client.ps().models] == ["tiny:latest"]
        client.generate(model="tiny", prompt="", keep_alive=0)
    wait_for(lambda: not first.is_running() or first.status() == psutil.STATUS_ZOMBIE)


def test_a_dead_spare_is_never_used(spare_server: ServerProcess) -> None:
    spare = _one_spare(spare_server)
    spare.send_signal(signal.SIGKILL)
    wait_for(lambda: not _spares(spare_server))
    assert _generate(spare_server) == "Hello, world! café"
    assert "worker starting model=tiny:latest" in spare_server.log()
    assert "worker adopting spare" not in spare_server.log()


def test_the_spare_goes_with_the_supervisor(spare_server: ServerProcess) -> None:
    spare = _one_spare(spare_server)
    spare_server.proc.send_signal(signal.SIGKILL)
    spare_server.proc.wait()
    wait_for(lambda: not spare.is_running() or spare.status() == psutil.STATUS_ZOMBIE, timeout_s=20)


def test_a_stopping_supervisor_stops_its_spare(spare_server: ServerProcess) -> None:
    spare = _one_spare(spare_server)
    spare_server.proc.send_signal(signal.SIGTERM)
    assert spare_server.proc.wait(timeout=20) == 0
    wait_for(lambda: not spare.is_running() or spare.status() == psutil.STATUS_ZOMBIE, timeout_s=20)


@pytest.mark.parametrize("setting", ["0", "false"])
def test_the_spare_can_be_turned_off(models_dir: Path, setting: str) -> None:
    env = {"CORRAL_WORKER_BACKEND": "fake", "CORRAL_SPARE_WORKER": setting}
    with run_server(models_dir, env=env) as srv:
        time.sleep(0.5)  # a spare starts as the server does (delay 0): it would be here
        assert not _spares(srv)
        assert "spare worker started" not in srv.log()
        assert httpx.get(srv.url + "/api/version", timeout=10).status_code == 200


@pytest.mark.worker_args("--fake-crash load")
def test_a_spare_that_fails_its_load_reports_like_any_worker(
    spare_server: ServerProcess,
) -> None:
    _one_spare(spare_server)
    answer = httpx.post(
        spare_server.url + "/api/generate",
        json={"model": "tiny", "prompt": "x", "stream": False},
        timeout=60,
    )
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert "tiny:latest" in error and "crashing during load" in error
    assert "worker adopting spare model=tiny:latest" in spare_server.log()
    assert httpx.get(spare_server.url + "/api/tags", timeout=10).status_code == 200
