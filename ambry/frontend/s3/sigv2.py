"""Presigned URLs of AWS Signature Version 2 (``AWSAccessKeyId``, ``Expires``, ``Signature``).

boto3's ``generate_presigned_url`` still writes this form unless the client is configured with
``signature_version="s3v4"``, so a link shared from a default boto3 works here too. Only the
query form is accepted: requests signed in headers must use SigV4 (``sigv4``).

    StringToSign = VERB \\n Content-MD5 \\n Content-Type \\n Expires \\n
                   <x-amz-* headers, "name:value\\n", sorted> <path>[?<sub-resources>]
    Signature    = base64(HMAC-SHA1(secret, StringToSign))

Pure: the key table and the clock are arguments.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote

from ambry.frontend.s3.sigv4 import AuthError, uri_encode

__all__ = ["covered_by_v2", "is_presigned_v2", "verify_presigned_v2"]

# the query parameters that are part of the signed resource (as botocore's HmacV1Auth)
_SUBRESOURCES = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber",
    "policy", "requestPayment", "torrent", "versioning", "versionId", "versions", "website",
    "uploads", "uploadId", "response-content-type", "response-content-language",
    "response-expires", "response-cache-control", "response-content-disposition",
    "response-content-encoding", "delete", "lifecycle", "tagging", "restore", "storageClass",
    "notification", "replication", "analytics", "metrics", "inventory", "select",
    "select-type", "object-lock"})
_EXPIRES = re.compile(r"[0-9]{1,12}", re.ASCII)


def is_presigned_v2(query: Mapping[str, str]) -> bool:
    return "Signature" in query and "AWSAccessKeyId" in query


def covered_by_v2(header_names: Iterable[str]) -> frozenset[str]:
    """The headers of a request (lower-case names) whose values a SigV2 signature covers:
    Content-MD5, Content-Type and every ``x-amz-*`` header (see the StringToSign above)."""
    return frozenset(n for n in header_names
                     if n in ("content-md5", "content-type") or n.startswith("x-amz-"))


def verify_presigned_v2(*, method: str, raw_path: str, query_pairs: Sequence[tuple[str, str]],
                        headers: Mapping[str, Sequence[str]],
                        secret_of: Callable[[str], str | None], now_s: float) -> str:
    """The access key of a valid SigV2 presigned URL; else :class:`AuthError`."""
    q = dict(query_pairs)
    expires = q.get("Expires", "")
    if _EXPIRES.fullmatch(expires) is None:
        raise AuthError("AccessDenied", "Query-string authentication requires the Signature, "
                                        "Expires and AWSAccessKeyId parameters")
    secret = secret_of(q["AWSAccessKeyId"])
    if secret is None:
        raise AuthError("InvalidAccessKeyId", "The AWS Access Key Id you provided does not "
                                              "exist in our records.")
    subs = sorted((k, v) for k, v in query_pairs if k in _SUBRESOURCES)
    query = "&".join(f"{k}={v}" if v else k for k, v in subs)
    amz = {}
    for name, values in headers.items():
        if name.startswith("x-amz-"):
            amz[name] = ",".join(v.strip() for v in values)
    amz_lines = "".join(f"{k}:{amz[k]}\n" for k in sorted(amz))

    def first(name: str) -> str:
        v = headers.get(name)
        return v[0].strip() if v else ""

    try:
        paths = [raw_path, uri_encode(unquote(raw_path, errors="strict"), keep_slash=True)]
    except UnicodeError:
        paths = [raw_path]
    for path in dict.fromkeys(paths):
        resource = path + (f"?{query}" if query else "")
        sts = (f"{method}\n{first('content-md5')}\n{first('content-type')}\n{expires}\n"
               f"{amz_lines}{resource}")
        # surrogateescape: the header bytes as sent, even when they are not UTF-8
        mac = hmac.new(secret.encode(), sts.encode("utf-8", "surrogateescape"),
                       hashlib.sha1).digest()
        if hmac.compare_digest(base64.b64encode(mac).decode(), q["Signature"]):
            if now_s >= int(expires):
                raise AuthError("AccessDenied", "Request has expired")
            return q["AWSAccessKeyId"]
    raise AuthError("SignatureDoesNotMatch", "The request signature we calculated does not "
                                             "match the signature you provided. Check your key "
                                             "and signing method.")
