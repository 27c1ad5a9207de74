"""Slow and idle clients: per-connection timeouts and a connection cap for the frontend's ports.

Owns, for the REST and the S3 port alike (docs/security.md, "Slow and idle clients"):
  * the header timeout: a client has ``header_timeout_s`` to send a request's headers, from
    connecting (first request) or from the first byte of a later request; then 408 (if it
    sent anything) and the connection is closed (aiohttp has no header-read timeout: a
    half-sent request held its connection, and 20,000 of them the process's descriptors);
  * the body idle timeout: while a request's body is not complete and the frontend is
    reading it, ``body_idle_timeout_s`` without a byte ends the request: 408, connection
    closed, the handler cancelled (the router then frees what the upload held and deletes
    its chunks, as for any failed upload). Time the frontend itself is not reading (TCP
    backpressure: the handler waits for the byte budget or for replicas) does not count;
  * the keep-alive timeout: an idle kept-alive connection is closed after
    ``keepalive_timeout_s`` (aiohttp's own default was an hour);
  * the connection cap: each port keeps at most ``max_connections_per_port`` connections; one
    more is answered ``503`` with ``Retry-After`` and ``Connection: close`` and closed
    (after a short linger, so the client reads the answer rather than a reset), and the
    process's descriptor soft limit is raised to the hard limit at startup
    (:func:`raise_fd_limit`), the cap lowered to fit under it (:func:`fit_cap`).

How: :class:`GuardedSite` listens like ``aiohttp.web.TCPSite`` but puts a
:class:`_Connection` between each transport and aiohttp's ``RequestHandler``; it sees every
byte arrive and keeps one timer per connection, re-armed lazily (a byte only updates a
float). It learns where a request starts and ends, and whether its response has begun, from
:func:`guard_app` (an outermost middleware and an ``on_response_prepare`` hook), so it never
parses HTTP itself. Does not own the byte budget (the router reserves upload bytes as they
arrive: an idle connection holds none) nor slow *readers* of responses.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from ambry.common.config import FrontendConfig

__all__ = ["ConnectionGuard", "ConnectionLimits", "GuardedSite", "fit_cap", "guard_app",
           "raise_fd_limit"]

log = logging.getLogger(__name__)

_REJECT_LINGER_S = 2.0  # an over-cap connection: time for the client to read the 503
_FD_RESERVE = 512  # descriptors kept for node connections, log files, the listening sockets

_408 = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
        b"x-ambry-error-code: REQUEST_TIMEOUT\r\nContent-Length: %d\r\n\r\n%s")
_503 = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
        b"Content-Type: text/plain\r\nx-ambry-error-code: TOO_MANY_CONNECTIONS\r\n"
        b"Content-Length: %d\r\n\r\n%s")


def _reply(template: bytes, message: str) -> bytes:
    body = message.encode() + b"\n"
    return template % (len(body), body)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_idle_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int

    @classmethod
    def from_config(cls, fe: FrontendConfig, max_connections: int | None = None
                    ) -> ConnectionLimits:
        return cls(fe.header_timeout_s, fe.body_idle_timeout_s, fe.keepalive_timeout_s,
                   max_connections if max_connections is not None
                   else fe.max_connections_per_port)


def raise_fd_limit() -> int:
    """Raise the soft limit of open descriptors to the hard limit; the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:  # pragma: no cover - platform refuses
            log.warning("could not raise the open file limit from %d to %d: %s",
                        soft, target, e)
    return soft


def fit_cap(configured: int, fd_limit: int, ports: int) -> int:
    """The connection cap per port that fits ``ports`` ports under ``fd_limit`` descriptors
    (with a reserve for everything else); ``configured`` when it fits already."""
    room = max(16, (fd_limit - _FD_RESERVE) // max(1, ports))
    return min(configured, room)


class ConnectionGuard:
    """The limits and counters of one listening port (see the module doc)."""

    def __init__(self, limits: ConnectionLimits, port_name: str,
                 registry: CollectorRegistry | None = None) -> None:
        self.limits = limits
        self.port_name = port_name
        self.open = 0  # connections served (not counting those being turned away)
        self.rejecting = 0  # over-cap connections reading their 503
        self.closed: dict[str, int] = {}
        self._m_closed: Counter | None = None
        if registry is not None:
            self._m_closed = Counter(
                f"ambry_frontend_{port_name}_connections_closed",
                "Connections the frontend closed or turned away, by reason (header_timeout, "
                "body_idle_timeout, keepalive_timeout, over_cap)", ["reason"],
                registry=registry)
            Gauge(f"ambry_frontend_{port_name}_connections_open",
                  "Open connections of this port", registry=registry
                  ).set_function(lambda: self.open)

    def count(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
        if self._m_closed is not None:
            self._m_closed.labels(reason).inc()

    def protocol_factory(self, make_handler: Callable[[], asyncio.Protocol]
                         ) -> Callable[[], _Connection]:
        return lambda: _Connection(self, make_handler)


# phases of a connection
_HEADERS = 0  # waiting for a request's headers (or idle between requests)
_REQUEST = 1  # a request is being handled


class _Connection(asyncio.Protocol):
    """Sits between one transport and aiohttp's protocol; every call is passed on."""

    def __init__(self, guard: ConnectionGuard, make_handler: Callable[[], asyncio.Protocol]
                 ) -> None:
        self._guard = guard
        self._make_handler = make_handler
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()  # made by the loop, in its thread
        self._timer: asyncio.TimerHandle | None = None
        self._phase = _HEADERS
        self._since = 0.0  # start of the current wait (headers) or last byte (request)
        self._first = True  # no request handled yet on this connection
        self._got_bytes = False  # bytes of the awaited request's headers arrived
        self._paused = False  # reading was paused (by aiohttp) since the last byte
        self._request: web.BaseRequest | None = None
        self._responding = False
        self._closing = False

    # --------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        g = self._guard
        if g.open >= g.limits.max_connections:
            self._reject(transport)
            return
        g.open += 1
        self._since = self._loop.time()
        self._inner = self._make_handler()
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # being turned away: discard
        now = self._loop.time()
        if self._phase == _HEADERS:
            if not self._got_bytes:
                self._got_bytes = True
                if not self._first:  # a later request: its header time starts now
                    self._since = now
                    self._arm()
        else:
            self._since = now
        self._inner.data_received(data)
        if self._transport is not None and not self._transport.is_reading():
            self._paused = True  # backpressure: aiohttp stopped reading

    def eof_received(self) -> bool | None:
        if self._inner is None:
            self._close()
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is None:
            self._guard.rejecting -= 1
            return
        self._guard.open -= 1
        inner, self._inner = self._inner, None
        self._request = None
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # --------------------------------------------------------------- request boundaries
    def request_started(self, request: web.BaseRequest) -> None:
        self._phase = _REQUEST
        self._request = request
        self._responding = False
        self._since = self._loop.time()
        self._paused = False
        self._arm()

    def response_started(self) -> None:
        self._responding = True

    def request_finished(self) -> None:
        self._phase = _HEADERS
        self._request = None
        self._first = False
        self._got_bytes = False
        self._since = self._loop.time()
        self._arm()

    # --------------------------------------------------------------- the watchdog
    def _deadline(self) -> float:
        lim = self._guard.limits
        if self._phase == _REQUEST:
            return self._since + lim.body_idle_timeout_s
        if self._first or self._got_bytes:
            return self._since + lim.header_timeout_s
        return self._since + lim.keepalive_timeout_s

    def _arm(self) -> None:
        if self._closing:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._deadline(), self._check)

    def _check(self) -> None:
        self._timer = None
        if self._closing or self._transport is None:
            return
        now = self._loop.time()
        if now < self._deadline():  # bytes came meanwhile
            self._arm()
            return
        if self._phase == _HEADERS:
            if self._first or self._got_bytes:
                self._guard.count("header_timeout")
                log.info("%s port: closing a connection that sent no complete request "
                         "headers in %.1f s", self._guard.port_name,
                         self._guard.limits.header_timeout_s)
                self._end(_reply(_408, "request headers not received in time")
                          if self._got_bytes else b"")
            else:
                self._guard.count("keepalive_timeout")
                self._end(b"")
            return
        req = self._request
        assert req is not None
        if req.content.is_eof() or self._responding:
            # nothing to wait for from the client: the handler works (bounded by node
            # timeouts) or sends its response
            self._since = now
            self._arm()
            return
        if self._paused or not self._transport.is_reading():
            # the frontend is not reading (waiting for budget or replicas): not idle
            self._paused = not self._transport.is_reading()
            self._since = now
            self._arm()
            return
        self._guard.count("body_idle_timeout")
        log.info("%s port: %s %s sent no body bytes for %.1f s: 408, connection closed",
                 self._guard.port_name, req.method, req.path,
                 self._guard.limits.body_idle_timeout_s)
        self._end(_reply(_408, f"request body idle for "
                               f"{self._guard.limits.body_idle_timeout_s:g} s"))
        req.task.cancel()  # the upload frees what it holds and deletes its chunks now

    def _end(self, reply: bytes) -> None:
        assert self._transport is not None
        self._closing = True
        if reply:
            self._transport.write(reply)
        self._transport.close()  # after the reply is written

    def _reject(self, transport: asyncio.Transport) -> None:
        """Answer 503 at once, stop writing, and read (discarding) what the client sends
        for a moment before closing, so it reads the answer rather than a reset."""
        g = self._guard
        g.rejecting += 1
        g.count("over_cap")
        transport.write(_reply(_503, f"too many connections to this {g.port_name} port "
                                     f"({g.limits.max_connections})"))
        if g.rejecting > max(64, g.limits.max_connections // 8) or not transport.can_write_eof():
            self._close()
            return
        transport.write_eof()
        self._timer = self._loop.call_later(_REJECT_LINGER_S, self._close)

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()


def _connection_of(request: web.BaseRequest) -> _Connection | None:
    transport = request.transport
    conn = transport.get_protocol() if transport is not None else None
    return conn if isinstance(conn, _Connection) else None


@web.middleware
async def _track_requests(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
    conn = _connection_of(request)
    if conn is None:
        return await handler(request)
    conn.request_started(request)
    try:
        return await handler(request)
    finally:
        conn.request_finished()


async def _on_response_prepare(request: web.Request, _response: web.StreamResponse) -> None:
    conn = _connection_of(request)
    if conn is not None:
        conn.response_started()


def guard_app(app: web.Application) -> None:
    """Let the guard of the port see where ``app``'s requests start and end (call before the
    app is frozen: its outermost middleware)."""
    app.middlewares.insert(0, _track_requests)
    app.on_response_prepare.append(_on_response_prepare)


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through ``guard`` (timeouts, connection cap)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 guard: ConnectionGuard, **kw: Any) -> None:
        super().__init__(runner, host, port, **kw)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard.protocol_factory(server), self._host, self._port,
            ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:  # pragma: no cover
            self._bound_port = self._port
