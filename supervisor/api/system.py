"""GET|HEAD / and GET|HEAD /api/version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response


def server_version() -> str:
    try:
        return version("corral")
    except PackageNotFoundError:
        return "0.0.0"


async def root(request: Request) -> Response:
    # Ollama's clients probe this exact text.
    return PlainTextResponse("Ollama is running")


async def api_version(request: Request) -> Response:
    return JSONResponse({"version": server_version()})
