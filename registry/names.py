"""Model names in Ollama's grammar: parsing, defaults, validation and display forms.

Grammar (Ollama's ``types/model/name.go``): ``[scheme://][host/][namespace/]model[:tag]``.

1. The tag is cut off at the last ``:`` only when that ``:`` comes after the last ``/``, so a
   ``host:port`` is never taken for a tag.
2. The model is what follows the last ``/``; the namespace is the ``/``-separated part before
   it; the rest is the host, with an optional ``scheme://`` prefix.
3. A separator that promises a part which turns out empty yields ``!MISSING!``, which fails
   validation.
4. Missing parts take the defaults ``registry.ollama.ai`` / ``library`` / ``latest`` /
   ``https``. Unlike Ollama, a scheme other than ``http``/``https`` is refused.

A valid name is ASCII only, and no part can be ``..``, start with ``.``, or hold ``/`` or
``\\``; so the four parts, joined under a directory, can never leave it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import InvalidName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"
MISSING_PART = "!MISSING!"

# One pattern per part, in the order host, namespace, model, tag. The first character is
# [A-Za-z0-9_]; lengths are 1-350 for the host and 1-80 for the others; only the host may
# hold ':' and the namespace may not hold '.'.
_PART_RES = (
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}", re.ASCII),
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}", re.ASCII),
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}", re.ASCII),
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}", re.ASCII),
)
_PART_KINDS = ("host", "namespace", "model", "tag")
# Ollama keeps any scheme and fails later in HTTP; we refuse anything but these up front.
_SCHEMES = frozenset({"http", "https"})


def is_valid_part(kind: str, part: str) -> bool:
    """Report whether ``part`` is valid as the ``kind`` part (host/namespace/model/tag)."""
    return _PART_RES[_PART_KINDS.index(kind)].fullmatch(part) is not None


def _cut_last(text: str, sep: str) -> tuple[str, str, bool]:
    """Split at the last ``sep``; a promised but empty side becomes ``MISSING_PART``."""
    index = text.rfind(sep)
    if index < 0:
        return text, "", False
    before, after = text[:index], text[index + len(sep) :]
    return before or MISSING_PART, after or MISSING_PART, True


@dataclass(frozen=True, slots=True)
class ModelName:
    """A model name; case is kept as given, comparisons ignore it.

    A ``ModelName`` built by ``parse_bare`` or by hand may hold empty or invalid parts; such
    a name never reaches the disk because ``parts()`` validates before returning.
    """

    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = DEFAULT_SCHEME

    @classmethod
    def parse_bare(cls, text: str) -> ModelName:
        """Split ``text`` into parts with no defaults and no validation (empty = absent)."""
        rest, tag = text, ""
        if rest.rfind(":") > rest.rfind("/"):
            rest, tag, _ = _cut_last(rest, ":")
        rest, model, promised = _cut_last(rest, "/")
        if not promised:
            return cls("", "", rest, tag, "")
        rest, namespace, promised = _cut_last(rest, "/")
        if not promised:
            return cls("", rest, model, tag, "")
        scheme, sep, host = rest.partition("://")
        if not sep:
            scheme, host = "", rest
        return cls(host, namespace, model, tag, scheme)

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse, fill the defaults and validate; raise ``InvalidName`` on any bad part."""
        bare = cls.parse_bare(text.strip())
        scheme = bare.scheme.lower() or DEFAULT_SCHEME
        if scheme not in _SCHEMES:
            raise InvalidName(f'invalid model name "{text}"')
        name = cls(
            bare.host or DEFAULT_HOST,
            bare.namespace or DEFAULT_NAMESPACE,
            bare.model,
            bare.tag or DEFAULT_TAG,
            scheme,
        )
        if not name.is_valid():
            raise InvalidName(f'invalid model name "{text}"')
        return name

    @classmethod
    def from_parts(cls, host: str, namespace: str, model: str, tag: str) -> ModelName:
        """Build a name from four stored parts (a manifest path); raise ``InvalidName``."""
        name = cls(host, namespace, model, tag)
        if not name.is_valid():
            raise InvalidName(f'invalid model name "{host}/{namespace}/{model}:{tag}"')
        return name

    def is_valid(self) -> bool:
        """Report whether all four parts pass Ollama's validity table."""
        return all(
            pattern.fullmatch(part) is not None
            for pattern, part in zip(_PART_RES, self._raw_parts(), strict=True)
        )

    def parts(self) -> tuple[str, str, str, str]:
        """Return (host, namespace, model, tag), the manifest path components; validated."""
        if not self.is_valid():
            raise InvalidName(f'invalid model name "{self}"')
        return self._raw_parts()

    def key(self) -> tuple[str, str, str, str]:
        """Return the lower-cased parts, for case-insensitive comparison and dict keys."""
        host, namespace, model, tag = self._raw_parts()
        return host.lower(), namespace.lower(), model.lower(), tag.lower()

    def matches(self, other: ModelName) -> bool:
        """Report whether both names are equal ignoring case (the scheme is not compared)."""
        return self.key() == other.key()

    def display_shortest(self) -> str:
        """Return the short display form: ``model:tag``, ``ns/model:tag`` or the full name."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def _raw_parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.model, self.tag

    def __str__(self) -> str:
        text = "".join(f"{part}/" for part in (self.host, self.namespace) if part) + self.model
        return f"{text}:{self.tag}" if self.tag else text
