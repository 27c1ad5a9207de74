"""The S3 API (path-style) over aiohttp: the entry point of every S3 request.

Owns the request's life: its request id, parsing (``context``), authentication (``auth``),
the headers the operation may act on (``coverage.signed_view``), finding the operation in
the route table (``routes``), refusing the headers it does not honour (``headerpolicy``)
and calling its handler, S3 error replies (one table in
``errors``), the request metrics, the in-flight count shared with the REST app, and
re-reading the ``s3:`` section on a config reload.

The handlers live by resource: ``buckets``, ``objects`` (get/head/put/delete), ``copy``
(CopyObject, UploadPartCopy), ``uploads`` (multipart; the upload records are ``multipart``)
and ``list_objects``; each is a :class:`~ambry.frontend.s3.resource.Resource` over one
:class:`~ambry.frontend.s3.resource.Deps`. Buckets are containers of the key's account
(config containers, or ones created at run time through ``Router.containers``); objects are
named blobs of that container, their S3 metadata kept in the blob's user metadata
(``metadata``). Does not own storage decisions (the router), the signature arithmetic
(``sigv4``), body decoding (``payload``), listing pagination (``listing``) or ETag rules
(``etag``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import Counter, Histogram

from ambry.common.config import ClusterConfig
from ambry.common.errors import AmbryError
from ambry.frontend.aborts import CLIENT_ABORT_STATUS, client_abort_status
from ambry.frontend.chunking import unsatisfied_content_range
from ambry.frontend.expect import answer_expect_ignoring_others
from ambry.frontend.inflight import InFlight
from ambry.frontend.s3 import sigv4
from ambry.frontend.s3.auth import authenticate
from ambry.frontend.s3.config import S3Config, s3_config_of
from ambry.frontend.s3.context import Ctx, parse_request
from ambry.frontend.s3.coverage import signed_view
from ambry.frontend.s3.errors import S3Error, s3_error_for
from ambry.frontend.s3.headerpolicy import check_headers
from ambry.frontend.s3.multipart import MultipartStore
from ambry.frontend.s3.resource import MAX_XML_BODY_BYTES, Deps, Resource
from ambry.frontend.s3.routes import RESOURCES, metric_label, resolve
from ambry.frontend.s3.xml import Node, document

if TYPE_CHECKING:
    from ambry.frontend.app import FrontendApp

__all__ = ["S3Api", "make_s3_app"]

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[!-~]{1,128}", re.ASCII)


class S3Api:
    def __init__(self, fa: FrontendApp, s3: S3Config | None = None) -> None:
        s3 = s3 or s3_config_of(fa.config)
        self.deps = Deps(router=fa.router, clock=fa.clock, s3=s3,
                         uploads=MultipartStore(fa.router, s3.multipart_ttl_s),
                         body_reader=fa.body_reader, on_abort=fa.count_abort("s3"),
                         count_bytes_out=fa.m_bytes_out.inc)
        self.resources: dict[type[Resource], Resource] = {cls: cls(self.deps)
                                                          for cls in RESOURCES}
        # the accounts of the running config (FrontendApp.reload swaps its config)
        self._account_of = lambda name: fa.config.account(name)
        # requests in progress on both ports: the drain waits for this count
        self.in_flight: InFlight = fa.in_flight
        fa.reload_hooks["s3"] = self._prepare_reload  # SIGHUP re-reads the access keys
        self.m_requests = Counter("ambry_s3_requests", "S3 requests by operation and status",
                                  ["op", "status"], registry=fa.registry)
        self.m_latency = Histogram("ambry_s3_request_seconds", "S3 request latency", ["op"],
                                   registry=fa.registry,
                                   buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                            2.5, 5, 10, 30, 60))

    @property
    def s3(self) -> S3Config:
        return self.deps.s3

    @property
    def uploads(self) -> MultipartStore:
        return self.deps.uploads

    def _prepare_reload(self, config: ClusterConfig) -> Callable[[], None]:
        """Check the ``s3:`` section of a re-read config (a bad one raises: the reload is
        refused and the running keys stay); the switch to it, which names the access keys
        added and removed (never a secret)."""
        new = s3_config_of(config)

        def commit() -> None:
            old, self.deps.s3 = self.deps.s3, new
            self.uploads.ttl_s = new.multipart_ttl_s
            added = sorted(new.by_key.keys() - old.by_key.keys())
            removed = sorted(old.by_key.keys() - new.by_key.keys())
            changed = sorted(k for k in new.by_key.keys() & old.by_key.keys()
                             if new.by_key[k] != old.by_key[k])
            if added or removed or changed:
                log.info("S3 access keys reloaded: added %s, removed %s, changed %s",
                         added, removed, changed)

        return commit

    # ------------------------------------------------------------------ entry point
    async def handle(self, request: web.Request) -> web.StreamResponse:
        rid = request.headers.get("x-amz-request-id", "")
        if _REQUEST_ID.fullmatch(rid) is None:  # it is echoed in a header: printable ASCII
            rid = os.urandom(8).hex().upper()
        t0 = time.perf_counter()
        op = "unknown"
        aws_op = "-"
        status = 500
        ctx: Ctx | None = None
        self.in_flight.begin()
        try:
            ctx = parse_request(request, rid)
            op = metric_label(ctx)
            authenticate(request, ctx, self.s3, self._account_of,
                         self.deps.clock.now_ms() / 1000)
            # the one place that decides which headers the operations may act on
            ctx.h = signed_view(ctx.h, ctx.auth)
            route = resolve(ctx)
            aws_op = route.op
            # headers that promise what this store does not do: refused, never ignored
            check_headers(route.op, ctx.h, ctx.owner)
            resp = await route.handler(self.resources[route.owner], request, ctx)
            status = client_abort_status(request) or resp.status
        except sigv4.AuthError as e:
            err = S3Error(e.code, e.message, e.status, extra=e.extra)
            resp = self._error(request, err, rid)
            status = resp.status
        except AmbryError as e:
            err = s3_error_for(e, bucket=ctx.bucket if ctx else None,
                               key=ctx.key if ctx else None)
            if err.status == 500:
                log.error("rid=%s %s %s: unmapped error %s: %s", rid, request.method,
                          request.path, e.code, e.message)
            resp = self._error(request, err, rid)
            status = resp.status
        except web.HTTPException:
            raise
        except (ConnectionError, asyncio.CancelledError) as e:
            if client_abort_status(request, e) is None:
                raise
            status = CLIENT_ABORT_STATUS
            log.info("rid=%s S3 %s %s: the client went away (%s)", rid, request.method,
                     request.path, type(e).__name__)
            if isinstance(e, asyncio.CancelledError):
                raise
            resp = web.Response(status=status)  # aiohttp finds the connection closed
        except Exception:
            log.exception("rid=%s S3 %s %s failed", rid, request.method, request.path)
            resp = self._error(request, S3Error("InternalError", "We encountered an internal "
                                                                 "error. Please try again.",
                                                500), rid)
            status = 500
        finally:
            self.in_flight.end()
            self.m_requests.labels(op, str(status)).inc()
            self.m_latency.labels(op).observe(time.perf_counter() - t0)
        if not resp.prepared:
            resp.headers["x-amz-request-id"] = rid
            resp.headers["x-amz-id-2"] = rid
            resp.headers.setdefault("Server", "AmbryS3")
        log.debug("rid=%s S3 %s %s (%s) -> %d", rid, request.method, request.path, aws_op,
                  status)
        return resp

    def _error(self, request: web.Request, e: S3Error, rid: str) -> web.Response:
        headers: dict[str, str] = {}
        if e.s3_code == "InvalidRange" and "ActualObjectSize" in e.extra:
            headers["Content-Range"] = unsatisfied_content_range(
                int(e.extra["ActualObjectSize"]))
        if e.status == 503:
            headers["Retry-After"] = "1"
        if request.method == "HEAD":
            return web.Response(status=e.status, headers=headers)
        fields: list[Node | None] = [("Code", e.s3_code), ("Message", e.message)]
        if e.bucket is not None:
            fields.append(("BucketName", e.bucket))
        if e.key is not None:
            fields.append(("Key", e.key))
        fields += [(k, v) for k, v in e.extra.items()]
        fields += [("Resource", request.path), ("RequestId", rid)]
        return web.Response(status=e.status, body=document("Error", fields, namespace=False),
                            content_type="application/xml", headers=headers)


def make_s3_app(fa: FrontendApp, s3: S3Config | None = None) -> web.Application:
    """The S3 application of a frontend: shares its router, metrics, byte accounting and
    in-flight count."""
    api = S3Api(fa, s3)
    app = web.Application(client_max_size=MAX_XML_BODY_BYTES)
    app["s3"] = api
    # every method and path: S3 dispatches on method, path shape and query sub-resources
    # (``routes``); an Expect other than 100-continue is ignored, as AWS does (the REST port
    # answers 417)
    app.router.add_route("*", "/{tail:.*}", api.handle,
                         expect_handler=answer_expect_ignoring_others)
    return app
