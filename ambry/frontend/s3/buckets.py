"""S3 buckets: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, location and versioning.

A bucket is a container of the access key's account: one of the cluster config, or one
created at run time through ``Router.containers`` (replicated, so every frontend of every
datacenter sees it). Owns the bucket handlers and AWS's bucket naming rules. Does not own the
container registry (``ambry.frontend.containers``) nor listing a bucket's objects
(``list_objects``) or uploads (``uploads``).
"""

from __future__ import annotations

import re

from aiohttp import web

from ambry.common.errors import BlobNotFound
from ambry.frontend.containers import ContainerNotEmpty
from ambry.frontend.s3.context import Ctx
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.listing import decode_token, encode_token
from ambry.frontend.s3.resource import Resource
from ambry.frontend.s3.xml import document, iso8601, parse_create_bucket

__all__ = ["Buckets", "valid_bucket_name"]

_MAX_BUCKETS = 10_000                # ListBuckets max-buckets (AWS: 1..10,000)


def valid_bucket_name(name: str) -> bool:
    """AWS's bucket naming rules (3-63 characters, lower-case, no IP addresses)."""
    if re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", name, re.ASCII) is None:
        return False
    if ".." in name or ".-" in name or "-." in name:
        return False
    if re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", name, re.ASCII):
        return False
    return not name.startswith("xn--") and not name.endswith("-s3alias")


class Buckets(Resource):
    async def list_buckets(self, request: web.Request, ctx: Ctx) -> web.Response:
        """ListBuckets, with the paging of AWS's newer API: ``max-buckets`` (1..10,000),
        ``continuation-token`` (opaque: the last name of the page before), ``prefix`` and
        ``bucket-region``. Without ``max-buckets`` a page holds up to 10,000 buckets."""
        q = ctx.query
        limit = _MAX_BUCKETS
        if "max-buckets" in q:
            v = q["max-buckets"]
            if not (v.isascii() and v.isdigit()) or not 1 <= int(v) <= _MAX_BUCKETS:
                raise S3Error("InvalidArgument", f"max-buckets must be an integer between 1 "
                                                 f"and {_MAX_BUCKETS}",
                              extra={"ArgumentName": "max-buckets", "ArgumentValue": v[:64]})
            limit = int(v)
        after = ""
        token = q.get("continuation-token")
        if token is not None:
            try:
                after = decode_token(token)
            except ValueError:
                raise S3Error("InvalidArgument", "The continuation token provided is "
                                                 "incorrect",
                              extra={"ArgumentName": "continuation-token"}) from None
        prefix = q.get("prefix", "")
        containers = await self.router.containers.list(self._acct(ctx), ctx.rid)
        if q.get("bucket-region", self.s3.region) != self.s3.region:
            containers = []  # every bucket here is in the configured region
        rows = [(c, created) for c, created in containers
                if c.name.startswith(prefix) and c.name > after]
        page, more = rows[:limit], len(rows) > limit
        body = document("ListAllMyBucketsResult", [
            ("Owner", [("ID", ctx.owner), ("DisplayName", ctx.owner)]),
            ("Buckets", [("Bucket", [("Name", c.name), ("CreationDate", iso8601(created)),
                                     ("BucketRegion", self.s3.region)])
                         for c, created in page]),
            ("ContinuationToken", encode_token(page[-1][0].name)) if more else None,
            ("Prefix", prefix) if "prefix" in q else None])
        return self._xml(body)

    async def create_bucket(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.bucket is not None
        parse_create_bucket(await self._small_body(request, ctx))
        name = ctx.bucket
        if not valid_bucket_name(name):
            raise S3Error("InvalidBucketName", "The specified bucket is not valid.",
                          bucket=name)
        _c, created = await self.router.containers.create(self._acct(ctx), name, ctx.rid)
        # AWS: creating a bucket you own again succeeds in us-east-1 (its legacy behaviour)
        # and is 409 in every other region
        if not created and self.s3.region != "us-east-1":
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the "
                                                     "named bucket succeeded and you already "
                                                     "own it.", 409, bucket=name)
        return web.Response(status=200, headers={"Location": f"/{name}"})

    async def head_bucket(self, request: web.Request, ctx: Ctx) -> web.Response:
        await self._container(ctx)
        return web.Response(status=200, headers={"x-amz-bucket-region": self.s3.region})

    async def bucket_location(self, request: web.Request, ctx: Ctx) -> web.Response:
        await self._container(ctx)
        region = "" if self.s3.region == "us-east-1" else self.s3.region
        return self._xml(document("LocationConstraint", [], text=region))

    async def get_versioning(self, request: web.Request, ctx: Ctx) -> web.Response:
        """Buckets are never versioned: an empty configuration (AWS's answer for a bucket
        that never had versioning)."""
        await self._container(ctx)
        return self._xml(document("VersioningConfiguration", []))

    async def put_versioning(self, request: web.Request, ctx: Ctx) -> web.Response:
        raise S3Error("NotImplemented", "versioning is not implemented", 501)

    async def delete_bucket(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.bucket is not None
        account = self._acct(ctx)
        c = await self._container(ctx)
        if account.container(ctx.bucket) is not None:
            raise S3Error("AccessDenied", "this bucket is a container of the cluster config; "
                                          "it cannot be deleted through S3", 403,
                          bucket=ctx.bucket)
        try:
            await self.router.containers.delete(account, ctx.bucket, ctx.rid)
        except ContainerNotEmpty:
            raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty",
                          409, bucket=ctx.bucket) from None
        except BlobNotFound:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", 404,
                          bucket=ctx.bucket) from None
        # multipart uploads still open in it are aborted (their chunks are freed)
        for u in await self.uploads.uploads(account.id, c.id, ctx.rid):
            self.router._spawn(self.uploads.abort(u, ctx.rid))
        return web.Response(status=204)
