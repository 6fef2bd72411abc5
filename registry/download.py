"""Download one blob: locate it, fetch its missing parts in parallel, verify it, commit it.

1. ``locate_blob`` probes the blob URL with a one-byte Range GET, following redirects by
   hand (credentials only while on the registry's host) until a server answers 206 or 200.
   Its size must equal the manifest's; a 200 means the server ignores Range.
2. The missing parts are fetched in offset order, ``parts_in_flight`` at once (one at a time
   when Range is ignored). Each part writes in place and is retried with backoff; an
   attempt that moved bytes resets its failure count. A stall is httpx's read timeout.
3. Meanwhile a worker thread hashes the prefix of the file that is complete, so the
   sha256 keeps up with the download; the sidecar is saved every ``save_interval_s`` and on
   any exit, cancellation included.
4. The rest is hashed, and the file is renamed to its digest name only on a match.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from registry.auth import authority
from registry.client import MAX_REDIRECTS, BlobLocation, RegistryClient, Repository
from registry.errors import RegistryUnavailable, RemoteError, TransferError, Unauthorized
from registry.manifest import Layer
from registry.store import ModelStore
from registry.transfer import TransferPolicy
from registry.transfer_state import Part, PartialBlob, plan_parts

logger = logging.getLogger(__name__)
T = TypeVar("T")

_CONTENT_RANGE_RE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*\Z")
_RETRY_STATUSES = frozenset({408, 429})
_HASH_STEP = 4 * 1024 * 1024  # hand the hashing thread at least this much at a time


async def locate_blob(
    client: RegistryClient, repo: Repository, digest: str, size: int
) -> BlobLocation:
    """Where the blob's bytes come from (step 1 of the module doc)."""
    action = f"pull blob {digest}"
    url, authed = repo.url(f"blobs/{digest}"), True
    for _ in range(MAX_REDIRECTS + 1):
        probe = {"Range": "bytes=0-0"}
        async with client.stream(repo, "GET", url, action, probe, authed=authed) as r:
            if r.is_redirect:
                url = client.redirect_target(repo, url, r, action)
                authed = authed and authority(url) == repo.host
                continue
            if r.status_code == 206:
                match = _CONTENT_RANGE_RE.match(r.headers.get("content-range", ""))
                if match is None:
                    raise RemoteError(f"{action}: malformed Content-Range")
                total, ranges = match.group(3), True
            elif r.status_code == 200:
                total, ranges = r.headers.get("content-length", "*"), False
            elif r.status_code == 404:
                raise RemoteError(f"{action}: blob unknown to registry", 404)
            else:
                await client.fail(r, action)
        if total.isdigit() and int(total) != size:
            raise RemoteError(f"{action}: registry serves {total} bytes, the manifest says {size}")
        return BlobLocation(url, authed, ranges)
    raise RemoteError(f"{action}: more than {MAX_REDIRECTS} redirects")


@contextlib.asynccontextmanager
async def read_range(
    client: RegistryClient, repo: Repository, where: BlobLocation, start: int, end: int
) -> AsyncIterator[tuple[AsyncIterator[bytes], int]]:
    """GET bytes ``start``..``end`` (inclusive); yield (raw chunks, bytes to skip first).

    A server that ignores Range answers 200 with the whole blob; the skip is then ``start``.
    """
    action = "pull blob"
    headers = {"Range": f"bytes={start}-{end}"}
    authed = where.authenticated
    async with client.stream(repo, "GET", where.url, action, headers, authed=authed) as r:
        if r.status_code == 206:
            match = _CONTENT_RANGE_RE.match(r.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != start:
                raise RemoteError(f"{action}: the registry answered another range")
            yield r.aiter_raw(), 0
        elif r.status_code == 200:
            yield r.aiter_raw(), start
        else:
            await client.fail(r, action)


def _retryable(exc: TransferError, where: BlobLocation | None) -> bool:
    if isinstance(exc, RegistryUnavailable):
        return True
    if isinstance(exc, RemoteError):
        return exc.status >= 500 or exc.status in _RETRY_STATUSES
    # A signed CDN URL that expired: locating the blob again gives a fresh one.
    return isinstance(exc, Unauthorized) and where is not None and not where.authenticated


class _Fetch:
    """The missing parts of one blob, fetched concurrently; state changes on the event loop."""

    def __init__(
        self,
        client: RegistryClient,
        repo: Repository,
        partial: PartialBlob,
        policy: TransferPolicy,
        on_bytes: Callable[[], None],
    ) -> None:
        self._client = client
        self._repo = repo
        self._partial = partial
        self._policy = policy
        self._on_bytes = on_bytes
        self._where: BlobLocation | None = None
        self._locating = asyncio.Lock()

    async def run(self) -> None:
        pending = [part for part in self._partial.parts if part.remaining]
        where = await self._retrying(self._locate, lambda: 0)
        slots = asyncio.Semaphore(self._policy.parts_in_flight if where.ranges else 1)
        tasks = [asyncio.create_task(self._part(part, slots)) for part in pending]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _locate(self) -> BlobLocation:
        async with self._locating:
            if self._where is None:
                p = self._partial
                self._where = await locate_blob(self._client, self._repo, p.digest, p.size)
            return self._where

    async def _part(self, part: Part, slots: asyncio.Semaphore) -> None:
        async with slots:
            await self._retrying(lambda: self._fetch(part), lambda: part.completed)

    async def _retrying(self, step: Callable[[], Awaitable[T]], done: Callable[[], int]) -> T:
        """Run ``step`` until it succeeds; a try that moved bytes (``done``) resets the count."""
        failures = 0
        while True:
            before, where = done(), self._where
            try:
                return await step()
            except TransferError as exc:
                if not _retryable(exc, where):
                    raise
                failures = 1 if done() > before else failures + 1
                if failures > self._policy.retries:
                    raise RegistryUnavailable(f"max retries exceeded: {exc}") from exc
                delay = self._policy.backoff(failures)
                logger.warning(
                    "blob_retry digest=%s try=%d delay_s=%.1f error=%s",
                    self._partial.digest, failures, delay, exc,
                )  # fmt: skip
                if self._where is where:
                    self._where = None  # locate again: a redirect target may have expired
                await asyncio.sleep(delay)

    async def _fetch(self, part: Part) -> None:
        where = await self._locate()
        body = read_range(self._client, self._repo, where, part.next_offset, part.end - 1)
        async with body as (chunks, skip):
            async for chunk in chunks:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                data = memoryview(chunk)[skip : skip + part.remaining]
                skip = 0
                self._partial.write(part, data)
                self._on_bytes()
                if not part.remaining:
                    break
        if part.remaining:
            raise RegistryUnavailable("pull blob: the connection closed before the part ended")


async def _save_every(partial: PartialBlob, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        partial.save()


class _HashBehind:
    """Hashes the complete prefix of the file in a worker thread while parts arrive."""

    def __init__(self, partial: PartialBlob) -> None:
        self._partial = partial
        self._grew = asyncio.Event()
        self._done = False

    def wake(self) -> None:
        self._grew.set()

    async def run(self) -> None:
        partial = self._partial
        while not self._done:
            await self._grew.wait()
            self._grew.clear()
            end = partial.contiguous()
            if end - partial.hashed >= _HASH_STEP or (self._done and end > partial.hashed):
                await asyncio.to_thread(partial.hash_to, end)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Let the current step finish (the hash must not be fed twice at once), then end."""
        self._done = True
        self._grew.set()
        await task


async def fetch_blob(
    client: RegistryClient,
    repo: Repository,
    layer: Layer,
    store: ModelStore,
    policy: TransferPolicy,
    report: Callable[[int], None],
) -> None:
    """Download, verify and commit one blob; ``report`` gets the bytes on disk so far.

    On any exit (error, cancellation) the partial state is saved for the next attempt,
    except after a digest mismatch, which deletes it.
    """

    def plan(size: int) -> list[Part]:
        p = policy
        return plan_parts(size, p.part_min_bytes, p.part_max_bytes, p.parts_per_blob)

    def on_bytes() -> None:
        report(partial.completed)
        hasher.wake()

    if store.has_blob(layer.digest):  # another pull finished it a moment ago
        report(layer.size)
        return
    partial = PartialBlob.open(store.blobs_dir, layer.digest, layer.size, plan)
    try:
        report(partial.completed)
        if not partial.is_complete:
            hasher = _HashBehind(partial)
            hashing = asyncio.create_task(hasher.run())
            saver = asyncio.create_task(_save_every(partial, policy.save_interval_s))
            try:
                hasher.wake()  # a resumed download hashes what it already has meanwhile
                await _Fetch(client, repo, partial, policy, on_bytes).run()
                await hasher.stop(hashing)
            finally:
                saver.cancel()
                hashing.cancel()
                partial.save()
        await _verify(partial, store.blob_path(layer.digest))
    finally:
        partial.close()
    logger.info("blob_pulled digest=%s size=%d", layer.digest, layer.size)


async def _verify(partial: PartialBlob, final_path: Path) -> None:
    """Hash and commit in a thread; a cancellation waits for the thread before leaving."""
    work = asyncio.ensure_future(asyncio.to_thread(partial.verify_and_commit, final_path))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise
