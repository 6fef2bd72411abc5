"""What pull and push share: the progress record they report and the part/retry policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from registry.digest import hex_of

MiB = 1024 * 1024


@dataclass(frozen=True)
class Progress:
    """One progress line of Ollama's pull/push stream.

    ``status`` is the text clients show ("pulling manifest", "pulling <12 hex>", ...);
    ``digest`` names the blob a byte count belongs to; ``total`` and ``completed`` are bytes.
    """

    status: str
    digest: str = ""
    total: int = 0
    completed: int = 0

    @classmethod
    def blob(cls, verb: str, digest: str, total: int, completed: int) -> Progress:
        """``<verb> <first 12 hex>`` with the blob's byte counts (Ollama's per-layer line)."""
        return cls(f"{verb} {hex_of(digest)[:12]}", digest, total, completed)

    def to_json(self) -> dict[str, object]:
        """The wire form; like Go's omitempty, zero counts and an empty digest are left out."""
        out: dict[str, object] = {"status": self.status}
        if self.digest:
            out["digest"] = self.digest
            out["total"] = self.total
            if self.completed:
                out["completed"] = self.completed
        return out


@dataclass(frozen=True)
class TransferPolicy:
    """How blobs are split, retried and reported; sizes in bytes, times in seconds.

    A blob is cut into about ``parts_per_blob`` ranges of equal size, clamped to
    [part_min_bytes, part_max_bytes], fetched in offset order with ``parts_in_flight`` at
    once. Ollama cuts 16 parts of 100 MB-1 GB that all run at the same time; finer parts in
    order let the sha256 follow the download instead of re-reading the whole file at the end.
    A part is retried up to ``retries`` times in a row without progress, sleeping
    ``backoff_s * 2**n`` (capped at ``backoff_max_s``); an attempt that moved bytes resets
    the count.
    """

    parts_per_blob: int = 64
    part_min_bytes: int = 8 * MiB
    part_max_bytes: int = 256 * MiB
    parts_in_flight: int = 16
    retries: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 32.0
    save_interval_s: float = 0.25
    progress_interval_s: float = 0.1
    upload_chunk_bytes: int = 256 * MiB

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        return float(min(self.backoff_s * 2 ** (failures - 1), self.backoff_max_s))


async def follow(
    task: asyncio.Task[None], completed: Callable[[], int], interval_s: float
) -> AsyncIterator[int]:
    """Yield ``completed()`` every ``interval_s`` and once when ``task`` ends.

    The task's exception, if any, is raised after the last value; leaving early does not
    cancel the task (its owner decides).
    """
    while True:
        done, _ = await asyncio.wait({task}, timeout=interval_s)
        yield completed()
        if done:
            break
    task.result()
