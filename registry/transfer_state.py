"""A blob being downloaded: its partial file, the sidecar of finished ranges, and its commit.

Files in ``blobs/``, named so that they are never valid digests (start-up prune treats them
as temporaries and deletes them once they are an hour old, as Ollama does):

    .partial-sha256-<hex>         the data, sized to the blob, each part written in place
    .partial-sha256-<hex>.json    {"digest", "size", "parts": [[offset, size, completed], ...]}

Invariants:

- Both names are built from a validated digest and checked to lie in ``blobs/`` before any
  file is created (the lesson of CVE-2026-103663: validate before the temp file, not after).
- The sidecar only ever claims bytes already written; it is replaced atomically.
- A blob appears under its digest name only by rename after the whole file hashed to that
  digest; a mismatch deletes both files and leaves the store as it was.
- An exclusive ``flock`` on the data file keeps a second process off the same download.

A ``PartialBlob`` belongs to one download task on the event loop; ``hash_to`` and
``verify_and_commit`` run in worker threads, one at a time, each with its own file handle.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from registry.blob import os_errors
from registry.digest import hex_of, parse_digest
from registry.errors import DigestMismatch, RegistryError

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
_STATE_SUFFIX = ".json"
_MAX_STATE_BYTES = 1024 * 1024
_HASH_CHUNK = 4 * 1024 * 1024


@dataclass
class Part:
    """A byte range of the blob: ``offset`` and ``size``; ``completed`` bytes are on disk."""

    offset: int
    size: int
    completed: int = 0

    @property
    def remaining(self) -> int:
        return self.size - self.completed

    @property
    def next_offset(self) -> int:
        """The first byte not yet written."""
        return self.offset + self.completed

    @property
    def end(self) -> int:
        """One past the part's last byte."""
        return self.offset + self.size


def plan_parts(size: int, min_bytes: int, max_bytes: int, count: int) -> list[Part]:
    """Split ``size`` bytes into about ``count`` equal parts of [min_bytes, max_bytes]."""
    if size <= 0:
        return []
    step = max(min(max(-(-size // max(count, 1)), min_bytes), max_bytes), 1)
    return [Part(offset, min(step, size - offset)) for offset in range(0, size, step)]


def _parts_from(raw: object, size: int) -> list[Part] | None:
    """Parts from a sidecar's list, or None unless they tile [0, size) exactly."""
    if not isinstance(raw, list):
        return None
    parts: list[Part] = []
    expected = 0
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3 and all(type(v) is int for v in item)):
            return None
        offset, length, done = item
        if offset != expected or length <= 0 or not 0 <= done <= length:
            return None
        parts.append(Part(offset, length, done))
        expected += length
    return parts if expected == size else None


def _inside(path: Path, directory: Path) -> Path:
    if os.path.dirname(os.path.abspath(path)) != os.path.abspath(directory):
        raise RegistryError("path escapes the model store")
    return path


class PartialBlob:
    """The on-disk state of one blob download (see the module doc)."""

    def __init__(
        self, digest: str, size: int, data_path: Path, state_path: Path, fd: int, parts: list[Part]
    ) -> None:
        self.digest = digest
        self.size = size
        self.data_path = data_path
        self.state_path = state_path
        self.parts = parts
        self._fd = fd
        self._dirty = False
        self._gone = False
        self._hash = hashlib.sha256()
        self._hash_lock = threading.Lock()
        self.hashed = 0
        """Bytes from the start already fed to the running sha256."""

    @classmethod
    def open(
        cls, blobs_dir: Path, digest: str, size: int, plan: Callable[[int], list[Part]]
    ) -> PartialBlob:
        """Resume the download of ``digest`` from its sidecar, or start it afresh."""
        digest = parse_digest(digest)
        base = f"{PARTIAL_PREFIX}sha256-{hex_of(digest)}"
        data_path = _inside(blobs_dir / base, blobs_dir)
        state_path = _inside(blobs_dir / (base + _STATE_SUFFIX), blobs_dir)
        with os_errors("cannot start the download"):
            os.makedirs(blobs_dir, mode=0o755, exist_ok=True)
            fd = os.open(data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise RegistryError(f"blob {digest} is being downloaded by another process") from exc
        parts: list[Part] | None = None
        try:
            with os_errors("cannot start the download"):
                parts = _load_state(state_path, digest, size, os.fstat(fd).st_size)
            # Before planning and sizing the file: a hostile manifest may claim any size.
            _check_space(blobs_dir, size - sum(part.completed for part in parts or []))
            blob = cls(digest, size, data_path, state_path, fd, parts or plan(size))
            with os_errors("cannot start the download"):
                if parts is None:
                    os.ftruncate(fd, 0)  # nothing of an old attempt may survive unhashed
                os.ftruncate(fd, size)
        except BaseException:
            if parts is None:
                data_path.unlink(missing_ok=True)
            os.close(fd)
            raise
        if blob.completed:
            logger.info("download_resumed digest=%s completed=%d", digest, blob.completed)
        return blob

    @property
    def completed(self) -> int:
        return sum(part.completed for part in self.parts)

    @property
    def is_complete(self) -> bool:
        return all(part.remaining == 0 for part in self.parts)

    def contiguous(self) -> int:
        """How many bytes from the start of the blob are all on disk."""
        end = 0
        for part in self.parts:
            end = part.next_offset
            if part.remaining:
                break
        return end

    def hash_to(self, end: int) -> None:
        """Feed bytes [hashed, end) from disk to the running sha256 (worker thread).

        Only bytes that are final may be hashed: ``end`` must not exceed ``contiguous()``,
        and written bytes are never rewritten. Calls are serialised by a lock.
        """
        with self._hash_lock, os_errors("cannot verify blob"):
            if end <= self.hashed:
                return
            buffer = bytearray(_HASH_CHUNK)
            with open(self.data_path, "rb", buffering=0) as file:
                file.seek(self.hashed)
                while self.hashed < end:
                    count = file.readinto(memoryview(buffer)[: min(_HASH_CHUNK, end - self.hashed)])
                    if not count:
                        raise RegistryError("blob file ended before its size")
                    self._hash.update(memoryview(buffer)[:count])
                    self.hashed += count

    def write(self, part: Part, data: bytes | memoryview) -> None:
        """Write ``data`` at the part's next offset and count it as completed."""
        view = memoryview(data)
        if len(view) > part.remaining:
            raise RegistryError("write past the end of a download part")
        offset = part.next_offset
        with os_errors("cannot write blob"):
            while view:
                written = os.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written
        part.completed += len(data)
        self._dirty = True

    def save(self) -> None:
        """Write the sidecar if anything changed since the last save."""
        if not self._dirty or self._gone:
            return
        doc = {
            "digest": self.digest,
            "size": self.size,
            "parts": [[p.offset, p.size, p.completed] for p in self.parts],
        }
        temp = self.state_path.with_name(self.state_path.name + ".tmp")
        with os_errors("cannot save download state"):
            temp.write_bytes(json.dumps(doc, separators=(",", ":")).encode())
            os.replace(temp, self.state_path)
        self._dirty = False

    def verify_and_commit(self, final: Path) -> None:
        """Hash the whole file; rename it to ``final`` if it matches, else delete it.

        Runs in a worker thread; what ``hash_to`` already hashed is not read again.
        Raises ``DigestMismatch`` (nothing is left behind).
        """
        self.hash_to(self.size)
        with self._hash_lock:
            actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            self.discard()
            raise DigestMismatch(self.digest, actual)
        with os_errors("cannot store blob"):
            os.chmod(self.data_path, 0o644)
            os.replace(self.data_path, final)
            self._gone = True
            self.state_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def discard(self) -> None:
        """Delete the data and the sidecar."""
        self._gone = True
        for path in (self.data_path, self.state_path):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Save the sidecar (unless committed or discarded) and release the file and lock.

        A download that never wrote a byte leaves nothing behind.
        """
        try:
            if not self._gone and self.completed == 0:
                self.discard()
            self.save()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _check_space(blobs_dir: Path, need: int) -> None:
    with os_errors("cannot check free disk space"):
        free = shutil.disk_usage(blobs_dir).free
    if free < need:
        raise RegistryError(f"not enough disk space: {need} bytes needed, {free} free")


def _load_state(state_path: Path, digest: str, size: int, file_size: int) -> list[Part] | None:
    """The parts recorded by an earlier attempt, if its sidecar fits this blob exactly."""
    try:
        with open(state_path, "rb") as file:
            raw = file.read(_MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        doc = None
    ok = (
        isinstance(doc, dict)
        and doc.get("digest") == digest
        and doc.get("size") == size
        and file_size == size
    )
    parts = _parts_from(doc.get("parts"), size) if ok and isinstance(doc, dict) else None
    if parts is None:
        logger.warning("download_state_ignored digest=%s", digest)
    return parts
