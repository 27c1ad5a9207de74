"""The Ambry REST API over aiohttp (DESIGN.md section 4): the app, its route table and the
envelope of every request.

Owns the frontend's shared state (router, config, readiness, the metrics registry, the
in-flight count that the S3 app shares), adopting a grown cluster map
(:meth:`FrontendApp.reload`), the route table (:func:`make_app`), and the middleware around
every request: request ids, CORS, signed-URL checking, the one check of ``x-ambry-*`` values,
the one table mapping error codes to HTTP statuses, metrics, and health. Does not own the
route handlers (``ambry.frontend.rest``: ``blobs``, ``named``, ``signedurls``) or any storage
decision (``router`` does). Bodies stream both ways: an upload is read chunk by chunk as the
router asks for it (:meth:`FrontendApp.body_reader`), a download is written as the router
yields it, so memory per request never grows with the blob's size.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ambry.common.clock import Clock, SystemClock
from ambry.common.config import ClusterConfig
from ambry.common.errors import AmbryError, BadRequest, Unavailable
from ambry.common.mapchange import MapChange, plan_map_change
from ambry.frontend.aborts import CLIENT_ABORT_STATUS, client_abort_status
from ambry.frontend.chunking import unsatisfied_content_range
from ambry.frontend.expect import add_unrouted, answer_expect
from ambry.frontend.headers import check_ambry_headers, header_text_or
from ambry.frontend.inflight import InFlight
from ambry.frontend.openapi import OPENAPI_PATH, serve_openapi
from ambry.frontend.readiness import Readiness
from ambry.frontend.rest.base import MAX_STITCH_BODY_BYTES, AccessDenied, Deps, MissingHeader
from ambry.frontend.rest.blobs import SMALL_BODY_BYTES, BlobRoutes
from ambry.frontend.rest.named import NamedRoutes
from ambry.frontend.rest.signedurls import SignedUrls
from ambry.frontend.router import Router
from ambry.frontend.signing import SIGNATURE_PARAM
from ambry.runtime.reload import ConfigReloader, ReloadCollector

# (MissingHeader, AccessDenied and SMALL_BODY_BYTES moved to ambry.frontend.rest with the
# handlers; still importable from here)
__all__ = ["BODY_READ_BYTES", "SMALL_BODY_BYTES", "STATUS_BY_CODE", "AccessDenied",
           "FrontendApp", "MissingHeader", "make_app"]

log = logging.getLogger(__name__)

# The one table from error codes to HTTP statuses. Anything not listed is a 500 (a bug).
STATUS_BY_CODE: dict[str, int] = {
    "BAD_REQUEST": 400,
    "INVALID_BLOB_ID": 400,
    "INVALID_ARGUMENT": 400,
    "MISSING_HEADER": 400,
    "SIGNATURE_INVALID": 401,
    "ACCESS_DENIED": 403,
    "BLOB_NOT_FOUND": 404,
    "TTL_UPDATE_TOO_LATE": 405,
    "BLOB_ALREADY_EXISTS": 409,
    "NAME_ALREADY_EXISTS": 409,
    "BLOB_NOT_DELETED": 409,
    "LIFE_VERSION_CONFLICT": 409,
    "BLOB_DELETED": 410,
    "BLOB_EXPIRED": 410,
    "PAYLOAD_TOO_LARGE": 413,
    "RANGE_NOT_SATISFIABLE": 416,
    "UNAVAILABLE": 503,
    "PARTITION_READ_ONLY": 503,
    "REPLICA_UNAVAILABLE": 503,
    "PROTOCOL_ERROR": 503,
    "STORAGE_ERROR": 503,
    "DISK_FULL": 503,
    "DATA_CORRUPT": 503,
}

_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "*",
}

#: Largest piece read from a request body at once (bounds aiohttp's per-request buffer).
BODY_READ_BYTES = 256 * 1024


class FrontendApp:
    """State shared by the handlers of one frontend process."""

    def __init__(self, config: ClusterConfig, datacenter: str, *, router: Router | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.router = router or Router(config, datacenter, clock=self.clock,
                                       on_node_error=self._node_error)
        self.secret = config.frontend.signed_url_secret.encode()
        self.draining = False
        # /healthCheck says GOOD only once this frontend can serve every operation; the
        # daemon (ambry.frontend.server) starts the probe
        self.readiness = Readiness(self.router)
        self.registry = CollectorRegistry()
        # process_*: CPU seconds, resident memory, open and max file descriptors, start time
        ProcessCollector(registry=self.registry)
        self.m_requests = Counter("ambry_frontend_requests", "Requests by operation and status",
                                  ["op", "status"], registry=self.registry)
        self.m_latency = Histogram("ambry_frontend_request_seconds", "Request latency",
                                   ["op"], registry=self.registry,
                                   buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                            2.5, 5, 10, 30, 60))
        self.m_bytes_in = Counter("ambry_frontend_bytes_in", "Request body bytes received",
                                  registry=self.registry)
        self.m_bytes_out = Counter("ambry_frontend_bytes_out", "Response body bytes sent",
                                   registry=self.registry)
        self.m_node_errors = Counter("ambry_frontend_node_errors",
                                     "Failed calls to storage nodes", ["node", "op"],
                                     registry=self.registry)
        self.m_aborted = Counter("ambry_frontend_responses_aborted",
                                 "Blob bodies cut short after their headers went out, by API "
                                 "and reason (an error code, or CLIENT_GONE when the client "
                                 "left)", ["api", "reason"], registry=self.registry)
        Gauge("ambry_frontend_name_busy_retries",
              "Name reservation rounds lost to a concurrent writer of the same name "
              "(monotonic)", registry=self.registry
              ).set_function(lambda: self.router.metrics_name_busy)
        # requests in progress on both ports: the S3 app is handed this count (make_s3_app)
        self.in_flight = InFlight()
        Gauge("ambry_frontend_inflight_requests", "Requests being served",
              registry=self.registry).set_function(lambda: self.in_flight.count)
        Gauge("ambry_frontend_inflight_budget_bytes",
              "Bytes of frontend.inflight_budget_bytes reserved by uploads in progress",
              registry=self.registry).set_function(lambda: self.router.budget.used)
        Gauge("ambry_frontend_straggler_bytes",
              "Payload bytes held only by replica writes still running after their quorum",
              registry=self.registry).set_function(lambda: self.router.straggler_bytes)
        self.reloader: ConfigReloader | None = None  # set by the daemon (SIGHUP)
        self.registry.register(ReloadCollector(lambda: self.reloader))
        self.scrape: Callable[[], Awaitable[bytes]] | None = None  # set by a worker's daemon
        # parts of the app that re-read a config section of their own on every reload (the
        # S3 API: its ``s3:`` section, access keys included), by section name: each checks
        # the new config and returns how to switch to it, or raises to refuse the reload
        self.reload_hooks: dict[str, Callable[[ClusterConfig], Callable[[], None]]] = {}
        # the route handlers, by resource (ambry.frontend.rest)
        self.deps = Deps(router=self.router, clock=self.clock, config=lambda: self.config,
                         secret=self.secret, body_reader=self.body_reader,
                         on_abort=self.count_abort("rest"), count_bytes_out=self.m_bytes_out.inc)
        self.blobs = BlobRoutes(self.deps)
        self.named = NamedRoutes(self.deps, self.blobs)
        self.signed_urls = SignedUrls(self.deps)

    @property
    def inflight(self) -> int:
        """Requests being served on both ports (REST and S3), for the drain."""
        return self.in_flight.count

    async def reload(self, config: ClusterConfig) -> MapChange:
        """Adopt a grown cluster map: new partitions, nodes, accounts and containers, and the
        sections of ``reload_hooks`` (S3 access keys). Raises
        :class:`~ambry.common.mapchange.UnsafeMapChange` (nothing changes) when the new map is
        not a safe successor of the running one."""
        if self.draining:
            raise Unavailable("the frontend is stopping")
        change = plan_map_change(self.config, config, live_sections=self.reload_hooks)
        # every hook checks first: one that refuses leaves everything as it was
        commits = [prepare(config) for prepare in self.reload_hooks.values()]
        self.router.reload(config)
        self.config = config
        for commit in commits:
            commit()
        return change

    def _node_error(self, node_id: str, op: str) -> None:
        self.m_node_errors.labels(node_id, op).inc()

    def count_abort(self, api: str) -> Callable[[str], None]:
        """The ``on_abort`` of :func:`~ambry.frontend.bodies.send_body` for ``api``."""
        return lambda reason: self.m_aborted.labels(api, reason).inc()

    def body_reader(self, request: web.Request) -> Callable[[int], Awaitable[bytes]]:
        content = request.content

        async def read(n: int) -> bytes:
            try:
                # Small reads: aiohttp raises a request's buffer limit to the largest read
                # asked for (read(4 MiB) lets it buffer 8 MiB per upload, outside the
                # frontend's byte budget); pieces of BODY_READ_BYTES keep it at 2 x that.
                data = await content.read(min(n, BODY_READ_BYTES))
            except (ConnectionError, OSError, web.HTTPException) as e:
                raise BadRequest(f"request body cut short: {e}") from None
            except Exception as e:  # aiohttp payload errors (truncated chunked body, ...)
                if type(e).__module__.startswith("aiohttp"):
                    raise BadRequest(f"request body cut short: {e}") from None
                raise
            self.m_bytes_in.inc(len(data))
            return data

        return read

    # ------------------------------------------------------------------ health, metrics
    async def health(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.Response(status=503, text="BAD")
        if not self.readiness.ready:
            return web.Response(status=503, text=f"BAD not ready: {self.readiness.reason}",
                                headers={"x-ambry-error-code": "NOT_READY"})
        return web.Response(status=200, text="GOOD")

    async def metrics(self, request: web.Request) -> web.Response:
        # a worker of several (frontend.workers) answers for all of them (ambry.frontend.worker)
        body = generate_latest(self.registry) if self.scrape is None else await self.scrape()
        resp = web.Response(body=body)
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=200, headers={
            "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": header_text_or(request.headers.get(
                "Access-Control-Request-Headers"), "*"),
            "Access-Control-Max-Age": "86400"})

    # ------------------------------------------------------------------ middleware
    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        # echoed in every reply: a client's id that could not be is replaced (and 400'd below)
        rid = header_text_or(request.headers.get("x-ambry-request-id"), "") or \
            os.urandom(8).hex()
        t0 = time.perf_counter()
        op = _op_name(request)
        status = 500
        self.in_flight.begin()
        try:
            if SIGNATURE_PARAM in request.query:
                request = self.signed_urls.apply(request)
            request["rid"] = rid
            check_ambry_headers(request.headers)  # one check of every x-ambry-* value
            if request.method == "OPTIONS":
                # CORS preflight for any path, answered here rather than by a catch-all
                # OPTIONS route: such a route made every unknown path exist, so a GET of one
                # was a 405 "Allow: OPTIONS" instead of a 404
                handler = self.options
            resp = await handler(request)
            status = client_abort_status(request) or resp.status
        except AmbryError as e:
            status = STATUS_BY_CODE.get(e.code, 500)
            if status == 500:
                log.error("rid=%s %s %s: unmapped error %s: %s", rid, request.method,
                          request.path, e.code, e.message)
            headers = {"x-ambry-error-code": e.code}
            if e.code == "RANGE_NOT_SATISFIABLE" and getattr(e, "total_size", None) is not None:
                headers["Content-Range"] = unsatisfied_content_range(e.total_size)  # type: ignore[attr-defined]
            resp = web.Response(status=status, text=_one_line(e.message) + "\n",
                                headers=headers)
        except web.HTTPException as e:  # aiohttp's own: unknown route, wrong method, ...
            status = e.status
            # a Response of its own: returning the exception object is deprecated in aiohttp
            resp = web.Response(status=e.status, reason=e.reason, body=e.body,
                                headers=e.headers)
            if status >= 400:  # every error reply names its cause
                resp.headers.setdefault("x-ambry-error-code",
                                        (e.reason or "HTTP_ERROR").upper().replace(" ", "_"))
        except asyncio.CancelledError as e:
            status = client_abort_status(request, e) or status
            raise
        except Exception as e:
            status = client_abort_status(request, e) or 500
            if status == CLIENT_ABORT_STATUS:  # not our failure: no traceback, no reply
                log.info("rid=%s %s %s: the client went away (%s)", rid, request.method,
                         request.path, type(e).__name__)
            else:
                log.exception("rid=%s %s %s failed", rid, request.method, request.path)
            resp = web.Response(status=status, text="internal error\n",
                                headers={"x-ambry-error-code": "INTERNAL"})
        finally:
            self.in_flight.end()
            self.m_requests.labels(op, str(status)).inc()
            self.m_latency.labels(op).observe(time.perf_counter() - t0)
        if not resp.prepared:
            resp.headers["x-ambry-request-id"] = rid
            for k, v in _CORS_HEADERS.items():
                resp.headers.setdefault(k, v)
            if self.draining:
                resp.force_close()  # "Connection: close": the client reconnects elsewhere
        log.debug("rid=%s %s %s -> %d", rid, request.method, request.path, status)
        return resp

    async def on_cleanup(self, app: web.Application) -> None:
        await self.router.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _op_name(request: web.Request) -> str:
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unknown"
    return f"{request.method} {name}"


async def _add_cors_to_prepared(request: web.Request, response: web.StreamResponse) -> None:
    if "x-ambry-request-id" not in response.headers and "rid" in request:
        response.headers["x-ambry-request-id"] = request["rid"]
    for k, v in _CORS_HEADERS.items():
        response.headers.setdefault(k, v)


# a name may hold any character (control characters get their 400 from validate_blob_name):
# ".+" stopped at a newline (%0A), so such a name was a 404 "no route"
_NAMED = r"/named/{account}/{container}/{name:[\s\S]+}"


def make_app(config: ClusterConfig, datacenter: str, *, router: Router | None = None,
             clock: Clock | None = None) -> web.Application:
    fa = FrontendApp(config, datacenter, router=router, clock=clock)
    app = web.Application(middlewares=[fa.middleware],
                          client_max_size=MAX_STITCH_BODY_BYTES)
    app["frontend"] = fa
    app.on_response_prepare.append(_add_cors_to_prepared)
    app.on_cleanup.append(fa.on_cleanup)
    r = app.router
    x: dict[str, Any] = {"expect_handler": answer_expect}  # every route answers Expect itself
    r.add_get("/healthCheck", fa.health, **x)
    r.add_get("/metrics", fa.metrics, **x)
    r.add_get(OPENAPI_PATH, serve_openapi, **x)  # before /{blob_id}, which would match it
    r.add_get("/signedUrl", fa.signed_urls.signed_url, **x)
    r.add_put("/updateTtl", fa.blobs.update_ttl, **x)
    r.add_put("/undelete", fa.blobs.undelete, **x)
    r.add_post("/stitch", fa.blobs.stitch, **x)
    r.add_post("/", fa.blobs.post_blob, **x)
    r.add_get("/named/{account}", fa.named.list_containers, allow_head=False, **x)
    r.add_get("/named/{account}/{container}", fa.named.list_named, allow_head=False, **x)
    r.add_put(_NAMED, fa.named.put_named, **x)
    r.add_post(_NAMED, fa.named.stitch_named, **x)
    r.add_get(_NAMED, fa.named.get_named, **x)
    r.add_delete(_NAMED, fa.named.delete_named, **x)
    r.add_get("/{blob_id}/{sub:BlobInfo|UserMetadata}", fa.blobs.blob_info, **x)
    r.add_get("/{blob_id}", fa.blobs.get_blob, **x)
    r.add_delete("/{blob_id}", fa.blobs.delete_blob, **x)
    add_unrouted(r)  # last: 404 and 405 answer Expect with answer_expect too
    # OPTIONS (CORS preflight) is answered by the middleware, for every path
    return app
