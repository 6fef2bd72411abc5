"""CORRAL_HOST / OLLAMA_HOST parsing: Ollama's envconfig.Host cases, plus the client view."""

from __future__ import annotations

import pytest

from cli.hostaddr import HostAddr, client_base_url, host_value, parse_host


@pytest.mark.parametrize(
    ("value", "scheme", "netloc", "path"),
    [
        ("", "http", "127.0.0.1:11434", ""),
        ("1.2.3.4", "http", "1.2.3.4:11434", ""),
        (":1234", "http", ":1234", ""),
        ("1.2.3.4:1234", "http", "1.2.3.4:1234", ""),
        ("example.com", "http", "example.com:11434", ""),
        ("example.com:1234", "http", "example.com:1234", ""),
        (":0", "http", ":0", ""),
        (":66000", "http", ":11434", ""),
        (":-1", "http", ":11434", ""),
        ("1.2.3.4:port", "http", "1.2.3.4:11434", ""),
        ("0.0.0.0", "http", "0.0.0.0:11434", ""),
        ("[::1]", "http", "[::1]:11434", ""),
        ("[::]", "http", "[::]:11434", ""),
        ("::1", "http", "[::1]:11434", ""),
        ("[::1]:1337", "http", "[::1]:1337", ""),
        ("[::1]:", "http", "[::1]:11434", ""),
        (" 1.2.3.4 ", "http", "1.2.3.4:11434", ""),
        ('"1.2.3.4"', "http", "1.2.3.4:11434", ""),
        (' " 1.2.3.4 " ', "http", "1.2.3.4:11434", ""),
        ("'1.2.3.4'", "http", "1.2.3.4:11434", ""),
        ("http://1.2.3.4", "http", "1.2.3.4:80", ""),
        ("http://1.2.3.4:4321", "http", "1.2.3.4:4321", ""),
        ("https://1.2.3.4", "https", "1.2.3.4:443", ""),
        ("https://1.2.3.4:4321", "https", "1.2.3.4:4321", ""),
        ("https://example.com/ollama", "https", "example.com:443", "/ollama"),
        ("http://example.com:8080/a/b", "http", "example.com:8080", "/a/b"),
        ("tcp://example.com", "tcp", "example.com:11434", ""),
        ("ollama.com", "https", "ollama.com:443", ""),
    ],
)
def test_parse_host_follows_ollama(value: str, scheme: str, netloc: str, path: str) -> None:
    addr = parse_host(value)
    assert (addr.scheme, addr.netloc, addr.path) == (scheme, netloc, path)


def test_parse_host_base_url_and_bind() -> None:
    addr = parse_host("https://example.com:8443/proxy")
    assert addr.base_url == "https://example.com:8443/proxy"
    assert addr.bind == ("example.com", 8443)
    assert parse_host(":8080").bind == ("0.0.0.0", 8080)
    assert parse_host("[::]:9000").bind == ("::", 9000)


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        (":8080", "http://127.0.0.1:8080"),
        ("[::]:9000", "http://[::1]:9000"),
        ("10.0.0.5:1234", "http://10.0.0.5:1234"),
    ],
)
def test_hostaddr_for_client_uses_loopback_for_unspecified(value: str, url: str) -> None:
    assert parse_host(value).for_client().base_url == url


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://127.0.0.1:11434"),
        ({"OLLAMA_HOST": "0.0.0.0:2000"}, "http://127.0.0.1:2000"),
        (
            {"CORRAL_HOST": "127.0.0.1:3000", "OLLAMA_HOST": "127.0.0.1:2000"},
            "http://127.0.0.1:3000",
        ),
        ({"CORRAL_HOST": "  ", "OLLAMA_HOST": "127.0.0.1:2000"}, "http://127.0.0.1:2000"),
    ],
)
def test_client_base_url_prefers_corral_host(environ: dict[str, str], url: str) -> None:
    assert client_base_url(environ) == url


def test_host_value_is_empty_when_unset() -> None:
    assert host_value({}) == ""
    assert parse_host(host_value({})) == HostAddr("http", "127.0.0.1", 11434)
