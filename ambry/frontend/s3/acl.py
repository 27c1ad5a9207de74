"""S3 ACLs as on an AWS bucket with ACLs disabled: GetBucketAcl, GetObjectAcl, PutBucketAcl,
PutObjectAcl.

Every bucket and object belongs to the account of the key that made it, and only that
account reaches it (docs/s3.md, "One account and another's data"): what AWS calls Object
Ownership ``BucketOwnerEnforced``, its default since 2023. So a read of ``?acl`` answers the
owner with ``FULL_CONTROL`` (what AWS answers there, and what s3cmd ``info`` / ``setacl``
and other tools read), and a write of ``?acl`` is accepted only when it says exactly that
(``x-amz-acl: private`` / ``bucket-owner-full-control``, a ``x-amz-grant-full-control`` of the
owner, or a body granting the owner ``FULL_CONTROL`` and nobody anything); anything else is
400 ``AccessControlListNotSupported``. The ACL headers of the other operations are decided
in ``headerpolicy``. Does not own the owner ID (``Ctx.owner``).
"""

from __future__ import annotations

from aiohttp import web

from ambry.frontend.s3.context import Ctx, check_key, check_version
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.resource import Resource
from ambry.frontend.s3.xml import owner_acl_document, parse_access_control_policy

__all__ = ["Acls"]

_ACL_HEADERS = ("x-amz-acl", "x-amz-grant-")


class Acls(Resource):
    async def _object(self, ctx: Ctx) -> None:
        check_version(ctx)
        container = await self._container(ctx)
        await self._lookup_object(ctx, container, check_key(ctx.key))

    async def get_bucket_acl(self, request: web.Request, ctx: Ctx) -> web.Response:
        await self._container(ctx)
        return self._xml(owner_acl_document(ctx.owner))

    async def get_object_acl(self, request: web.Request, ctx: Ctx) -> web.Response:
        await self._object(ctx)
        return self._xml(owner_acl_document(ctx.owner))

    async def put_bucket_acl(self, request: web.Request, ctx: Ctx) -> web.Response:
        await self._container(ctx)
        await self._owner_only(request, ctx)
        return web.Response(status=200)

    async def put_object_acl(self, request: web.Request, ctx: Ctx) -> web.Response:
        await self._object(ctx)
        await self._owner_only(request, ctx)
        return web.Response(status=200)

    async def _owner_only(self, request: web.Request, ctx: Ctx) -> None:
        """Accept a PUT ``?acl`` that grants what is true anyway: the owner's full control.
        Its headers were checked by ``headerpolicy``; here, the body."""
        body = await self._small_body(request, ctx)
        if not body.strip():
            if not any(n.startswith(_ACL_HEADERS) for n in ctx.h):
                raise S3Error("MissingSecurityHeader", "Your request was missing a required "
                                                       "header (x-amz-acl, x-amz-grant-* or "
                                                       "an AccessControlPolicy body)",
                              extra={"MissingHeaderName": "x-amz-acl"})
            return
        grants = parse_access_control_policy(body)
        if not grants or any(g.permission != "FULL_CONTROL"
                             or g.grantee_type not in ("CanonicalUser", "")
                             or g.grantee != ctx.owner for g in grants):
            raise S3Error("AccessControlListNotSupported", "The bucket does not allow ACLs")
