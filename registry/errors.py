"""The registry package's errors; everything it raises is one of these.

    RegistryError
    ├── InvalidName          a model name that fails Ollama's validation
    ├── InvalidDigest        a digest that is not sha256:<64 hex>
    ├── DigestMismatch       content whose hash differs from the digest it claims
    ├── ModelNotFound        no manifest for that name
    ├── BlobNotFound         no blob for that digest
    ├── InvalidManifest      a manifest that is not valid JSON of the expected shape
    ├── GGUFError            a GGUF file that is truncated, malformed or hostile
    ├── ModelfileError       a Modelfile that does not parse (carries the line number)
    ├── InvalidOption        an option/parameter with an unknown name or a wrong type
    └── TransferError        a pull or push that failed on the registry's side
        ├── InsecureProtocol     plain http without ``insecure``
        ├── RegistryUnavailable  the registry cannot be reached, or stalled past the retries
        ├── Unauthorized         the registry refused us (401/403, or no usable credentials)
        ├── RemoteError          an unexpected status or malformed answer (``status`` kept)
        └── ResponseTooLarge     a manifest, error or token body over its cap
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error raised by the registry package."""


class InvalidName(RegistryError):
    """A model name that fails validation; it can never become a path."""


class InvalidDigest(RegistryError):
    """A digest that does not match ``sha256[:-]<64 hex>``."""


class DigestMismatch(RegistryError):
    """Content whose sha256 differs from the digest it was declared with."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f'digest mismatch, expected "{expected}", got "{actual}"')
        self.expected = expected
        self.actual = actual


class ModelNotFound(RegistryError):
    """No manifest is stored under that name."""


class BlobNotFound(RegistryError):
    """No blob is stored under that digest."""


class InvalidManifest(RegistryError):
    """A manifest that is not JSON of the manifest shape, or references bad digests."""


class GGUFError(RegistryError):
    """A GGUF file that is truncated, malformed, or claims sizes it does not have."""


class ModelfileError(RegistryError):
    """A Modelfile that does not parse; ``line`` is 1-based, 0 when not tied to a line."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"{message} (line {line})" if line else message)
        self.message = message
        self.line = line


class InvalidOption(RegistryError):
    """An option with an unknown name or a value of the wrong type."""


class TransferError(RegistryError):
    """A pull or push that failed because of the registry or the network."""


class InsecureProtocol(TransferError):
    """A plain-http registry named without ``insecure``."""

    def __init__(self, scheme: str = "http") -> None:
        super().__init__(f"insecure protocol {scheme}")


class RegistryUnavailable(TransferError):
    """The registry could not be reached, timed out, or kept failing past the retries."""


class Unauthorized(TransferError):
    """The registry refused access, or asked for credentials we may not send."""


class RemoteError(TransferError):
    """An unexpected status or a malformed answer; ``status`` is 0 when there was none."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ResponseTooLarge(TransferError):
    """A non-blob body (manifest, error, token) larger than its cap."""
