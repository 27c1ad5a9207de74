"""What every S3 handler is handed (:class:`Deps`) and the steps they share (:class:`Resource`).

The handlers are grouped by the resource they act on, one class per file: ``buckets``,
``objects``, ``copy``, ``uploads`` (multipart), ``list_objects``; ``routes`` says which
request goes to which. Each class is a :class:`Resource` over one :class:`Deps`, the only
way a handler reaches the router, the clock, request bodies, metrics and the S3 settings
(swapped by a config reload). Owns the steps shared by handlers of several resources:
resolving the bucket and key, blob properties, reading a small XML body, binding a key to
a stored blob under the request's write conditions. Does not own HTTP dispatch (``app``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ambry.common.blobid import BlobId
from ambry.common.clock import Clock
from ambry.common.config import Account, Container
from ambry.common.properties import BlobProperties
from ambry.frontend.router import Router, StoredBlob
from ambry.frontend.s3.config import S3Config
from ambry.frontend.s3.context import Ctx
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.metadata import listing_content_type, write_precondition
from ambry.frontend.s3.multipart import MultipartStore
from ambry.frontend.s3.payload import S3Body

__all__ = ["MAX_XML_BODY_BYTES", "Deps", "Resource"]

MAX_XML_BODY_BYTES = 4 * 1024 * 1024
_SERVICE_ID = "s3"


@dataclass
class Deps:
    """The S3 API's collaborators, shared by every handler (``s3`` is replaced on reload)."""

    router: Router
    clock: Clock
    s3: S3Config
    uploads: MultipartStore
    #: a request's body as ``read(n)`` calls, counted in the frontend's bytes-in metric
    body_reader: Callable[[web.Request], Callable[[int], Awaitable[bytes]]]
    #: ``on_abort`` of ``send_body``: counts blob bodies cut short
    on_abort: Callable[[str], None]
    #: counts response body bytes sent
    count_bytes_out: Callable[[int], None]


class Resource:
    """Handlers of one S3 resource; every handler is ``async (request, ctx) -> response``."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.router = deps.router
        self.clock = deps.clock
        self.uploads = deps.uploads

    @property
    def s3(self) -> S3Config:
        return self.deps.s3

    @staticmethod
    def _stored_reply(etag: str, body: S3Body) -> web.Response:
        """The 200 of a PutObject or UploadPart: the ETag, and the body's checksum when the
        client sent one (verified by the body reader)."""
        headers = {"ETag": etag}
        if body.checksum_algorithm and body.checksum_value:
            headers["x-amz-checksum-" + body.checksum_algorithm] = body.checksum_value
        return web.Response(status=200, headers=headers)

    @staticmethod
    def _xml(body: bytes, status: int = 200, headers: dict[str, str] | None = None
             ) -> web.Response:
        return web.Response(status=status, body=body, content_type="application/xml",
                            headers=headers)

    @staticmethod
    def _acct(ctx: Ctx) -> Account:
        assert ctx.account is not None
        return ctx.account

    async def _container(self, ctx: Ctx, bucket: str | None = None) -> Container:
        name = bucket if bucket is not None else ctx.bucket
        assert name is not None
        c = await self.router.containers.lookup(self._acct(ctx), name, ctx.rid)
        if c is None:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", 404,
                          bucket=name)
        return c

    def _props(self, ctx: Ctx, container: Container, content_type: str) -> BlobProperties:
        return BlobProperties(size=0, created_ms=self.clock.now_ms(), ttl_s=-1,
                              content_type=content_type, service_id=_SERVICE_ID,
                              owner_id=ctx.access_key, account_id=self._acct(ctx).id,
                              container_id=container.id)

    def _body(self, request: web.Request, ctx: Ctx) -> S3Body:
        return S3Body(self.deps.body_reader(request), ctx.h, ctx.auth)

    async def _small_body(self, request: web.Request, ctx: Ctx) -> bytes:
        body = self._body(request, ctx)
        buf = bytearray()
        while True:
            piece = await body.read(64 * 1024)
            if not piece:
                return bytes(buf)
            buf += piece
            if len(buf) > MAX_XML_BODY_BYTES:
                raise S3Error("MalformedXML", "the request document is too large")

    async def _bind(self, ctx: Ctx, container: Container, key: str, stored: StoredBlob,
                    content_type: str, etag: str) -> None:
        """Point the key at the stored object, under the request's write conditions
        (``If-None-Match: *``, ``If-Match``), decided at the key's replicas so that they hold
        against concurrent writers (docs/security.md, "Conditional writes and names")."""
        await self.router.bind_name(key, stored, account_id=self._acct(ctx).id,
                                    container_id=container.id,
                                    content_type=listing_content_type(content_type, etag),
                                    rid=ctx.rid,
                                    condition=write_precondition(ctx.h, container.name, key))

    async def _lookup_object(self, ctx: Ctx, container: Container, key: str) -> BlobId:
        e = await self.router.lookup_name(self._acct(ctx).id, container.id, key, ctx.rid)
        if e is None or e.deleted:
            raise S3Error("NoSuchKey", "The specified key does not exist.", 404,
                          bucket=container.name, key=key)
        return BlobId.from_bytes(e.blob_id)
