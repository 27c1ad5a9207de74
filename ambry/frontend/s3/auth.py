"""Who an S3 request acts for: SigV4 (header or presigned), presigned SigV2, or anonymous.

Owns choosing the scheme from the request, calling the verifier, and filling in the
request's principal (:class:`~ambry.frontend.s3.context.Ctx` ``account``, ``access_key``,
``auth``, ``read_only``). Does not own the signature arithmetic (``sigv4``, ``sigv2``) nor
which headers the handlers may then act on (``coverage.signed_view``).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ambry.common.config import Account
from ambry.frontend.s3 import sigv4
from ambry.frontend.s3.config import S3Config
from ambry.frontend.s3.context import Ctx
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.sigv2 import covered_by_v2, is_presigned_v2, verify_presigned_v2

__all__ = ["authenticate"]


def authenticate(request: web.Request, ctx: Ctx, s3: S3Config,
                 account_of: Callable[[str], Account | None], now_s: float) -> None:
    """Authenticate ``request`` under the access keys of ``s3`` (raises
    :class:`~ambry.frontend.s3.sigv4.AuthError` or a 403 :class:`S3Error`); ``account_of``
    names the accounts of the running config."""
    v2 = is_presigned_v2(ctx.query)
    signed = "authorization" in ctx.h or "X-Amz-Signature" in ctx.query or v2
    if not signed:
        if s3.anonymous_account is None:
            raise S3Error("AccessDenied", "Anonymous requests are not allowed", 403)
        ctx.account = account_of(s3.anonymous_account)
        ctx.read_only = True
        return
    headers = {k.lower(): request.headers.getall(k) for k in request.headers}
    if v2 and "authorization" not in ctx.h:
        ak = verify_presigned_v2(method=request.method,
                                 raw_path=request.raw_path.split("?", 1)[0],
                                 query_pairs=ctx.pairs, headers=headers,
                                 secret_of=s3.secret_of, now_s=now_s)
        _principal(ctx, s3, account_of, ak,
                   sigv4.Authorized(ak, sigv4.UNSIGNED_PAYLOAD, b"", "", "", "",
                                    covered_by_v2(headers), presigned=True))
        return
    auth = sigv4.verify(method=request.method,
                        raw_path=request.raw_path.split("?", 1)[0],
                        query_pairs=ctx.pairs, headers=headers,
                        secret_of=s3.secret_of, now_s=now_s)
    _principal(ctx, s3, account_of, auth.access_key, auth)


def _principal(ctx: Ctx, s3: S3Config, account_of: Callable[[str], Account | None],
               access_key: str, auth: sigv4.Authorized) -> None:
    ctx.auth = auth
    ctx.access_key = access_key
    key = s3.by_key[access_key]
    ctx.account = account_of(key.account)
    if ctx.account is None:
        raise S3Error("AccessDenied", "the access key's account no longer exists", 403)
