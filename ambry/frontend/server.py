"""The frontend daemon: aiohttp on uvloop, graceful shutdown on SIGTERM/SIGINT.

Owns the process lifecycle of one frontend: event loop, listening socket (SO_REUSEPORT, so
several frontend processes can share a port), draining (health turns BAD, in-flight requests
finish within a grace period), and closing the node connections.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from ambry.common.config import ClusterConfig
from ambry.frontend.app import FrontendApp, make_app
from ambry.frontend.s3.server import start_s3

__all__ = ["run_frontend", "serve_frontend"]

log = logging.getLogger(__name__)


async def serve_frontend(config: ClusterConfig, datacenter: str, host: str, port: int,
                         stop: asyncio.Event, drain_s: float = 5.0,
                         ready: asyncio.Event | None = None, s3_port: int | None = None
                         ) -> None:
    app = make_app(config, datacenter)
    fa: FrontendApp = app["frontend"]
    # user metadata travels in headers: allow long header lines (aiohttp's default is 8 KiB,
    # which answered its own 400 without our error code for one long x-ambry-um-* value)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=drain_s,
                           max_field_size=64 * 1024, max_line_size=64 * 1024)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=True, backlog=1024)
    await site.start()
    log.info("frontend %s listening on http://%s:%d", datacenter, host, port)
    s3_runner = await start_s3(fa, config, datacenter, host, s3_port, drain_s)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("frontend %s draining", datacenter)
    fa.draining = True
    if s3_runner is not None:  # first: its requests use the router the REST app closes
        await s3_runner.cleanup()
    await runner.cleanup()
    log.info("frontend %s stopped", datacenter)


def run_frontend(config: ClusterConfig, datacenter: str, host: str | None = None,
                 port: int | None = None, *, s3_port: int | None = None) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without
        log.warning("uvloop not available; using the default event loop")
    if host is None or port is None:
        ep = config.frontend_of(datacenter)
        host = host or ep.host
        port = port or ep.port

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_frontend(config, datacenter, host, port, stop, s3_port=s3_port)

    asyncio.run(main())
