"""Typed Ollama wire records for request bodies, and the one place JSON bodies are parsed.

Unknown fields are ignored (as Ollama does); a field of the wrong type is a 400 that names
the field (Ollama answers 500 with Go's decoder text there).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from supervisor.errors import BadRequest

M = TypeVar("M", bound=BaseModel)

_TYPE_WORDS = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "dict_type": "an object",
    "list_type": "an array",
}


class Body(BaseModel):
    """Base of every request body: extra fields ignored, no silent coercion of types."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


class ShowRequest(Body):
    model: str = ""
    name: str = ""
    """Legacy alias of `model`."""
    verbose: bool = False
    system: str | None = None
    options: dict[str, Any] | None = None


class CopyRequest(Body):
    source: str = ""
    destination: str = ""


class DeleteRequest(Body):
    model: str = ""
    name: str = ""


class CreateRequest(Body):
    model: str = ""
    name: str = ""
    from_: str = Field("", alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    quantize: str = ""
    modelfile: str = ""
    """Legacy form: the Modelfile text, parsed on the server."""
    stream: bool | None = None


async def parse_body(request: Request, model: type[M]) -> M:
    """Read the request's JSON body into `model`; BadRequest on an empty, bad or mistyped body."""
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return validate(model, data)


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate an already-decoded JSON object; the error names the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        expected = _TYPE_WORDS.get(first["type"], first["msg"].lower())
        raise BadRequest(f'invalid value for field "{where}": expected {expected}') from exc


def timestamp(epoch_s: float) -> str:
    """RFC 3339 local time with sub-second digits and offset (streamed records use
    `inference.created_at`, UTC)."""
    return datetime.fromtimestamp(epoch_s).astimezone().isoformat()


class Message(Body):
    """A chat message; `role` is lower-cased on input as Ollama does."""

    role: str
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None

    def wire(self) -> dict[str, object]:
        out: dict[str, object] = {"role": self.role.lower(), "content": self.content}
        for key in ("thinking", "images", "tool_calls", "tool_name", "tool_call_id"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out


class _Inference(Body):
    model: str = ""
    format: Any = None
    """"json", a JSON schema object, or null/"" for none."""
    options: dict[str, Any] | None = None
    keep_alive: Any = None
    """Seconds (number) or a Go duration string; see supervisor.keepalive."""
    stream: bool | None = None
    think: bool | str | None = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class GenerateRequest(_Inference):
    prompt: str = ""
    suffix: str = ""
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class ChatRequest(_Inference):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class EmbedRequest(Body):
    model: str = ""
    input: Any = None
    """A string or a list of strings."""
    truncate: bool | None = None
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: Any = None


class EmbeddingsRequest(Body):
    model: str = ""
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: Any = None


class PullRequest(Body):
    model: str = ""
    name: str = ""
    """Legacy alias of `model`."""
    insecure: bool = False
    """Allow a plain-http registry."""
    stream: bool | None = None
    username: str | None = None
    """Ignored, as in Ollama; registry credentials come from CORRAL_REGISTRY_AUTH."""
    password: str | None = None
    """Ignored, as in Ollama."""


class PushRequest(PullRequest):
    pass
