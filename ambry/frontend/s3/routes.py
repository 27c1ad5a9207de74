"""Which S3 operation a request is: the route table.

A request is routed by its *level* (``service`` for ``/``, ``bucket`` for ``/<bucket>``,
``object`` for ``/<bucket>/<key>``), its method and a *marker*: the query parameters and
headers that select among the operations of one level and method. :data:`ROUTES` lists them
in precedence order; the first row whose level, method and marker match wins.

Marker grammar (parsed once, at import): terms separated by spaces, all of which must hold;
a term is alternatives separated by ``|``, one of which must hold; an alternative is
``?name`` (the query parameter is present, any value), ``?name=value`` (present with that
value) or ``name`` (the request header is present). The empty marker always holds: the
default operation of its level and method.

Before the table (:func:`resolve`): a sub-resource this API does not implement
(:data:`UNSUPPORTED`, e.g. ``?policy``; ``?acl`` other than GET/PUT of a bucket or object)
is 501 NotImplemented at any level, then a write by a
read-only (anonymous) principal is 403. A level and method with no matching row is 405
MethodNotAllowed.

Owns the table and its lookup, and the label of the request metrics (:func:`metric_label`,
kept as it was before the table so dashboards do not change). Does not own the handlers
(``buckets``, ``objects``, ``copy``, ``uploads``, ``list_objects``) nor calling them (``app``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from ambry.frontend.s3.acl import Acls
from ambry.frontend.s3.buckets import Buckets
from ambry.frontend.s3.context import Ctx
from ambry.frontend.s3.copy import Copies
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.list_objects import Listings
from ambry.frontend.s3.objects import Objects
from ambry.frontend.s3.resource import Resource
from ambry.frontend.s3.uploads import Uploads

__all__ = ["BUCKET", "OBJECT", "PARTLY_SUPPORTED", "RESOURCES", "ROUTES", "SERVICE",
           "UNSUPPORTED", "Level", "Route", "level_of", "metric_label", "resolve", "route_of"]

Level = Literal["service", "bucket", "object"]
SERVICE: Level = "service"
BUCKET: Level = "bucket"
OBJECT: Level = "object"

Handler = Callable[[Any, web.Request, Ctx], Awaitable[web.StreamResponse]]

#: The handler classes, one per resource; ``app`` makes one instance of each.
RESOURCES: tuple[type[Resource], ...] = (Buckets, Objects, Copies, Uploads, Listings, Acls)

#: Sub-resources this API does not implement: 501 NotImplemented rather than a wrong answer.
UNSUPPORTED = frozenset({"policy", "cors", "lifecycle", "tagging", "website",
                         "replication", "encryption", "notification", "logging", "object-lock",
                         "retention", "legal-hold", "torrent", "restore", "select",
                         "analytics", "metrics", "inventory", "intelligent-tiering",
                         "ownershipControls", "publicAccessBlock", "requestPayment",
                         "accelerate", "policyStatus", "attributes"})
#: Sub-resources served only at some levels and methods (``?acl``: GET and PUT of a bucket or
#: an object, module ``acl``); 501 NotImplemented elsewhere.
PARTLY_SUPPORTED: dict[str, tuple[frozenset[Level], frozenset[str]]] = {
    "acl": (frozenset({"bucket", "object"}), frozenset({"GET", "PUT"}))}


@dataclass(frozen=True)
class _Alt:
    query: bool           # a query parameter (else a header)
    name: str
    value: str | None     # ?name=value

    def holds(self, query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        if not self.query:
            return self.name in headers
        return self.name in query and (self.value is None or query[self.name] == self.value)


def _parse_marker(marker: str) -> tuple[tuple[_Alt, ...], ...]:
    terms = []
    for term in marker.split():
        alts = []
        for alt in term.split("|"):
            if alt.startswith("?"):
                name, eq, value = alt[1:].partition("=")
                assert name, f"route marker {marker!r}: empty query parameter"
                alts.append(_Alt(True, name, value if eq else None))
            else:
                assert alt and alt == alt.lower(), f"route marker {marker!r}: header {alt!r}"
                alts.append(_Alt(False, alt, None))
        terms.append(tuple(alts))
    return tuple(terms)


@dataclass(frozen=True)
class Route:
    level: Level
    method: str
    marker: str           # see the module docstring
    op: str               # the AWS operation name
    handler: Handler      # a method of one of RESOURCES: (self, request, ctx) -> response
    _terms: tuple[tuple[_Alt, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_terms", _parse_marker(self.marker))

    def matches(self, query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        return all(any(a.holds(query, headers) for a in term) for term in self._terms)

    @property
    def owner(self) -> type[Resource]:
        """The resource class whose method the handler is."""
        return _OWNERS[self.handler]


def _rows(level: Level, rows: tuple[tuple[str, str, str, Handler], ...]
          ) -> tuple[Route, ...]:
    return tuple(Route(level, method, marker, op, handler)
                 for method, marker, op, handler in rows)


# Precedence matters within a level and method: the first match wins.
ROUTES: tuple[Route, ...] = (
    *_rows(SERVICE, (
        # method   marker                   op                         handler
        ("GET",    "",                      "ListBuckets",             Buckets.list_buckets),
    )),
    *_rows(BUCKET, (
        # method   marker                   op                         handler
        ("PUT",    "?acl",                  "PutBucketAcl",            Acls.put_bucket_acl),
        ("GET",    "?acl",                  "GetBucketAcl",            Acls.get_bucket_acl),
        ("PUT",    "?versioning",           "PutBucketVersioning",     Buckets.put_versioning),
        ("PUT",    "",                      "CreateBucket",            Buckets.create_bucket),
        ("HEAD",   "",                      "HeadBucket",              Buckets.head_bucket),
        ("DELETE", "",                      "DeleteBucket",            Buckets.delete_bucket),
        ("POST",   "?delete",               "DeleteObjects",           Objects.delete_objects),
        ("GET",    "?location",             "GetBucketLocation",       Buckets.bucket_location),
        ("GET",    "?versioning",           "GetBucketVersioning",     Buckets.get_versioning),
        ("GET",    "?uploads",              "ListMultipartUploads",    Uploads.list_uploads),
        ("GET",    "?versions",             "ListObjectVersions",      Listings.list_versions),
        ("GET",    "?list-type=2",          "ListObjectsV2",           Listings.list_objects_v2),
        ("GET",    "",                      "ListObjects",             Listings.list_objects_v1),
    )),
    *_rows(OBJECT, (
        # method   marker                   op                         handler
        ("PUT",    "?acl",                  "PutObjectAcl",            Acls.put_object_acl),
        ("GET",    "?acl",                  "GetObjectAcl",            Acls.get_object_acl),
        ("GET",    "?uploadId",             "ListParts",               Uploads.list_parts),
        ("GET",    "",                      "GetObject",               Objects.get_object),
        ("HEAD",   "",                      "HeadObject",              Objects.get_object),
        # a part request with a copy source copies into the part; either parameter makes
        # it a part request (the handler then asks for both: 400 InvalidRequest)
        ("PUT",    "?uploadId|?partNumber x-amz-copy-source", "UploadPartCopy",
         Copies.upload_part_copy),
        ("PUT",    "?uploadId|?partNumber", "UploadPart",              Uploads.upload_part),
        ("PUT",    "x-amz-copy-source",     "CopyObject",              Copies.copy_object),
        ("PUT",    "",                      "PutObject",               Objects.put_object),
        ("DELETE", "?uploadId",             "AbortMultipartUpload",    Uploads.abort_upload),
        ("DELETE", "",                      "DeleteObject",            Objects.delete_object),
        ("POST",   "?uploads",              "CreateMultipartUpload",   Uploads.create_upload),
        ("POST",   "?uploadId",             "CompleteMultipartUpload", Uploads.complete_upload),
    )),
)

_OWNERS: dict[Handler, type[Resource]] = {
    fn: cls for cls in RESOURCES for fn in vars(cls).values() if callable(fn)}
for _r in ROUTES:  # a handler that is not a method of a resource class is a broken table
    assert _r.handler in _OWNERS, f"{_r.op}: {_r.handler!r} is not a handler of RESOURCES"


def level_of(ctx: Ctx) -> Level:
    return OBJECT if ctx.key else (BUCKET if ctx.bucket else SERVICE)


def resolve(ctx: Ctx) -> Route:
    """The route of a request, after authentication (``ctx.h`` is what the handlers may act
    on). In this order: 501 NotImplemented for an unsupported sub-resource, 403 AccessDenied
    for a write by a read-only (anonymous) principal, 405 MethodNotAllowed when no route
    matches."""
    unsupported = UNSUPPORTED & ctx.query.keys()
    unsupported |= {s for s, (levels, methods) in PARTLY_SUPPORTED.items()
                    if s in ctx.query and (level_of(ctx) not in levels
                                           or ctx.method not in methods)}
    if unsupported:
        raise S3Error("NotImplemented", f"?{min(unsupported)} is not implemented", 501)
    if ctx.method not in ("GET", "HEAD") and ctx.read_only:
        raise S3Error("AccessDenied", "Access Denied", 403)
    return route_of(ctx)


def route_of(ctx: Ctx) -> Route:
    level = level_of(ctx)
    for r in ROUTES:
        if r.level == level and r.method == ctx.method and r.matches(ctx.query, ctx.h):
            return r
    raise S3Error("MethodNotAllowed", "The specified method is not allowed against this "
                                      "resource.", 405)


def metric_label(ctx: Ctx) -> str:
    """The ``op`` label of ``ambry_s3_requests`` / ``ambry_s3_request_seconds``:
    ``<method> <level>[ ?<first marker present>]``, e.g. ``GET object``, ``POST bucket
    ?delete``. Known before authentication (so 403s are labelled too); the AWS operation
    name (:attr:`Route.op`) is not, and changing the label would break dashboards."""
    sub = next((s for s in ("uploads", "uploadId", "delete", "location", "list-type",
                            "versions", "partNumber")
                if s in ctx.query), "")
    return f"{ctx.method} {level_of(ctx)}{' ?' + sub if sub else ''}"
