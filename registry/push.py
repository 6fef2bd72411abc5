"""Push a model: check each blob, mount or upload the missing ones, then the manifest.

Sequence (Ollama's ``PushModel``, reference §3.1), with the statuses it reports:

1. Validate before anything is sent (``start_push`` raises): the scheme, a repository name
   a standard registry accepts (lower case only), and the local model.
2. ``retrieving manifest``.
3. ``pushing <12 hex>`` per blob, layers then config:
   a. ``HEAD`` on the target: present means done (one line, ``completed == total``);
   b. a layer inherited (``from``) from a model on the same registry is mounted from that
      repository (``201``); a ``202`` there is a normal upload session;
   c. otherwise ``POST`` opens a session, sequential ``PATCH`` chunks send the bytes, and
      ``PUT ?digest=`` commits (the registry checks the digest). A failed upload starts
      again with a new session, up to ``policy.retries`` times.
4. ``pushing manifest``: the local manifest's bytes, unchanged, with its media type, so the
   registry's digest equals the local model ID.
5. ``success``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

import httpx

from registry.client import RegistryClient, Repository, repository_for
from registry.errors import InvalidName, RegistryError, RegistryUnavailable, RemoteError
from registry.manifest import Layer
from registry.names import ModelName
from registry.store import ModelStore, StoredModel
from registry.transfer import MiB, Progress, TransferPolicy, follow

logger = logging.getLogger(__name__)

# A path component of the distribution spec's repository-name grammar.
_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_READ_BYTES = MiB


def check_repository(name: ModelName) -> None:
    """Refuse a repository name a standard registry would reject with a bare 404."""
    _, namespace, model, _ = name.parts()
    for part in (namespace, model):
        if _COMPONENT_RE.match(part) is None:
            raise InvalidName(
                f'cannot push "{name}": registries accept only lower-case repository names '
                "of letters, digits and single separators (._-)"
            )


def start_push(
    store: ModelStore,
    client: RegistryClient,
    name: ModelName,
    *,
    insecure: bool = False,
    policy: TransferPolicy | None = None,
) -> AsyncGenerator[Progress, None]:
    """Check everything local now (raising), then push ``name`` to its registry."""
    repo = repository_for(name, insecure)
    check_repository(name)
    stored = store.get(name)
    return _push(store, client, stored, repo, name.tag, policy or TransferPolicy())


async def _push(
    store: ModelStore,
    client: RegistryClient,
    stored: StoredModel,
    repo: Repository,
    tag: str,
    policy: TransferPolicy,
) -> AsyncGenerator[Progress, None]:
    yield Progress("retrieving manifest")  # 2
    manifest = stored.manifest
    seen: dict[str, Layer] = {}
    for layer in (*manifest.layers, manifest.config):
        seen.setdefault(layer.digest, layer)
    for layer in seen.values():  # 3
        path = store.blob_path(layer.digest)
        if not path.is_file():
            raise RegistryError(f'blob "{layer.digest}" of the model is missing from the store')
        if await _has_blob(client, repo, layer.digest):  # a
            yield Progress.blob("pushing", layer.digest, layer.size, layer.size)
            continue
        yield Progress.blob("pushing", layer.digest, layer.size, 0)
        mount = mount_source(layer, repo, stored.name)
        upload = _Upload(client, repo, layer, path, mount, policy)
        task = asyncio.create_task(upload.run())
        try:
            sent = functools.partial(getattr, upload, "sent")
            async for completed in follow(task, sent, policy.progress_interval_s):
                yield Progress.blob("pushing", layer.digest, layer.size, completed)
        finally:
            task.cancel()
    yield Progress("pushing manifest")  # 4
    await client.put_manifest(repo, tag, stored.raw, manifest.media_type)
    logger.info("model_pushed name=%s registry=%s", stored.name, repo.host)
    yield Progress("success")  # 5


def mount_source(layer: Layer, repo: Repository, target: ModelName) -> str | None:
    """The ``ns/model`` to mount ``layer`` from: its ``from`` model, on the same registry."""
    if not layer.from_:
        return None
    try:
        source = ModelName.parse(layer.from_)
    except InvalidName:
        return None
    _, namespace, model, _ = source.parts()
    path = f"{namespace}/{model}"
    same_host = source.host.lower() == target.host.lower()
    if not same_host or path == repo.path:
        return None
    if not all(_COMPONENT_RE.match(part) for part in (namespace, model)):
        return None
    return path


class _Upload:
    """One blob's upload: mount or session, chunks, commit; ``sent[0]`` counts bytes."""

    def __init__(
        self,
        client: RegistryClient,
        repo: Repository,
        layer: Layer,
        path: Path,
        mount: str | None,
        policy: TransferPolicy,
    ) -> None:
        self._client = client
        self._repo = repo
        self._layer = layer
        self._path = path
        self._mount = mount
        self._policy = policy
        self.sent = 0

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._attempt()
                return
            except (RegistryUnavailable, RemoteError) as exc:
                status = exc.status if isinstance(exc, RemoteError) else 0
                failures += 1
                permanent = 0 < status < 500 and status not in (408, 429)
                if permanent or failures > self._policy.retries:
                    raise
                delay = self._policy.backoff(failures)
                logger.warning(
                    "upload_retry digest=%s try=%d delay_s=%.1f error=%s",
                    self._layer.digest, failures, delay, exc,
                )  # fmt: skip
                await asyncio.sleep(delay)

    async def _attempt(self) -> None:
        client, repo, layer = self._client, self._repo, self._layer
        self.sent = 0
        session = await _start_upload(client, repo, layer.digest, self._mount)
        if session is None:
            logger.info("blob_mounted digest=%s from=%s", layer.digest, self._mount)
            self.sent = layer.size
            return
        step = max(self._policy.upload_chunk_bytes, 1)
        for start in range(0, layer.size, step):
            length = min(step, layer.size - start)
            body = self._body(start, length)
            session = await _upload_chunk(client, repo, session, start, length, body)
        await _finish_upload(client, repo, session, layer.digest)

    def _body(self, start: int, length: int) -> Callable[[], AsyncIterator[bytes]]:
        """A factory of the bytes [start, start+length) of the blob file (a 401 re-reads)."""

        async def stream() -> AsyncIterator[bytes]:
            with open(self._path, "rb") as file:
                file.seek(start)
                done = 0
                while done < length:
                    chunk = await asyncio.to_thread(file.read, min(_READ_BYTES, length - done))
                    if not chunk:
                        raise RegistryError(f"blob file {self._layer.digest} ended early")
                    done += len(chunk)
                    self.sent = start + done
                    yield chunk

        return stream


async def _has_blob(client: RegistryClient, repo: Repository, digest: str) -> bool:
    """Whether the repository already holds the blob (HEAD)."""
    action = f"check blob {digest}"
    async with client.stream(repo, "HEAD", repo.url(f"blobs/{digest}"), action) as r:
        if r.status_code == 404:
            return False
        if r.is_success or r.is_redirect:
            return True
        await client.fail(r, action)


async def _start_upload(
    client: RegistryClient, repo: Repository, digest: str, mount_from: str | None
) -> httpx.URL | None:
    """Open an upload session and return its URL; None when the blob was mounted."""
    action = f"push blob {digest}"
    url = repo.url("blobs/uploads/")
    if mount_from:
        url = url.copy_merge_params({"mount": digest, "from": mount_from})
    async with client.stream(repo, "POST", url, action, {"Content-Length": "0"}, b"") as r:
        if r.status_code == 201 and mount_from:
            return None
        if r.status_code != 202:
            await client.fail(r, action)
        return client.session_url(repo, url, r, action)


async def _upload_chunk(
    client: RegistryClient,
    repo: Repository,
    session: httpx.URL,
    start: int,
    length: int,
    body: Callable[[], AsyncIterator[bytes]],
) -> httpx.URL:
    """PATCH ``length`` bytes at ``start``; return the session's next URL."""
    action = "push blob"
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(length),
        # Ollama's form, without the "bytes " unit; distribution only checks the order.
        "Content-Range": f"{start}-{start + length - 1}",
    }
    async with client.stream(repo, "PATCH", session, action, headers, body) as r:
        if r.status_code != 202:
            await client.fail(r, action)
        return client.session_url(repo, session, r, action)


async def _finish_upload(
    client: RegistryClient, repo: Repository, session: httpx.URL, digest: str
) -> None:
    """Commit the session as ``digest``; the registry checks the digest."""
    action = f"push blob {digest}"
    url = session.copy_add_param("digest", digest)
    async with client.stream(repo, "PUT", url, action, {"Content-Length": "0"}, b"") as r:
        if r.status_code not in (200, 201, 204):
            await client.fail(r, action)
