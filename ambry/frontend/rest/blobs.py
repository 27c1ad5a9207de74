"""The REST routes of blobs by id: ``POST /``, ``GET`` / ``HEAD`` / ``DELETE /<id>``,
``GET /<id>/BlobInfo`` and ``/UserMetadata``, ``PUT /updateTtl``, ``PUT /undelete`` and
``POST /stitch`` (DESIGN.md section 4).

Owns turning each request into one router call and its reply: status, headers, ranges, and a
body streamed as the router yields it (memory per request never grows with the blob's size).
Does not own storage decisions (``router``) or the error replies (``ambry.frontend.app``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from ambry.common.blobid import BlobId
from ambry.frontend.bodies import first_piece, send_body
from ambry.frontend.browser import active_content_headers
from ambry.frontend.chunking import content_range, parse_range
from ambry.frontend.headers import (
    USER_METADATA_PREFIX,
    parse_blob_size,
    parse_bool_header,
    parse_content_xxh3,
    parse_get_option,
)
from ambry.frontend.rest.base import MissingHeader, RestRoutes

__all__ = ["SMALL_BODY_BYTES", "BlobRoutes"]

#: Bodies up to this size are answered in one piece (one write), not streamed.
SMALL_BODY_BYTES = 64 * 1024



class BlobRoutes(RestRoutes):
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
                self.deps.count_bytes_out(len(data))
                return web.Response(status=status, headers=headers, body=data)
            first = await first_piece(info.body)  # an error here is still an error reply
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = info.length
            sent = await send_body(request, resp, info.body, first, blob=bid.to_str(),
                                   rid=request["rid"], on_abort=self.deps.on_abort)
            self.deps.count_bytes_out(sent)
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
