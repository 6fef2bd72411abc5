"""A sequential little-endian reader over a stream of known size; every read is bounded.

Reads are served from a buffer refilled in chunks; a read, skip or count that would run
past the end of the file raises GGUFError before anything is allocated for it.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

from registry.errors import GGUFError

_CHUNK_BYTES = 1 << 20
_MAX_STRING_BYTES = 64 << 20  # real values (chat templates) are tens of KB
_U64 = struct.Struct("<Q")


class BoundedReader:
    """Sequential little-endian reads from a stream of known size; every read is bounded."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._size = size
        self._buf = b""
        self._at = 0  # index of the next unread byte in _buf
        self._base = 0  # file offset of _buf[0]

    @property
    def pos(self) -> int:
        return self._base + self._at

    @property
    def size(self) -> int:
        return self._size

    @property
    def remaining(self) -> int:
        return self._size - self.pos

    def check_count(self, count: int, unit_bytes: int, what: str) -> None:
        """Refuse a count whose items, at their smallest, cannot fit in the rest of the file."""
        if count * unit_bytes > self.remaining:
            raise GGUFError(
                f"malformed GGUF: {what} {count} exceeds the {self.remaining} bytes left "
                f"in the file at offset {self.pos}"
            )

    def _fill(self, n: int, what: str) -> None:
        if n > self.remaining:
            raise GGUFError(
                f"truncated GGUF file: {what} needs {n} bytes at offset {self.pos}, "
                f"only {self.remaining} remain"
            )
        if len(self._buf) - self._at >= n:
            return
        rest = self._buf[self._at :]
        self._base += self._at
        self._buf = rest + self._stream.read(max(n - len(rest), _CHUNK_BYTES))
        self._at = 0
        if len(self._buf) < n:  # the file shrank after we measured it
            raise GGUFError(f"truncated GGUF file: {what} at offset {self.pos}")

    def unpack(self, st: struct.Struct, what: str) -> tuple[Any, ...]:
        self._fill(st.size, what)
        values = st.unpack_from(self._buf, self._at)
        self._at += st.size
        return values

    def uint(self, st: struct.Struct, what: str) -> int:
        self._fill(st.size, what)
        value: int = st.unpack_from(self._buf, self._at)[0]
        self._at += st.size
        return value

    def skip(self, n: int, what: str) -> None:
        if len(self._buf) - self._at >= n:
            self._at += n
            return
        if n > self.remaining:
            self._fill(n, what)  # raises the truncation error
        target = self.pos + n
        self._stream.seek(target)
        self._buf, self._at, self._base = b"", 0, target

    def string(self, what: str, *, keep: bool = True) -> str:
        n = self.uint(_U64, f"{what} length")
        self.check_count(n, 1, f"{what} length")
        if not keep:
            self.skip(n, what)
            return ""
        if n > _MAX_STRING_BYTES:
            raise GGUFError(f"malformed GGUF: {what} is {n} bytes, more than any real value")
        self._fill(n, what)
        raw = self._buf[self._at : self._at + n]
        self._at += n
        return raw.decode("utf-8", errors="replace")

    def strings(self, count: int, what: str, *, keep: bool) -> list[object] | None:
        """Read or step over `count` strings; the common case stays inside the buffer."""
        unpack_from = _U64.unpack_from
        items: list[object] = []
        for _ in range(count):
            buf, at = self._buf, self._at
            if len(buf) - at >= 8:
                n = unpack_from(buf, at)[0]
                if len(buf) - at - 8 >= n and n <= _MAX_STRING_BYTES:
                    self._at = at + 8 + n
                    if keep:
                        items.append(buf[at + 8 : at + 8 + n].decode("utf-8", errors="replace"))
                    continue
            items.append(self.string(what, keep=keep))
        return items if keep else None
