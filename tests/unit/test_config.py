"""Settings from an injected environment: defaults, aliases, errors that name the variable."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from supervisor.config import ConfigError, Settings


def test_config_defaults_match_ollama() -> None:
    s = Settings.from_env({})
    assert s.host.bind == ("127.0.0.1", 11434)
    assert s.models_dir == Path.home() / ".corral" / "models"
    assert s.keep_alive.seconds == 300
    assert s.max_queue == 512 and s.max_loaded_models == 3


def test_config_corral_name_wins_over_ollama_alias() -> None:
    s = Settings.from_env({"OLLAMA_MAX_QUEUE": "7", "CORRAL_MAX_QUEUE": "9"})
    assert s.max_queue == 9
    assert Settings.from_env({"OLLAMA_MAX_QUEUE": "7"}).max_queue == 7


@pytest.mark.parametrize(
    "value, bind",
    [
        ("0.0.0.0", ("0.0.0.0", 11434)),
        (":8080", ("0.0.0.0", 8080)),
        ("http://example.internal", ("example.internal", 80)),
        ("https://example.internal", ("example.internal", 443)),
        ("[::1]:9000", ("::1", 9000)),
        ("  '127.0.0.1:1234' ", ("127.0.0.1", 1234)),
    ],
)
def test_config_host_parses_like_ollama_host(value: str, bind: tuple[str, int]) -> None:
    assert Settings.from_env({"CORRAL_HOST": value}).host.bind == bind


@pytest.mark.parametrize(
    "var, value, seconds",
    [
        ("CORRAL_KEEP_ALIVE", "10m", 600),
        ("CORRAL_KEEP_ALIVE", "3600", 3600),
        ("OLLAMA_KEEP_ALIVE", "-1", math.inf),
        ("CORRAL_LOAD_TIMEOUT", "0", math.inf),
    ],
)
def test_config_durations(var: str, value: str, seconds: float) -> None:
    s = Settings.from_env({var: value})
    got = s.keep_alive.seconds if "KEEP" in var else s.load_timeout_s
    assert got == seconds


@pytest.mark.parametrize(
    "var, value",
    [
        ("CORRAL_MAX_QUEUE", "lots"),
        ("CORRAL_MAX_QUEUE", "0"),
        ("OLLAMA_NUM_PARALLEL", "-2"),
        ("CORRAL_KEEP_ALIVE", "soon"),
        ("CORRAL_NOPRUNE", "maybe"),
        ("CORRAL_WORKER_BACKEND", "torch"),
        ("CORRAL_STREAM_INTERVAL_MS", "-1"),
        ("CORRAL_STREAM_INTERVAL_MS", "50ms"),
    ],
)
def test_config_bad_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({var: value})
    assert var in str(err.value) and "expected" in str(err.value)


def test_config_stream_interval_defaults_to_50_ms_and_0_sends_every_token() -> None:
    assert Settings.from_env({}).stream_interval_ms == 50
    assert Settings.from_env({"CORRAL_STREAM_INTERVAL_MS": "0"}).stream_interval_ms == 0


def test_config_overrides_and_gpu_passthrough() -> None:
    s = Settings.from_env({"CUDA_VISIBLE_DEVICES": "1"}, max_queue=3)
    assert s.max_queue == 3 and s.gpu_env == (("CUDA_VISIBLE_DEVICES", "1"),)
    with pytest.raises(ConfigError):
        Settings.from_env({}, no_such_setting=1)
