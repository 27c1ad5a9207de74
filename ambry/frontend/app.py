"""The Ambry REST API over aiohttp (DESIGN.md section 4): routes, headers, the error table.

Owns HTTP: parsing requests into router calls, the one table mapping error codes to HTTP
statuses, request ids, CORS, signed-URL checking, metrics and health, and adopting a grown
cluster map (:meth:`FrontendApp.reload`). Does not own any
storage decision (``router`` does). Bodies stream both ways: an upload is read chunk by chunk
as the router asks for it, a download is written as the router yields it, so memory per
request never grows with the blob's size.

Over 600 lines as one cohesive job: the REST API's HTTP surface, i.e. its route handlers
(each a few lines that parse headers into a router call) plus the middleware and error table
that every one of them relies on. What is not HTTP already lives elsewhere (``router`` and its
operation files, ``headers``, ``signing``, ``bodies``, ``readiness``). The S3 app uses
``FrontendApp``'s metrics and helpers, so ``FrontendApp`` stays in one place.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ambry.common.blobid import BlobId
from ambry.common.clock import Clock, SystemClock
from ambry.common.config import Account, ClusterConfig, Container
from ambry.common.errors import AmbryError, BadRequest, InvalidArgument, Unavailable
from ambry.common.mapchange import MapChange, plan_map_change
from ambry.common.properties import BlobProperties
from ambry.frontend.aborts import CLIENT_ABORT_STATUS, client_abort_status
from ambry.frontend.bodies import first_piece, send_body
from ambry.frontend.browser import NOSNIFF, active_content_headers
from ambry.frontend.chunking import content_range, parse_range, unsatisfied_content_range
from ambry.frontend.expect import add_unrouted, answer_expect
from ambry.frontend.headers import (
    USER_METADATA_PREFIX,
    check_ambry_headers,
    check_header_text,
    decode_user_metadata,
    encode_user_metadata,
    etag_for,
    header_text_or,
    http_date,
    parse_blob_size,
    parse_bool_header,
    parse_content_xxh3,
    parse_get_option,
    parse_ttl,
    parse_user_metadata,
    validate_blob_name,
)
from ambry.frontend.inflight import InFlight
from ambry.frontend.jsonbody import read_json
from ambry.frontend.openapi import OPENAPI_PATH, serve_openapi
from ambry.frontend.readiness import Readiness
from ambry.frontend.router import BlobRead, Router
from ambry.frontend.s3.listing import ListEntry, ListingBuilder
from ambry.frontend.signing import SIGNATURE_PARAM, sign_url, verify_url
from ambry.runtime.reload import ConfigReloader, ReloadCollector

if TYPE_CHECKING:
    from ambry.protocol.messages import NameRecord

__all__ = ["STATUS_BY_CODE", "FrontendApp", "make_app"]

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
_MAX_LIST_RESULTS = 10_000
_MAX_STITCH_BODY_BYTES = 16 * 1024 * 1024
_MAX_STITCH_JSON_DEPTH = 2  # {"chunkIds": [...]}
_MAX_DELIMITER_BYTES = 64


#: Largest piece read from a request body at once (bounds aiohttp's per-request buffer).
BODY_READ_BYTES = 256 * 1024
#: Bodies up to this size are answered in one piece (one write), not streamed.
SMALL_BODY_BYTES = 64 * 1024


class MissingHeader(BadRequest):
    code = "MISSING_HEADER"


class AccessDenied(AmbryError):
    code = "ACCESS_DENIED"


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
        # parts of the app that re-read a config section of their own on every reload (the
        # S3 API: its ``s3:`` section, access keys included), by section name: each checks
        # the new config and returns how to switch to it, or raises to refuse the reload
        self.reload_hooks: dict[str, Callable[[ClusterConfig], Callable[[], None]]] = {}

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

    # ------------------------------------------------------------------ helpers
    async def account_and_container(self, request: web.Request) -> tuple[Account, Container]:
        aname = request.headers.get("x-ambry-target-account-name", "default")
        cname = request.headers.get("x-ambry-target-container-name", "default")
        return await self._resolve(aname, cname)

    async def _resolve(self, aname: str, cname: str) -> tuple[Account, Container]:
        """Config containers, and those created at run time (S3 buckets)."""
        return await self.router.containers.resolve(aname, cname)

    def blob_id(self, text: str) -> BlobId:
        return self.router.parse_id(text)

    async def check_owner(self, request: web.Request, bid: BlobId) -> None:
        """An id read with explicit account/container headers must belong to them (403)."""
        h = request.headers
        if "x-ambry-target-account-name" not in h and "x-ambry-target-container-name" not in h:
            return
        account, container = await self.account_and_container(request)
        if (bid.account_id, bid.container_id) != (account.id, container.id):
            raise AccessDenied("blob does not belong to the target account/container")

    def props_from(self, request: web.Request, account: Account, container: Container
                   ) -> tuple[BlobProperties, bytes]:
        h = request.headers
        for name in ("x-ambry-service-id", "x-ambry-content-type"):
            if not h.get(name):
                raise MissingHeader(f"missing required header {name}")
        props = BlobProperties(
            size=0, created_ms=self.clock.now_ms(), ttl_s=parse_ttl(h.get("x-ambry-ttl")),
            content_type=h["x-ambry-content-type"], service_id=h["x-ambry-service-id"],
            owner_id=h.get("x-ambry-owner-id", ""), filename=h.get("x-ambry-filename", ""),
            account_id=account.id, container_id=container.id)
        um = encode_user_metadata(parse_user_metadata(h))
        return props, um

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

    def blob_headers(self, info: BlobRead) -> CIMultiDict[str]:
        p = info.properties
        h: CIMultiDict[str] = CIMultiDict()
        bid = info.blob_id.to_str()
        h["x-ambry-blob-size"] = str(info.total_size)
        h["x-ambry-service-id"] = p.service_id
        h["x-ambry-creation-time"] = http_date(p.created_ms)
        h["x-ambry-content-type"] = p.content_type
        h["x-ambry-ttl"] = "-1" if info.state.permanent or p.ttl_s == -1 else str(p.ttl_s)
        h["x-ambry-private"] = "false"
        if p.owner_id:
            h["x-ambry-owner-id"] = p.owner_id
        if p.filename:
            h["x-ambry-filename"] = p.filename
        account = self.config.account_by_id(p.account_id)
        if account is not None:
            h["x-ambry-target-account-name"] = account.name
            cname = self.router.containers.cached_name(p.account_id, p.container_id)
            if cname is not None:
                h["x-ambry-target-container-name"] = cname
        h["x-ambry-life-version"] = str(info.state.life_version)
        if info.state.deleted:
            h["x-ambry-deleted"] = "true"
        for k, v in decode_user_metadata(info.user_metadata).items():
            h[USER_METADATA_PREFIX + k] = v
        h["ETag"] = etag_for(bid)
        h["Last-Modified"] = http_date(p.created_ms)
        h["Accept-Ranges"] = "bytes"
        h.update(NOSNIFF)
        return h

    # ------------------------------------------------------------------ blob routes
    async def post_blob(self, request: web.Request) -> web.Response:
        account, container = await self.account_and_container(request)
        props, um = self.props_from(request, account, container)
        h = request.headers
        stored = await self.router.put(
            self.body_reader(request), account_id=account.id, container_id=container.id,
            props=props, usermeta=um, declared_size=parse_blob_size(h.get("x-ambry-blob-size")),
            content_xxh3=parse_content_xxh3(h.get("x-ambry-content-xxh3")), rid=request["rid"],
            chunk_upload=parse_bool_header(h.get("x-ambry-chunk-upload")))
        return self._created(stored.blob_id.to_str(), stored.size, stored.created_ms)

    def _created(self, bid: str, size: int, created_ms: int) -> web.Response:
        return web.Response(status=201, headers={
            "Location": f"/{bid}", "x-ambry-blob-size": str(size),
            "x-ambry-creation-time": http_date(created_ms)})

    async def get_blob(self, request: web.Request, bid: BlobId | None = None
                       ) -> web.StreamResponse:
        bid = bid or self.blob_id(request.match_info["blob_id"])
        await self.check_owner(request, bid)
        incl_deleted, incl_expired = parse_get_option(request.headers.get("x-ambry-get-option"))
        head = request.method == "HEAD"
        range_header = request.headers.get("Range")
        resolved: dict[str, Any] = {}

        def resolve(total: int) -> tuple[int, int] | None:
            span = parse_range(range_header, total) if range_header else None
            resolved["span"] = span
            return span

        info = await self.router.get(bid, include_deleted=incl_deleted,
                                     include_expired=incl_expired, info_only=head,
                                     range_resolver=resolve if range_header else None,
                                     rid=request["rid"])
        await self.router.containers.name_of(info.properties.account_id,
                                             info.properties.container_id)  # warm the cache
        headers = self.blob_headers(info)
        headers["Content-Type"] = info.properties.content_type
        # an HTML or SVG blob is a download, sandboxed, never a page on this origin
        headers.update(active_content_headers(info.properties.content_type,
                                              info.properties.filename))
        try:
            if head:
                if range_header:
                    span = parse_range(range_header, info.total_size)
                    if span is not None:
                        headers["Content-Range"] = content_range(*span, info.total_size)
                        headers["Content-Length"] = str(span[1])
                        return web.Response(status=206, headers=headers)
                headers["Content-Length"] = str(info.total_size)
                return web.Response(status=200, headers=headers)
            status = 200
            if resolved.get("span") is not None:
                status = 206
                headers["Content-Range"] = content_range(info.range_start, info.length,
                                                         info.total_size)
            assert info.body is not None
            if info.length <= SMALL_BODY_BYTES:
                # small: headers and body leave in one write (a streamed response costs a
                # send for the headers, one per piece and one for the end)
                data = b"".join([piece async for piece in info.body])
                self.m_bytes_out.inc(len(data))
                return web.Response(status=status, headers=headers, body=data)
            first = await first_piece(info.body)  # an error here is still an error reply
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = info.length
            sent = await send_body(request, resp, info.body, first, blob=bid.to_str(),
                                   rid=request["rid"], on_abort=self.count_abort("rest"))
            self.m_bytes_out.inc(sent)
            return resp
        finally:
            await info.aclose()

    async def blob_info(self, request: web.Request) -> web.Response:
        bid = self.blob_id(request.match_info["blob_id"])
        await self.check_owner(request, bid)
        incl_deleted, incl_expired = parse_get_option(request.headers.get("x-ambry-get-option"))
        info = await self.router.get(bid, include_deleted=incl_deleted,
                                     include_expired=incl_expired, info_only=True,
                                     rid=request["rid"])
        await self.router.containers.name_of(info.properties.account_id,
                                             info.properties.container_id)  # warm the cache
        headers = self.blob_headers(info)
        if request.match_info["sub"] == "UserMetadata":
            headers = CIMultiDict((k, v) for k, v in headers.items()
                                  if k.lower().startswith(USER_METADATA_PREFIX))
        return web.Response(status=200, headers=headers)

    async def delete_blob(self, request: web.Request) -> web.Response:
        bid = self.blob_id(request.match_info["blob_id"])
        await self.check_owner(request, bid)
        await self.router.delete(bid, rid=request["rid"])
        return web.Response(status=202)

    async def _id_from_header(self, request: web.Request) -> BlobId:
        for name in ("x-ambry-blob-id", "x-ambry-service-id"):
            if not request.headers.get(name):
                raise MissingHeader(f"missing required header {name}")
        text = request.headers["x-ambry-blob-id"].lstrip("/")
        bid = self.blob_id(text)
        await self.check_owner(request, bid)
        return bid

    async def update_ttl(self, request: web.Request) -> web.Response:
        await self.router.update_ttl(await self._id_from_header(request), rid=request["rid"])
        return web.Response(status=200)

    async def undelete(self, request: web.Request) -> web.Response:
        await self.router.undelete(await self._id_from_header(request), rid=request["rid"])
        return web.Response(status=200)

    async def stitch(self, request: web.Request) -> web.Response:
        account, container = await self.account_and_container(request)
        props, um = self.props_from(request, account, container)
        chunk_ids = await self._stitch_ids(request)
        stored = await self.router.stitch(chunk_ids,
                                          account_id=account.id, container_id=container.id,
                                          props=props, usermeta=um, rid=request["rid"])
        return self._created(stored.blob_id.to_str(), stored.size, stored.created_ms)

    async def _stitch_ids(self, request: web.Request) -> list[str]:
        body = await read_json(request, max_bytes=_MAX_STITCH_BODY_BYTES,
                               max_depth=_MAX_STITCH_JSON_DEPTH)
        chunk_ids = body.get("chunkIds") if isinstance(body, dict) else None
        if not isinstance(chunk_ids, list) or not all(isinstance(c, str) for c in chunk_ids):
            raise InvalidArgument('stitch body must be JSON {"chunkIds": ["<chunk id>", ...]}')
        return [c.lstrip("/") for c in chunk_ids]

    # ------------------------------------------------------------------ named blobs
    async def _named_target(self, request: web.Request) -> tuple[Account, Container, str]:
        account, container = await self._resolve(request.match_info["account"],
                                           request.match_info["container"])
        return account, container, validate_blob_name(request.match_info["name"])

    async def put_named(self, request: web.Request) -> web.Response:
        account, container, name = await self._named_target(request)
        props, um = self.props_from(request, account, container)
        h = request.headers
        stored = await self.router.put_named(
            name, self.body_reader(request), account_id=account.id,
            container_id=container.id, props=props, usermeta=um,
            declared_size=parse_blob_size(h.get("x-ambry-blob-size")),
            content_xxh3=parse_content_xxh3(h.get("x-ambry-content-xxh3")),
            upsert=parse_bool_header(h.get("x-ambry-named-upsert")), rid=request["rid"])
        return self._created(stored.blob_id.to_str(), stored.size, stored.created_ms)

    async def stitch_named(self, request: web.Request) -> web.Response:
        """``POST /named/<a>/<c>/<name>``: stitch chunks into a blob under a name (the
        resumable, parallel upload of a named blob), as ``PUT`` would store it."""
        account, container, name = await self._named_target(request)
        props, um = self.props_from(request, account, container)
        chunk_ids = await self._stitch_ids(request)
        stored = await self.router.stitch_named(
            name, chunk_ids, account_id=account.id, container_id=container.id, props=props,
            usermeta=um, upsert=parse_bool_header(request.headers.get("x-ambry-named-upsert")),
            rid=request["rid"])
        return self._created(stored.blob_id.to_str(), stored.size, stored.created_ms)

    async def get_named(self, request: web.Request) -> web.StreamResponse:
        account, container, name = await self._named_target(request)
        bid = await self.router.resolve_name(account.id, container.id, name, request["rid"])
        return await self.get_blob(request, bid)

    async def delete_named(self, request: web.Request) -> web.Response:
        account, container, name = await self._named_target(request)
        await self.router.delete_named(name, account_id=account.id,
                                       container_id=container.id, rid=request["rid"])
        return web.Response(status=202)

    async def list_named(self, request: web.Request) -> web.Response:
        account, container = await self._resolve(request.match_info["account"],
                                           request.match_info["container"])
        q = request.query
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        try:
            limit = int(q.get("maxResults", "1000"))
        except ValueError:
            raise InvalidArgument("maxResults must be an integer") from None
        if not 1 <= limit <= _MAX_LIST_RESULTS:
            raise InvalidArgument(f"maxResults must be 1..{_MAX_LIST_RESULTS}")
        start_after = ""
        if q.get("page"):
            try:
                # validate=True: urlsafe_b64decode silently drops bad characters, which
                # turned a garbled token into "from the start" instead of a 400
                start_after = base64.b64decode(q["page"] + "=" * (-len(q["page"]) % 4),
                                               altchars=b"-_", validate=True).decode("utf-8")
            except (binascii.Error, ValueError, UnicodeDecodeError):
                raise InvalidArgument("bad page token") from None
        if delimiter:
            return await self._list_named_delimited(request, account, container, prefix,
                                                    delimiter, start_after, limit)
        entries, more = await self.router.list_named(
            account_id=account.id, container_id=container.id, prefix=prefix,
            start_after=start_after, limit=limit, rid=request["rid"])
        body: dict[str, Any] = {"entries": [_listed(e) for e in entries]}
        if more and entries:
            body["nextPageToken"] = _page_token(entries[-1].name)
        return web.json_response(body)

    async def _list_named_delimited(self, request: web.Request, account: Account,
                                    container: Container, prefix: str, delimiter: str,
                                    start_after: str, limit: int) -> web.Response:
        """One page of names and common prefixes (``delimiter``, as S3's ListObjects): the
        names below a rolled-up prefix are skipped by the next read, not read and dropped,
        so listing a directory costs its direct children, not every name below it."""
        if len(delimiter.encode()) > _MAX_DELIMITER_BYTES:
            raise InvalidArgument(f"delimiter must be at most {_MAX_DELIMITER_BYTES} bytes")
        b = ListingBuilder(prefix=prefix, delimiter=delimiter, max_keys=limit,
                           marker=start_after)
        records: dict[str, NameRecord] = {}
        while not b.done:
            entries, more = await self.router.list_named(
                account_id=account.id, container_id=container.id, prefix=prefix,
                start_after=b.next_start, limit=b.read_limit, rid=request["rid"])
            for e in entries:
                records[e.name] = e
            b.feed([ListEntry(e.name, e.size, e.created_ms, "") for e in entries],
                   more and bool(entries))
            # only the page's own names are kept: memory is bounded by one page
            kept = {x.key for x in b.page.contents}
            records = {k: v for k, v in records.items() if k in kept}
        page = b.page
        body: dict[str, Any] = {"entries": [_listed(records[x.key]) for x in page.contents],
                                "commonPrefixes": list(page.common_prefixes)}
        if page.is_truncated and page.next_marker is not None:
            body["nextPageToken"] = _page_token(page.next_marker)
        return web.json_response(body)

    async def list_containers(self, request: web.Request) -> web.Response:
        """The containers of an account (config ones and those created at run time), so a
        client can tell an unknown container from an empty one."""
        aname = request.match_info["account"]
        account = self.router.containers.account(aname)
        if account is None:
            raise InvalidArgument(f"unknown account {aname!r}")
        listed = await self.router.containers.list(account, request["rid"])
        return web.json_response({"account": account.name, "containers": sorted(
            {c.name for c, _ in listed})})

    # ------------------------------------------------------------------ signed URLs
    def _signing_key(self) -> bytes:
        # an empty key would make every signature forgeable (the daemon refuses to start
        # without one; an app built in-process without one just has no signed URLs)
        if not self.secret:
            raise AccessDenied("signed URLs are off: this frontend has no signed_url_secret")
        return self.secret

    async def signed_url(self, request: web.Request) -> web.Response:
        h = request.headers
        kind = h.get("x-ambry-url-type", "").upper()
        if kind not in ("GET", "POST"):
            raise MissingHeader("x-ambry-url-type must be GET or POST")
        try:
            ttl = int(h.get("x-ambry-url-ttl-secs", "3600"))
        except ValueError:
            raise InvalidArgument("x-ambry-url-ttl-secs must be an integer") from None
        if not 1 <= ttl <= self.config.frontend.signed_url_max_ttl_s:
            raise InvalidArgument("x-ambry-url-ttl-secs out of range")
        params = {k.lower(): v for k, v in h.items()
                  if k.lower().startswith("x-ambry-") and k.lower() not in
                  ("x-ambry-url-type", "x-ambry-url-ttl-secs", "x-ambry-request-id",
                   "x-ambry-blob-id")}
        if kind == "GET":
            if not h.get("x-ambry-blob-id"):
                raise MissingHeader("missing required header x-ambry-blob-id")
            bid = self.blob_id(h["x-ambry-blob-id"].lstrip("/"))
            path = f"/{bid.to_str()}"
        else:
            account, container = await self.account_and_container(request)
            self.props_from(request, account, container)  # the upload headers must be valid
            path = "/"
        expires = self.clock.now_ms() // 1000 + ttl
        key = self._signing_key()
        host = check_header_text("Host", request.host)  # echoed in the URL
        url = f"{request.scheme}://{host}" + sign_url(key, kind, path, params, expires)
        return web.Response(status=200, headers={"x-ambry-signed-url": url})

    # ------------------------------------------------------------------ health, metrics
    async def health(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.Response(status=503, text="BAD")
        if not self.readiness.ready:
            return web.Response(status=503, text=f"BAD not ready: {self.readiness.reason}",
                                headers={"x-ambry-error-code": "NOT_READY"})
        return web.Response(status=200, text="GOOD")

    async def metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.registry))
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
                request = self._apply_signed_url(request)
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

    def _apply_signed_url(self, request: web.Request) -> web.Request:
        """A signed URL's query parameters become the request's x-ambry-* headers."""
        params = verify_url(self._signing_key(), request.method, request.path, request.query,
                            self.clock.now_ms() // 1000)
        headers = CIMultiDict(request.headers)
        for k, v in params.items():
            headers[k] = v
        return request.clone(headers=CIMultiDictProxy(headers))

    async def on_cleanup(self, app: web.Application) -> None:
        await self.router.close()


def _listed(e: NameRecord) -> dict[str, Any]:
    return {"name": e.name, "blobId": BlobId.from_bytes(e.blob_id).to_str(), "size": e.size,
            "contentType": e.content_type, "createdMs": e.created_ms}


def _page_token(after: str) -> str:
    """``nextPageToken``: the last name (or common prefix) of the page, base64url."""
    return base64.urlsafe_b64encode(after.encode()).rstrip(b"=").decode()


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
                          client_max_size=_MAX_STITCH_BODY_BYTES)
    app["frontend"] = fa
    app.on_response_prepare.append(_add_cors_to_prepared)
    app.on_cleanup.append(fa.on_cleanup)
    r = app.router
    x: dict[str, Any] = {"expect_handler": answer_expect}  # every route answers Expect itself
    r.add_get("/healthCheck", fa.health, **x)
    r.add_get("/metrics", fa.metrics, **x)
    r.add_get(OPENAPI_PATH, serve_openapi, **x)  # before /{blob_id}, which would match it
    r.add_get("/signedUrl", fa.signed_url, **x)
    r.add_put("/updateTtl", fa.update_ttl, **x)
    r.add_put("/undelete", fa.undelete, **x)
    r.add_post("/stitch", fa.stitch, **x)
    r.add_post("/", fa.post_blob, **x)
    r.add_get("/named/{account}", fa.list_containers, allow_head=False, **x)
    r.add_get("/named/{account}/{container}", fa.list_named, allow_head=False, **x)
    r.add_put(_NAMED, fa.put_named, **x)
    r.add_post(_NAMED, fa.stitch_named, **x)
    r.add_get(_NAMED, fa.get_named, **x)
    r.add_delete(_NAMED, fa.delete_named, **x)
    r.add_get("/{blob_id}/{sub:BlobInfo|UserMetadata}", fa.blob_info, **x)
    r.add_get("/{blob_id}", fa.get_blob, **x)
    r.add_delete("/{blob_id}", fa.delete_blob, **x)
    add_unrouted(r)  # last: 404 and 405 answer Expect with answer_expect too
    # OPTIONS (CORS preflight) is answered by the middleware, for every path
    return app
