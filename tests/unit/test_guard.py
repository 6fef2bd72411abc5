"""CORS and the Host-header guard: the decisions, and the middleware around a tiny app."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from supervisor.guard import (
    DEFAULT_ORIGINS,
    RequestGuard,
    host_allowed,
    is_loopback_bind,
    origin_allowed,
    split_host,
)


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:11434", "127.0.0.1"),
        ("[::1]:11434", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("LocalHost:80", "localhost"),
        ("example.com", "example.com"),
        ("", ""),
    ],
)
def test_guard_split_host(header: str, host: str) -> None:
    assert split_host(header) == host


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("192.168.0.9", True),
        ("0.0.0.0", True),
        ("93.184.216.34", True),  # a public address on one of this machine's interfaces
        ("8.8.8.8", False),
        ("", True),
        ("localhost", True),
        ("mybox", True),  # the machine's hostname
        ("web.localhost", True),
        ("printer.local", True),
        ("db.internal", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("internal", False),
        ("mybox.evil.example", False),
    ],
)
def test_guard_host_allowed(host: str, allowed: bool) -> None:
    assert host_allowed(host, {"93.184.216.34"}, "MyBox") is allowed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost", True),
        ("http://localhost:3000", True),
        ("https://127.0.0.1:8443", True),
        ("http://0.0.0.0:5173", True),
        ("app://obsidian.md", True),
        ("file://", True),
        ("vscode-webview://abc", True),
        ("chrome-extension://abcdef", True),
        ("moz-extension://abcdef", True),
        ("https://evil.example", False),
        ("http://localhost.evil.example", False),
        ("http://127.0.0.1.evil.example", False),
        ("null", False),
    ],
)
def test_guard_default_origins(origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, DEFAULT_ORIGINS) is allowed


def test_guard_configured_origins_and_wildcards() -> None:
    assert origin_allowed("https://app.example", ["https://app.example"])
    assert origin_allowed("https://a.example.com", ["https://*.example.com"])
    assert not origin_allowed("https://a.example.org", ["https://*.example.com"])
    assert origin_allowed("https://anything.example", ["*"])


@pytest.mark.parametrize(
    ("bind", "checked"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("", False), ("0.0.0.0", False),
     ("192.168.1.5", False), ("myhost", False)],
)  # fmt: skip
def test_guard_applies_only_to_loopback_binds(bind: str, checked: bool) -> None:
    assert is_loopback_bind(bind) is checked


def _client(bind: str = "127.0.0.1", origins: tuple[str, ...] = ()) -> TestClient:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", ok, methods=["GET", "POST"])])
    guarded = RequestGuard(app, bind_host=bind, origins=origins)
    return TestClient(guarded, base_url="http://127.0.0.1:11434")


def test_guard_refuses_a_rebound_name_on_a_loopback_bind() -> None:
    client = _client()
    assert client.get("/", headers={"Host": "evil.example:11434"}).status_code == 403
    assert client.get("/", headers={"Host": "evil.example"}).content == b""
    assert client.get("/", headers={"Host": "localhost:11434"}).text == "ok"
    assert client.get("/").text == "ok"  # Host 127.0.0.1:11434
    assert client.options("/", headers={"Host": "localhost"}).status_code == 204


def test_guard_lets_any_host_through_on_a_public_bind() -> None:
    assert _client(bind="").get("/", headers={"Host": "evil.example"}).text == "ok"


def test_guard_cors_refuses_unknown_origins_and_marks_allowed_ones() -> None:
    client = _client(origins=("https://app.example",))
    refused = client.get("/", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and refused.content == b""
    same = client.get("/", headers={"Origin": "http://127.0.0.1:11434"})
    assert same.text == "ok" and "access-control-allow-origin" not in same.headers
    for origin in ("https://app.example", "http://localhost:3000"):
        allowed = client.post("/", headers={"Origin": origin})
        assert allowed.text == "ok"
        assert allowed.headers["access-control-allow-origin"] == origin
        assert "Origin" in allowed.headers["vary"]


def test_guard_cors_preflight() -> None:
    client = _client()
    headers = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    answer = client.options("/", headers=headers)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "x-stainless-os" in allowed
    evil = {**headers, "Origin": "https://evil.example"}
    assert client.options("/", headers=evil).status_code == 403


def test_guard_cors_star_allows_every_origin() -> None:
    answer = _client(origins=("*",)).get("/", headers={"Origin": "https://anything.example"})
    assert answer.text == "ok" and answer.headers["access-control-allow-origin"] == "*"
