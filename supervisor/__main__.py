"""`python -m supervisor`: read Settings once, configure logging, serve the app with Hypercorn."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

from supervisor.app import create_app
from supervisor.config import ConfigError, Settings

log = logging.getLogger("supervisor")


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    host, port = settings.host.bind
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 75
    config.graceful_timeout = 5
    return config


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # handlers only set a flag (gunicorn)
    app = create_app(settings)
    await serve(app, hypercorn_config(settings), shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"corral: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.info("starting %s", settings.describe())
    try:
        asyncio.run(_serve(settings))
    except OSError as exc:
        print(f"corral: cannot listen on {settings.host.base_url}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
