"""The OpenAI side of /v1: request bodies, their sampling options, ids, usage, the error object."""

from __future__ import annotations

import secrets
import time
from typing import Any

from pydantic import Field

from supervisor.errors import ApiError
from supervisor.inference import Record
from supervisor.schemas import Body

Obj = dict[str, Any]
FINGERPRINT = "fp_ollama"
"""Ollama's system_fingerprint; kept so clients that log or compare it see what they expect."""

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


class SamplingBody(Body):
    """Fields /v1/chat/completions and /v1/completions share."""

    model: str = ""
    stream: bool | None = None
    """Off unless true, as in OpenAI (the native API streams by default)."""
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    """Becomes num_predict."""
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    keep_alive: Any = None
    """Non-standard, as Ollama accepts it: seconds or a duration string."""
    options: dict[str, Any] | None = None
    """Non-standard, as Ollama accepts it: native options under the OpenAI fields."""

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def budget(self) -> int | None:
        return self.max_tokens

    def native_options(self) -> dict[str, Any]:
        """Native options: OpenAI's sampling defaults, then `options`, then the OpenAI fields.

        Like Ollama, a missing temperature or top_p is sent as 1.0 (OpenAI's defaults), so
        they override the model's own PARAMETERs unless the request says otherwise.
        """
        out: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}
        out.update(self.options or {})
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        given = {
            "num_predict": self.budget(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": stop,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
        }
        out.update({key: value for key, value in given.items() if value is not None})
        return out


class ChatCompletionRequest(SamplingBody):
    messages: list[Any] = Field(default_factory=list)
    """OpenAI messages; checked and converted one by one (see openai_chat)."""
    max_completion_tokens: int | None = None
    """The newer name of max_tokens; wins when both are given."""
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    """"none" withholds the tools; any other choice is left to the model."""
    reasoning_effort: str | None = None
    reasoning: dict[str, Any] | None = None
    """{"effort": ...}, the Responses-style spelling of reasoning_effort."""

    def budget(self) -> int | None:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens


class CompletionRequest(SamplingBody):
    prompt: Any = None
    """One string (a one-element list of strings is taken too)."""
    suffix: str | None = None


class EmbeddingRequest(Body):
    model: str = ""
    input: Any = None
    """A string or a list of strings."""
    encoding_format: Any = None
    """"float" (default) or "base64" (little-endian float32 bytes)."""
    dimensions: int | None = None
    keep_alive: Any = None
    options: dict[str, Any] | None = None


def error_body(exc: ApiError) -> Obj:
    """OpenAI's error object; the status picks `type`, so the SDKs raise their typed errors."""
    kind = _ERROR_TYPES.get(exc.status, "api_error")
    return {"error": {"message": exc.message, "type": kind, "param": None, "code": None}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now_s() -> int:
    return int(time.time())


def usage(record: Record) -> Obj:
    """Token counts of a native final record, in OpenAI's shape."""
    prompt = int(record.get("prompt_eval_count") or 0)
    completion = int(record.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(done_reason: object, has_tool_calls: bool = False) -> str | None:
    """stop, length or tool_calls (a stop that called tools); None when the native one is empty."""
    if not done_reason:
        return None
    if done_reason == "length":
        return "length"
    return "tool_calls" if has_tool_calls else "stop"
