"""Listing a bucket's objects: ListObjects (V1), ListObjectsV2 and ListObjectVersions.

Owns the handlers: reading the bucket's names from the router page by page into a
:class:`~ambry.frontend.s3.listing.ListingBuilder`, and each result document with AWS's
``encoding-type=url`` rules. Does not own the page logic (prefixes, delimiters, markers,
tokens: ``listing``), nor listing buckets (``buckets``) or multipart uploads and parts
(``uploads``).
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from ambry.common.config import Container
from ambry.frontend.s3.context import NULL_VERSION, Ctx, int_param
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.listing import (
    ListEntry,
    ListingBuilder,
    ListPage,
    decode_token,
    encode_token,
)
from ambry.frontend.s3.metadata import listing_etag
from ambry.frontend.s3.resource import Resource
from ambry.frontend.s3.xml import Node, document, iso8601

__all__ = ["Listings"]


def _encoding_type(q: dict[str, str]) -> str | None:
    enc = q.get("encoding-type")
    if enc is not None and enc != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      extra={"ArgumentName": "encoding-type"})
    return enc


class Listings(Resource):
    async def _page(self, ctx: Ctx, c: Container, b: ListingBuilder, prefix: str) -> ListPage:
        """Feed ``b`` from the bucket's names until its page is full."""
        account = self._acct(ctx)
        while not b.done:
            entries, more = await self.router.list_named(
                account_id=account.id, container_id=c.id, prefix=prefix,
                start_after=b.next_start, limit=b.read_limit, rid=ctx.rid)
            b.feed([ListEntry(e.name, e.size, e.created_ms,
                              listing_etag(e.content_type, e.blob_id)) for e in entries],
                   more and bool(entries))
        return b.page

    async def list_objects_v1(self, request: web.Request, ctx: Ctx) -> web.Response:
        return await self._list_objects(ctx, v2=False)

    async def list_objects_v2(self, request: web.Request, ctx: Ctx) -> web.Response:
        return await self._list_objects(ctx, v2=True)

    async def _list_objects(self, ctx: Ctx, *, v2: bool) -> web.Response:
        c = await self._container(ctx)
        q = ctx.query
        max_keys = int_param(q, "max-keys", 1000)
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        enc = _encoding_type(q)
        token = q.get("continuation-token") if v2 else None
        if token is not None:
            try:
                marker = decode_token(token)
            except ValueError:
                raise S3Error("InvalidArgument", "The continuation token provided is "
                                                 "incorrect", extra={
                                                     "ArgumentName": "continuation-token"}
                              ) from None
        else:
            marker = q.get("start-after" if v2 else "marker", "")
        page = await self._page(ctx, c, ListingBuilder(prefix=prefix, delimiter=delimiter,
                                                       max_keys=max_keys, marker=marker),
                                prefix)

        def e(text: str) -> str:
            return quote(text, safe="/") if enc == "url" else text

        owner = ("Owner", [("ID", ctx.owner), ("DisplayName", ctx.owner)])
        show_owner = not v2 or q.get("fetch-owner") == "true"
        contents: list[Node | None] = [("Contents", [
            ("Key", e(x.key)), ("LastModified", iso8601(x.last_modified_ms)),
            ("ETag", x.etag), ("Size", x.size),
            owner if show_owner else None, ("StorageClass", "STANDARD")])
            for x in page.contents]
        prefixes: list[Node | None] = [("CommonPrefixes", [("Prefix", e(p))])
                                       for p in page.common_prefixes]
        # encoding-type=url: V2 encodes Prefix too, V1 leaves it as given (AWS; botocore
        # decodes exactly these elements, so an encoded V1 Prefix reached users as "a%20b/")
        head: list[Node | None] = [("Name", c.name), ("Prefix", e(prefix) if v2 else prefix)]
        if v2:
            head += [("Delimiter", e(delimiter)) if delimiter else None,
                     ("MaxKeys", max_keys),
                     ("EncodingType", enc) if enc else None,
                     ("KeyCount", len(page.contents) + len(page.common_prefixes)),
                     ("IsTruncated", page.is_truncated),
                     ("ContinuationToken", token) if token is not None else None,
                     ("NextContinuationToken", encode_token(page.next_marker))
                     if page.is_truncated and page.next_marker is not None else None,
                     ("StartAfter", e(q["start-after"])) if "start-after" in q else None]
            return self._xml(document("ListBucketResult", head + contents + prefixes))
        head += [("Marker", e(marker)),
                 ("NextMarker", e(page.next_marker))
                 if page.is_truncated and page.next_marker is not None else None,
                 ("MaxKeys", max_keys),
                 ("Delimiter", e(delimiter)) if delimiter else None,
                 ("EncodingType", enc) if enc else None,
                 ("IsTruncated", page.is_truncated)]
        return self._xml(document("ListBucketResult", head + contents + prefixes))

    async def list_versions(self, request: web.Request, ctx: Ctx) -> web.Response:
        """ListObjectVersions of a bucket that is never versioned: each object is one
        ``<Version>`` with VersionId ``null``, IsLatest true; no delete markers. Paging by
        ``key-marker`` (exclusive) and ``version-id-marker`` (only ``null`` exists), as AWS."""
        c = await self._container(ctx)
        q = ctx.query
        max_keys = int_param(q, "max-keys", 1000)
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        enc = _encoding_type(q)
        key_marker = q.get("key-marker", "")
        version_marker = q.get("version-id-marker")
        if version_marker is not None:
            if not key_marker:
                raise S3Error("InvalidArgument", "A version-id marker cannot be specified "
                                                 "without a key marker.",
                              extra={"ArgumentName": "version-id-marker",
                                     "ArgumentValue": version_marker[:64]})
            if version_marker != NULL_VERSION:
                raise S3Error("InvalidArgument", "Invalid version id specified",
                              extra={"ArgumentName": "version-id-marker",
                                     "ArgumentValue": version_marker[:64]})
        page = await self._page(ctx, c, ListingBuilder(prefix=prefix, delimiter=delimiter,
                                                       max_keys=max_keys, marker=key_marker),
                                prefix)

        def e(text: str) -> str:  # AWS encodes keys, markers, prefix and delimiter here
            return quote(text, safe="/") if enc == "url" else text

        owner = ("Owner", [("ID", ctx.owner), ("DisplayName", ctx.owner)])
        more = page.is_truncated and page.next_marker is not None
        return self._xml(document("ListVersionsResult", [
            ("Name", c.name), ("Prefix", e(prefix)), ("KeyMarker", e(key_marker)),
            ("VersionIdMarker", version_marker or ""),
            ("NextKeyMarker", e(page.next_marker or "")) if more else None,
            ("NextVersionIdMarker", NULL_VERSION) if more else None,
            ("MaxKeys", max_keys), ("Delimiter", e(delimiter)) if delimiter else None,
            ("EncodingType", enc) if enc else None, ("IsTruncated", page.is_truncated),
            *[("Version", [("Key", e(x.key)), ("VersionId", NULL_VERSION),
                           ("IsLatest", True), ("LastModified", iso8601(x.last_modified_ms)),
                           ("ETag", x.etag), ("Size", x.size), owner,
                           ("StorageClass", "STANDARD")]) for x in page.contents],
            *[("CommonPrefixes", [("Prefix", e(p))]) for p in page.common_prefixes]]))
