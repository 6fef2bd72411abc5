"""Pull a model: manifest, missing blobs, verification, manifest write, prune; as progress.

Sequence (Ollama's ``PullModel``, reference §2.1), with the statuses it reports:

1. Validate the name and the scheme before anything else (``start_pull`` raises).
2. ``pulling manifest``: fetch it (both manifest media types accepted, 4 MiB cap) and parse
   it, which validates every digest before any path is built from one.
3. ``pulling <12 hex>`` per blob, layers then config: a stored blob is one line with
   ``completed == total``; a missing one is downloaded (``download.fetch_blob``) through
   ``BlobDownloads``, so concurrent pulls of one blob share a single download.
4. ``verifying sha256 digest``: every blob was hashed before it became visible (step 3).
5. ``writing manifest``: the raw bytes, unchanged, once every blob is stored.
6. ``removing unused layers``: blobs only the replaced manifest used, unless pruning is off.
7. ``success``.

Nothing is written to the store before step 3, and a failure there leaves only resumable
partial state behind (``transfer_state``), never a blob that did not verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from registry.client import RegistryClient, Repository, repository_for
from registry.download import fetch_blob
from registry.errors import InvalidManifest, RegistryError
from registry.manifest import Layer, Manifest
from registry.names import ModelName
from registry.store import ModelStore
from registry.transfer import Progress, TransferPolicy, follow

logger = logging.getLogger(__name__)

Start = Callable[[Callable[[int], None]], Coroutine[Any, Any, None]]


class _Shared:
    """One download task and what its waiters read: the bytes done and their count."""

    def __init__(self) -> None:
        self.completed = 0
        self.waiters = 0
        self.stopping = False
        self.task: asyncio.Task[None] | None = None

    def report(self, completed: int) -> None:
        self.completed = completed


class BlobDownloads:
    """Blob downloads in flight in this process, one task per digest, shared by pulls.

    Mutated only on the event loop. Every pull waiting on a download holds a reference;
    when the last one leaves (its client went away), the task is cancelled and its partial
    state stays on disk, so the next pull resumes it. A pull arriving while a download is
    being cancelled waits for it to stop and starts a fresh one.
    """

    def __init__(self) -> None:
        self._active: dict[str, _Shared] = {}

    async def fetch(
        self, digest: str, start: Start, interval_s: float
    ) -> AsyncGenerator[int, None]:
        """Join (or start) the download of ``digest``; yield its bytes done until it ends."""
        shared = self._active.get(digest)
        if shared is not None and shared.stopping and shared.task is not None:
            await asyncio.wait({shared.task})
            shared = None
        if shared is None:
            shared = _Shared()
            task = asyncio.create_task(start(shared.report), name=f"download {digest}")
            shared.task = task
            self._active[digest] = shared
            task.add_done_callback(functools.partial(self._finished, digest, shared))
        assert shared.task is not None
        shared.waiters += 1
        try:
            async for completed in follow(shared.task, lambda: shared.completed, interval_s):
                yield completed
        finally:
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                shared.stopping = True
                shared.task.cancel()

    def _finished(self, digest: str, shared: _Shared, task: asyncio.Task[None]) -> None:
        if self._active.get(digest) is shared:
            del self._active[digest]
        if not task.cancelled() and task.exception() is not None:
            logger.info("download_failed digest=%s error=%s", digest, task.exception())


def start_pull(
    store: ModelStore,
    client: RegistryClient,
    downloads: BlobDownloads,
    name: ModelName,
    *,
    insecure: bool = False,
    prune: bool = True,
    policy: TransferPolicy | None = None,
) -> AsyncGenerator[Progress, None]:
    """Check ``name`` (raising ``InvalidName``/``InsecureProtocol`` now), then pull it."""
    repo = repository_for(name, insecure)
    return _pull(store, client, downloads, name, repo, prune, policy or TransferPolicy())


async def _pull(
    store: ModelStore,
    client: RegistryClient,
    downloads: BlobDownloads,
    name: ModelName,
    repo: Repository,
    prune: bool,
    policy: TransferPolicy,
) -> AsyncGenerator[Progress, None]:
    old = await asyncio.to_thread(_digests_of, store, name)
    yield Progress("pulling manifest")  # 2
    raw = await client.get_manifest(repo, name.tag)
    try:
        manifest = Manifest.parse(raw)
    except InvalidManifest as exc:
        raise InvalidManifest(f"pull model manifest: {exc}") from exc
    for layer in _blobs(manifest):  # 3
        if await asyncio.to_thread(store.has_blob, layer.digest):
            yield Progress.blob("pulling", layer.digest, layer.size, layer.size)
            continue
        yield Progress.blob("pulling", layer.digest, layer.size, 0)
        start = functools.partial(_download, client, repo, layer, store, policy)
        updates = downloads.fetch(layer.digest, start, policy.progress_interval_s)
        async with contextlib.aclosing(updates):
            async for completed in updates:
                yield Progress.blob("pulling", layer.digest, layer.size, completed)
    yield Progress("verifying sha256 digest")  # 4
    yield Progress("writing manifest")  # 5
    await asyncio.to_thread(store.write_manifest, name, raw)
    unused = old - set(manifest.digests())
    if prune and unused:  # 6
        yield Progress("removing unused layers")
        await asyncio.to_thread(store.remove_unreferenced, unused)
    logger.info("model_pulled name=%s blobs=%d", name, len(manifest.digests()))
    yield Progress("success")  # 7


def _blobs(manifest: Manifest) -> list[Layer]:
    """Layers then the config, each digest once (Ollama's order)."""
    seen: dict[str, Layer] = {}
    for layer in (*manifest.layers, manifest.config):
        seen.setdefault(layer.digest, layer)
    return list(seen.values())


async def _download(
    client: RegistryClient,
    repo: Repository,
    layer: Layer,
    store: ModelStore,
    policy: TransferPolicy,
    report: Callable[[int], None],
) -> None:
    # The task outlives the pull that started it when others share it: own connections.
    async with client.fork() as own:
        await fetch_blob(own, repo, layer, store, policy, report)


def _digests_of(store: ModelStore, name: ModelName) -> set[str]:
    """The blobs the name's current manifest uses; none if it is missing or unreadable."""
    try:
        return set(store.get(name).manifest.digests())
    except RegistryError:
        return set()

