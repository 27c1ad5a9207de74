"""Server-side copies: CopyObject (PUT object + ``x-amz-copy-source``) and UploadPartCopy (the
same header on PUT ``?partNumber&uploadId``).

Owns the copy source: parsing ``x-amz-copy-source`` (``bucket/key``, ``?versionId=null``) and
``x-amz-copy-source-range`` (AWS's one strict form, 400 never 416), opening the source under
the ``x-amz-copy-source-if-*`` conditions, the metadata directive, and streaming the source's
bytes into a new object or part while hashing them. Does not own plain writes (``objects``,
``uploads``) nor the part records (``multipart``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from urllib.parse import unquote

from aiohttp import web

from ambry.common.blobid import BlobId
from ambry.common.config import Container
from ambry.common.errors import AmbryError, BlobDeleted, BlobExpired, BlobNotFound
from ambry.frontend.headers import decode_user_metadata
from ambry.frontend.router import BlobRead
from ambry.frontend.s3.context import Ctx, check_key
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.etag import evaluate_conditions, single_etag
from ambry.frontend.s3.metadata import (
    DEFAULT_CONTENT_TYPE,
    UM_CHECKSUM,
    UM_ETAG,
    encode_um,
    fallback_etag,
    user_meta,
)
from ambry.frontend.s3.resource import Resource
from ambry.frontend.s3.uploads import part_target
from ambry.frontend.s3.xml import document, iso8601

__all__ = ["Copies", "parse_copy_range"]

_COPY_RANGE = re.compile(r"bytes=([0-9]{1,19})-([0-9]{1,19})", re.ASCII)


def parse_copy_range(header: str) -> tuple[int, int]:
    """(first, last) of ``x-amz-copy-source-range: bytes=first-last``. AWS takes only that
    form (both ends, one range, first <= last): anything else is 400 InvalidArgument, not a
    GET-style range (and never 416, which is GetObject's answer)."""
    m = _COPY_RANGE.fullmatch(header.strip(" \t"))
    if m is None or int(m[1]) > int(m[2]):
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the "
                                         "form bytes=first-last where first and last are the "
                                         "zero-based offsets of the first and last bytes to "
                                         "copy",
                      extra={"ArgumentName": "x-amz-copy-source-range",
                             "ArgumentValue": header[:100]})
    return int(m[1]), int(m[2])


def _copy_range_unsatisfiable() -> S3Error:
    """A copy range past the end of its source: 400 InvalidRange (AWS; GetObject's is 416)."""
    return S3Error("InvalidRange", "The requested range is not satisfiable", 400)


class _IterReader:
    """A ReadBody over an async iterator of bytes (a blob being copied), with its MD5."""

    def __init__(self, it: AsyncIterator[bytes | bytearray]) -> None:
        self._it = it
        self._buf: bytes | bytearray = b""
        self.md5 = hashlib.md5()
        self._done = False

    async def read(self, n: int) -> bytes:
        if not self._buf and not self._done:
            try:
                self._buf = await self._it.__anext__()
            except StopAsyncIteration:
                self._done = True
        out, self._buf = bytes(self._buf[:n]), self._buf[n:]
        self.md5.update(out)
        return out


class Copies(Resource):
    async def _copy_source(self, ctx: Ctx, header: str) -> tuple[Container, str, BlobId]:
        try:
            src = unquote(header.split("?", 1)[0], errors="strict").lstrip("/")
        except UnicodeDecodeError:
            raise S3Error("InvalidArgument", "x-amz-copy-source is not valid UTF-8",
                          extra={"ArgumentName": "x-amz-copy-source"}) from None
        version = header.split("?", 1)[1] if "?" in header else ""
        if version and version not in ("versionId=null", ""):
            raise S3Error("NoSuchVersion", "The specified version does not exist.", 404)
        bucket, slash, key = src.partition("/")
        if not slash or not bucket or not key:
            raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and "
                                             "key: sourcebucket/sourcekey",
                          extra={"ArgumentName": "x-amz-copy-source"})
        sc = await self._container(ctx, bucket)
        check_key(key)
        return sc, key, await self._lookup_object(ctx, sc, key)

    async def _open_source(self, ctx: Ctx, sc: Container, key: str, bid: BlobId,
                           copy_range: tuple[int, int] | None = None
                           ) -> tuple[BlobRead, dict[str, str], str]:
        """The copy source, opened; ``copy_range`` = (first, last) byte of
        ``x-amz-copy-source-range`` (:func:`parse_copy_range`): a last byte past the end of
        the source is 400 InvalidRange, as AWS (never copied short)."""
        def resolve(total: int) -> tuple[int, int] | None:
            assert copy_range is not None
            first, last = copy_range
            if last >= total:
                raise _copy_range_unsatisfiable()
            return first, last - first + 1

        try:
            info = await self.router.get(bid, range_resolver=resolve if copy_range else None,
                                         rid=ctx.rid)
        except (BlobNotFound, BlobDeleted, BlobExpired):
            raise S3Error("NoSuchKey", "The specified key does not exist.", 404,
                          bucket=sc.name, key=key) from None
        except AmbryError as e:
            if e.code == "RANGE_NOT_SATISFIABLE":
                raise _copy_range_unsatisfiable() from None
            raise
        um = decode_user_metadata(info.user_metadata)
        etag = um.get(UM_ETAG) or fallback_etag(bid.to_bytes())
        cond = evaluate_conditions(ctx.h, etag, info.properties.created_ms // 1000,
                                   read=False, prefix="x-amz-copy-source-")
        if cond is not None:
            await info.aclose()
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                "specified did not hold", 412)
        return info, um, etag

    async def copy_object(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = check_key(ctx.key)
        sc, skey, sbid = await self._copy_source(ctx, ctx.h["x-amz-copy-source"])
        directive = ctx.h.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown metadata directive.",
                          extra={"ArgumentName": "x-amz-metadata-directive"})
        if (sc.id, skey) == (c.id, key) and directive == "COPY":
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying "
                                            "to copy an object to itself without changing "
                                            "the object's metadata, storage class, website "
                                            "redirect location or encryption attributes.")
        info, um, _ = await self._open_source(ctx, sc, skey, sbid)
        try:
            if directive == "COPY":
                meta = {k: v for k, v in um.items()
                        if k != UM_ETAG and not k.startswith(UM_CHECKSUM)}
                content_type = info.properties.content_type
            else:
                meta = user_meta(ctx.h)
                content_type = ctx.h.get("content-type") or DEFAULT_CONTENT_TYPE
            if info.total_size > self.s3.max_part_size_bytes:
                raise S3Error("InvalidRequest", "The specified copy source is larger than the "
                                                "maximum allowable size for a copy source")
            assert info.body is not None
            reader = _IterReader(info.body)
            props = self._props(ctx, c, content_type)
            stored = await self.router.put(
                reader.read, account_id=self._acct(ctx).id, container_id=c.id, props=props,
                usermeta=lambda: encode_um(meta, single_etag(reader.md5.hexdigest())),
                declared_size=info.total_size, content_xxh3=None, rid=ctx.rid)
        finally:
            await info.aclose()
        etag = single_etag(reader.md5.hexdigest())
        await self._bind(ctx, c, key, stored, content_type, etag)
        return self._xml(document("CopyObjectResult", [
            ("LastModified", iso8601(stored.created_ms)), ("ETag", etag)]))

    async def upload_part_copy(self, request: web.Request, ctx: Ctx) -> web.Response:
        upload, number = await part_target(self, ctx)
        rng = ctx.h.get("x-amz-copy-source-range")
        copy_range = parse_copy_range(rng) if rng is not None else None
        sc, skey, sbid = await self._copy_source(ctx, ctx.h["x-amz-copy-source"])
        info, _, _ = await self._open_source(ctx, sc, skey, sbid, copy_range)
        try:
            if info.length > self.s3.max_part_size_bytes:
                raise S3Error("InvalidRequest", "The specified copy range is larger than the "
                                                "maximum part size")
            assert info.body is not None
            reader = _IterReader(info.body)
            etag = await self.uploads.upload_part(upload, number, reader.read,
                                                  lambda: reader.md5.digest(), ctx.rid)
        finally:
            await info.aclose()
        return self._xml(document("CopyPartResult", [
            ("LastModified", iso8601(self.clock.now_ms())), ("ETag", etag)]))
