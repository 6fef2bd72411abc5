"""Content digests: the one validator every digest passes before it is used anywhere.

Only ``sha256:<64 hex>`` and its file-name spelling ``sha256-<64 hex>`` are accepted (the
check that closed Ollama's CVE-2024-37032). Canonical form is ``sha256:<lowercase hex>``.
"""

from __future__ import annotations

import hashlib
import re

from registry.errors import InvalidDigest

# \A and \Z rather than ^ and $: "$" also matches before a trailing newline.
DIGEST_RE = re.compile(r"\Asha256[:-]([0-9a-fA-F]{64})\Z")


def parse_digest(text: str) -> str:
    """Return the canonical ``sha256:<lowercase hex>``; raise ``InvalidDigest`` otherwise."""
    match = DIGEST_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidDigest("invalid digest format")
    return "sha256:" + match.group(1).lower()


def is_valid_digest(text: str) -> bool:
    """Report whether ``text`` is an acceptable digest in either spelling."""
    return isinstance(text, str) and DIGEST_RE.match(text) is not None


def hex_of(digest: str) -> str:
    """Return the 64 lowercase hex characters of a valid digest."""
    return parse_digest(digest)[len("sha256:") :]


def blob_filename(digest: str) -> str:
    """Return the blob's file name in the store, ``sha256-<lowercase hex>``."""
    return "sha256-" + hex_of(digest)


def sha256_digest(data: bytes) -> str:
    """Return the canonical digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
