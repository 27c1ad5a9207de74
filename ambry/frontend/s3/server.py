"""Serving the S3 API beside the Ambry REST API, in the same frontend process.

Owns choosing the S3 port (``--s3-port``, else ``frontends[].s3_port``, else
``DEFAULT_S3_PORT`` when it is free) and starting the S3 site with the REST app's router,
so one frontend has one set of node connections, one byte budget and one ``/metrics``.
The frontend daemon (``ambry.frontend.server``) stops it before the REST app, so S3 requests
in flight finish before the router closes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ambry.common.config import DEFAULT_S3_PORT, ClusterConfig
from ambry.frontend.accesslog import access_log_options
from ambry.frontend.connections import ConnectionGuard, ConnectionLimits, GuardedSite, guard_app
from ambry.frontend.s3.app import make_s3_app

if TYPE_CHECKING:
    from ambry.frontend.app import FrontendApp

__all__ = ["configured_s3_port", "start_s3"]

log = logging.getLogger(__name__)


def configured_s3_port(config: ClusterConfig, datacenter: str) -> int | None:
    """The ``s3_port`` of this datacenter's frontend endpoint, if the config sets one."""
    for f in config.frontends:
        if f.datacenter == datacenter:
            return f.s3_port
    return None


async def start_s3(fa: FrontendApp, config: ClusterConfig, datacenter: str, host: str,
                   s3_port: int | None, shutdown_timeout_s: float,
                   limits: ConnectionLimits | None = None, worker: int | None = None
                   ) -> web.AppRunner | None:
    """Start the S3 site; its runner (None when the default port is taken: the frontend then
    serves the REST API only, and says so). A port that was asked for must bind. ``limits``:
    the connection limits of the port (default: the ``frontend:`` section's). ``worker``: the
    index of this frontend worker, for the access log (``frontend.workers``)."""
    explicit = s3_port if s3_port is not None else configured_s3_port(config, datacenter)
    port = explicit if explicit is not None else DEFAULT_S3_PORT
    if port == 0 and explicit == 0:
        log.info("frontend %s: S3 API disabled (s3_port: 0)", datacenter)
        return None
    limits = limits or ConnectionLimits.from_config(config.frontend)
    app = make_s3_app(fa)
    guard_app(app)
    runner = web.AppRunner(app, **access_log_options(config.frontend, "s3", worker),
                           shutdown_timeout=shutdown_timeout_s,
                           max_field_size=64 * 1024, max_line_size=64 * 1024,
                           keepalive_timeout=limits.keepalive_timeout_s)
    await runner.setup()
    site = GuardedSite(runner, host, port, reuse_port=True, backlog=1024,
                       guard=ConnectionGuard(limits, "s3", fa.registry))
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        if explicit is not None:
            raise
        log.warning("frontend %s: S3 API not started: default port %d: %s (set "
                    "frontends[].s3_port)", datacenter, port, e)
        return None
    log.info("frontend %s S3 API listening on http://%s:%d", datacenter, host, port)
    return runner
