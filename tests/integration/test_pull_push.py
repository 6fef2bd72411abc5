"""Pull and push against a real registry (Debian's docker-registry), through real servers.

A model created in one corral store is pushed (by the official ``ollama`` client and by
the ``corral`` CLI) and pulled into a second store with identical bytes, then run. A pull
cut off by killing the server resumes without fetching again what it had; a registry
serving a blob that does not match its digest leaves the store untouched; Basic
credentials come from CORRAL_REGISTRY_AUTH.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from registry.auth import Authenticator, Credential
from registry.client import RegistryClient, Timeouts
from registry.digest import sha256_digest
from registry.errors import RegistryUnavailable, Unauthorized
from registry.manifest import LAYER_MODEL, MEDIA_TYPE_CONFIG, Layer, Manifest
from registry.names import ModelName
from registry.pull import BlobDownloads, start_pull
from registry.push import start_push
from registry.store import ModelStore
from registry.transfer import TransferPolicy
from tests.support.models import create_from_gguf
from tests.support.oci_registry import OciRegistry, TcpGate, run_registry
from tests.support.server import ServerProcess, run_server, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MiB = 1024 * 1024
FAKE = {"CORRAL_WORKER_BACKEND": "fake"}
USER, PASSWORD = "corral", "corral-test-pw"
# bcrypt of PASSWORD (distribution's htpasswd accepts only bcrypt), made once offline.
PASSWORD_HASH = "$2b$04$lilrhsBp6vP2UYjbuV0Ds.iG2OcrUxE6AGALYfWP1vwRwOXtCnMRS"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[OciRegistry]:
    with run_registry(tmp_path / "registry") as reg:
        yield reg


def _store_dir(tmp_path: Path, label: str) -> Path:
    path = tmp_path / label / "models"
    path.mkdir(parents=True)
    return path


def _manifest_file(models: Path, name: str) -> Path:
    host, namespace, model, tag = ModelName.parse(name).parts()
    return models / "manifests" / host / namespace / model / tag


def _stored_files(models: Path) -> list[str]:
    return sorted(str(p.relative_to(models)) for p in models.rglob("*") if p.is_file())


def _corral(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "OLLAMA_"))}
    env["CORRAL_HOST"] = server.url
    command = [sys.executable, "-m", "cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _local_model(models: Path, name: str, weights: bytes) -> Manifest:
    """Write a model straight into a store: ``weights`` as its model layer, plus a config."""
    store = ModelStore(models)
    digest, size = store.write_blob_bytes(weights)
    cdigest, csize = store.write_blob_bytes(b'{"model_format":"gguf","model_family":"x"}\n')
    manifest = Manifest(
        config=Layer(MEDIA_TYPE_CONFIG, cdigest, csize), layers=(Layer(LAYER_MODEL, digest, size),)
    )
    store.write_manifest(ModelName.parse(name), manifest.to_bytes())
    return manifest


def _push_in_process(
    models: Path, name: str, credentials: dict[str, Credential] | None = None
) -> None:
    async def push() -> None:
        async with RegistryClient(Authenticator(credentials)) as client:
            lines = start_push(ModelStore(models), client, ModelName.parse(name), insecure=True)
            assert [line.status async for line in lines][-1] == "success"

    asyncio.run(push())


def test_push_then_pull_into_a_second_store_and_run(
    registry: OciRegistry, tmp_path: Path, tiny_gguf: Path
) -> None:
    name = f"{registry.host}/library/tiny:latest"
    derived = f"{registry.host}/alice/tiny2:latest"
    models_a, models_b = _store_dir(tmp_path, "a"), _store_dir(tmp_path, "b")
    with run_server(models_a, env=FAKE) as a, ollama.Client(host=a.url) as client_a:
        create_from_gguf(client_a, name, tiny_gguf, system="Be brief.")
        pushed = list(client_a.push(name, insecure=True, stream=True))
        statuses = [p.status for p in pushed]
        assert statuses[0] == "retrieving manifest"
        assert statuses[-2:] == ["pushing manifest", "success"]
        assert any(p.digest and p.total and p.completed == p.total for p in pushed)

        done = client_a.create(model=derived, from_=name, system="Be briefer.")
        assert done.status == "success"
        cli_push = _corral(a, "push", derived, "--insecure")
        assert cli_push.returncode == 0, cli_push.stderr
        assert "success" in cli_push.stdout + cli_push.stderr
    # The derived model's weights were mounted from library/tiny, not uploaded again.
    assert re.search(r'"POST /v2/alice/tiny2/blobs/uploads/\?[^"]*mount=[^"]*" 201', registry.log())

    manifest_a = _manifest_file(models_a, name).read_bytes()
    with run_server(models_b, env=FAKE) as b, ollama.Client(host=b.url) as client_b:
        pulled = list(client_b.pull(name, insecure=True, stream=True))
        statuses = [p.status for p in pulled]
        assert statuses[0] == "pulling manifest"
        assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
        assert _manifest_file(models_b, name).read_bytes() == manifest_a
        for digest in Manifest.parse(manifest_a).digests():
            blob = (models_b / "blobs" / digest.replace(":", "-")).read_bytes()
            assert sha256_digest(blob) == digest
        (entry,) = client_b.list().models
        assert entry.digest == hashlib.sha256(manifest_a).hexdigest()
        answer = client_b.generate(model=name, prompt="hello", options={"num_predict": 4})
        assert answer.done

        again = client_b.pull(name, insecure=True)  # stream false: one answer, all cached
        assert again.status == "success"
        cli_pull = _corral(b, "pull", derived, "--insecure")
        assert cli_pull.returncode == 0, cli_pull.stderr
        assert _manifest_file(models_b, derived).is_file()
        _check_refusals(b, registry)


def _check_refusals(server: ServerProcess, registry: OciRegistry) -> None:
    """Clear errors, before any output where the request itself is wrong."""
    insecure = httpx.post(
        server.url + "/api/pull", json={"model": f"http://{registry.host}/library/tiny"}
    )
    assert (insecure.status_code, insecure.json()) == (400, {"error": "insecure protocol http"})
    bad = httpx.post(server.url + "/api/pull", json={"model": "../../etc/passwd"})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid model name"})
    upper = f"{registry.host}/Library/Tiny:latest"
    refused = httpx.post(server.url + "/api/push", json={"model": upper, "insecure": True})
    assert refused.status_code == 400 and "lower-case" in refused.json()["error"]
    missing = f"{registry.host}/library/nope"
    with ollama.Client(host=server.url) as client, pytest.raises(ollama.ResponseError) as error:
        list(client.pull(missing, insecure=True, stream=True))
    assert "pull model manifest: file does not exist" in str(error.value)


def _sidecar_completed(path: Path) -> int:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return 0
    return sum(done for _, _, done in doc["parts"])


@contextlib.contextmanager
def _pulling(server: ServerProcess, name: str, completed: int) -> Iterator[None]:
    """A streamed pull, read until a line reports ``completed`` bytes, open until the block
    ends; leaving the block disconnects."""
    body = {"model": name, "insecure": True}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", server.url + "/api/pull", json=body) as reply,
    ):
        for line in reply.iter_lines():
            if json.loads(line).get("completed", 0) >= completed:
                break
        else:
            raise AssertionError("the pull ended early")
        yield


def test_pull_cut_off_by_a_kill_or_a_disconnect_resumes(
    registry: OciRegistry, tmp_path: Path
) -> None:
    weights = os.urandom(48 * MiB)
    digest = sha256_digest(weights)
    source = _store_dir(tmp_path, "source")
    _local_model(source, f"{registry.host}/library/big:latest", weights)
    _push_in_process(source, f"{registry.host}/library/big:latest")
    models = _store_dir(tmp_path, "b")
    sidecar = models / "blobs" / f".partial-sha256-{digest[7:]}.json"

    with TcpGate(int(registry.host.rsplit(":", 1)[1])) as gate:
        name = f"127.0.0.1:{gate.port}/library/big:latest"
        # 1. The server is killed mid-download, its pull still streaming.
        gate.hold_after(20 * MiB)
        with run_server(models, env=FAKE) as server, _pulling(server, name, 8 * MiB):
            wait_for(lambda: _sidecar_completed(sidecar) >= 8 * MiB, "the saved state", 60)
            server.proc.kill()
            server.proc.wait()
        killed_at = _sidecar_completed(sidecar)
        assert 8 * MiB <= killed_at < len(weights)
        assert not (models / "blobs" / digest.replace(":", "-")).exists()

        # 2. The API client goes away: the server stops downloading and keeps its state.
        gate.hold_after(16 * MiB)
        with run_server(models, env=FAKE) as server:
            with _pulling(server, name, killed_at + 4 * MiB):
                pass
            wait_for(lambda: gate.connections == 0, "the server to drop its downloads", 60)
            # The cancelled download saves its state as it unwinds, just after the sockets close.
            wait_for(
                lambda: _sidecar_completed(sidecar) >= killed_at + 4 * MiB, "the saved state", 60
            )
            left_at = _sidecar_completed(sidecar)

            # 3. The next pull fetches only what is missing.
            gate.hold_after(None)
            gate.reset()
            with ollama.Client(host=server.url) as client:
                pulled = list(client.pull(name, insecure=True, stream=True))
        assert pulled[-1].status == "success"
        resumed = [p.completed for p in pulled if p.digest == digest and p.completed]
        assert resumed[0] >= left_at
        # Only the missing bytes crossed the wire again (plus manifest, config and headers).
        missing = len(weights) - left_at
        assert missing <= gate.downstream_bytes <= missing + 256 * 1024
    blob = models / "blobs" / digest.replace(":", "-")
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest[7:]
    assert not any(p.name.startswith(".partial") for p in (models / "blobs").iterdir())


def test_pull_of_a_corrupted_blob_leaves_the_store_unchanged(
    registry: OciRegistry, tmp_path: Path
) -> None:
    weights = os.urandom(3 * MiB)
    name = f"{registry.host}/library/bad:latest"
    source = _store_dir(tmp_path, "source")
    _local_model(source, name, weights)
    _push_in_process(source, name)
    data = registry.blob_data(sha256_digest(weights))
    data.write_bytes(os.urandom(len(weights)))  # the registry now serves other bytes

    models = _store_dir(tmp_path, "b")
    with run_server(models, env=FAKE) as server, ollama.Client(host=server.url) as client:
        with pytest.raises(ollama.ResponseError, match="digest mismatch"):
            list(client.pull(name, insecure=True, stream=True))
        body = {"model": name, "insecure": True, "stream": False}
        once = httpx.post(server.url + "/api/pull", json=body)
        assert once.status_code == 500 and "digest mismatch" in once.json()["error"]
    assert _stored_files(models) == []


def test_basic_auth_credentials_come_from_settings(tmp_path: Path) -> None:
    with run_registry(tmp_path / "registry", htpasswd=(USER, PASSWORD_HASH)) as registry:
        name = f"{registry.host}/library/locked:latest"
        source = _store_dir(tmp_path, "source")
        _local_model(source, name, b"secret weights")
        with pytest.raises(Unauthorized, match="none is configured"):
            _push_in_process(source, name)
        _push_in_process(source, name, {registry.host: Credential(USER, PASSWORD)})

        models = _store_dir(tmp_path, "b")
        env = {**FAKE, "CORRAL_REGISTRY_AUTH": f"{registry.host}={USER}:{PASSWORD}"}
        with run_server(models, env=env) as server, ollama.Client(host=server.url) as client:
            done = client.pull(name, insecure=True)
            assert done.status == "success"
            assert PASSWORD not in server.log()
        assert (
            _manifest_file(models, name).read_bytes() == _manifest_file(source, name).read_bytes()
        )

        async def anonymous_pull() -> None:
            async with RegistryClient() as client:
                store = ModelStore(_store_dir(tmp_path, "c"))
                lines = start_pull(
                    store, client, BlobDownloads(), ModelName.parse(name), insecure=True
                )
                async for _ in lines:
                    pass

        with pytest.raises(Unauthorized, match="none is configured"):
            asyncio.run(anonymous_pull())


def test_pull_stalled_registry_is_retried_then_resumed(
    registry: OciRegistry, tmp_path: Path
) -> None:
    weights = os.urandom(12 * MiB)
    source = _store_dir(tmp_path, "source")
    _local_model(source, f"{registry.host}/library/slow:latest", weights)
    _push_in_process(source, f"{registry.host}/library/slow:latest")
    store = ModelStore(_store_dir(tmp_path, "b"))
    policy = TransferPolicy(retries=2, backoff_s=0.0, save_interval_s=0.01)

    async def pull(name: str) -> list[str]:
        async with RegistryClient(timeouts=Timeouts(connect_s=5, stall_s=0.3)) as client:
            lines = start_pull(
                store, client, BlobDownloads(), ModelName.parse(name), insecure=True, policy=policy
            )
            return [line.status async for line in lines]

    with TcpGate(int(registry.host.rsplit(":", 1)[1])) as gate:
        name = f"127.0.0.1:{gate.port}/library/slow:latest"
        gate.hold_after(3 * MiB)  # the registry goes silent part-way
        with pytest.raises(RegistryUnavailable, match="max retries exceeded.*timed out"):
            asyncio.run(pull(name))
        state = next(store.blobs_dir.glob(".partial-*.json"))
        saved = _sidecar_completed(state)
        assert 0 < saved < len(weights)

        gate.hold_after(None)
        gate.reset()
        assert asyncio.run(pull(name))[-1] == "success"
        assert len(weights) - saved <= gate.downstream_bytes <= len(weights) - saved + 64 * 1024
    assert store.blob_path(sha256_digest(weights)).read_bytes() == weights


def test_create_from_a_model_not_in_the_store_pulls_it_first(
    registry: OciRegistry, tmp_path: Path, tiny_gguf: Path
) -> None:
    source = _store_dir(tmp_path, "source")
    remote = f"{registry.host}/library/tiny:latest"
    _local_model(source, remote, tiny_gguf.read_bytes())
    _push_in_process(source, remote)
    with run_server(_store_dir(tmp_path, "b"), env=FAKE) as server:
        with ollama.Client(host=server.url) as client:
            lines = list(
                client.create(
                    model="derived", from_=f"http://{remote}", system="Be brief.", stream=True
                )
            )
            statuses = [line.status for line in lines]
            assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
            assert {m.model for m in client.list().models} == {remote, "derived:latest"}
            assert client.generate(model="derived", prompt="hi").done
