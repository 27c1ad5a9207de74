"""What every handler of the Ambry REST API shares: its collaborators (:class:`Deps`), reading
the target account and container, blob ids and upload properties from a request, and the
headers a blob is answered with.

Owns the request-side rules common to the routes (a missing required header is 400
MISSING_HEADER, an id read with explicit account/container headers must belong to them, else
403 ACCESS_DENIED) and the ``x-ambry-*`` reply headers of a blob. Does not own the routes
(``blobs``, ``named``, ``signedurls``) or the request envelope (``ambry.frontend.app``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from ambry.common.blobid import BlobId
from ambry.common.clock import Clock
from ambry.common.config import Account, ClusterConfig, Container
from ambry.common.errors import AmbryError, BadRequest, InvalidArgument
from ambry.common.properties import BlobProperties
from ambry.frontend.browser import NOSNIFF
from ambry.frontend.headers import (
    USER_METADATA_PREFIX,
    decode_user_metadata,
    encode_user_metadata,
    etag_for,
    http_date,
    parse_ttl,
    parse_user_metadata,
)
from ambry.frontend.jsonbody import read_json
from ambry.frontend.router import BlobRead, Router

__all__ = ["MAX_STITCH_BODY_BYTES", "AccessDenied", "Deps", "MissingHeader", "RestRoutes"]

#: The largest stitch body (a list of chunk ids), also the app's ``client_max_size``.
MAX_STITCH_BODY_BYTES = 16 * 1024 * 1024
_MAX_STITCH_JSON_DEPTH = 2  # {"chunkIds": [...]}


class MissingHeader(BadRequest):
    code = "MISSING_HEADER"


class AccessDenied(AmbryError):
    code = "ACCESS_DENIED"



@dataclass(frozen=True)
class Deps:
    """The REST API's collaborators, shared by every handler."""

    router: Router
    clock: Clock
    #: the running config (a reload swaps it: accounts, ``signed_url_max_ttl_s``)
    config: Callable[[], ClusterConfig]
    #: the key of signed URLs (empty: this frontend has none)
    secret: bytes
    #: a request's body as ``read(n)`` calls, counted in the frontend's bytes-in metric
    body_reader: Callable[[web.Request], Callable[[int], Awaitable[bytes]]]
    #: ``on_abort`` of ``send_body``: counts blob bodies cut short
    on_abort: Callable[[str], None]
    #: counts response body bytes sent
    count_bytes_out: Callable[[int], None]


class RestRoutes:
    """Handlers of some REST routes; every handler is ``async (request) -> response``."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.router = deps.router
        self.clock = deps.clock
        self.body_reader = deps.body_reader

    @property
    def config(self) -> ClusterConfig:
        return self.deps.config()

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

    def _created(self, bid: str, size: int, created_ms: int) -> web.Response:
        return web.Response(status=201, headers={
            "Location": f"/{bid}", "x-ambry-blob-size": str(size),
            "x-ambry-creation-time": http_date(created_ms)})

    async def _stitch_ids(self, request: web.Request) -> list[str]:
        body = await read_json(request, max_bytes=MAX_STITCH_BODY_BYTES,
                               max_depth=_MAX_STITCH_JSON_DEPTH)
        chunk_ids = body.get("chunkIds") if isinstance(body, dict) else None
        if not isinstance(chunk_ids, list) or not all(isinstance(c, str) for c in chunk_ids):
            raise InvalidArgument('stitch body must be JSON {"chunkIds": ["<chunk id>", ...]}')
        return [c.lstrip("/") for c in chunk_ids]

    def _signing_key(self) -> bytes:
        # an empty key would make every signature forgeable (the daemon refuses to start
        # without one; an app built in-process without one just has no signed URLs)
        if not self.deps.secret:
            raise AccessDenied("signed URLs are off: this frontend has no signed_url_secret")
        return self.deps.secret
