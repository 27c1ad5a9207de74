"""What an S3 request may act on once its signature is verified: the signed view of its headers.

Owns one rule, applied once to every request after authentication and before dispatch (so every
operation, and every one added later, reads only this view, ``Ctx.h``):

* An ``x-amz-*`` header that the signature does not cover is refused with 403 AccessDenied,
  "There were headers present in the request which were not signed", the names listed in
  ``<HeadersNotSigned>``, as AWS answers, for header-signed requests and presigned URLs alike.
  Such headers choose the operation (``x-amz-copy-source`` turns a PUT into a copy) and what is
  stored (``x-amz-meta-*``): a signature that does not cover them authorizes nothing about
  them. Headers whose values the string to sign holds anyway (``x-amz-date`` of header auth,
  ``x-amz-content-sha256``) count as covered (``sigv4.Authorized.covered``).
* On a presigned URL (SigV4 or SigV2 query form) the standard headers that S3 keeps with an
  object (:data:`STORED_HEADERS`) count only when signed; unsigned ones are dropped, as if not
  sent. The holder of a URL is not its signer, and must not choose what the signer's object
  says it is (``Content-Type: text/html`` on a domain the signer's users trust). AWS would
  store them; this store honours only what a URL signed. Dropped rather than refused, because
  browsers add a Content-Type of their own to uploads (sign one into the URL to set it).
  Headers that only narrow a request (Range, If-*, Content-MD5) or frame it (Content-Length)
  are honoured signed or not, as on AWS.
* A header-signed request keeps its standard headers, signed or not, as on AWS: its sender holds
  the key, and SDKs differ in what they sign (aws-sdk-js v2 never signs Content-Type, v3
  never Cache-Control).
* The value (and name) of every header the S3 API interprets must be UTF-8: 400
  InvalidArgument naming the header; except the values of ``x-amz-meta-*``, which are user
  data kept whatever their bytes (docs/s3.md, "User metadata bytes"). Signatures are
  computed over the bytes as sent (``sigv4``), so this is decided after authentication, and
  the operations never meet text they cannot store.

Does not own the signature arithmetic (``sigv4``, ``sigv2``) nor any operation.
"""

from __future__ import annotations

from collections.abc import Mapping

from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.sigv4 import AuthError, Authorized

__all__ = ["STORED_HEADERS", "signed_view"]

#: Standard headers S3 stores with an object (and answers GET with).
STORED_HEADERS = frozenset({"content-type", "content-encoding", "content-disposition",
                            "cache-control", "content-language", "expires"})
_INTERPRETED_PREFIXES = ("x-amz-", "content-", "if-")
_INTERPRETED = frozenset({"cache-control", "expires", "range"})
_USER_META_PREFIX = "x-amz-meta-"


def _interpreted(name: str) -> bool:
    return name.startswith(_INTERPRETED_PREFIXES) or name in _INTERPRETED


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # aiohttp keeps bytes that are not UTF-8 as lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def signed_view(headers: Mapping[str, str], auth: Authorized | None) -> dict[str, str]:
    """``headers`` (lower-case name -> value) as the operations may see them, for a request
    authenticated as ``auth`` (None: anonymous, nothing signed and nothing claimed). Raises
    :class:`~ambry.frontend.s3.sigv4.AuthError` for unsigned ``x-amz-*`` headers and
    :class:`~ambry.frontend.s3.errors.S3Error` for interpreted headers that are not UTF-8."""
    view = dict(headers)
    if auth is not None:
        unsigned = sorted(n for n in view if n.startswith("x-amz-") and n not in auth.covered)
        if unsigned:
            raise AuthError("AccessDenied", "There were headers present in the request which "
                                            "were not signed",
                            extra={"HeadersNotSigned": ", ".join(unsigned)})
        if auth.presigned:
            view = {n: v for n, v in view.items()
                    if n not in STORED_HEADERS or n in auth.covered}
    for name, value in view.items():
        # x-amz-meta-* values are the exception: kept as sent, whatever their bytes
        # (``app._stored_meta_value``)
        if _interpreted(name) and not (_utf8(name) and (
                _utf8(value) or name.startswith(_USER_META_PREFIX))):
            shown = name.encode("utf-8", "replace").decode()
            raise S3Error("InvalidArgument", f"the {shown} header is not valid UTF-8",
                          extra={"ArgumentName": shown})
    return view
