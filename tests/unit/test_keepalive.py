"""Ollama keep_alive semantics: request values, the env var, and Go's duration text."""

from __future__ import annotations

import math

import pytest

from supervisor.keepalive import (
    DEFAULT_KEEP_ALIVE,
    FOREVER,
    KeepAlive,
    KeepAliveError,
    parse_env_keep_alive,
    parse_go_duration,
    parse_keep_alive,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (300, 300.0),
        (1.5, 1.5),
        (0, 0.0),
        (0.0, 0.0),
        (-1, math.inf),
        (-0.5, math.inf),
        ("10m", 600.0),
        ("300ms", 0.3),
        ("1.5h", 5400.0),
        ("1h30m", 5400.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("-0", 0.0),
        ("-1m", math.inf),
        ("+5s", 5.0),
        (".5s", 0.5),
        ("1us", 1e-6),
        ("1\u00b5s", 1e-6),
        ("1\u03bcs", 1e-6),
        ("250ns", 250e-9),
        ("2h45m30.5s", 9930.5),
        (1e30, math.inf),  # beyond Go's largest duration
    ],
)
def test_keepalive_parse_accepts(value: object, seconds: float) -> None:
    parsed = parse_keep_alive(value)
    assert parsed is not None
    assert parsed.seconds == pytest.approx(seconds)


def test_keepalive_parse_none_means_not_specified() -> None:
    assert parse_keep_alive(None) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("3600", 'time: missing unit in duration "3600"'),
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        (".s", 'time: invalid duration ".s"'),
        ("abc", 'time: invalid duration "abc"'),
        ("5mins", 'time: unknown unit "mins" in duration "5mins"'),
        ("1h 30m", 'time: unknown unit "h " in duration "1h 30m"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("9223372037s", 'time: invalid duration "9223372037s"'),
        ("\u00e9", 'time: invalid duration "\\xc3\\xa9"'),
        ('5"', 'time: unknown unit "\\"" in duration "5\\""'),
        (True, "Unsupported type: 'bool'"),
        (False, "Unsupported type: 'bool'"),
        ({"a": 1}, "Unsupported type: 'map[string]interface {}'"),
        ([1], "Unsupported type: '[]interface {}'"),
    ],
)
def test_keepalive_parse_rejects_with_go_message(value: object, message: str) -> None:
    with pytest.raises(KeepAliveError) as info:
        parse_keep_alive(value)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600.0),
        ("0", 0.0),
        ("-1", math.inf),
        ("+30", 30.0),
        ("5m", 300.0),
        ("-1h", math.inf),
        ("  10s  ", 10.0),
        ("", DEFAULT_KEEP_ALIVE.seconds),
    ],
)
def test_keepalive_env_accepts_duration_or_bare_seconds(text: str, seconds: float) -> None:
    assert parse_env_keep_alive(text).seconds == seconds


@pytest.mark.parametrize("text", ["1.5", "ten", "1_000", "5 m"])
def test_keepalive_env_rejects_garbage(text: str) -> None:
    with pytest.raises(KeepAliveError):
        parse_env_keep_alive(text)


def test_keepalive_value_helpers() -> None:
    assert DEFAULT_KEEP_ALIVE == KeepAlive(300.0)
    assert FOREVER.is_forever and not FOREVER.unloads_now
    assert KeepAlive(-5) == FOREVER
    assert KeepAlive(0).unloads_now and not KeepAlive(0).is_forever
    assert not KeepAlive(0.001).unloads_now
    with pytest.raises(KeepAliveError):
        KeepAlive(math.nan)


def test_keepalive_forever_sorts_after_any_duration() -> None:
    values = [FOREVER, KeepAlive(60), KeepAlive(0), KeepAlive(86400)]
    assert sorted(v.seconds for v in values) == [0, 60, 86400, math.inf]


def test_keepalive_go_duration_keeps_nanosecond_fractions() -> None:
    assert parse_go_duration("5.043500667s") == pytest.approx(5.043500667, abs=1e-12)
    assert parse_go_duration("1.000000001s") == pytest.approx(1.000000001, abs=1e-12)
