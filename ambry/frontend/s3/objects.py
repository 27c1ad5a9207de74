"""S3 objects: GetObject and HeadObject (ranges, ``partNumber``, conditions), PutObject,
DeleteObject and DeleteObjects.

An object is a named blob of the bucket's container; its S3 metadata lives in the blob's
user metadata (``metadata``). Owns the object handlers and the reply headers of a read
(content headers, ``x-amz-meta-*``, checksums, ``response-*`` overrides). Does not own copies
(``copy``), multipart uploads (``uploads``), ETag and condition rules (``etag``) nor the part
map (``parts``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from ambry.common.errors import AmbryError, BlobDeleted, BlobExpired, BlobNotFound, DataCorrupt
from ambry.frontend.bodies import first_piece, send_body
from ambry.frontend.browser import NOSNIFF
from ambry.frontend.chunking import content_range, parse_range
from ambry.frontend.headers import decode_user_metadata, http_date
from ambry.frontend.router import BlobRead
from ambry.frontend.s3.context import NULL_VERSION, Ctx, check_key, check_version
from ambry.frontend.s3.errors import S3Error, s3_error_for
from ambry.frontend.s3.etag import (
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    evaluate_conditions,
    normalize_etag,
    single_etag,
)
from ambry.frontend.s3.metadata import (
    DEFAULT_CONTENT_TYPE,
    META_PREFIX,
    STORED_HEADERS,
    UM_CHECKSUM,
    UM_ETAG,
    USER_S3_PREFIX,
    encode_um,
    fallback_etag,
    user_meta,
    write_precondition,
)
from ambry.frontend.s3.multipart import MAX_PART_NUMBER
from ambry.frontend.s3.parts import UM_PART_SIZES, decode_part_sizes, part_span
from ambry.frontend.s3.resource import Resource
from ambry.frontend.s3.xml import Node, document, parse_delete

__all__ = ["Objects"]

_RESPONSE_OVERRIDES = {"response-content-type": "Content-Type",
                       "response-content-language": "Content-Language",
                       "response-expires": "Expires",
                       "response-cache-control": "Cache-Control",
                       "response-content-disposition": "Content-Disposition",
                       "response-content-encoding": "Content-Encoding"}
_DELETE_MAX_KEYS = 1000
_CONCURRENCY = 32


async def _bounded(items: Sequence[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(x: Any) -> Any:
        async with gate:
            return await fn(x)

    return list(await asyncio.gather(*(one(x) for x in items)))


def _part_number(ctx: Ctx) -> int | None:
    """``partNumber`` of GET/HEAD object (1..10,000), None when absent; never with a Range
    header (AWS: 400)."""
    v = ctx.query.get("partNumber")
    if v is None:
        return None
    if re.fullmatch(r"[0-9]{1,5}", v, re.ASCII) is None or \
            not 1 <= int(v) <= MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and "
                                         f"{MAX_PART_NUMBER}, inclusive",
                      extra={"ArgumentName": "partNumber", "ArgumentValue": v[:64]})
    if "range" in ctx.h:
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber "
                                        "query parameter")
    return int(v)


def _part_of(info: BlobRead, number: int) -> tuple[tuple[int, int], int | None]:
    """The (start, length) of part ``number`` of an object and the parts count to report
    (None for an object of one PUT, which is its own part 1). A multipart object without a
    stored part map (completed before maps were kept, or with too long a map) reads as one
    part, as AWS serves an object it holds no part boundaries for. 416 ``InvalidPartNumber``
    past the last part."""
    um = decode_user_metadata(info.user_metadata)
    etag = normalize_etag(um.get(UM_ETAG) or "")
    multipart = "-" in etag
    text = um.get(UM_PART_SIZES)
    if multipart and text is not None:
        sizes = decode_part_sizes(text, info.total_size)
        if str(len(sizes)) != etag.rsplit("-", 1)[1]:
            raise DataCorrupt(f"part map of {len(sizes)} parts for ETag {etag}")
    else:
        sizes = [info.total_size]
    span = part_span(sizes, number)
    if span is None:
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable",
                      416, extra={"PartNumberRequested": str(number),
                                  "ActualPartCount": str(len(sizes))})
    return span, (len(sizes) if multipart else None)


def _range(header: str | None, total: int) -> tuple[int, int] | None:
    if not header:
        return None
    try:
        return parse_range(header, total)
    except AmbryError:
        raise S3Error("InvalidRange", "The requested range is not satisfiable", 416,
                      extra={"RangeRequested": header[:100],
                             "ActualObjectSize": str(total)}) from None


def _checksum_headers(headers: CIMultiDict[str], um: dict[str, str], ctx: Ctx) -> None:
    if ctx.h.get("x-amz-checksum-mode", "").upper() != "ENABLED":
        return
    for k, v in um.items():
        if k.startswith(UM_CHECKSUM):
            headers["x-amz-checksum-" + k[len(UM_CHECKSUM):]] = v
            headers["x-amz-checksum-type"] = "FULL_OBJECT"


def _object_headers(info: BlobRead, um: dict[str, str], etag: str, ctx: Ctx
                    ) -> CIMultiDict[str]:
    h: CIMultiDict[str] = CIMultiDict()
    h["Content-Type"] = info.properties.content_type or DEFAULT_CONTENT_TYPE
    h.update(NOSNIFF)  # the stored type as it is: never sniffed into HTML or script
    h["ETag"] = etag
    h["Last-Modified"] = http_date(info.properties.created_ms)
    h["Accept-Ranges"] = "bytes"
    for k, v in um.items():
        if k.startswith(USER_S3_PREFIX):
            h[META_PREFIX + k[len(USER_S3_PREFIX):]] = v
        elif k.startswith("s3."):
            if k[3:] in STORED_HEADERS:
                h[k[3:]] = v
        else:
            h[META_PREFIX + k] = v
    if info.chunks and "-" in normalize_etag(etag):
        h["x-amz-mp-parts-count"] = normalize_etag(etag).rsplit("-", 1)[1]
    if ctx.auth is not None:  # response-* overrides: signed requests only (as AWS)
        for param, header in _RESPONSE_OVERRIDES.items():
            if param in ctx.query:
                h[header] = ctx.query[param]
    return h


class Objects(Resource):
    async def get_object(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        """GetObject, and HeadObject when the method is HEAD."""
        c = await self._container(ctx)
        key = check_key(ctx.key)
        check_version(ctx)
        part = _part_number(ctx)
        bid = await self._lookup_object(ctx, c, key)
        head = request.method == "HEAD"
        range_header = ctx.h.get("range")
        resolved: dict[str, tuple[int, int] | None] = {}
        # partNumber: the part's span comes from the object's user metadata, so a GET reads
        # that first (HEAD reads nothing else anyway)
        part_found: tuple[tuple[int, int], int | None] | None = None

        def resolve(total: int) -> tuple[int, int] | None:
            span = part_found[0] if part_found is not None else _range(range_header, total)
            resolved["span"] = span
            return span

        try:
            if part is not None and not head:
                probe = await self.router.get(bid, info_only=True, rid=ctx.rid)
                await probe.aclose()
                part_found = _part_of(probe, part)
            info = await self.router.get(bid, info_only=head,
                                         range_resolver=resolve if (range_header or part_found)
                                         and not head else None, rid=ctx.rid)
        except (BlobNotFound, BlobDeleted, BlobExpired):
            raise S3Error("NoSuchKey", "The specified key does not exist.", 404,
                          bucket=c.name, key=key) from None
        try:
            if part is not None and part_found is None:
                part_found = _part_of(info, part)
            um = decode_user_metadata(info.user_metadata)
            etag = um.get(UM_ETAG) or fallback_etag(bid.to_bytes())
            modified_s = info.properties.created_ms // 1000
            cond = evaluate_conditions(ctx.h, etag, modified_s, read=True)
            if cond == NOT_MODIFIED:
                return web.Response(status=304, headers={
                    "ETag": etag, "Last-Modified": http_date(info.properties.created_ms)})
            if cond == PRECONDITION_FAILED:
                raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                    "specified did not hold", 412,
                              extra={"Condition": "If-Match"})
            headers = _object_headers(info, um, etag, ctx)
            if part_found is not None:
                headers.popall("x-amz-mp-parts-count", None)
                if part_found[1] is not None:
                    headers["x-amz-mp-parts-count"] = str(part_found[1])
            if head:
                span = part_found[0] if part_found is not None else \
                    _range(range_header, info.total_size) if range_header else None
                if span is not None and span[1] > 0:
                    headers["Content-Range"] = content_range(*span, info.total_size)
                    headers["Content-Length"] = str(span[1])
                    return web.Response(status=206, headers=headers)
                headers["Content-Length"] = str(span[1] if span is not None else
                                                info.total_size)
                if part_found is None:
                    _checksum_headers(headers, um, ctx)
                return web.Response(status=200, headers=headers)
            status = 200
            span = resolved.get("span")
            if span is not None and span[1] > 0:  # an empty part of a GET: 200, no range
                status = 206
                headers["Content-Range"] = content_range(info.range_start, info.length,
                                                         info.total_size)
            elif part_found is None:
                _checksum_headers(headers, um, ctx)
            assert info.body is not None
            first = await first_piece(info.body)  # an error here is still an error reply
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = info.length
            sent = await send_body(request, resp, info.body, first, blob=bid.to_str(),
                                   rid=ctx.rid, on_abort=self.deps.on_abort)
            self.deps.count_bytes_out(sent)
            return resp
        finally:
            await info.aclose()

    async def put_object(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = check_key(ctx.key)
        body = self._body(request, ctx)
        if body.declared_size is not None and body.declared_size > \
                self.s3.max_part_size_bytes:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed "
                                            "size", extra={"MaxSizeAllowed":
                                                           str(self.s3.max_part_size_bytes)})
        meta = user_meta(ctx.h)
        account = self._acct(ctx)
        check = write_precondition(ctx.h, c.name, key)
        if check is not None:  # fail fast, before the body; decided again when binding
            check(await self.router.lookup_name(account.id, c.id, key, ctx.rid))
        content_type = ctx.h.get("content-type") or DEFAULT_CONTENT_TYPE
        props = self._props(ctx, c, content_type)

        def usermeta() -> bytes:
            ck = (body.checksum_algorithm, body.checksum_value) \
                if body.checksum_algorithm and body.checksum_value else None
            return encode_um(meta, single_etag(body.md5_hex), ck)

        stored = await self.router.put(body.read, account_id=account.id, container_id=c.id,
                                       props=props, usermeta=usermeta,
                                       declared_size=body.declared_size, content_xxh3=None,
                                       rid=ctx.rid)
        etag = single_etag(body.md5_hex)
        await self._bind(ctx, c, key, stored, content_type, etag)
        return self._stored_reply(etag, body)

    async def delete_object(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = check_key(ctx.key)
        check_version(ctx)
        try:
            await self.router.delete_named(key, account_id=self._acct(ctx).id,
                                           container_id=c.id, rid=ctx.rid)
        except (BlobNotFound, BlobDeleted, BlobExpired):
            pass  # S3: deleting a missing key is a success
        return web.Response(status=204)

    async def delete_objects(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        objects, quiet = parse_delete(await self._small_body(request, ctx))
        if len(objects) > _DELETE_MAX_KEYS:
            raise S3Error("MalformedXML", f"at most {_DELETE_MAX_KEYS} keys per request")
        account = self._acct(ctx)

        async def one(obj: tuple[str, str | None]) -> Node | None:
            key, version = obj
            shown = ("VersionId", version) if version is not None else None
            try:
                check_key(key)
                if version is not None and version != NULL_VERSION:
                    raise S3Error("InvalidArgument", "Invalid version id specified")
                await self.router.delete_named(key, account_id=account.id, container_id=c.id,
                                               rid=ctx.rid)
            except (BlobNotFound, BlobDeleted, BlobExpired):
                pass
            except AmbryError as e:
                err = s3_error_for(e)
                return ("Error", [("Key", key), shown, ("Code", err.s3_code),
                                  ("Message", err.message)])
            return None if quiet else ("Deleted", [("Key", key), shown])

        results = await _bounded(objects, one)
        return self._xml(document("DeleteResult", results))
