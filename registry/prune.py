"""Tidying a store's files: canonical blob names, stale temps, unreferenced blobs, empty dirs.

These work on the directories alone; ``ModelStore`` decides what is still referenced and
calls them under its lock (``prune``, ``fix_blob_names``). Start-up runs them, so a file
that cannot be removed or renamed (read-only store, a race) is logged and skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from registry.blob import TMP_PREFIX, sorted_entries
from registry.digest import DIGEST_RE, blob_filename, parse_digest

logger = logging.getLogger(__name__)


def fix_blob_names(blobs_dir: Path) -> None:
    """Rename old ``sha256:<hex>`` (and upper-case hex) blob files to ``sha256-<hex>``."""
    for entry in sorted_entries(blobs_dir):
        if DIGEST_RE.match(entry.name) is None:
            continue
        canonical = blob_filename(entry.name)
        if entry.name == canonical:
            continue
        try:
            os.replace(entry.path, blobs_dir / canonical)
        except OSError as exc:
            logger.warning("blob_rename_failed file=%s reason=%s", entry.name, exc.strerror)
            continue
        logger.info("blob_renamed old=%s new=%s", entry.name, canonical)


def prune_blobs(blobs_dir: Path, in_use: set[str], cutoff: float) -> list[str]:
    """Delete files in ``blobs_dir`` last modified at or before ``cutoff`` that are not a
    canonical blob of a digest in ``in_use``; return their names."""
    removed: list[str] = []
    for entry in sorted_entries(blobs_dir):
        try:
            if entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            if _digest_of_blob_name(entry.name) in in_use:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("prune_failed file=%s reason=%s", entry.name, exc.strerror)
            continue
        removed.append(entry.name)
    return removed


def prune_manifest_dirs(manifests_dir: Path, cutoff: float) -> None:
    """Delete manifest temps last modified at or before ``cutoff``, then empty directories."""
    if not manifests_dir.is_dir():
        return
    for current, _dirs, files in os.walk(manifests_dir, topdown=False):
        for file in files:
            path = os.path.join(current, file)
            with contextlib.suppress(OSError):
                if file.startswith(TMP_PREFIX) and os.lstat(path).st_mtime <= cutoff:
                    os.unlink(path)
        if os.path.abspath(current) != os.path.abspath(manifests_dir):
            with contextlib.suppress(OSError):
                if not os.listdir(current):
                    os.rmdir(current)


def _digest_of_blob_name(name: str) -> str | None:
    """The digest a file in blobs/ holds, or None unless its name is canonical."""
    if DIGEST_RE.match(name) is None or blob_filename(name) != name:
        return None
    return parse_digest(name)
