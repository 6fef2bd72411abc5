"""POST /api/pull and POST /api/push: parse, start the transfer, stream Ollama's progress lines.

A bad name, a plain-http name without ``insecure``, or (for push) a missing model is an
HTTP status before any output; a failure once progress has started is a last error line
(``supervisor.ndjson``). A client that goes away cancels the transfer: a pull's partial
downloads stay on disk and the next pull resumes them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from registry.auth import Authenticator, Credential
from registry.client import RegistryClient
from registry.errors import InsecureProtocol, InvalidName, RegistryError, Unauthorized
from registry.errors import ModelNotFound as StoreModelNotFound
from registry.pull import BlobDownloads, start_pull
from registry.push import start_push
from registry.transfer import Progress
from supervisor import ndjson
from supervisor.api.context import app_state
from supervisor.api.system import server_version
from supervisor.config import Settings
from supervisor.errors import ApiError, BadRequest, ModelNotFound
from supervisor.schemas import PullRequest, PushRequest, parse_body


def _api_error(exc: RegistryError) -> ApiError:
    """The status a registry failure is answered with (when it comes before any output)."""
    if isinstance(exc, InvalidName | InsecureProtocol):
        return BadRequest(str(exc))
    if isinstance(exc, StoreModelNotFound):
        return ModelNotFound(str(exc))
    if isinstance(exc, Unauthorized):
        return ApiError(str(exc), 401)
    return ApiError(str(exc))


def _client(settings: Settings) -> RegistryClient:
    credentials = {host: Credential(user, pw) for host, user, pw in settings.registry_auth}
    return RegistryClient(Authenticator(credentials), user_agent=f"corral/{server_version()}")


def _downloads(request: Request) -> BlobDownloads:
    """The app's shared blob downloads, made on first use (on the event loop)."""
    state = request.app.state
    found: BlobDownloads | None = getattr(state, "blob_downloads", None)
    if found is None:
        found = BlobDownloads()
        state.blob_downloads = found
    return found


async def _render(
    progress: AsyncGenerator[Progress, None], client: RegistryClient
) -> AsyncGenerator[dict[str, Any], None]:
    try:
        async for item in progress:
            yield item.to_json()
    except RegistryError as exc:
        raise _api_error(exc) from exc
    finally:
        # Runs inside a cancelled scope when the client went away: shield the cleanup.
        with anyio.CancelScope(shield=True):
            await progress.aclose()
            await client.aclose()


def _model(req: PullRequest) -> str:
    text = (req.model or req.name).strip()
    if not text:
        raise BadRequest("model is required")
    return text


async def pull(request: Request) -> Response:
    req = await parse_body(request, PullRequest)
    records = await pull_records(request, _model(req), insecure=req.insecure)
    return await ndjson.respond(records, stream=req.stream is not False)


async def pull_records(
    request: Request, model: str, *, insecure: bool
) -> AsyncGenerator[dict[str, Any], None]:
    """Start pulling `model` (errors in the name raise now) and stream its progress records."""
    state = app_state(request)
    name = state.catalog.parse_name(model)
    client = _client(state.settings)
    try:
        progress = start_pull(
            state.catalog.store,
            client,
            _downloads(request),
            name,
            insecure=insecure,
            prune=not state.settings.noprune,
        )
    except RegistryError as exc:
        await client.aclose()
        raise _api_error(exc) from exc
    return _render(progress, client)


async def push(request: Request) -> Response:
    req = await parse_body(request, PushRequest)
    state = app_state(request)
    name = state.catalog.parse_name(_model(req))
    client = _client(state.settings)
    try:
        progress = await anyio.to_thread.run_sync(
            lambda: start_push(state.catalog.store, client, name, insecure=req.insecure)
        )
    except RegistryError as exc:
        await client.aclose()
        raise _api_error(exc) from exc
    return await ndjson.respond(_render(progress, client), stream=req.stream is not False)
