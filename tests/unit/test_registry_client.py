"""The registry client against an in-memory registry behind httpx.MockTransport.

Covers auth (Bearer realm rules, Basic), redirects, blobs served with a plain 200, parallel
ranged parts, resume after an interruption or a cancelled pull, shared downloads, digest
mismatch, body caps, hostile digests, pruning, and push (chunks, mounts, manifest last).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from registry.auth import Authenticator, Challenge, Credential, parse_challenges, token_url
from registry.client import RegistryClient
from registry.digest import sha256_digest
from registry.errors import (
    DigestMismatch,
    InsecureProtocol,
    InvalidManifest,
    InvalidName,
    ModelNotFound,
    RegistryError,
    RegistryUnavailable,
    RemoteError,
    ResponseTooLarge,
    Unauthorized,
)
from registry.manifest import LAYER_MODEL, LAYER_SYSTEM, MEDIA_TYPE_CONFIG, Layer, Manifest
from registry.names import ModelName
from registry.pull import BlobDownloads, start_pull
from registry.push import start_push
from registry.store import ModelStore
from registry.transfer import Progress, TransferPolicy
from registry.transfer_state import Part, PartialBlob, plan_parts
from supervisor.config import ConfigError, Settings

HOST = "registry.test"
NAME = f"{HOST}/library/m:latest"
KiB = 1024
_RANGE_RE = re.compile(r"bytes=(\d+)-(\d+)")
_PATH_RE = re.compile(r"/v2/(?P<repo>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)\Z")
_UPLOAD_RE = re.compile(r"/v2/(?P<repo>.+)/blobs/uploads/(?P<id>[^/]*)\Z")


class _Body(httpx.AsyncByteStream):
    """A blob body in 16 KiB chunks that can break (ReadError) or wait after some bytes."""

    def __init__(self, data: bytes, registry: FakeRegistry, digest: str, probe: bool) -> None:
        self._data, self._registry, self._digest, self._probe = data, registry, digest, probe

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reg, sent = self._registry, 0
        for i in range(0, len(self._data), 16 * KiB):
            if reg.break_after is not None and sent >= reg.break_after:
                raise httpx.ReadError("connection reset by peer")
            if reg.hold is not None and sent >= (reg.hold_after or 0):
                reg.holding.set()
                await reg.hold.wait()
            chunk = self._data[i : i + 16 * KiB]
            sent += len(chunk)
            if not self._probe:
                reg.served[self._digest] += len(chunk)
            yield chunk


class _Big(httpx.AsyncByteStream):
    """An endless-looking body that counts what was read of it."""

    def __init__(self, size: int) -> None:
        self.size, self.read = size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(0, self.size, 64 * KiB):
            self.read += 64 * KiB
            yield b"x" * (64 * KiB)


class FakeRegistry:
    """Manifests, blobs and uploads in memory, with switches for hostile or flaky behaviour."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.repo_blobs: dict[str, set[str]] = defaultdict(set)
        self.uploads: dict[str, bytearray] = {}
        self.requests: list[httpx.Request] = []
        self.served: dict[str, int] = defaultdict(int)
        """Blob body bytes read by clients, per digest; location probes not counted."""
        self.auth: str | None = None
        self.realm = f"https://{HOST}/token"
        self.token = "tok-1"
        self.login = ("alice", "s3cret")
        self.ranges = True
        self.redirect_to: str | None = None
        self.break_after: int | None = None
        self.hold: asyncio.Event | None = None
        self.hold_after: int | None = None
        self.holding = asyncio.Event()
        self.token_body: httpx.AsyncByteStream | None = None
        self.refuse_blobs = 0
        """Blob requests still to fail with a connection error."""

    def add_model(self, repo: str, tag: str, layers: list[tuple[str, bytes]]) -> bytes:
        config = b'{"model_format":"gguf"}\n'
        described = []
        for media, data in [*layers, (MEDIA_TYPE_CONFIG, config)]:
            digest = sha256_digest(data)
            self.blobs[digest] = data
            self.repo_blobs[repo].add(digest)
            described.append(Layer(media, digest, len(data)))
        manifest = Manifest(config=described[-1], layers=tuple(described[:-1]))
        raw = manifest.to_bytes()
        self.manifests[(repo, tag)] = (raw, manifest.media_type)
        return raw

    def _authorized(self, request: httpx.Request) -> bool:
        given = str(request.headers.get("authorization", ""))
        if self.auth == "bearer":
            return given == f"Bearer {self.token}"
        if self.auth == "basic":
            user, password = self.login
            return given == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return True

    def _challenge(self) -> httpx.Response:
        if self.auth == "basic":
            value = 'Basic realm="basic-realm"'
        else:
            value = (
                f'Bearer realm="{self.realm}",service="{HOST}",scope="repository:library/m:pull"'
            )
        return httpx.Response(401, headers={"WWW-Authenticate": value}, json={"errors": []})

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await request.aread()
        url = request.url
        if url.path == "/token" or url.host != HOST and url.path.endswith("/token"):
            if self.token_body is not None:
                return httpx.Response(200, stream=self.token_body)
            return httpx.Response(200, json={"token": self.token})
        if url.host != HOST:  # the CDN: no auth, serves /blob/<digest>
            return self._blob(request, url.path.rsplit("/", 1)[-1])
        if not self._authorized(request):
            return self._challenge()
        if (upload := _UPLOAD_RE.match(url.path)) is not None:
            return self._upload(request, upload.group("repo"), upload.group("id"))
        match = _PATH_RE.match(url.path)
        if match is None:
            return httpx.Response(404, text="404 page not found")
        repo, kind, ref = match.group("repo", "kind", "ref")
        if kind == "manifests":
            return self._manifest(request, repo, ref)
        if request.method == "HEAD":
            return httpx.Response(200 if ref in self.repo_blobs[repo] else 404)
        if self.refuse_blobs:
            self.refuse_blobs -= 1
            raise httpx.ConnectError("connection refused", request=request)
        if self.redirect_to and "Range" in request.headers:
            return httpx.Response(307, headers={"Location": f"{self.redirect_to}/blob/{ref}"})
        return self._blob(request, ref)

    def _manifest(self, request: httpx.Request, repo: str, tag: str) -> httpx.Response:
        if request.method == "PUT":
            self.manifests[(repo, tag)] = (request.content, request.headers["content-type"])
            return httpx.Response(201)
        if (repo, tag) not in self.manifests:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        raw, media = self.manifests[(repo, tag)]
        return httpx.Response(200, content=raw, headers={"Content-Type": media})

    def _blob(self, request: httpx.Request, digest: str) -> httpx.Response:
        if digest not in self.blobs:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        data = self.blobs[digest]
        given = request.headers.get("range", "")
        probe = given == "bytes=0-0"
        match = _RANGE_RE.fullmatch(given)
        if match is None or not self.ranges:
            return httpx.Response(200, stream=_Body(data, self, digest, probe))
        start, end = int(match.group(1)), min(int(match.group(2)), len(data) - 1)
        headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
        body = _Body(data[start : end + 1], self, digest, probe)
        return httpx.Response(206, headers=headers, stream=body)

    def _upload(self, request: httpx.Request, repo: str, session: str) -> httpx.Response:
        if request.method == "POST":
            mount, source = request.url.params.get("mount"), request.url.params.get("from")
            if mount and source and mount in self.repo_blobs[source]:
                self.repo_blobs[repo].add(mount)
                return httpx.Response(201)
            session = f"s{len(self.uploads)}"
            self.uploads[session] = bytearray()
        elif request.method == "PATCH":
            self.uploads[session] += request.content
        elif request.method == "PUT":
            digest = request.url.params["digest"]
            data = bytes(self.uploads.pop(session))
            if sha256_digest(data) != digest:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.blobs[digest] = data
            self.repo_blobs[repo].add(digest)
            return httpx.Response(201)
        location = f"/v2/{repo}/blobs/uploads/{session}?_state=x"
        return httpx.Response(202, headers={"Location": location})


def _policy(**overrides: object) -> TransferPolicy:
    fields: dict[str, object] = {
        "part_min_bytes": 64 * KiB,
        "parts_per_blob": 4,
        "parts_in_flight": 4,
        "retries": 1,
        "backoff_s": 0.0,
        "save_interval_s": 0.005,
        "progress_interval_s": 0.005,
        "upload_chunk_bytes": 100 * KiB,
    }
    fields.update(overrides)
    return TransferPolicy(**fields)  # type: ignore[arg-type]


def _client(fake: FakeRegistry, credentials: dict[str, Credential] | None = None) -> RegistryClient:
    return RegistryClient(Authenticator(credentials), transport=httpx.MockTransport(fake.handler))


async def _pull(
    store: ModelStore,
    fake: FakeRegistry,
    name: str = NAME,
    *,
    downloads: BlobDownloads | None = None,
    policy: TransferPolicy | None = None,
    credentials: dict[str, Credential] | None = None,
    prune: bool = True,
) -> list[Progress]:
    async with _client(fake, credentials) as client:
        lines = start_pull(
            store,
            client,
            downloads or BlobDownloads(),
            ModelName.parse(name),
            prune=prune,
            policy=policy or _policy(),
        )
        return [line async for line in lines]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


def _weights(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


# -- pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, []),
        (10, [(0, 10)]),
        (100, [(0, 100)]),
        (250, [(0, 100), (100, 100), (200, 50)]),
        (10_000, [(i, 1000) for i in range(0, 10_000, 1000)]),
    ],
)
def test_plan_parts_clamps_part_size(size: int, expected: list[tuple[int, int]]) -> None:
    parts = plan_parts(size, min_bytes=100, max_bytes=1000, count=4)
    assert [(p.offset, p.size) for p in parts] == expected
    assert all(isinstance(p, Part) and p.completed == 0 for p in parts)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Bearer realm="https://a/token",service="s",scope="x y"', ("bearer", "https://a/token")),
        ('Basic realm="basic-realm"', ("basic", "basic-realm")),
        ("Bearer realm=https://a/t,service=s", ("bearer", "https://a/t")),
        ('bearer realm="https://a/\\"q",scope="s"', ("bearer", 'https://a/"q')),
    ],
)
def test_auth_parse_challenges(header: str, expected: tuple[str, str]) -> None:
    (challenge,) = parse_challenges([header])
    assert (challenge.scheme, challenge.params["realm"]) == expected


def test_auth_token_url_splits_scopes_and_refuses_http() -> None:
    challenge = Challenge("bearer", {"realm": "https://a/token", "service": "s", "scope": "p q"})
    assert str(token_url(challenge, insecure=False)) == "https://a/token?service=s&scope=p&scope=q"
    with pytest.raises(Unauthorized, match="https"):
        token_url(Challenge("bearer", {"realm": "http://a/token"}), insecure=False)
    assert token_url(Challenge("bearer", {"realm": "http://a/token"}), insecure=True).host == "a"


def test_progress_to_json_omits_zero_completed() -> None:
    digest = sha256_digest(b"x")
    assert Progress.blob("pulling", digest, 5, 0).to_json() == {
        "status": f"pulling {digest[7:19]}",
        "digest": digest,
        "total": 5,
    }
    assert Progress("success").to_json() == {"status": "success"}


# -- pull ----------------------------------------------------------------------------------


async def test_registry_pull_stores_manifest_bytes_and_blobs(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(300 * KiB)
    raw = fake.add_model("library/m", "latest", [(LAYER_MODEL, weights), (LAYER_SYSTEM, b"hi")])
    lines = await _pull(store, fake)
    statuses = [line.status for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model_digest = sha256_digest(weights)
    assert lines[-4].status.startswith("pulling ")
    done = [x for x in lines if x.digest == model_digest]
    assert done[-1].completed == done[-1].total == len(weights)
    stored = store.get(ModelName.parse(NAME))
    assert stored.raw == raw
    assert store.blob_path(model_digest).read_bytes() == weights
    accept = fake.requests[0].headers["accept"]
    assert "application/vnd.docker.distribution.manifest.v2+json" in accept
    assert "application/vnd.oci.image.manifest.v1+json" in accept
    model_gets = [r for r in fake.requests if r.url.path.endswith(model_digest)]
    ranges = [r.headers["range"] for r in model_gets if r.headers["range"] != "bytes=0-0"]
    assert len(ranges) == 4  # parallel parts
    assert not any(p.name.startswith(".partial") for p in store.blobs_dir.iterdir())


async def test_registry_pull_takes_a_direct_200_blob(store: ModelStore, fake: FakeRegistry) -> None:
    weights = _weights(300 * KiB)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, weights)])
    fake.ranges = False
    lines = await _pull(store, fake)
    assert lines[-1].status == "success"
    assert store.blob_path(sha256_digest(weights)).read_bytes() == weights


async def test_registry_pull_unknown_model_is_not_found(
    store: ModelStore, fake: FakeRegistry
) -> None:
    with pytest.raises(ModelNotFound, match="pull model manifest: file does not exist"):
        await _pull(store, fake)


async def test_registry_pull_http_name_needs_insecure(
    store: ModelStore, fake: FakeRegistry
) -> None:
    async with _client(fake) as client:
        with pytest.raises(InsecureProtocol, match="insecure protocol http"):
            start_pull(store, client, BlobDownloads(), ModelName.parse(f"http://{NAME}"))
    assert fake.requests == []


async def test_registry_redirect_keeps_credentials_on_the_registry_host(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(100 * KiB)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, weights)])
    fake.auth, fake.redirect_to = "bearer", "https://cdn.test"
    lines = await _pull(store, fake)
    assert lines[-1].status == "success"
    cdn = [r for r in fake.requests if r.url.host == "cdn.test"]
    registry = [r for r in fake.requests if r.url.host == HOST and r.url.path != "/token"]
    assert cdn and all("authorization" not in r.headers for r in cdn)
    assert registry[-1].headers["authorization"] == "Bearer tok-1"


async def test_registry_redirect_to_plain_http_is_refused(
    store: ModelStore, fake: FakeRegistry
) -> None:
    fake.add_model("library/m", "latest", [(LAYER_MODEL, b"w" * 10)])
    fake.redirect_to = "http://cdn.test"
    with pytest.raises(RemoteError, match="refusing a redirect"):
        await _pull(store, fake)
    assert _files(store.root) == []


@pytest.mark.parametrize(
    ("realm", "gets_credentials"),
    [(f"https://{HOST}/token", True), ("https://auth.elsewhere.test/token", False)],
)
async def test_registry_auth_sends_credentials_only_to_the_registry_host(
    store: ModelStore, fake: FakeRegistry, realm: str, gets_credentials: bool
) -> None:
    fake.add_model("library/m", "latest", [(LAYER_MODEL, b"w" * 10)])
    fake.auth, fake.realm = "bearer", realm
    await _pull(store, fake, credentials={HOST: Credential("alice", "s3cret")})
    (token_request,) = [r for r in fake.requests if r.url.path.endswith("/token")]
    assert ("authorization" in token_request.headers) is gets_credentials
    assert token_request.url.params.get_list("scope") == ["repository:library/m:pull"]


async def test_registry_auth_basic_uses_configured_credentials(
    store: ModelStore, fake: FakeRegistry
) -> None:
    fake.add_model("library/m", "latest", [(LAYER_MODEL, b"w" * 10)])
    fake.auth = "basic"
    with pytest.raises(Unauthorized, match="none is configured"):
        await _pull(store, fake)
    with pytest.raises(Unauthorized, match="unauthorized"):
        await _pull(store, fake, credentials={HOST: Credential("alice", "wrong")})
    lines = await _pull(store, fake, credentials={HOST: Credential("alice", "s3cret")})
    assert lines[-1].status == "success"


async def test_registry_token_body_is_capped(store: ModelStore, fake: FakeRegistry) -> None:
    fake.add_model("library/m", "latest", [(LAYER_MODEL, b"w" * 10)])
    fake.auth = "bearer"
    fake.token_body = big = _Big(50 * 1024 * KiB)
    with pytest.raises(ResponseTooLarge, match="token response"):
        await _pull(store, fake)
    assert big.read <= 128 * KiB


async def test_registry_error_body_is_capped(store: ModelStore) -> None:
    big = _Big(50 * 1024 * KiB)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, stream=big)

    client = RegistryClient(transport=httpx.MockTransport(handler))
    async with client:
        with pytest.raises(RemoteError, match="500"):
            async for _ in start_pull(store, client, BlobDownloads(), ModelName.parse(NAME)):
                pass
    assert big.read <= 128 * KiB


@pytest.mark.parametrize("declared", [True, False])
async def test_registry_manifest_over_cap_leaves_store_unchanged(
    store: ModelStore, declared: bool
) -> None:
    body = _Big(4 * 1024 * KiB + 64 * KiB)

    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": str(body.size)} if declared else {}
        return httpx.Response(200, headers=headers, stream=body)

    async with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ResponseTooLarge, match="manifest larger than 4194304 bytes"):
            async for _ in start_pull(store, client, BlobDownloads(), ModelName.parse(NAME)):
                pass
    assert _files(store.root) == []


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../../../etc/passwd",
        "sha256:" + "a" * 63 + "/",
        "sha256:" + "a" * 64 + "/../../x",
        "sha512:" + "a" * 128,
        "../sha256-" + "a" * 64,
    ],
)
async def test_registry_pull_refuses_digests_that_escape(
    store: ModelStore, fake: FakeRegistry, digest: str
) -> None:
    config = {"mediaType": MEDIA_TYPE_CONFIG, "digest": sha256_digest(b"{}"), "size": 2}
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": [{"mediaType": LAYER_MODEL, "digest": digest, "size": 4}],
    }
    fake.manifests[("library/m", "latest")] = (json.dumps(doc).encode(), "application/json")
    with pytest.raises(InvalidManifest, match="digest"):
        await _pull(store, fake)
    assert _files(store.root.parent) == []
    assert [r.url.path for r in fake.requests] == ["/v2/library/m/manifests/latest"]


async def test_registry_pull_digest_mismatch_leaves_store_unchanged(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(200 * KiB)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, weights)])
    fake.blobs[sha256_digest(weights)] = _weights(200 * KiB, seed=2)  # same size, other bytes
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        await _pull(store, fake)
    assert _files(store.root) == []


async def test_registry_pull_refuses_a_blob_bigger_than_the_disk(
    store: ModelStore, fake: FakeRegistry
) -> None:
    config = {"mediaType": MEDIA_TYPE_CONFIG, "digest": sha256_digest(b"{}"), "size": 2}
    layer = {"mediaType": LAYER_MODEL, "digest": sha256_digest(b"w"), "size": 2**62}
    doc = {"schemaVersion": 2, "config": config, "layers": [layer]}
    fake.manifests[("library/m", "latest")] = (json.dumps(doc).encode(), "application/json")
    with pytest.raises(RegistryError, match="not enough disk space"):
        await _pull(store, fake)
    assert _files(store.root) == []


async def test_registry_pull_resumes_without_fetching_finished_bytes(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(512 * KiB)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, weights)])
    fake.break_after = 48 * KiB  # every part's connection drops after 48 KiB
    with pytest.raises(RegistryUnavailable, match="max retries exceeded"):
        await _pull(store, fake, policy=_policy(retries=0))
    assert store.resolve(ModelName.parse(NAME)) is None
    assert not store.has_blob(sha256_digest(weights))
    state = json.loads(next(store.blobs_dir.glob(".partial-*.json")).read_bytes())
    saved = sum(done for _, _, done in state["parts"])
    assert 0 < saved < len(weights)

    fake.break_after = None
    fake.served.clear()
    lines = await _pull(store, fake)
    assert lines[-1].status == "success"
    assert fake.served[sha256_digest(weights)] == len(weights) - saved
    assert store.blob_path(sha256_digest(weights)).read_bytes() == weights
    assert _files(store.blobs_dir) == sorted(
        p.name for p in store.blobs_dir.iterdir() if p.name.startswith("sha256-")
    )


async def test_registry_pull_retries_a_refused_connection(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(100 * KiB)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, weights)])
    fake.refuse_blobs = 2  # the location probe fails twice, then the registry is back
    lines = await _pull(store, fake, policy=_policy(retries=2))
    assert lines[-1].status == "success"
    fake.add_model("library/m", "other", [(LAYER_MODEL, _weights(100 * KiB, seed=3))])
    fake.refuse_blobs = 3
    with pytest.raises(RegistryUnavailable, match="max retries exceeded: .*connection refused"):
        await _pull(store, fake, name=f"{HOST}/library/m:other", policy=_policy(retries=2))


async def test_registry_pull_retries_a_dropped_connection(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(256 * KiB)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, weights)])
    fake.break_after = 32 * KiB  # progress every attempt: the failure count keeps resetting
    lines = await _pull(store, fake, policy=_policy(retries=1))
    assert lines[-1].status == "success"
    assert fake.served[sha256_digest(weights)] == len(weights)


async def test_registry_pull_cancelled_keeps_state_and_resumes(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(512 * KiB)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, weights)])
    fake.hold, fake.hold_after = asyncio.Event(), 64 * KiB
    downloads = BlobDownloads()
    async with _client(fake) as client:
        lines = start_pull(store, client, downloads, ModelName.parse(NAME), policy=_policy())
        async for line in lines:
            if line.completed:
                break
        await fake.holding.wait()
        await lines.aclose()  # the API client went away
    await _until_no_downloads(downloads)
    state = json.loads(next(store.blobs_dir.glob(".partial-*.json")).read_bytes())
    saved = sum(done for _, _, done in state["parts"])
    assert saved > 0

    fake.hold = None
    fake.served.clear()
    result = await _pull(store, fake, downloads=downloads)
    assert result[-1].status == "success"
    assert fake.served[sha256_digest(weights)] == len(weights) - saved


async def _until_no_downloads(downloads: BlobDownloads) -> None:
    """Await the cancelled download tasks themselves (they save their state on the way out)."""
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("download ")]
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_registry_concurrent_pulls_share_one_download(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(400 * KiB)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, weights)])
    downloads = BlobDownloads()
    first, second = await asyncio.gather(
        _pull(store, fake, downloads=downloads), _pull(store, fake, downloads=downloads)
    )
    assert first[-1].status == second[-1].status == "success"
    assert all(served == len(fake.blobs[d]) for d, served in fake.served.items())
    assert set(fake.served) == set(fake.blobs)


@pytest.mark.parametrize("prune", [True, False])
async def test_registry_pull_prunes_layers_of_the_replaced_manifest(
    store: ModelStore, fake: FakeRegistry, prune: bool
) -> None:
    old, new = _weights(10 * KiB, seed=1), _weights(10 * KiB, seed=2)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, old)])
    await _pull(store, fake)
    fake.add_model("library/m", "latest", [(LAYER_MODEL, new)])
    lines = await _pull(store, fake, prune=prune)
    assert ("removing unused layers" in [x.status for x in lines]) is prune
    assert store.has_blob(sha256_digest(old)) is not prune
    assert store.has_blob(sha256_digest(new))


# -- push ----------------------------------------------------------------------------------


def _local_model(store: ModelStore, name: str, weights: bytes, from_: str | None = None) -> bytes:
    digest, size = store.write_blob_bytes(weights)
    cdigest, csize = store.write_blob_bytes(b'{"model_format":"gguf"}\n')
    manifest = Manifest(
        config=Layer(MEDIA_TYPE_CONFIG, cdigest, csize),
        layers=(Layer(LAYER_MODEL, digest, size, from_),),
    )
    raw = manifest.to_bytes()
    store.write_manifest(ModelName.parse(name), raw)
    return raw


async def _push(store: ModelStore, fake: FakeRegistry, name: str) -> list[Progress]:
    async with _client(fake) as client:
        lines = start_push(store, client, ModelName.parse(name), policy=_policy())
        return [line async for line in lines]


async def test_registry_push_uploads_in_chunks_then_the_manifest(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(250 * KiB)
    raw = _local_model(store, NAME, weights)
    lines = await _push(store, fake, NAME)
    statuses = [x.status for x in lines]
    assert statuses[0] == "retrieving manifest"
    assert statuses[-2:] == ["pushing manifest", "success"]
    assert fake.manifests[("library/m", "latest")] == (
        raw,
        "application/vnd.docker.distribution.manifest.v2+json",
    )
    assert fake.blobs[sha256_digest(weights)] == weights
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert [r.headers["content-range"] for r in patches[:3]] == [
        f"0-{100 * KiB - 1}",
        f"{100 * KiB}-{200 * KiB - 1}",
        f"{200 * KiB}-{250 * KiB - 1}",
    ]
    assert fake.requests[-1].method == "PUT" and "/manifests/" in fake.requests[-1].url.path

    fake.requests = []
    again = await _push(store, fake, NAME)  # everything is there: HEADs only
    assert {r.method for r in fake.requests} == {"HEAD", "PUT"}
    assert again[-1].status == "success"


async def test_registry_push_mounts_a_layer_from_its_base_model(
    store: ModelStore, fake: FakeRegistry
) -> None:
    weights = _weights(50 * KiB)
    _local_model(store, NAME, weights)
    await _push(store, fake, NAME)
    derived = f"{HOST}/alice/m2:latest"
    _local_model(store, derived, weights, from_=f"{HOST}/library/m:latest")
    fake.requests = []
    lines = await _push(store, fake, derived)
    assert lines[-1].status == "success"
    (post,) = [r for r in fake.requests if r.method == "POST"][:1]
    assert post.url.params["mount"] == sha256_digest(weights)
    assert post.url.params["from"] == "library/m"
    assert not any(r.method == "PATCH" and len(r.content) == len(weights) for r in fake.requests)
    assert sha256_digest(weights) in fake.repo_blobs["alice/m2"]


async def test_registry_push_refuses_upper_case_repositories(
    store: ModelStore, fake: FakeRegistry
) -> None:
    name = f"{HOST}/Bartowski/Model:latest"
    _local_model(store, name, b"w")
    async with _client(fake) as client:
        with pytest.raises(InvalidName, match="lower-case"):
            start_push(store, client, ModelName.parse(name))
    assert fake.requests == []


async def test_registry_push_missing_model_is_an_error(
    store: ModelStore, fake: FakeRegistry
) -> None:
    async with _client(fake) as client:
        with pytest.raises(RegistryError, match="not found"):
            start_push(store, client, ModelName.parse(NAME))


# -- the partial file ----------------------------------------------------------------------


def _open_partial(store: ModelStore, data: bytes, part: int = 100) -> PartialBlob:
    def plan(size: int) -> list[Part]:
        return plan_parts(size, part, part, 64)

    return PartialBlob.open(store.blobs_dir, sha256_digest(data), len(data), plan)


def test_partial_blob_hashes_its_prefix_and_commits_on_a_match(store: ModelStore) -> None:
    data = _weights(350)
    partial = _open_partial(store, data)
    first, second, third, last = partial.parts
    partial.write(second, data[100:200])
    assert partial.contiguous() == 0
    partial.write(first, data[0:60])
    assert partial.contiguous() == 60
    partial.hash_to(partial.contiguous())
    partial.write(first, data[60:100])
    assert partial.contiguous() == 200
    partial.write(last, data[300:350])
    partial.write(third, data[200:300])
    assert partial.is_complete and partial.contiguous() == 350
    partial.verify_and_commit(store.blob_path(sha256_digest(data)))
    partial.close()
    assert store.blob_path(sha256_digest(data)).read_bytes() == data
    assert not any(p.name.startswith(".partial") for p in store.blobs_dir.iterdir())


def test_partial_blob_resumes_from_its_sidecar_and_refuses_a_stale_one(store: ModelStore) -> None:
    data = _weights(250)
    partial = _open_partial(store, data)
    partial.write(partial.parts[0], data[:100])
    partial.write(partial.parts[1], data[100:130])
    partial.close()
    again = _open_partial(store, data)
    assert [(p.offset, p.completed) for p in again.parts] == [(0, 100), (100, 30), (200, 0)]
    with pytest.raises(RegistryError, match="another process"):
        _open_partial(store, data)  # the flock is held
    again.close()
    sidecar = next(store.blobs_dir.glob(".partial-*.json"))
    sidecar.write_text(
        json.dumps({"digest": sha256_digest(data), "size": 250, "parts": [[0, 9, 9]]})
    )
    fresh = _open_partial(store, data)
    assert fresh.completed == 0  # parts that do not tile the blob are not trusted
    fresh.close()


def test_partial_blob_mismatch_deletes_everything(store: ModelStore) -> None:
    data = _weights(150)
    partial = _open_partial(store, data)
    partial.write(partial.parts[0], data[:100])
    partial.write(partial.parts[1], b"x" * 50)
    with pytest.raises(DigestMismatch):
        partial.verify_and_commit(store.blob_path(sha256_digest(data)))
    partial.close()
    assert _files(store.root) == []


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:5000=bob:pa:ss", (("127.0.0.1:5000", "bob", "pa:ss"),)),
        ("A.test=al:x, b.test=bo:y", (("a.test", "al", "x"), ("b.test", "bo", "y"))),
    ],
)
def test_settings_registry_auth_inline(value: str, expected: tuple[tuple[str, ...], ...]) -> None:
    settings = Settings.from_env({"CORRAL_REGISTRY_AUTH": value})
    assert settings.registry_auth == expected
    assert "pa:ss" not in settings.describe() + repr(settings)
    assert "registry_auth_hosts=" in settings.describe()


def test_settings_registry_auth_file_and_hidden_errors(tmp_path: Path) -> None:
    path = tmp_path / "auth"
    path.write_text("# team registry\nreg.test:5000=ci:t0ken\n\n")
    settings = Settings.from_env({"OLLAMA_REGISTRY_AUTH": str(path)})
    assert settings.registry_auth == (("reg.test:5000", "ci", "t0ken"),)
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"CORRAL_REGISTRY_AUTH": "reg.test=no-password-here"})
    assert "no-password" not in str(error.value) and "CORRAL_REGISTRY_AUTH" in str(error.value)
