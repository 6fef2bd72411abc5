"""The on-disk model store in Ollama's layout: content-addressed blobs plus named manifests.

Layout under ``root`` (directories 0755, files 0644)::

    blobs/sha256-<64 lowercase hex>               one file per blob
    blobs/.tmp-<random>                           a blob being written; never a valid digest
    manifests/<host>/<namespace>/<model>/<tag>    manifest bytes, stored exactly as received

Invariants:

- Every path is built from a validated digest (``blob_path``) or a validated name
  (``_manifest_path``) and checked to lie inside the store, so nothing is written outside
  ``root``.
- A blob appears only by atomic rename after its sha256 was verified; a manifest appears
  only by atomic replace after every blob it references exists.
- Lookups ignore case and keep the stored spelling (Ollama's ``getExistingName``).
- ``get`` remembers what each name resolved to and reuses it while the manifest file is the
  same file with the same size, times and inode (one ``stat``); every request names a model,
  and resolving walks four directory levels and parses the manifest (~0.4 ms). Writes
  through the store forget everything remembered; a change made beside the store shows in
  the ``stat``.

Thread safety: one lock serialises ``write_manifest``, ``copy``, ``delete``, ``prune``,
``remove_unreferenced`` and ``fix_blob_names``. Blob writers and reads run unlocked: a blob
appears atomically, and a fresh blob is inside prune's grace period. ``delete`` may remove a
blob that a concurrent create has just reused; that create's ``write_manifest`` then fails
with ``BlobNotFound`` rather than storing a manifest with a hole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from registry.blob import (
    FILE_MODE,
    TMP_PREFIX,
    BlobWriter,
    check_inside,
    fsync_dir,
    make_dirs,
    os_errors,
    sorted_entries,
)
from registry.digest import blob_filename
from registry.errors import (
    BlobNotFound,
    InvalidManifest,
    InvalidName,
    ModelNotFound,
    RegistryError,
)
from registry.manifest import MAX_MANIFEST_BYTES, Manifest
from registry.names import ModelName, is_valid_part
from registry.prune import fix_blob_names, prune_blobs, prune_manifest_dirs

logger = logging.getLogger(__name__)

_KINDS = ("host", "namespace", "model", "tag")
_CHUNK_BYTES = 1024 * 1024
_DIGEST_BYTES_RE = re.compile(rb"sha256[:-]([0-9a-fA-F]{64})")
_REMEMBERED_MAX = 256  # names `get` keeps; past that it starts over

FileId = tuple[int, int, int, int]
"""A file's inode, size, mtime and ctime (ns): the same bytes while it stays the same."""


@dataclass(frozen=True)
class StoredModel:
    """A manifest as stored: its name's stored spelling, parsed form, bytes, ID and mtime.

    ``digest_hex`` is the sha256 of the manifest file's bytes (the model ID ``ollama list``
    shows); ``modified_at`` is the manifest file's mtime in seconds since the epoch.
    """

    name: ModelName
    manifest: Manifest
    raw: bytes
    digest_hex: str
    modified_at: float


def _read_capped(path: Path, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """Read at most ``max_bytes`` + 1 bytes of a regular file; return them and its stat."""
    with open(path, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RegistryError(f"{path.name} is not a regular file")
        return file.read(max_bytes + 1), info


def _file_id(info: os.stat_result) -> FileId:
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _current_id(path: Path) -> FileId | None:
    try:
        return _file_id(os.stat(path))
    except OSError:
        return None


class ModelStore:
    """The model store rooted at ``root``; directories are created on first write."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.manifests_dir = self.root / "manifests"
        self._lock = threading.Lock()
        # name asked for -> (manifest path, its FileId when read, what get returned)
        self._remembered: dict[ModelName, tuple[Path, FileId, StoredModel]] = {}

    # -- blobs -----------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Return the blob file for ``digest``; raise InvalidDigest for a malformed one."""
        path = self.blobs_dir / blob_filename(digest)
        if os.path.dirname(os.path.abspath(path)) != os.path.abspath(self.blobs_dir):
            raise RegistryError("path escapes the model store")
        return path

    def has_blob(self, digest: str) -> bool:
        """Report whether the blob is stored."""
        return self.blob_path(digest).is_file()

    def blob_size(self, digest: str) -> int:
        """Return the blob's size in bytes; raise BlobNotFound if it is not stored."""
        path = self.blob_path(digest)
        try:
            info = path.stat()
        except OSError as exc:
            raise BlobNotFound(f'blob "{digest}" not found') from exc
        if not stat.S_ISREG(info.st_mode):
            raise BlobNotFound(f'blob "{digest}" not found')
        return info.st_size

    def blob_writer(self, max_bytes: int | None = None) -> BlobWriter:
        """Return a writer that streams a new blob in (see BlobWriter)."""
        return BlobWriter(self.blobs_dir, max_bytes)

    def write_blob_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data`` as a blob; return (digest, size)."""
        with self.blob_writer() as writer:
            writer.write(data)
            return writer.commit()

    def import_file(self, path: Path, max_bytes: int | None = None) -> tuple[str, int]:
        """Copy a local regular file in as a blob; return (digest, size)."""
        # O_NONBLOCK so a FIFO cannot block the open; it is then refused as not regular.
        with os_errors(f"cannot read {path}"):
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise RegistryError(f"{path} is not a regular file")
        with open(fd, "rb") as source, self.blob_writer(max_bytes) as writer:
            while chunk := source.read(_CHUNK_BYTES):
                writer.write(chunk)
            return writer.commit()

    def read_blob_bytes(self, digest: str, max_bytes: int) -> bytes:
        """Return a small blob's bytes; RegistryError if it is larger than ``max_bytes``."""
        path = self.blob_path(digest)
        try:
            data, _ = _read_capped(path, max_bytes)
        except FileNotFoundError as exc:
            raise BlobNotFound(f'blob "{digest}" not found') from exc
        except OSError as exc:
            raise RegistryError(f"cannot read blob {digest}: {exc.strerror}") from exc
        if len(data) > max_bytes:
            raise RegistryError(f"blob {digest} larger than {max_bytes} bytes")
        return data

    # -- manifests: reading ----------------------------------------------------------------

    def resolve(self, name: ModelName) -> ModelName | None:
        """Return the stored spelling of a case-insensitively equal name, or None."""
        return self._find(name.parts(), self.manifests_dir, (), name.scheme)

    def get(self, name: ModelName) -> StoredModel:
        """Return the stored model; raise ModelNotFound, or InvalidManifest if corrupt."""
        remembered = self._remembered.get(name)
        if remembered is not None:
            path, file_id, model = remembered
            if _current_id(path) == file_id:
                return model
        found = self.resolve(name)
        if found is None:
            raise ModelNotFound(f'model "{name.display_shortest()}" not found')
        path = self._manifest_path(found)
        try:
            model, file_id = self._load_with_id(found, path)
        except FileNotFoundError as exc:
            raise ModelNotFound(f'model "{name.display_shortest()}" not found') from exc
        except OSError as exc:
            raise RegistryError(f"cannot read manifest: {exc.strerror}") from exc
        if len(self._remembered) >= _REMEMBERED_MAX:
            self._remembered.clear()
        self._remembered[name] = (path, file_id, model)
        return model

    def list_models(self) -> list[StoredModel]:
        """Return every readable model; bad names and corrupt manifests are logged, skipped."""
        models: list[StoredModel] = []
        for path, name in self._manifest_files():
            try:
                models.append(self._load(name, path))
            except FileNotFoundError:
                continue  # deleted while we listed
            except (OSError, RegistryError) as exc:
                logger.warning("manifest_skipped path=%s reason=%s", path, exc)
        return models

    # -- manifests: writing ----------------------------------------------------------------

    def write_manifest(self, name: ModelName, data: bytes) -> None:
        """Store manifest bytes unchanged under ``name``, once all its blobs exist."""
        manifest = Manifest.parse(data)
        name.parts()
        with self._lock:
            for digest in manifest.digests():
                if not self.has_blob(digest):
                    raise BlobNotFound(f'blob "{digest}" not found')
            target = self._target_path(name)
            self._write_atomic(target, data)
            self._remembered.clear()
        logger.info("manifest_written name=%s", name)

    def copy(self, src: ModelName, dst: ModelName) -> None:
        """Duplicate src's manifest file as dst; blobs are shared; same path is a no-op."""
        src.parts()
        dst.parts()
        with self._lock:
            found = self.resolve(src)
            if found is None:
                raise ModelNotFound(f'model "{src.display_shortest()}" not found')
            src_path, dst_path = self._manifest_path(found), self._target_path(dst)
            if os.path.abspath(src_path) == os.path.abspath(dst_path):
                return
            with os_errors("cannot read manifest"):
                raw, _ = _read_capped(src_path, MAX_MANIFEST_BYTES)
            Manifest.parse(raw)
            self._write_atomic(dst_path, raw)
            self._remembered.clear()
        logger.info("model_copied src=%s dst=%s", found, dst)

    def delete(self, name: ModelName) -> None:
        """Remove the manifest, its empty parent dirs, and blobs nothing else references."""
        name.parts()
        with self._lock:
            found = self.resolve(name)
            if found is None:
                raise ModelNotFound(f'model "{name.display_shortest()}" not found')
            path = self._manifest_path(found)
            with os_errors("cannot delete manifest"):
                raw, _ = _read_capped(path, MAX_MANIFEST_BYTES)
                path.unlink()
            self._remembered.clear()
            self._remove_empty_parents(path.parent)
            try:
                own = Manifest.parse(raw).digests()
            except InvalidManifest as exc:
                logger.warning("delete_kept_blobs name=%s reason=%s", found, exc)
                own = []
            in_use = self._referenced_digests(strict=False)
            assert in_use is not None
            for digest in own:
                if digest in in_use:
                    continue
                try:
                    self.blob_path(digest).unlink(missing_ok=True)
                except OSError as exc:  # the model is gone already; prune retries later
                    logger.warning("blob_remove_failed digest=%s reason=%s", digest, exc.strerror)
                    continue
                logger.info("blob_removed digest=%s", digest)
        logger.info("model_deleted name=%s", found)

    def remove_unreferenced(self, candidates: set[str]) -> list[str]:
        """Delete the candidate blobs no manifest references (after a pull replaced layers).

        Under the store's lock, so a manifest written meanwhile by create or copy is seen;
        an unreadable manifest keeps every digest its bytes mention. Returns the digests no
        longer stored (removed now, or already gone).
        """
        removed: list[str] = []
        with self._lock:
            in_use = self._referenced_digests(strict=False)
            assert in_use is not None
            for digest in sorted(candidates - in_use):
                try:
                    self.blob_path(digest).unlink(missing_ok=True)
                except OSError as exc:
                    logger.warning("blob_remove_failed digest=%s reason=%s", digest, exc.strerror)
                    continue
                logger.info("blob_removed digest=%s", digest)
                removed.append(digest)
        return removed

    # -- maintenance -----------------------------------------------------------------------

    def prune(self, grace_s: float = 3600.0, now: float | None = None) -> list[str]:
        """Delete stale temps and unreferenced blobs older than ``grace_s``; return names.

        1. Canonicalise blob file names (``fix_blob_names``).
        2. If any manifest fails to parse, prune nothing.
        3. In ``blobs/``, skip files modified within the grace period; delete files whose
           name is not a canonical digest, and blobs no manifest references.
        4. Delete stale manifest temps and remove empty directories under ``manifests/``.
        """
        cutoff = (time.time() if now is None else now) - grace_s
        with self._lock:
            fix_blob_names(self.blobs_dir)  # 1
            in_use = self._referenced_digests(strict=True)
            if in_use is None:  # 2
                logger.warning("prune_skipped reason=unreadable_manifest")
                return []
            removed = prune_blobs(self.blobs_dir, in_use, cutoff)  # 3
            prune_manifest_dirs(self.manifests_dir, cutoff)  # 4
        logger.info("prune_done removed=%d", len(removed))
        return removed

    def fix_blob_names(self) -> None:
        """Rename old ``sha256:<hex>`` (and upper-case hex) blob files to ``sha256-<hex>``."""
        with self._lock:
            fix_blob_names(self.blobs_dir)

    # -- internals -------------------------------------------------------------------------

    def _manifest_path(self, name: ModelName) -> Path:
        return check_inside(self.manifests_dir.joinpath(*name.parts()), self.manifests_dir)

    def _matching(self, directory: Path, depth: int, want: str) -> list[str]:
        """Entries spelling ``want`` in any case, the exact spelling first."""
        wanted = want.lower()
        names = [
            entry.name
            for entry in sorted_entries(directory)
            if is_valid_part(_KINDS[depth], entry.name) and entry.name.lower() == wanted
        ]
        return sorted(names, key=lambda entry: entry != want)

    def _find(
        self, wanted: tuple[str, ...], directory: Path, found: tuple[str, ...], scheme: str
    ) -> ModelName | None:
        depth = len(found)
        for entry in self._matching(directory, depth, wanted[depth]):
            path = directory / entry
            if depth == 3 and path.is_file():
                host, namespace, model = found
                return ModelName(host, namespace, model, entry, scheme)
            if depth < 3 and path.is_dir():
                result = self._find(wanted, path, (*found, entry), scheme)
                if result is not None:
                    return result
        return None

    def _target_path(self, name: ModelName) -> Path:
        """Where ``name`` is written: its existing file, else under existing dir spellings."""
        existing = self.resolve(name)
        if existing is not None:
            return self._manifest_path(existing)
        parts = list(name.parts())
        directory = self.manifests_dir
        for depth in range(3):
            matching = self._matching(directory, depth, parts[depth])
            dirs = [entry for entry in matching if (directory / entry).is_dir()]
            parts[depth] = dirs[0] if dirs else parts[depth]
            directory = directory / parts[depth]
        host, namespace, model, _ = parts
        return self._manifest_path(replace(name, host=host, namespace=namespace, model=model))

    def _write_atomic(self, path: Path, data: bytes) -> None:
        with os_errors("cannot write manifest"):
            make_dirs(path.parent)
            fd, temp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
            done = False
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.chmod(temp, FILE_MODE)
                os.replace(temp, path)
                done = True
            finally:
                if not done:
                    Path(temp).unlink(missing_ok=True)
        fsync_dir(path.parent)

    def _load(self, name: ModelName, path: Path) -> StoredModel:
        return self._load_with_id(name, path)[0]

    def _load_with_id(self, name: ModelName, path: Path) -> tuple[StoredModel, FileId]:
        raw, info = _read_capped(path, MAX_MANIFEST_BYTES)
        manifest = Manifest.parse(raw)
        digest = hashlib.sha256(raw).hexdigest()
        return StoredModel(name, manifest, raw, digest, info.st_mtime), _file_id(info)

    def _manifest_files(self) -> list[tuple[Path, ModelName]]:
        """Every file exactly four levels under manifests/ whose path is a valid name."""
        files: list[tuple[Path, ModelName]] = []
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if path.name.startswith(TMP_PREFIX) or not path.is_file():
                continue
            host, namespace, model, tag = path.relative_to(self.manifests_dir).parts
            try:
                files.append((path, ModelName.from_parts(host, namespace, model, tag)))
            except InvalidName:
                logger.warning("manifest_skipped path=%s reason=invalid_name", path)
        return files

    def _referenced_digests(self, strict: bool) -> set[str] | None:
        """Digests used by any manifest; on an unparseable one, None if ``strict``, else
        every digest-shaped string in its bytes counts (a conservative guess)."""
        in_use: set[str] = set()
        for path, _ in self._manifest_files():
            try:
                raw, _ = _read_capped(path, MAX_MANIFEST_BYTES)
            except FileNotFoundError:
                continue
            except OSError:
                raw = b""
            try:
                in_use.update(Manifest.parse(raw).digests())
            except InvalidManifest as exc:
                logger.warning("manifest_unreadable path=%s reason=%s", path, exc)
                if strict:
                    return None
                found = _DIGEST_BYTES_RE.finditer(raw)
                in_use.update("sha256:" + m.group(1).decode().lower() for m in found)
        return in_use

    def _remove_empty_parents(self, directory: Path) -> None:
        top = os.path.abspath(self.manifests_dir)
        while os.path.abspath(directory) != top and directory.is_relative_to(self.manifests_dir):
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or gone): stop climbing
            directory = directory.parent
