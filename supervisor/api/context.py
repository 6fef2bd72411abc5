"""What handlers reach through the app: the settings, the catalog, the runtime, free memory."""

from __future__ import annotations

from dataclasses import dataclass

import psutil
from starlette.requests import Request

from supervisor.catalog import Catalog
from supervisor.config import Settings
from supervisor.runtime import Runtime


@dataclass(frozen=True)
class AppState:
    settings: Settings
    catalog: Catalog
    runtime: Runtime


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.corral
    return state


def free_memory() -> int:
    """Memory available for a new model right now, in bytes."""
    return int(psutil.virtual_memory().available)
