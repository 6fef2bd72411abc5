"""Settings: one frozen record read once from an injectable environment (CORRAL_*, OLLAMA_*)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TypeVar

from registry.hostaddr import HostAddr, parse_host
from supervisor.keepalive import KeepAlive, KeepAliveError, parse_env_keep_alive

T = TypeVar("T")

# Environment variables that are passed through to workers untouched (GPU selection).
GPU_ENV_PASSTHROUGH = (
    "CUDA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GGML_VK_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "HSA_OVERRIDE_GFX_VERSION",
)


class ConfigError(ValueError):
    """A setting with a value it does not accept; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Every server setting, with its unit in the name; built by `from_env`, never mutated."""

    host: HostAddr = field(default_factory=lambda: parse_host(""))
    models_dir: Path = field(default_factory=lambda: Path.home() / ".corral" / "models")
    keep_alive: KeepAlive = field(default_factory=lambda: KeepAlive(300.0))
    max_loaded_models: int = 3
    num_parallel: int = 0
    """Parallel slots per model; 0 means chosen from free memory."""
    max_queue: int = 512
    stream_interval_ms: int = 50
    """Longest a streamed token waits so that several leave in one chunk; 0 sends each."""
    context_length: int = 4096
    load_timeout_s: float = 300.0
    noprune: bool = False
    origins: tuple[str, ...] = ()
    debug: bool = False
    worker_backend: str = "llama"
    """Engine the workers run: "llama", or "fake" (canned tokens, for tests)."""
    worker_args: tuple[str, ...] = ()
    """Extra argv for every worker (the fake backend's switches, in tests)."""
    spare_worker: bool = True
    """Keep one worker process started ahead of need (imports done) for the next cold load."""
    gpu_env: tuple[tuple[str, str], ...] = ()
    registry_auth: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    """Basic credentials per registry host, as (host[:port], user, password); secret."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read every CORRAL_<NAME> (or OLLAMA_<NAME>) from `environ`; raise ConfigError."""
        env = _Env(os.environ if environ is None else environ)
        values: dict[str, object] = {
            "host": env.get("HOST", parse_host, "[scheme://]host[:port], e.g. 127.0.0.1:11434"),
            "models_dir": env.get("MODELS", _path, "a directory path"),
            "keep_alive": env.get("KEEP_ALIVE", _keep_alive, "a duration like 5m or seconds"),
            "max_loaded_models": env.get("MAX_LOADED_MODELS", _count, "an integer >= 0"),
            "num_parallel": env.get("NUM_PARALLEL", _count, "an integer >= 0"),
            "max_queue": env.get("MAX_QUEUE", _positive, "an integer >= 1"),
            "stream_interval_ms": env.get("STREAM_INTERVAL_MS", _count, "milliseconds >= 0"),
            "context_length": env.get("CONTEXT_LENGTH", _count, "an integer >= 0"),
            "load_timeout_s": env.get("LOAD_TIMEOUT", _timeout, "a duration like 5m or seconds"),
            "noprune": env.get("NOPRUNE", _bool, "true or false"),
            "origins": env.get("ORIGINS", _list, "comma-separated origins"),
            "debug": env.get("DEBUG", _bool, "true or false"),
            "worker_backend": env.get("WORKER_BACKEND", _backend, "llama or fake"),
            "worker_args": env.get("WORKER_ARGS", _args, "space-separated arguments"),
            "spare_worker": env.get("SPARE_WORKER", _bool, "true or false"),
            "registry_auth": env.get(
                "REGISTRY_AUTH", _registry_auth, "host=user:password,... or a file of such lines"
            ),
        }
        values = {k: v for k, v in values.items() if v is not None}
        if values.get("max_loaded_models") == 0:
            values["max_loaded_models"] = 3  # Ollama: 0 means automatic, 3 x max(#GPUs, 1)
        if values.get("context_length") == 0:
            values["context_length"] = 4096
        gpu = tuple((k, environ_v) for k in GPU_ENV_PASSTHROUGH if (environ_v := env.raw(k)))
        settings = cls(**values, gpu_env=gpu)  # type: ignore[arg-type]
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(settings, **overrides)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One log line with every setting; registry passwords are left out."""
        parts = [
            f"{f.name}={getattr(self, f.name)!s}"
            for f in fields(self)
            if f.name not in ("gpu_env", "registry_auth")
        ]
        hosts = ",".join(host for host, _, _ in self.registry_auth)
        return " ".join([*parts, f"registry_auth_hosts={hosts}"])


# Settings whose values never appear in messages or logs.
_SECRET = frozenset({"REGISTRY_AUTH"})


class _Env:
    """Looks a setting up as CORRAL_<NAME>, then OLLAMA_<NAME>; trims spaces and quotes."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str:
        return self._environ.get(name, "").strip().strip("\"'")

    def get(self, name: str, parse: Callable[[str], T], accepts: str) -> T | None:
        for prefix in ("CORRAL_", "OLLAMA_"):
            var = prefix + name
            if var in self._environ:
                text = self._environ[var].strip().strip("\"'")
                if text == "":
                    return None
                try:
                    return parse(text)
                except (ValueError, KeepAliveError) as exc:
                    shown = "(value hidden)" if name in _SECRET else repr(text)
                    raise ConfigError(f"{var}={shown} is invalid: expected {accepts}") from exc
        return None


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _keep_alive(text: str) -> KeepAlive:
    return parse_env_keep_alive(text)


def _timeout(text: str) -> float:
    seconds = parse_env_keep_alive(text).seconds
    # Ollama: zero or negative means no timeout.
    return float("inf") if seconds <= 0 else seconds


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _bool(text: str) -> bool:
    # Stricter than Ollama (which reads junk as true): a typo is a startup error.
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


def _list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _backend(text: str) -> str:
    if text not in ("llama", "fake"):
        raise ValueError(text)
    return text


def _args(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _registry_auth(text: str) -> tuple[tuple[str, str, str], ...]:
    """``host=user:password`` entries, comma-separated, or a file with one entry a line
    (blank lines and ``#`` comments skipped); a password may hold ``:`` but not ``,`` inline."""
    if "=" in text:
        entries = text.split(",")
    else:
        try:
            entries = Path(text).expanduser().read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {text}") from exc
    found: list[tuple[str, str, str]] = []
    for entry in entries:
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        host, sep, login = entry.partition("=")
        user, colon, password = login.partition(":")
        if not (sep and colon and host.strip() and user.strip()):
            raise ValueError(entry)
        found.append((host.strip().lower(), user.strip(), password))
    return tuple(found)
