"""One S3 request, parsed: :class:`Ctx` and the checks of its path and query values.

Owns reading the path-style target (``/<bucket>/<key>``, percent-decoded, UTF-8 only), the
query (``request.query_string`` is decoded already and loses raw bytes, so it is parsed here
from the raw path), and the small value checks every handler shares: a key, an integer
parameter, ``versionId``. Does not own authentication (``auth``) nor which operation a
request is (``routes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web

from ambry.common.config import Account
from ambry.frontend.headers import MAX_BLOB_NAME_BYTES
from ambry.frontend.s3 import sigv4
from ambry.frontend.s3.errors import S3Error

__all__ = ["NULL_VERSION", "Ctx", "check_key", "check_version", "int_param", "parse_query",
           "parse_request"]

#: Buckets here are never versioned: every object is its one version, "null" (as AWS names
#: the version of an object in a bucket that never had versioning).
NULL_VERSION = "null"


@dataclass
class Ctx:
    """One S3 request, parsed."""

    rid: str
    method: str
    bucket: str | None
    key: str | None
    query: dict[str, str]
    pairs: list[tuple[str, str]]
    h: dict[str, str]                 # lower-case name -> first value
    account: Account | None = None
    access_key: str = ""
    auth: sigv4.Authorized | None = None
    read_only: bool = False

    @property
    def owner(self) -> str:
        return self.account.name if self.account is not None else ""


def parse_query(raw: str) -> list[tuple[str, str]]:
    out = []
    for part in raw.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        try:
            k, v = unquote(k, errors="strict"), unquote(v, errors="strict")
            (k + v).encode("utf-8")  # raw bytes that are not UTF-8 stay lone surrogates
        except UnicodeError:
            raise S3Error("InvalidArgument", "the query string is not valid UTF-8") from None
        out.append((k, v))
    return out


def parse_request(request: web.Request, rid: str) -> Ctx:
    raw_path, _, raw_query = request.raw_path.partition("?")
    pairs = parse_query(raw_query)  # request.query_string is decoded already
    query: dict[str, str] = {}
    for k, v in pairs:
        query.setdefault(k, v)
    h = {k.lower(): v for k, v in reversed(list(request.headers.items()))}
    bucket: str | None = None
    key: str | None = None
    rest = raw_path.removeprefix("/")
    if rest:
        b, slash, k = rest.partition("/")
        try:
            bucket = unquote(b, errors="strict")
            key = unquote(k, errors="strict") if slash and k else None
            rest.encode("utf-8")  # raw bytes that are not UTF-8 stay lone surrogates
        except UnicodeError:
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.") from None
    return Ctx(rid, request.method, bucket or None, key, query, pairs, h)


def int_param(q: dict[str, str], name: str, default: int, lo: int = 0,
              hi: int = 2**31) -> int:
    v = q.get(name)
    if v is None or v == "":
        return default
    if not (v.isascii() and v.isdigit()) or not lo <= int(v) <= hi:  # int("²") fails
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer "
                                         f"range", extra={"ArgumentName": name,
                                                          "ArgumentValue": v[:64]})
    return int(v)


def check_key(key: str | None) -> str:
    assert key is not None
    n = len(key.encode("utf-8", "surrogatepass"))
    if n > MAX_BLOB_NAME_BYTES:
        raise S3Error("KeyTooLongError", f"Your key is too long (this store keeps keys of "
                                         f"up to {MAX_BLOB_NAME_BYTES} bytes)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise S3Error("InvalidArgument", "the key contains control characters")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise S3Error("InvalidArgument", "the key is not valid UTF-8") from None
    return key


def check_version(ctx: Ctx) -> None:
    """``versionId`` on an object request: only ``null`` exists (the unversioned object
    itself, as AWS answers for a bucket that never had versioning)."""
    v = ctx.query.get("versionId")
    if v is not None and v != NULL_VERSION:
        raise S3Error("InvalidArgument", "Invalid version id specified",
                      extra={"ArgumentName": "versionId", "ArgumentValue": v[:64]})
