"""The HTTP side of S3 multipart uploads: Create, UploadPart, ListParts, Complete, Abort,
ListMultipartUploads.

Owns the handlers: reading the request (part numbers, markers, the completion document) and
writing each result document. The upload records, parts as chunks and completion by stitch
are ``multipart`` (:class:`~ambry.frontend.s3.multipart.MultipartStore`); UploadPartCopy is
``copy``. (Not to be confused with ``ambry.frontend.uploads``, the router's blob PUT.)
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from ambry.common.blobid import BlobId
from ambry.common.config import Container
from ambry.common.errors import BlobDeleted, BlobExpired, BlobNotFound
from ambry.frontend.headers import decode_user_metadata
from ambry.frontend.s3.context import Ctx, check_key, int_param
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.etag import normalize_etag
from ambry.frontend.s3.metadata import (
    DEFAULT_CONTENT_TYPE,
    UM_ETAG,
    encode_um,
    listing_etag,
    user_meta,
)
from ambry.frontend.s3.multipart import (
    MAX_PART_NUMBER,
    UM_COMPLETED_UPLOAD,
    Upload,
    completion_marker,
)
from ambry.frontend.s3.resource import Resource
from ambry.frontend.s3.xml import document, iso8601, parse_complete_multipart

__all__ = ["Uploads", "part_target", "upload_of"]


async def upload_of(r: Resource, ctx: Ctx, c: Container, key: str | None) -> Upload:
    """The upload named by ``?uploadId`` (404 NoSuchUpload when there is none)."""
    return await r.uploads.get(r._acct(ctx).id, c.id, ctx.query.get("uploadId", ""), key,
                               ctx.rid)


async def part_target(r: Resource, ctx: Ctx) -> tuple[Upload, int]:
    """The upload and part number an UploadPart or UploadPartCopy writes: both query
    parameters are required (400 InvalidRequest), the number is 1..10,000."""
    c = await r._container(ctx)
    key = check_key(ctx.key)
    number = int_param(ctx.query, "partNumber", 0, 1, MAX_PART_NUMBER)
    if "partNumber" not in ctx.query or "uploadId" not in ctx.query:
        raise S3Error("InvalidRequest", "UploadPart needs partNumber and uploadId")
    return await upload_of(r, ctx, c, key), number


class Uploads(Resource):
    async def create_upload(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = check_key(ctx.key)
        upload_id = await self.uploads.create(
            self._acct(ctx).id, c.id, key, ctx.h.get("content-type") or DEFAULT_CONTENT_TYPE,
            user_meta(ctx.h), ctx.rid)
        return self._xml(document("InitiateMultipartUploadResult", [
            ("Bucket", c.name), ("Key", key), ("UploadId", upload_id)]))

    async def upload_part(self, request: web.Request, ctx: Ctx) -> web.Response:
        upload, number = await part_target(self, ctx)
        body = self._body(request, ctx)
        if body.declared_size is not None and body.declared_size > \
                self.s3.max_part_size_bytes:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed "
                                            "size")
        etag = await self.uploads.upload_part(upload, number, body.read,
                                              lambda: body.md5_digest, ctx.rid)
        return self._stored_reply(etag, body)

    async def list_parts(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = check_key(ctx.key)
        upload = await upload_of(self, ctx, c, key)
        max_parts = min(int_param(ctx.query, "max-parts", 1000), 1000)
        marker = int_param(ctx.query, "part-number-marker", 0, 0, MAX_PART_NUMBER)
        parts, more = await self.uploads.parts(upload, ctx.rid, after=marker,
                                               limit=max_parts)
        owner = [("ID", ctx.owner), ("DisplayName", ctx.owner)]
        body = document("ListPartsResult", [
            ("Bucket", c.name), ("Key", key), ("UploadId", upload.upload_id),
            ("Initiator", owner), ("Owner", owner), ("StorageClass", "STANDARD"),
            ("PartNumberMarker", marker),
            ("NextPartNumberMarker", parts[-1].number if parts else marker),
            ("MaxParts", max_parts), ("IsTruncated", more),
            *[("Part", [("PartNumber", p.number), ("LastModified", iso8601(p.last_modified_ms)),
                        ("ETag", p.etag), ("Size", p.size)]) for p in parts]])
        return self._xml(body)

    async def complete_upload(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = check_key(ctx.key)
        try:
            upload = await upload_of(self, ctx, c, key)
        except S3Error as e:
            if e.s3_code != "NoSuchUpload":
                raise
            # a retry of a completion that succeeded (its reply was lost): AWS answers it
            # again, as long as the key holds the object that completion made
            requested = parse_complete_multipart(await self._small_body(request, ctx))
            etag = await self._completed_etag(
                ctx, c, key, completion_marker(ctx.query.get("uploadId", ""), requested),
                len(requested))
            if etag is None:
                raise
        else:
            requested = parse_complete_multipart(await self._small_body(request, ctx))
            marker = completion_marker(upload.upload_id, requested)
            stored, etag, content_type = await self.uploads.complete(
                upload, requested, self.s3.min_part_size_bytes,
                make_props=lambda ct: self._props(ctx, c, ct),
                make_usermeta=lambda meta, tag, parts: encode_um(
                    meta, tag, part_map=parts, completed_upload=marker),
                rid=ctx.rid)
            await self._bind(ctx, c, key, stored, content_type, etag)
        return self._xml(document("CompleteMultipartUploadResult", [
            ("Location", (f"{request.scheme}://{request.host}/{quote(c.name)}/"
                          f"{quote(key, safe='/')}")),
            ("Bucket", c.name), ("Key", key), ("ETag", etag)]))

    async def _completed_etag(self, ctx: Ctx, c: Container, key: str, marker: str,
                              parts: int) -> str | None:
        """The ETag of the object the key holds if the completion ``marker`` made it (the
        object's user metadata says so), else None."""
        e = await self.router.lookup_name(self._acct(ctx).id, c.id, key, ctx.rid)
        if e is None or e.deleted or \
                not normalize_etag(listing_etag(e.content_type, e.blob_id)).endswith(
                    f"-{parts}"):
            return None  # (the listing ETag rules most others out without a read)
        try:
            info = await self.router.get(BlobId.from_bytes(e.blob_id), info_only=True,
                                         rid=ctx.rid)
        except (BlobNotFound, BlobDeleted, BlobExpired):
            return None
        try:
            um = decode_user_metadata(info.user_metadata)
        finally:
            await info.aclose()
        if um.get(UM_COMPLETED_UPLOAD) != marker:
            return None
        return um.get(UM_ETAG)

    async def abort_upload(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = check_key(ctx.key)
        upload = await upload_of(self, ctx, c, key)
        await self.uploads.abort(upload, ctx.rid)
        return web.Response(status=204)

    async def list_uploads(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        q = ctx.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
        max_uploads = min(int_param(q, "max-uploads", 1000), 1000)
        ups = [u for u in await self.uploads.uploads(self._acct(ctx).id, c.id, ctx.rid)
               if u.key.startswith(prefix)]
        if key_marker:
            ups = [u for u in ups if u.key > key_marker or
                   (u.key == key_marker and id_marker and u.upload_id > id_marker)]
        out: list[Upload] = []
        prefixes: list[str] = []
        truncated = False
        for u in ups:
            cp = None
            if delimiter:
                i = u.key.find(delimiter, len(prefix))
                if i >= 0:
                    cp = u.key[:i + len(delimiter)]
            if cp is not None and prefixes and prefixes[-1] == cp:
                continue
            if len(out) + len(prefixes) >= max_uploads:
                truncated = True
                break
            if cp is not None:
                prefixes.append(cp)
            else:
                out.append(u)
        owner = [("ID", ctx.owner), ("DisplayName", ctx.owner)]
        body = document("ListMultipartUploadsResult", [
            ("Bucket", c.name), ("KeyMarker", key_marker), ("UploadIdMarker", id_marker),
            ("NextKeyMarker", out[-1].key if truncated and out else None),
            ("NextUploadIdMarker", out[-1].upload_id if truncated and out else None),
            ("Prefix", prefix), ("Delimiter", delimiter) if delimiter else None,
            ("MaxUploads", max_uploads), ("IsTruncated", truncated),
            *[("Upload", [("Key", u.key), ("UploadId", u.upload_id), ("Initiator", owner),
                          ("Owner", owner), ("StorageClass", "STANDARD"),
                          ("Initiated", iso8601(u.initiated_ms))]) for u in out],
            *[("CommonPrefixes", [("Prefix", p)]) for p in prefixes]])
        return self._xml(body)
