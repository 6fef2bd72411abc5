"""The `corral` command against a real server (fake-backend workers), as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, run_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def server(models_dir: Path) -> Iterator[ServerProcess]:
    with run_server(models_dir, env={"CORRAL_WORKER_BACKEND": "fake"}) as srv:
        yield srv


def corral(
    server: ServerProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "OLLAMA_"))}
    env["CORRAL_HOST"] = server.url
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_create_list_show_run_ps_stop_cp_rm(
    server: ServerProcess, tiny_gguf: Path, tmp_path: Path
) -> None:
    (tmp_path / "weights").mkdir()
    gguf = tmp_path / "weights" / "tiny.gguf"
    gguf.write_bytes(tiny_gguf.read_bytes())
    modelfile = tmp_path / "weights" / "Modelfile"
    modelfile.write_text('FROM ./tiny.gguf\nSYSTEM """Be brief."""\nPARAMETER temperature 0.2\n')

    created = corral(server, "create", "tiny", "-f", str(modelfile))
    assert created.returncode == 0, created.stderr
    assert "success" in created.stdout + created.stderr

    listed = corral(server, "list")
    assert listed.returncode == 0 and "tiny:latest" in listed.stdout
    assert listed.stdout.splitlines()[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]

    shown = corral(server, "show", "tiny", "--system")
    assert shown.returncode == 0 and shown.stdout == "Be brief."
    params = corral(server, "show", "tiny", "--parameters")
    assert "temperature" in params.stdout and "0.2" in params.stdout

    ran = corral(server, "run", "tiny", "say", "hi")
    assert ran.returncode == 0, ran.stderr
    assert "Hello, world! café" in ran.stdout
    piped = corral(server, "run", "tiny", stdin="from a pipe")
    assert "Hello, world! café" in piped.stdout

    ps = corral(server, "ps")
    assert ps.returncode == 0 and "tiny:latest" in ps.stdout and "100% CPU" in ps.stdout
    assert corral(server, "stop", "tiny").returncode == 0

    copied = corral(server, "cp", "tiny", "tiny2")
    assert copied.stdout.strip() == "copied 'tiny' to 'tiny2'"
    removed = corral(server, "rm", "tiny", "tiny2")
    assert "deleted 'tiny'" in removed.stdout and "deleted 'tiny2'" in removed.stdout
    assert "tiny" not in corral(server, "list").stdout


def test_cli_errors_are_one_line_without_traceback(server: ServerProcess) -> None:
    missing = corral(server, "show", "nosuch")
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    assert "not found" in missing.stderr
    bad = corral(server, "create", "x", "-f", "/nonexistent/Modelfile")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_cli_version_reports_the_server(server: ServerProcess) -> None:
    out = corral(server, "--version")
    assert out.returncode == 0 and out.stdout.startswith("corral version is ")
