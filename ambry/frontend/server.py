"""The frontend daemon: aiohttp on uvloop, graceful shutdown on SIGTERM/SIGINT, SIGHUP reload.

Owns the process lifecycle of one frontend: event loop, listening socket (SO_REUSEPORT, so
several frontend processes can share a port), draining, re-reading the cluster map on SIGHUP
(or when the file changes, ``daemon.config_watch_interval_s``; see ``ambry.runtime.reload``),
and closing the node connections. One of several workers behind one port
(``frontend.workers``, ``ambry.frontend.supervisor``) also serves its metrics to its siblings
(``ambry.frontend.worker``), tells the supervisor once it serves, and, when restarted, listens
only once it is ready.

Draining (SIGTERM): health turns BAD and the listening sockets close at once (new connections
are refused); requests in flight (a slow upload too) get ``daemon.shutdown_grace_s`` to finish,
their replies say ``Connection: close``; then ``AppRunner.cleanup`` closes idle connections and
cancels whatever still runs, the node connections close, and the process exits 0. (aiohttp's
own graceful shutdown is not enough on its own: once it starts, a connection ignores the bytes
that arrive, so an upload still sending its body stalled until the timeout and was cut off.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import time
from collections.abc import Callable

from aiohttp import web

from ambry.common.config import ClusterConfig
from ambry.common.daemon import DaemonConfig
from ambry.frontend.accesslog import access_log_options
from ambry.frontend.app import FrontendApp, make_app
from ambry.frontend.connections import (
    ConnectionGuard,
    ConnectionLimits,
    GuardedSite,
    fit_cap,
    guard_app,
    raise_fd_limit,
)
from ambry.frontend.s3.server import start_s3
from ambry.frontend.supervisor import WorkerSpec
from ambry.frontend.worker import WorkerMetrics, tell_serving
from ambry.runtime.reload import ConfigReloader

__all__ = ["RESTARTED_READY_WAIT_S", "Hangup", "run_frontend", "serve_frontend"]

log = logging.getLogger(__name__)

#: A restarted worker waits at most this long to be ready before it listens anyway.
RESTARTED_READY_WAIT_S = 30.0


class Hangup:
    """The SIGHUP handler: a signal that arrives before the frontend serves is remembered and
    acted on once it does (the handler is installed first: SIGHUP's default action would end
    the process)."""

    def __init__(self) -> None:
        self.reloader: ConfigReloader | None = None
        self.early = False

    def __call__(self) -> None:
        if self.reloader is not None:
            self.reloader.trigger()
        else:
            self.early = True

    def attach(self, reloader: ConfigReloader) -> None:
        self.reloader = reloader
        if self.early:
            reloader.trigger()


async def serve_frontend(config: ClusterConfig, datacenter: str, host: str, port: int,
                         stop: asyncio.Event, drain_s: float | None = None,
                         ready: asyncio.Event | None = None, *,
                         reload_config: Callable[[], ClusterConfig] | None = None,
                         config_path: str | os.PathLike[str] | None = None,
                         hangup: Hangup | None = None, s3_port: int | None = None,
                         worker: WorkerSpec | None = None) -> None:
    daemon = DaemonConfig.from_sections(config.sections)
    windex = worker.index if worker is not None else None
    grace_s = daemon.shutdown_grace_s if drain_s is None else drain_s
    app = make_app(config, datacenter)
    fa: FrontendApp = app["frontend"]
    # slow and idle clients (ambry.frontend.connections): timeouts and a connection cap on
    # both ports, the cap lowered to fit the descriptor limit
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cap = fit_cap(config.frontend.max_connections_per_port, fd_limit, 2)
    if cap < config.frontend.max_connections_per_port:
        log.warning("frontend.max_connections_per_port %d lowered to %d to fit the open file "
                    "limit (%d)", config.frontend.max_connections_per_port, cap, fd_limit)
    limits = ConnectionLimits.from_config(config.frontend, cap)
    guard_app(app)
    # user metadata travels in headers: allow long header lines (aiohttp's default is 8 KiB,
    # which answered its own 400 without our error code for one long x-ambry-um-* value)
    # shutdown_timeout: what cleanup still gives requests that outlived the grace period
    runner = web.AppRunner(app, **access_log_options(config.frontend, "rest", windex),
                           shutdown_timeout=1.0,
                           max_field_size=64 * 1024, max_line_size=64 * 1024,
                           keepalive_timeout=limits.keepalive_timeout_s)
    await runner.setup()
    wm: WorkerMetrics | None = None
    if worker is not None:
        wm = WorkerMetrics(fa.registry, worker,
                           lambda: fa.readiness.ready and not fa.draining)
        fa.scrape = wm.scrape
        if worker.start > 1:  # its siblings serve meanwhile: join them once ready
            await _wait_ready(fa, stop, RESTARTED_READY_WAIT_S)
    site = GuardedSite(runner, host, port, reuse_port=True, backlog=1024,
                       guard=ConnectionGuard(limits, "rest", fa.registry))
    await site.start()
    log.info("frontend %s listening on http://%s:%d", datacenter, host, port)
    fa.readiness.start()  # /healthCheck turns GOOD once every partition can be served
    s3_runner = await start_s3(fa, config, datacenter, host, s3_port, grace_s, limits,
                               windex)
    if wm is not None and worker is not None:
        await wm.start()
        tell_serving(worker)
    if reload_config is not None:
        fa.reloader = ConfigReloader(reload_config, fa.reload, path=config_path,
                                     watch_interval_s=daemon.config_watch_interval_s)
        fa.reloader.start()
        if hangup is not None:
            hangup.attach(fa.reloader)
    if ready is not None:
        ready.set()
    await stop.wait()
    t0 = time.monotonic()
    log.info("frontend %s draining: %d requests in flight, up to %.1f s to finish",
             datacenter, fa.inflight, grace_s)
    fa.draining = True
    await fa.readiness.stop()
    await site.stop()  # new connections are refused from here on
    if s3_runner is not None:
        for s3_site in list(s3_runner.sites):
            await s3_site.stop()
    if fa.reloader is not None:
        await fa.reloader.stop()
    deadline = t0 + grace_s
    while fa.inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if fa.inflight:
        log.warning("frontend %s: %d requests still running after %.1f s; cancelling them",
                    datacenter, fa.inflight, grace_s)
    if s3_runner is not None:  # first: its requests use the router the REST app closes
        await s3_runner.cleanup()
    await runner.cleanup()
    if wm is not None:
        await wm.stop()
    log.info("frontend %s stopped in %.2f s", datacenter, time.monotonic() - t0)


async def _wait_ready(fa: FrontendApp, stop: asyncio.Event, timeout_s: float) -> None:
    """Probe readiness until ready, ``stop`` or ``timeout_s``."""
    fa.readiness.start()
    deadline = time.monotonic() + timeout_s
    while not fa.readiness.ready and not stop.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    if not fa.readiness.ready and not stop.is_set():
        log.warning("frontend worker not ready after %.1f s (%s); listening anyway",
                    time.monotonic() - (deadline - timeout_s), fa.readiness.reason)


def run_frontend(config: ClusterConfig, datacenter: str, host: str | None = None,
                 port: int | None = None, *,
                 reload_config: Callable[[], ClusterConfig] | None = None,
                 config_path: str | os.PathLike[str] | None = None,
                 s3_port: int | None = None, worker: WorkerSpec | None = None) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without
        log.warning("uvloop not available; using the default event loop")
    raise_fd_limit()  # one descriptor per client connection: take all the system allows
    if host is None or port is None:
        ep = config.frontend_of(datacenter)
        host = host or ep.host
        port = port or ep.port

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        hangup = Hangup()
        if reload_config is not None:
            loop.add_signal_handler(signal.SIGHUP, hangup)
        await serve_frontend(config, datacenter, host, port, stop,
                             reload_config=reload_config, config_path=config_path,
                             hangup=hangup, s3_port=s3_port, worker=worker)

    asyncio.run(main())
