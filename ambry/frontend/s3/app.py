"""The S3 API (path-style) over aiohttp, backed by the frontend's router.

Owns HTTP for S3: reading the path (``/<bucket>/<key>``) and query, authentication (SigV4
header and presigned forms, or an anonymous read-only account when configured), dispatch to
the operation, the reply headers and XML, and S3 error replies (one table in
``ambry.frontend.s3.errors``). Buckets are containers of the key's account (config
containers, or ones created at run time through ``Router.containers``); objects are named
blobs of that container; S3 metadata (ETag, content headers, ``x-amz-meta-*``) is kept in the
blob's user metadata. Multipart uploads are in ``ambry.frontend.s3.multipart``.

Does not own storage decisions (the router), the signature arithmetic (``sigv4``), body
decoding (``payload``), listing pagination (``listing``) or ETag rules (``etag``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter, Histogram

from ambry.common.blobid import BlobId
from ambry.common.config import Account, ClusterConfig, Container
from ambry.common.errors import (
    AmbryError,
    BlobDeleted,
    BlobExpired,
    BlobNotFound,
    DataCorrupt,
)
from ambry.common.properties import BlobProperties
from ambry.frontend.aborts import CLIENT_ABORT_STATUS, client_abort_status
from ambry.frontend.bodies import first_piece, send_body
from ambry.frontend.browser import NOSNIFF
from ambry.frontend.chunking import content_range, parse_range, unsatisfied_content_range
from ambry.frontend.containers import ContainerNotEmpty
from ambry.frontend.expect import answer_expect_ignoring_others
from ambry.frontend.headers import (
    MAX_BLOB_NAME_BYTES,
    decode_user_metadata,
    encode_user_metadata,
    http_date,
)
from ambry.frontend.router import BlobRead, Router, StoredBlob
from ambry.frontend.s3 import sigv4
from ambry.frontend.s3.config import S3Config, s3_config_of
from ambry.frontend.s3.coverage import signed_view
from ambry.frontend.s3.errors import S3Error, s3_error_for
from ambry.frontend.s3.etag import (
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    etag_matches,
    evaluate_conditions,
    normalize_etag,
    single_etag,
)
from ambry.frontend.s3.listing import (
    ListEntry,
    ListingBuilder,
    decode_token,
    encode_token,
)
from ambry.frontend.s3.multipart import (
    MAX_PART_NUMBER,
    UM_COMPLETED_UPLOAD,
    MultipartStore,
    Upload,
    completion_marker,
)
from ambry.frontend.s3.parts import UM_PART_SIZES, decode_part_sizes, part_span
from ambry.frontend.s3.payload import S3Body
from ambry.frontend.s3.sigv2 import covered_by_v2, is_presigned_v2, verify_presigned_v2
from ambry.frontend.s3.xml import (
    Node,
    document,
    iso8601,
    parse_complete_multipart,
    parse_create_bucket,
    parse_delete,
)
from ambry.protocol.messages import NameRecord

if TYPE_CHECKING:
    from ambry.frontend.app import FrontendApp

__all__ = ["LISTING_ETAG_PARAM", "S3Api", "listing_content_type", "make_s3_app"]

log = logging.getLogger(__name__)

#: Name entries of S3 objects carry the ETag as a media-type parameter of their content type,
#: so listings show it without reading every blob: ``text/plain; s3-etag=<hex>``.
LISTING_ETAG_PARAM = "; s3-etag="
#: User metadata keys the S3 API keeps for itself (user keys are the x-amz-meta-* suffixes).
UM_ETAG = "s3.etag"
#: where a client's own x-amz-meta-s3.* keys are stored (inside the layer's "s3." namespace,
#: so that no user key can name one of the layer's keys)
_USER_S3_PREFIX = "s3.user."
UM_CHECKSUM = "s3.checksum-"
_STORED_HEADERS = ("content-encoding", "content-disposition", "cache-control",
                   "content-language", "expires")
_RESPONSE_OVERRIDES = {"response-content-type": "Content-Type",
                       "response-content-language": "Content-Language",
                       "response-expires": "Expires",
                       "response-cache-control": "Cache-Control",
                       "response-content-disposition": "Content-Disposition",
                       "response-content-encoding": "Content-Encoding"}
_META_PREFIX = "x-amz-meta-"
_MAX_USER_META_BYTES = 2048          # AWS's limit for x-amz-meta-*
_MAX_XML_BODY_BYTES = 4 * 1024 * 1024
_DELETE_MAX_KEYS = 1000
_CONCURRENCY = 32
_SERVICE_ID = "s3"
_DEFAULT_CONTENT_TYPE = "binary/octet-stream"
_REQUEST_ID = re.compile(r"[!-~]{1,128}", re.ASCII)
# sub-resources this API does not implement: 501 NotImplemented rather than a wrong answer
_UNSUPPORTED = frozenset({"acl", "policy", "cors", "lifecycle", "tagging", "website",
                          "replication", "encryption", "notification", "logging", "object-lock",
                          "retention", "legal-hold", "torrent", "restore", "select",
                          "analytics", "metrics", "inventory", "intelligent-tiering",
                          "ownershipControls", "publicAccessBlock", "requestPayment",
                          "accelerate", "policyStatus", "attributes"})
_MAX_BUCKETS = 10_000                # ListBuckets max-buckets (AWS: 1..10,000)
#: Buckets here are never versioned: every object is its one version, "null" (as AWS names
#: the version of an object in a bucket that never had versioning).
_NULL_VERSION = "null"


def listing_content_type(content_type: str, etag: str) -> str:
    return f"{content_type}{LISTING_ETAG_PARAM}{normalize_etag(etag)}"


def _listing_etag(content_type: str, blob_id: bytes) -> str:
    _, sep, tag = content_type.rpartition(LISTING_ETAG_PARAM)
    return f'"{tag}"' if sep and tag else _fallback_etag(blob_id)


def write_precondition(h: Any, bucket: str, key: str
                       ) -> Callable[[NameRecord | None], None] | None:
    """The condition of a conditional write (PutObject, CopyObject, CompleteMultipartUpload)
    on the key's current entry, as AWS has it: ``If-None-Match: *`` fails (412) when the key
    exists; ``If-Match: <etags>`` fails with 404 when it does not and 412 when its ETag is not
    listed. None when the request carries neither."""
    none_match = h.get("if-none-match")
    if none_match is not None and none_match.strip(" \t") != "*":
        none_match = None  # AWS accepts only "*" on writes; anything else is not a condition
    match = h.get("if-match")
    if none_match is None and match is None:
        return None

    def check(current: NameRecord | None) -> None:
        live = current is not None and not current.deleted
        if none_match is not None and live:
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                "specified did not hold", 412,
                          extra={"Condition": "If-None-Match"})
        if match is not None:
            if not live or current is None:
                raise S3Error("NoSuchKey", "The specified key does not exist.", 404,
                              bucket=bucket, key=key)
            if not etag_matches(match, _listing_etag(current.content_type, current.blob_id)):
                raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                    "specified did not hold", 412,
                              extra={"Condition": "If-Match"})

    return check


def _stored_meta_value(value: str) -> str:
    """An ``x-amz-meta-*`` value as it is kept and answered: as sent when its bytes are UTF-8
    (aiohttp writes reply headers as UTF-8, so they go back byte for byte); otherwise (bytes
    that are not UTF-8, e.g. an ISO-8859-1 0xE9 from http.client or Java; aiohttp hands them
    over as lone surrogates) one RFC 2047 encoded-word of exactly those bytes, labelled
    ISO-8859-1 (which maps every byte to one character), so any RFC 2047 decoder gives the
    bytes back. aiohttp cannot write a byte that is not UTF-8 into a reply, and writing the
    characters as UTF-8 was the mojibake (0xE9 came back as C3 A9). Control characters other
    than tab (refused by aiohttp at the door today) are encoded too (as UTF-8), so a stored
    value can always be answered."""
    raw = value.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"=?ISO-8859-1?B?{base64.b64encode(raw).decode('ascii')}?="
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
        return f"=?UTF-8?B?{base64.b64encode(raw).decode('ascii')}?="
    return text


def _stored_content_encoding(value: str) -> str | None:
    """The Content-Encoding kept with an object: ``aws-chunked`` only frames the request body
    (SigV4 streaming), so AWS drops it from the list ("gzip, aws-chunked" -> "gzip") and keeps
    nothing when it was the only coding. Any other value is kept as sent."""
    codings = [c.strip(" \t") for c in value.split(",")]
    if not any(c.lower() == "aws-chunked" for c in codings):
        return value
    return ", ".join(c for c in codings if c and c.lower() != "aws-chunked") or None


_COPY_RANGE = re.compile(r"bytes=([0-9]{1,19})-([0-9]{1,19})", re.ASCII)


def _parse_copy_range(header: str) -> tuple[int, int]:
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


def _fallback_etag(blob_id: bytes) -> str:
    """ETag of a blob stored through the Ambry REST API (no MD5 was kept): a hash of its id,
    stable, and different whenever the name points to another blob."""
    return f'"{hashlib.md5(blob_id).hexdigest()}"'


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


def _parse_query(raw: str) -> list[tuple[str, str]]:
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


def _int_param(q: dict[str, str], name: str, default: int, lo: int = 0,
               hi: int = 2**31) -> int:
    v = q.get(name)
    if v is None or v == "":
        return default
    if not (v.isascii() and v.isdigit()) or not lo <= int(v) <= hi:  # int("²") fails
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer "
                                         f"range", extra={"ArgumentName": name,
                                                          "ArgumentValue": v[:64]})
    return int(v)


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


async def _bounded(items: Sequence[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(x: Any) -> Any:
        async with gate:
            return await fn(x)

    return list(await asyncio.gather(*(one(x) for x in items)))


class S3Api:
    def __init__(self, fa: FrontendApp, s3: S3Config | None = None) -> None:
        self.fa = fa
        self.router: Router = fa.router
        self.s3 = s3 or s3_config_of(fa.config)
        self.uploads = MultipartStore(self.router, self.s3.multipart_ttl_s)
        fa.reload_hooks["s3"] = self._prepare_reload  # SIGHUP re-reads the access keys
        self.m_requests = Counter("ambry_s3_requests", "S3 requests by operation and status",
                                  ["op", "status"], registry=fa.registry)
        self.m_latency = Histogram("ambry_s3_request_seconds", "S3 request latency", ["op"],
                                   registry=fa.registry,
                                   buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                            2.5, 5, 10, 30, 60))

    def _prepare_reload(self, config: ClusterConfig) -> Callable[[], None]:
        """Check the ``s3:`` section of a re-read config (a bad one raises: the reload is
        refused and the running keys stay); the switch to it, which names the access keys
        added and removed (never a secret)."""
        new = s3_config_of(config)

        def commit() -> None:
            old, self.s3 = self.s3, new
            self.uploads.ttl_s = new.multipart_ttl_s
            added = sorted(new.by_key.keys() - old.by_key.keys())
            removed = sorted(old.by_key.keys() - new.by_key.keys())
            changed = sorted(k for k in new.by_key.keys() & old.by_key.keys()
                             if new.by_key[k] != old.by_key[k])
            if added or removed or changed:
                log.info("S3 access keys reloaded: added %s, removed %s, changed %s",
                         added, removed, changed)

        return commit

    @property
    def clock(self) -> Any:
        return self.fa.clock

    # ------------------------------------------------------------------ entry point
    async def handle(self, request: web.Request) -> web.StreamResponse:
        rid = request.headers.get("x-amz-request-id", "")
        if _REQUEST_ID.fullmatch(rid) is None:  # it is echoed in a header: printable ASCII
            rid = os.urandom(8).hex().upper()
        t0 = time.perf_counter()
        op = "unknown"
        status = 500
        ctx: Ctx | None = None
        self.fa.inflight = getattr(self.fa, "inflight", 0) + 1
        try:
            ctx = self._parse(request, rid)
            op = self._op_name(ctx)
            self._authenticate(request, ctx)
            # the one place that decides which headers the operations may act on
            ctx.h = signed_view(ctx.h, ctx.auth)
            resp = await self._dispatch(request, ctx)
            status = client_abort_status(request) or resp.status
        except sigv4.AuthError as e:
            err = S3Error(e.code, e.message, e.status, extra=e.extra)
            resp = self._error(request, err, rid)
            status = resp.status
        except AmbryError as e:
            err = s3_error_for(e, bucket=ctx.bucket if ctx else None,
                               key=ctx.key if ctx else None)
            if err.status == 500:
                log.error("rid=%s %s %s: unmapped error %s: %s", rid, request.method,
                          request.path, e.code, e.message)
            resp = self._error(request, err, rid)
            status = resp.status
        except web.HTTPException:
            raise
        except (ConnectionError, asyncio.CancelledError) as e:
            if client_abort_status(request, e) is None:
                raise
            status = CLIENT_ABORT_STATUS
            log.info("rid=%s S3 %s %s: the client went away (%s)", rid, request.method,
                     request.path, type(e).__name__)
            if isinstance(e, asyncio.CancelledError):
                raise
            resp = web.Response(status=status)  # aiohttp finds the connection closed
        except Exception:
            log.exception("rid=%s S3 %s %s failed", rid, request.method, request.path)
            resp = self._error(request, S3Error("InternalError", "We encountered an internal "
                                                                 "error. Please try again.",
                                                500), rid)
            status = 500
        finally:
            self.fa.inflight -= 1
            self.m_requests.labels(op, str(status)).inc()
            self.m_latency.labels(op).observe(time.perf_counter() - t0)
        if not resp.prepared:
            resp.headers["x-amz-request-id"] = rid
            resp.headers["x-amz-id-2"] = rid
            resp.headers.setdefault("Server", "AmbryS3")
        log.debug("rid=%s S3 %s %s -> %d", rid, request.method, request.path, status)
        return resp

    def _error(self, request: web.Request, e: S3Error, rid: str) -> web.Response:
        headers: dict[str, str] = {}
        if e.s3_code == "InvalidRange" and "ActualObjectSize" in e.extra:
            headers["Content-Range"] = unsatisfied_content_range(
                int(e.extra["ActualObjectSize"]))
        if e.status == 503:
            headers["Retry-After"] = "1"
        if request.method == "HEAD":
            return web.Response(status=e.status, headers=headers)
        fields: list[Node | None] = [("Code", e.s3_code), ("Message", e.message)]
        if e.bucket is not None:
            fields.append(("BucketName", e.bucket))
        if e.key is not None:
            fields.append(("Key", e.key))
        fields += [(k, v) for k, v in e.extra.items()]
        fields += [("Resource", request.path), ("RequestId", rid)]
        return web.Response(status=e.status, body=document("Error", fields, namespace=False),
                            content_type="application/xml", headers=headers)

    def _parse(self, request: web.Request, rid: str) -> Ctx:
        raw_path, _, raw_query = request.raw_path.partition("?")
        pairs = _parse_query(raw_query)  # request.query_string is decoded already
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

    @staticmethod
    def _op_name(ctx: Ctx) -> str:
        level = "object" if ctx.key else ("bucket" if ctx.bucket else "service")
        sub = next((s for s in ("uploads", "uploadId", "delete", "location", "list-type",
                                "versions", "partNumber")
                    if s in ctx.query), "")
        return f"{ctx.method} {level}{' ?' + sub if sub else ''}"

    def _authenticate(self, request: web.Request, ctx: Ctx) -> None:
        v2 = is_presigned_v2(ctx.query)
        signed = "authorization" in ctx.h or "X-Amz-Signature" in ctx.query or v2
        if not signed:
            if self.s3.anonymous_account is None:
                raise S3Error("AccessDenied", "Anonymous requests are not allowed", 403)
            ctx.account = self.fa.config.account(self.s3.anonymous_account)
            ctx.read_only = True
            return
        headers = {k.lower(): request.headers.getall(k) for k in request.headers}
        if v2 and "authorization" not in ctx.h:
            ak = verify_presigned_v2(method=request.method,
                                     raw_path=request.raw_path.split("?", 1)[0],
                                     query_pairs=ctx.pairs, headers=headers,
                                     secret_of=self.s3.secret_of,
                                     now_s=self.clock.now_ms() / 1000)
            self._principal(ctx, ak, sigv4.Authorized(ak, sigv4.UNSIGNED_PAYLOAD, b"", "", "",
                                                      "", covered_by_v2(headers),
                                                      presigned=True))
            return
        auth = sigv4.verify(method=request.method,
                            raw_path=request.raw_path.split("?", 1)[0],
                            query_pairs=ctx.pairs, headers=headers,
                            secret_of=self.s3.secret_of, now_s=self.clock.now_ms() / 1000)
        self._principal(ctx, auth.access_key, auth)

    def _principal(self, ctx: Ctx, access_key: str, auth: sigv4.Authorized) -> None:
        ctx.auth = auth
        ctx.access_key = access_key
        key = self.s3.by_key[access_key]
        ctx.account = self.fa.config.account(key.account)
        if ctx.account is None:
            raise S3Error("AccessDenied", "the access key's account no longer exists", 403)

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        m, q = ctx.method, ctx.query
        unsupported = _UNSUPPORTED & q.keys()
        if unsupported:
            raise S3Error("NotImplemented", f"?{min(unsupported)} is not implemented",
                          501)
        if m not in ("GET", "HEAD") and ctx.read_only:
            raise S3Error("AccessDenied", "Access Denied", 403)
        if ctx.bucket is None:
            if m == "GET":
                return await self.list_buckets(ctx)
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against "
                                              "this resource.", 405)
        if ctx.key is None:
            if m == "PUT":
                if "versioning" in q:
                    raise S3Error("NotImplemented", "versioning is not implemented", 501)
                return await self.create_bucket(request, ctx)
            if m == "HEAD":
                return await self.head_bucket(ctx)
            if m == "DELETE":
                return await self.delete_bucket(ctx)
            if m == "POST" and "delete" in q:
                return await self.delete_objects(request, ctx)
            if m == "GET":
                if "location" in q:
                    return await self.bucket_location(ctx)
                if "versioning" in q:
                    await self._container(ctx)
                    return self._xml(document("VersioningConfiguration", []))
                if "uploads" in q:
                    return await self.list_uploads(ctx)
                if "versions" in q:
                    return await self.list_object_versions(ctx)
                return await self.list_objects(ctx, v2=q.get("list-type") == "2")
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against "
                                              "this resource.", 405)
        if m in ("GET", "HEAD"):
            if "uploadId" in q and m == "GET":
                return await self.list_parts(ctx)
            return await self.get_object(request, ctx)
        if m == "PUT":
            if "uploadId" in q or "partNumber" in q:
                return await self.upload_part(request, ctx)
            if "x-amz-copy-source" in ctx.h:
                return await self.copy_object(ctx)
            return await self.put_object(request, ctx)
        if m == "DELETE":
            if "uploadId" in q:
                return await self.abort_upload(ctx)
            return await self.delete_object(ctx)
        if m == "POST":
            if "uploads" in q:
                return await self.create_upload(ctx)
            if "uploadId" in q:
                return await self.complete_upload(request, ctx)
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this "
                                          "resource.", 405)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _xml(body: bytes, status: int = 200, headers: dict[str, str] | None = None
             ) -> web.Response:
        return web.Response(status=status, body=body, content_type="application/xml",
                            headers=headers)

    def _acct(self, ctx: Ctx) -> Account:
        assert ctx.account is not None
        return ctx.account

    async def _container(self, ctx: Ctx, bucket: str | None = None) -> Container:
        name = bucket if bucket is not None else ctx.bucket
        assert name is not None
        c = await self.router.containers.lookup(self._acct(ctx), name, ctx.rid)
        if c is None:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", 404,
                          bucket=name)
        return c

    @staticmethod
    def _check_key(key: str | None) -> str:
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

    def _user_meta(self, ctx: Ctx) -> dict[str, str]:
        """x-amz-meta-* (user) and the content headers S3 keeps with an object."""
        out: dict[str, str] = {}
        total = 0
        for name, value in ctx.h.items():
            if name.startswith(_META_PREFIX) and len(name) > len(_META_PREFIX):
                k = name[len(_META_PREFIX):]
                total += len(k) + len(value.encode("utf-8", "surrogateescape"))
                # "s3." is the S3 layer's own namespace: a client's x-amz-meta-s3.cache-control
                # is user metadata, kept apart so it never becomes a real Cache-Control
                out[_USER_S3_PREFIX + k if k.startswith("s3.") else k] = \
                    _stored_meta_value(value)
        if total > _MAX_USER_META_BYTES:
            raise S3Error("MetadataTooLarge", f"Your metadata headers exceed the maximum "
                                              f"allowed metadata size ({_MAX_USER_META_BYTES} "
                                              f"bytes)")
        for name in _STORED_HEADERS:
            if name in ctx.h:
                out["s3." + name] = ctx.h[name]
        if "s3.content-encoding" in out:
            encoding = _stored_content_encoding(out.pop("s3.content-encoding"))
            if encoding is not None:
                out["s3.content-encoding"] = encoding
        return out

    def _props(self, ctx: Ctx, container: Container, content_type: str) -> BlobProperties:
        return BlobProperties(size=0, created_ms=self.clock.now_ms(), ttl_s=-1,
                              content_type=content_type, service_id=_SERVICE_ID,
                              owner_id=ctx.access_key, account_id=self._acct(ctx).id,
                              container_id=container.id)

    @staticmethod
    def _encode_um(meta: dict[str, str], etag: str, checksum: tuple[str, str] | None = None,
                   part_map: str | None = None, completed_upload: str | None = None) -> bytes:
        """The stored user metadata. The S3 layer's own keys come from the arguments only:
        a client's ``x-amz-meta-s3.etag`` (or one copied from a source) never sets them."""
        d = {k: v for k, v in meta.items()
             if k not in (UM_ETAG, UM_PART_SIZES, UM_COMPLETED_UPLOAD)
             and not k.startswith(UM_CHECKSUM)}
        d[UM_ETAG] = etag
        if checksum is not None:
            d[UM_CHECKSUM + checksum[0]] = checksum[1]
        if part_map is not None:
            d[UM_PART_SIZES] = part_map
        if completed_upload is not None:
            d[UM_COMPLETED_UPLOAD] = completed_upload
        try:
            return encode_user_metadata(d)
        except UnicodeEncodeError:
            raise S3Error("InvalidArgument", "metadata is not valid UTF-8") from None

    def _body(self, request: web.Request, ctx: Ctx) -> S3Body:
        return S3Body(self.fa.body_reader(request), ctx.h, ctx.auth)

    async def _small_body(self, request: web.Request, ctx: Ctx) -> bytes:
        body = self._body(request, ctx)
        buf = bytearray()
        while True:
            piece = await body.read(64 * 1024)
            if not piece:
                return bytes(buf)
            buf += piece
            if len(buf) > _MAX_XML_BODY_BYTES:
                raise S3Error("MalformedXML", "the request document is too large")

    async def _bind(self, ctx: Ctx, container: Container, key: str, stored: StoredBlob,
                    content_type: str, etag: str) -> None:
        """Point the key at the stored object, under the request's write conditions
        (``If-None-Match: *``, ``If-Match``), decided at the key's replicas so that they hold
        against concurrent writers (docs/security.md, "Conditional writes and names")."""
        await self.router.bind_name(key, stored, account_id=self._acct(ctx).id,
                                    container_id=container.id,
                                    content_type=listing_content_type(content_type, etag),
                                    rid=ctx.rid,
                                    condition=write_precondition(ctx.h, container.name, key))

    async def _lookup_object(self, ctx: Ctx, container: Container, key: str
                             ) -> BlobId:
        e = await self.router.lookup_name(self._acct(ctx).id, container.id, key, ctx.rid)
        if e is None or e.deleted:
            raise S3Error("NoSuchKey", "The specified key does not exist.", 404,
                          bucket=container.name, key=key)
        return BlobId.from_bytes(e.blob_id)

    # ------------------------------------------------------------------ service, buckets
    async def list_buckets(self, ctx: Ctx) -> web.Response:
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
        if not _valid_bucket_name(name):
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

    async def head_bucket(self, ctx: Ctx) -> web.Response:
        await self._container(ctx)
        return web.Response(status=200, headers={"x-amz-bucket-region": self.s3.region})

    async def bucket_location(self, ctx: Ctx) -> web.Response:
        await self._container(ctx)
        region = "" if self.s3.region == "us-east-1" else self.s3.region
        return self._xml(document("LocationConstraint", [], text=region))

    async def delete_bucket(self, ctx: Ctx) -> web.Response:
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

    # ------------------------------------------------------------------ listing
    async def list_objects(self, ctx: Ctx, *, v2: bool) -> web.Response:
        c = await self._container(ctx)
        q = ctx.query
        max_keys = _int_param(q, "max-keys", 1000)
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        enc = q.get("encoding-type")
        if enc is not None and enc != "url":
            raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                          extra={"ArgumentName": "encoding-type"})
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
        b = ListingBuilder(prefix=prefix, delimiter=delimiter, max_keys=max_keys,
                           marker=marker)
        account = self._acct(ctx)
        while not b.done:
            entries, more = await self.router.list_named(
                account_id=account.id, container_id=c.id, prefix=prefix,
                start_after=b.next_start, limit=b.read_limit, rid=ctx.rid)
            b.feed([ListEntry(e.name, e.size, e.created_ms,
                              _listing_etag(e.content_type, e.blob_id)) for e in entries],
                   more and bool(entries))
        page = b.page

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

    async def list_object_versions(self, ctx: Ctx) -> web.Response:
        """ListObjectVersions of a bucket that is never versioned: each object is one
        ``<Version>`` with VersionId ``null``, IsLatest true; no delete markers. Paging by
        ``key-marker`` (exclusive) and ``version-id-marker`` (only ``null`` exists), as AWS."""
        c = await self._container(ctx)
        q = ctx.query
        max_keys = _int_param(q, "max-keys", 1000)
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        enc = q.get("encoding-type")
        if enc is not None and enc != "url":
            raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                          extra={"ArgumentName": "encoding-type"})
        key_marker = q.get("key-marker", "")
        version_marker = q.get("version-id-marker")
        if version_marker is not None:
            if not key_marker:
                raise S3Error("InvalidArgument", "A version-id marker cannot be specified "
                                                 "without a key marker.",
                              extra={"ArgumentName": "version-id-marker",
                                     "ArgumentValue": version_marker[:64]})
            if version_marker != _NULL_VERSION:
                raise S3Error("InvalidArgument", "Invalid version id specified",
                              extra={"ArgumentName": "version-id-marker",
                                     "ArgumentValue": version_marker[:64]})
        b = ListingBuilder(prefix=prefix, delimiter=delimiter, max_keys=max_keys,
                           marker=key_marker)
        account = self._acct(ctx)
        while not b.done:
            entries, more = await self.router.list_named(
                account_id=account.id, container_id=c.id, prefix=prefix,
                start_after=b.next_start, limit=b.read_limit, rid=ctx.rid)
            b.feed([ListEntry(e.name, e.size, e.created_ms,
                              _listing_etag(e.content_type, e.blob_id)) for e in entries],
                   more and bool(entries))
        page = b.page

        def e(text: str) -> str:  # AWS encodes keys, markers, prefix and delimiter here
            return quote(text, safe="/") if enc == "url" else text

        owner = ("Owner", [("ID", ctx.owner), ("DisplayName", ctx.owner)])
        more = page.is_truncated and page.next_marker is not None
        return self._xml(document("ListVersionsResult", [
            ("Name", c.name), ("Prefix", e(prefix)), ("KeyMarker", e(key_marker)),
            ("VersionIdMarker", version_marker or ""),
            ("NextKeyMarker", e(page.next_marker or "")) if more else None,
            ("NextVersionIdMarker", _NULL_VERSION) if more else None,
            ("MaxKeys", max_keys), ("Delimiter", e(delimiter)) if delimiter else None,
            ("EncodingType", enc) if enc else None, ("IsTruncated", page.is_truncated),
            *[("Version", [("Key", e(x.key)), ("VersionId", _NULL_VERSION),
                           ("IsLatest", True), ("LastModified", iso8601(x.last_modified_ms)),
                           ("ETag", x.etag), ("Size", x.size), owner,
                           ("StorageClass", "STANDARD")]) for x in page.contents],
            *[("CommonPrefixes", [("Prefix", e(p))]) for p in page.common_prefixes]]))

    # ------------------------------------------------------------------ objects
    @staticmethod
    def _check_version(ctx: Ctx) -> None:
        """``versionId`` on an object request: only ``null`` exists (the unversioned object
        itself, as AWS answers for a bucket that never had versioning)."""
        v = ctx.query.get("versionId")
        if v is not None and v != _NULL_VERSION:
            raise S3Error("InvalidArgument", "Invalid version id specified",
                          extra={"ArgumentName": "versionId", "ArgumentValue": v[:64]})

    @staticmethod
    def _part_number(ctx: Ctx) -> int | None:
        """``partNumber`` of GET/HEAD object (1..10,000), None when absent; never with a
        Range header (AWS: 400)."""
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

    @staticmethod
    def _part_of(info: BlobRead, number: int) -> tuple[tuple[int, int], int | None]:
        """The (start, length) of part ``number`` of an object and the parts count to report
        (None for an object of one PUT, which is its own part 1). A multipart object without
        a stored part map (completed before maps were kept, or with too long a map) reads as
        one part, as AWS serves an object it holds no part boundaries for. 416
        ``InvalidPartNumber`` past the last part."""
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

    async def get_object(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        c = await self._container(ctx)
        key = self._check_key(ctx.key)
        self._check_version(ctx)
        part = self._part_number(ctx)
        bid = await self._lookup_object(ctx, c, key)
        head = request.method == "HEAD"
        range_header = ctx.h.get("range")
        resolved: dict[str, tuple[int, int] | None] = {}
        # partNumber: the part's span comes from the object's user metadata, so a GET reads
        # that first (HEAD reads nothing else anyway)
        part_found: tuple[tuple[int, int], int | None] | None = None

        def resolve(total: int) -> tuple[int, int] | None:
            span = part_found[0] if part_found is not None else \
                self._range(range_header, total)
            resolved["span"] = span
            return span

        try:
            if part is not None and not head:
                probe = await self.router.get(bid, info_only=True, rid=ctx.rid)
                await probe.aclose()
                part_found = self._part_of(probe, part)
            info = await self.router.get(bid, info_only=head,
                                         range_resolver=resolve if (range_header or part_found)
                                         and not head else None, rid=ctx.rid)
        except (BlobNotFound, BlobDeleted, BlobExpired):
            raise S3Error("NoSuchKey", "The specified key does not exist.", 404,
                          bucket=c.name, key=key) from None
        try:
            if part is not None and part_found is None:
                part_found = self._part_of(info, part)
            um = decode_user_metadata(info.user_metadata)
            etag = um.get(UM_ETAG) or _fallback_etag(bid.to_bytes())
            modified_s = info.properties.created_ms // 1000
            cond = evaluate_conditions(ctx.h, etag, modified_s, read=True)
            if cond == NOT_MODIFIED:
                return web.Response(status=304, headers={
                    "ETag": etag, "Last-Modified": http_date(info.properties.created_ms)})
            if cond == PRECONDITION_FAILED:
                raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                    "specified did not hold", 412,
                              extra={"Condition": "If-Match"})
            headers = self._object_headers(info, um, etag, ctx)
            if part_found is not None:
                headers.popall("x-amz-mp-parts-count", None)
                if part_found[1] is not None:
                    headers["x-amz-mp-parts-count"] = str(part_found[1])
            if head:
                span = part_found[0] if part_found is not None else \
                    self._range(range_header, info.total_size) if range_header else None
                if span is not None and span[1] > 0:
                    headers["Content-Range"] = content_range(*span, info.total_size)
                    headers["Content-Length"] = str(span[1])
                    return web.Response(status=206, headers=headers)
                headers["Content-Length"] = str(span[1] if span is not None else
                                                info.total_size)
                if part_found is None:
                    self._checksum_headers(headers, um, ctx)
                return web.Response(status=200, headers=headers)
            status = 200
            span = resolved.get("span")
            if span is not None and span[1] > 0:  # an empty part of a GET: 200, no range
                status = 206
                headers["Content-Range"] = content_range(info.range_start, info.length,
                                                         info.total_size)
            elif part_found is None:
                self._checksum_headers(headers, um, ctx)
            assert info.body is not None
            first = await first_piece(info.body)  # an error here is still an error reply
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = info.length
            sent = await send_body(request, resp, info.body, first, blob=bid.to_str(),
                                   rid=ctx.rid, on_abort=self.fa.count_abort("s3"))
            self.fa.m_bytes_out.inc(sent)
            return resp
        finally:
            await info.aclose()

    @staticmethod
    def _range(header: str | None, total: int) -> tuple[int, int] | None:
        if not header:
            return None
        try:
            return parse_range(header, total)
        except AmbryError:
            raise S3Error("InvalidRange", "The requested range is not satisfiable", 416,
                          extra={"RangeRequested": header[:100],
                                 "ActualObjectSize": str(total)}) from None

    @staticmethod
    def _checksum_headers(headers: CIMultiDict[str], um: dict[str, str], ctx: Ctx) -> None:
        if ctx.h.get("x-amz-checksum-mode", "").upper() != "ENABLED":
            return
        for k, v in um.items():
            if k.startswith(UM_CHECKSUM):
                headers["x-amz-checksum-" + k[len(UM_CHECKSUM):]] = v
                headers["x-amz-checksum-type"] = "FULL_OBJECT"

    def _object_headers(self, info: BlobRead, um: dict[str, str], etag: str, ctx: Ctx
                        ) -> CIMultiDict[str]:
        h: CIMultiDict[str] = CIMultiDict()
        h["Content-Type"] = info.properties.content_type or _DEFAULT_CONTENT_TYPE
        h.update(NOSNIFF)  # the stored type as it is: never sniffed into HTML or script
        h["ETag"] = etag
        h["Last-Modified"] = http_date(info.properties.created_ms)
        h["Accept-Ranges"] = "bytes"
        for k, v in um.items():
            if k.startswith(_USER_S3_PREFIX):
                h[_META_PREFIX + k[len(_USER_S3_PREFIX):]] = v
            elif k.startswith("s3."):
                if k[3:] in _STORED_HEADERS:
                    h[k[3:]] = v
            else:
                h[_META_PREFIX + k] = v
        if info.chunks and "-" in normalize_etag(etag):
            h["x-amz-mp-parts-count"] = normalize_etag(etag).rsplit("-", 1)[1]
        if ctx.auth is not None:  # response-* overrides: signed requests only (as AWS)
            for param, header in _RESPONSE_OVERRIDES.items():
                if param in ctx.query:
                    h[header] = ctx.query[param]
        return h

    async def put_object(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = self._check_key(ctx.key)
        body = self._body(request, ctx)
        if body.declared_size is not None and body.declared_size > \
                self.s3.max_part_size_bytes:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed "
                                            "size", extra={"MaxSizeAllowed":
                                                           str(self.s3.max_part_size_bytes)})
        meta = self._user_meta(ctx)
        account = self._acct(ctx)
        check = write_precondition(ctx.h, c.name, key)
        if check is not None:  # fail fast, before the body; decided again when binding
            check(await self.router.lookup_name(account.id, c.id, key, ctx.rid))
        content_type = ctx.h.get("content-type") or _DEFAULT_CONTENT_TYPE
        props = self._props(ctx, c, content_type)

        def usermeta() -> bytes:
            ck = (body.checksum_algorithm, body.checksum_value) \
                if body.checksum_algorithm and body.checksum_value else None
            return self._encode_um(meta, single_etag(body.md5_hex), ck)

        stored = await self.router.put(body.read, account_id=account.id, container_id=c.id,
                                       props=props, usermeta=usermeta,
                                       declared_size=body.declared_size, content_xxh3=None,
                                       rid=ctx.rid)
        etag = single_etag(body.md5_hex)
        await self._bind(ctx, c, key, stored, content_type, etag)
        headers = {"ETag": etag}
        if body.checksum_algorithm and body.checksum_value:
            headers["x-amz-checksum-" + body.checksum_algorithm] = body.checksum_value
        return web.Response(status=200, headers=headers)

    async def delete_object(self, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = self._check_key(ctx.key)
        self._check_version(ctx)
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
                self._check_key(key)
                if version is not None and version != _NULL_VERSION:
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
        self._check_key(key)
        return sc, key, await self._lookup_object(ctx, sc, key)

    async def _open_source(self, ctx: Ctx, sc: Container, key: str, bid: BlobId,
                           copy_range: tuple[int, int] | None = None
                           ) -> tuple[BlobRead, dict[str, str], str]:
        """The copy source, opened; ``copy_range`` = (first, last) byte of
        ``x-amz-copy-source-range`` (:func:`_parse_copy_range`): a last byte past the end of
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
        etag = um.get(UM_ETAG) or _fallback_etag(bid.to_bytes())
        cond = evaluate_conditions(ctx.h, etag, info.properties.created_ms // 1000,
                                   read=False, prefix="x-amz-copy-source-")
        if cond is not None:
            await info.aclose()
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                "specified did not hold", 412)
        return info, um, etag

    async def copy_object(self, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = self._check_key(ctx.key)
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
                meta = self._user_meta(ctx)
                content_type = ctx.h.get("content-type") or _DEFAULT_CONTENT_TYPE
            if info.total_size > self.s3.max_part_size_bytes:
                raise S3Error("InvalidRequest", "The specified copy source is larger than the "
                                                "maximum allowable size for a copy source")
            assert info.body is not None
            reader = _IterReader(info.body)
            props = self._props(ctx, c, content_type)
            stored = await self.router.put(
                reader.read, account_id=self._acct(ctx).id, container_id=c.id, props=props,
                usermeta=lambda: self._encode_um(meta, single_etag(reader.md5.hexdigest())),
                declared_size=info.total_size, content_xxh3=None, rid=ctx.rid)
        finally:
            await info.aclose()
        etag = single_etag(reader.md5.hexdigest())
        await self._bind(ctx, c, key, stored, content_type, etag)
        return self._xml(document("CopyObjectResult", [
            ("LastModified", iso8601(stored.created_ms)), ("ETag", etag)]))

    # ------------------------------------------------------------------ multipart
    async def _upload(self, ctx: Ctx, c: Container, key: str | None) -> Upload:
        return await self.uploads.get(self._acct(ctx).id, c.id, ctx.query.get("uploadId", ""),
                                      key, ctx.rid)

    async def create_upload(self, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = self._check_key(ctx.key)
        upload_id = await self.uploads.create(
            self._acct(ctx).id, c.id, key, ctx.h.get("content-type") or _DEFAULT_CONTENT_TYPE,
            self._user_meta(ctx), ctx.rid)
        return self._xml(document("InitiateMultipartUploadResult", [
            ("Bucket", c.name), ("Key", key), ("UploadId", upload_id)]))

    async def upload_part(self, request: web.Request, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = self._check_key(ctx.key)
        number = _int_param(ctx.query, "partNumber", 0, 1, MAX_PART_NUMBER)
        if "partNumber" not in ctx.query or "uploadId" not in ctx.query:
            raise S3Error("InvalidRequest", "UploadPart needs partNumber and uploadId")
        upload = await self._upload(ctx, c, key)
        if "x-amz-copy-source" in ctx.h:
            return await self._upload_part_copy(ctx, upload, number)
        body = self._body(request, ctx)
        if body.declared_size is not None and body.declared_size > \
                self.s3.max_part_size_bytes:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed "
                                            "size")
        etag = await self.uploads.upload_part(upload, number, body.read,
                                              lambda: body.md5_digest, ctx.rid)
        headers = {"ETag": etag}
        if body.checksum_algorithm and body.checksum_value:
            headers["x-amz-checksum-" + body.checksum_algorithm] = body.checksum_value
        return web.Response(status=200, headers=headers)

    async def _upload_part_copy(self, ctx: Ctx, upload: Upload, number: int) -> web.Response:
        rng = ctx.h.get("x-amz-copy-source-range")
        copy_range = _parse_copy_range(rng) if rng is not None else None
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

    async def list_parts(self, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = self._check_key(ctx.key)
        upload = await self._upload(ctx, c, key)
        max_parts = min(_int_param(ctx.query, "max-parts", 1000), 1000)
        marker = _int_param(ctx.query, "part-number-marker", 0, 0, MAX_PART_NUMBER)
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
        key = self._check_key(ctx.key)
        try:
            upload = await self._upload(ctx, c, key)
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
                make_usermeta=lambda meta, tag, parts: self._encode_um(
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
                not normalize_etag(_listing_etag(e.content_type, e.blob_id)).endswith(
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

    async def abort_upload(self, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        key = self._check_key(ctx.key)
        upload = await self._upload(ctx, c, key)
        await self.uploads.abort(upload, ctx.rid)
        return web.Response(status=204)

    async def list_uploads(self, ctx: Ctx) -> web.Response:
        c = await self._container(ctx)
        q = ctx.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
        max_uploads = min(_int_param(q, "max-uploads", 1000), 1000)
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


def _valid_bucket_name(name: str) -> bool:
    """AWS's bucket naming rules (3-63 characters, lower-case, no IP addresses)."""
    if re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", name, re.ASCII) is None:
        return False
    if ".." in name or ".-" in name or "-." in name:
        return False
    if re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", name, re.ASCII):
        return False
    return not name.startswith("xn--") and not name.endswith("-s3alias")


def make_s3_app(fa: FrontendApp, s3: S3Config | None = None) -> web.Application:
    """The S3 application of a frontend: shares its router, metrics and byte accounting."""
    api = S3Api(fa, s3)
    app = web.Application(client_max_size=_MAX_XML_BODY_BYTES)
    app["s3"] = api
    # every method and path: S3 dispatches on method, path shape and query sub-resources
    # an Expect other than 100-continue is ignored, as AWS does (the REST port answers 417)
    app.router.add_route("*", "/{tail:.*}", api.handle,
                         expect_handler=answer_expect_ignoring_others)
    return app

