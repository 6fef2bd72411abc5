"""Digest validation and the blob file names derived from it."""

from __future__ import annotations

import hashlib

import pytest

from registry.digest import (
    DIGEST_RE,
    blob_filename,
    hex_of,
    is_valid_digest,
    parse_digest,
    sha256_digest,
)
from registry.errors import InvalidDigest

HEX = "a4e5e156ddec27e286f75328784d7106b60a4eb1d246e950a001a3f944fbda99"


@pytest.mark.parametrize(
    "text",
    [
        f"sha256:{HEX}",
        f"sha256-{HEX}",
        f"sha256:{HEX.upper()}",
        f"sha256-{HEX[:32].upper()}{HEX[32:]}",
    ],
)
def test_digest_parse_accepts_both_spellings_and_lowercases(text: str) -> None:
    assert parse_digest(text) == f"sha256:{HEX}"
    assert hex_of(text) == HEX
    assert blob_filename(text) == f"sha256-{HEX}"
    assert is_valid_digest(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256:",
        "sha256:123",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha256:{HEX}\n",
        f"\nsha256:{HEX}",
        f" sha256:{HEX}",
        f"sha256_{HEX}",
        f"sha256{HEX}",
        f"SHA256:{HEX}",
        f"sha512:{HEX}{HEX}",
        f"md5:{HEX[:32]}",
        f"sha256:{HEX[:-1]}g",
        "sha256:../../etc/passwd",
        f"sha256:../../{HEX}",
        f"sha256:{HEX}/../../x",
        f"../sha256-{HEX}",
        f"sha256:{HEX[:-2]}\u0661\u0662",  # Arabic-Indic digits are not hex
        HEX,
    ],
)
def test_digest_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidDigest, match="invalid digest format"):
        parse_digest(text)
    with pytest.raises(InvalidDigest):
        blob_filename(text)
    assert not is_valid_digest(text)


def test_digest_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidDigest):
        parse_digest(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidDigest):
        parse_digest(f"sha256:{HEX}".encode())  # type: ignore[arg-type]


def test_digest_re_is_anchored_at_both_ends() -> None:
    assert DIGEST_RE.match(f"sha256:{HEX}") is not None
    assert DIGEST_RE.match(f"sha256:{HEX}\n") is None
    assert DIGEST_RE.search(f"x sha256:{HEX}") is None


@pytest.mark.parametrize("data", [b"", b"hello", bytes(range(256)) * 100])
def test_digest_sha256_of_bytes(data: bytes) -> None:
    digest = sha256_digest(data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert parse_digest(digest) == digest


def test_digest_of_empty_input_is_the_well_known_value() -> None:
    assert sha256_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
