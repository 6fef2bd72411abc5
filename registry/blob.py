"""Writing files into the store safely: a verified, atomic blob writer and the disk helpers.

A blob is streamed into ``blobs/.tmp-<random>`` (never a valid digest name) while it is
hashed, fsynced, checked against its expected digest, and only then renamed to
``blobs/sha256-<hex>``. OSErrors become RegistryErrors here, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from registry.digest import blob_filename, parse_digest
from registry.errors import DigestMismatch, RegistryError

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
DIR_MODE = 0o755
FILE_MODE = 0o644


@contextlib.contextmanager
def os_errors(action: str) -> Iterator[None]:
    """Turn an OSError (disk full, permission denied) into a RegistryError."""
    try:
        yield
    except OSError as exc:
        raise RegistryError(f"{action}: {exc.strerror or exc}") from exc


def fsync_dir(path: Path) -> None:
    # Makes a rename durable; some platforms cannot open or fsync a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each with mode 0755 (as Go's MkdirAll)."""
    missing: list[Path] = []
    while not path.is_dir() and path.parent != path:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)


def sorted_entries(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory`` by name; none when it is missing or not a directory."""
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def check_inside(path: Path, base: Path) -> Path:
    """Second guard after validation: ``path`` must lie strictly below ``base``."""
    full, top = os.path.abspath(path), os.path.abspath(base)
    if full == top or os.path.commonpath([full, top]) != top:
        raise RegistryError("path escapes the model store")
    return path


class BlobWriter:
    """Streams one blob into ``blobs/`` while hashing it; use as a context manager.

    Lifecycle: ``__enter__`` creates ``blobs/.tmp-<random>``; ``write`` appends and hashes;
    ``commit`` verifies and renames the temp to its digest name. Leaving the ``with`` block
    without a successful commit, for any reason, deletes the temp; nothing partial is ever
    visible under a digest name. One writer belongs to one thread.
    """

    def __init__(self, blobs_dir: Path, max_bytes: int | None = None) -> None:
        self._blobs_dir = blobs_dir
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._size = 0
        self._file: BinaryIO | None = None
        self._temp: Path | None = None

    def __enter__(self) -> BlobWriter:
        with os_errors("cannot create blob"):
            make_dirs(self._blobs_dir)
            fd, temp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self._blobs_dir)
        self._temp = Path(temp)
        self._file = os.fdopen(fd, "wb")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._discard()

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; raise RegistryError past ``max_bytes`` (the temp is dropped)."""
        file = self._open_file()
        self._size += len(chunk)
        if self._max_bytes is not None and self._size > self._max_bytes:
            self._discard()
            raise RegistryError(f"blob larger than {self._max_bytes} bytes")
        self._hash.update(chunk)
        with os_errors("cannot write blob"):
            file.write(chunk)

    def commit(self, expected: str | None = None) -> tuple[str, int]:
        """Verify against ``expected`` (if given), store, and return (digest, size).

        Raises DigestMismatch, leaving nothing behind, when the content hashes differently.
        """
        want = parse_digest(expected) if expected is not None else None
        file, temp = self._open_file(), self._temp
        assert temp is not None
        with os_errors("cannot store blob"):
            file.flush()
            os.fsync(file.fileno())
            file.close()
            self._file = None
            actual = "sha256:" + self._hash.hexdigest()
            if want is not None and want != actual:
                self._discard()
                raise DigestMismatch(want, actual)
            final = self._blobs_dir / blob_filename(actual)
            if final.is_file():
                self._discard()
                # Ollama touches a reused blob so prune's grace period covers it again.
                with contextlib.suppress(OSError):
                    os.utime(final)
            else:
                os.chmod(temp, FILE_MODE)
                os.replace(temp, final)
                self._temp = None
                fsync_dir(final.parent)
        logger.debug("blob_committed digest=%s size=%d", actual, self._size)
        return actual, self._size

    def _open_file(self) -> BinaryIO:
        if self._file is None:
            raise RegistryError("blob writer is not open")
        return self._file

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None
