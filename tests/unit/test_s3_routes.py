"""The S3 route table (ambry/frontend/s3/routes.py) against the dispatcher it replaced.

The table must name real handlers, one AWS operation per row, no row hidden behind another,
and send every request where the hand-written if/elif dispatch of ``S3Api._dispatch`` sent
it (kept below, as it was, as the oracle): same operation, same 501 / 403 / 405.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ambry.common.config import load_config
from ambry.frontend.app import make_app
from ambry.frontend.s3.app import make_s3_app
from ambry.frontend.s3.context import Ctx
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.routes import (
    PARTLY_SUPPORTED,
    RESOURCES,
    ROUTES,
    UNSUPPORTED,
    Route,
    metric_label,
    resolve,
)


def _ctx(method: str, bucket: str | None = None, key: str | None = None,
         query: dict[str, str] | None = None, headers: dict[str, str] | None = None,
         read_only: bool = False) -> Ctx:
    q = dict(query or {})
    return Ctx("rid", method, bucket, key, q, list(q.items()), dict(headers or {}),
               read_only=read_only)


def _outcome(ctx: Ctx) -> str:
    """The operation a request resolves to, or ``<status> <S3 code>``."""
    try:
        return resolve(ctx).op
    except S3Error as e:
        return f"{e.status} {e.s3_code}"


# ---------------------------------------------------------------- the table itself
def test_every_route_names_a_handler_of_a_resource_the_app_builds(tmp_path: Path) -> None:
    # a row naming a function the app has no instance for would fail only when that request
    # came: here every row is checked against a real S3 app
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "datacenters": [{"name": "dc1", "id": 1}],
        "nodes": [{"id": f"n{i}", "datacenter": "dc1", "host": "127.0.0.1",
                   "port": 9000 + i, "http_port": 9100 + i} for i in range(3)],
        "partitions": {"count": 2},
        "frontend": {"signed_url_secret": "unit-test-secret-0123456789abcdef"}}))
    api = make_s3_app(make_app(load_config(path), "dc1")["frontend"])["s3"]
    assert set(api.resources) == set(RESOURCES)
    for r in ROUTES:
        assert r.owner in RESOURCES, r
        assert getattr(r.owner, r.handler.__name__) is r.handler, r
        bound = getattr(api.resources[r.owner], r.handler.__name__)
        assert inspect.iscoroutinefunction(bound), r
        assert list(inspect.signature(bound).parameters) == ["request", "ctx"], r


def test_route_op_names_and_selectors_are_unique() -> None:
    ops = [r.op for r in ROUTES]
    assert len(ops) == len(set(ops)), sorted(o for o in ops if ops.count(o) > 1)
    keys = [(r.level, r.method, r.marker) for r in ROUTES]
    assert len(keys) == len(set(keys))


def _request_for(r: Route) -> Ctx:
    """The smallest request its marker selects: the first alternative of every term."""
    query: dict[str, str] = {}
    headers: dict[str, str] = {}
    for term in r.marker.split():
        alt = term.split("|")[0]
        if alt.startswith("?"):
            name, _, value = alt[1:].partition("=")
            query[name] = value
        else:
            headers[alt] = "src/key"
    bucket = None if r.level == "service" else "b"
    key = "k" if r.level == "object" else None
    return _ctx(r.method, bucket, key, query, headers)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.op)
def test_no_route_is_shadowed_by_an_earlier_one(route: Route) -> None:
    # a row below a broader row of the same level and method would never be reached
    assert resolve(_request_for(route)) is route


# ---------------------------------------------------------------- representative requests
@pytest.mark.parametrize(("method", "bucket", "key", "query", "headers", "expected"), [
    ("GET", None, None, {}, {}, "ListBuckets"),
    ("HEAD", None, None, {}, {}, "405 MethodNotAllowed"),
    ("PUT", None, None, {}, {}, "405 MethodNotAllowed"),
    ("PUT", "b", None, {}, {}, "CreateBucket"),
    ("PUT", "b", None, {"versioning": ""}, {}, "PutBucketVersioning"),
    ("GET", "b", None, {"versioning": ""}, {}, "GetBucketVersioning"),
    ("GET", "b", None, {}, {}, "ListObjects"),
    ("GET", "b", None, {"list-type": "2"}, {}, "ListObjectsV2"),
    ("GET", "b", None, {"list-type": "1"}, {}, "ListObjects"),
    ("GET", "b", None, {"versions": ""}, {}, "ListObjectVersions"),
    ("GET", "b", None, {"versions": "", "list-type": "2"}, {}, "ListObjectVersions"),
    ("GET", "b", None, {"uploads": "", "versions": ""}, {}, "ListMultipartUploads"),
    ("GET", "b", None, {"location": "", "uploads": ""}, {}, "GetBucketLocation"),
    ("POST", "b", None, {"delete": ""}, {}, "DeleteObjects"),
    ("POST", "b", None, {}, {}, "405 MethodNotAllowed"),
    ("GET", "b", "k", {}, {}, "GetObject"),
    ("GET", "b", "k", {"partNumber": "2"}, {}, "GetObject"),
    ("GET", "b", "k", {"uploadId": "u"}, {}, "ListParts"),
    ("HEAD", "b", "k", {"uploadId": "u"}, {}, "HeadObject"),
    ("HEAD", "b", "k", {"partNumber": "1"}, {}, "HeadObject"),
    ("PUT", "b", "k", {}, {}, "PutObject"),
    ("PUT", "b", "k", {}, {"x-amz-copy-source": "s/k"}, "CopyObject"),
    ("PUT", "b", "k", {"partNumber": "1", "uploadId": "u"}, {}, "UploadPart"),
    ("PUT", "b", "k", {"partNumber": "1", "uploadId": "u"}, {"x-amz-copy-source": "s/k"},
     "UploadPartCopy"),
    ("PUT", "b", "k", {"partNumber": "1"}, {"x-amz-copy-source": "s/k"}, "UploadPartCopy"),
    ("PUT", "b", "k", {"uploadId": "u"}, {}, "UploadPart"),
    ("DELETE", "b", "k", {}, {}, "DeleteObject"),
    ("DELETE", "b", "k", {"uploadId": "u"}, {}, "AbortMultipartUpload"),
    ("POST", "b", "k", {"uploads": ""}, {}, "CreateMultipartUpload"),
    ("POST", "b", "k", {"uploadId": "u"}, {}, "CompleteMultipartUpload"),
    ("POST", "b", "k", {"uploads": "", "uploadId": "u"}, {}, "CreateMultipartUpload"),
    ("POST", "b", "k", {}, {}, "405 MethodNotAllowed"),
    ("PATCH", "b", "k", {}, {}, "405 MethodNotAllowed"),
    ("GET", "b", None, {"acl": ""}, {}, "GetBucketAcl"),
    ("PUT", "b", "k", {"acl": ""}, {}, "PutObjectAcl"),
    ("DELETE", "b", "k", {"acl": ""}, {}, "501 NotImplemented"),
    ("GET", None, None, {"acl": ""}, {}, "501 NotImplemented"),
    ("GET", "b", None, {"acl": "", "policy": ""}, {}, "501 NotImplemented"),
    ("PUT", "b", "k", {"tagging": "", "uploadId": "u"}, {}, "501 NotImplemented"),
])
def test_representative_requests_resolve_as_before(method: str, bucket: str | None,
                                                   key: str | None, query: dict[str, str],
                                                   headers: dict[str, str],
                                                   expected: str) -> None:
    assert _outcome(_ctx(method, bucket, key, query, headers)) == expected


def test_read_only_principal_writes_are_403_after_501_and_before_405() -> None:
    # anonymous (read-only) access: a write is refused before routing, an unsupported
    # sub-resource is still 501 first, and reads route as usual
    assert _outcome(_ctx("PUT", "b", "k", read_only=True)) == "403 AccessDenied"
    assert _outcome(_ctx("POST", "b", read_only=True)) == "403 AccessDenied"
    assert _outcome(_ctx("PUT", "b", "k", {"policy": ""}, read_only=True)) == \
        "501 NotImplemented"
    assert _outcome(_ctx("PUT", "b", "k", {"acl": ""}, read_only=True)) == "403 AccessDenied"
    assert _outcome(_ctx("GET", "b", "k", read_only=True)) == "GetObject"


def test_metric_labels_are_unchanged_by_the_table() -> None:
    # dashboards (and test_s3_hostile) read these labels: the table must not rename them
    assert metric_label(_ctx("GET", "b", "k")) == "GET object"
    assert metric_label(_ctx("POST", "b", None, {"delete": ""})) == "POST bucket ?delete"
    assert metric_label(_ctx("PUT", "b", "k", {"partNumber": "1", "uploadId": "u"})) == \
        "PUT object ?uploadId"
    assert metric_label(_ctx("GET", None, None)) == "GET service"
    assert metric_label(_ctx("GET", "b", None, {"list-type": "2", "versions": ""})) == \
        "GET bucket ?list-type"


# ---------------------------------------------------------------- against the old dispatcher
_OLD_UNSUPPORTED = frozenset({
    "acl", "policy", "cors", "lifecycle", "tagging", "website", "replication", "encryption",
    "notification", "logging", "object-lock", "retention", "legal-hold", "torrent", "restore",
    "select", "analytics", "metrics", "inventory", "intelligent-tiering", "ownershipControls",
    "publicAccessBlock", "requestPayment", "accelerate", "policyStatus", "attributes"})


def _old_dispatch(ctx: Ctx) -> str:
    """``S3Api._dispatch`` before the route table (commit 98c2ca3), each ``return await
    self.<handler>(...)`` replaced by the operation it served."""
    m, q = ctx.method, ctx.query
    # issue 14: GET / PUT ?acl of a bucket or object are served (the owner's full control)
    if ("acl" in q and ctx.bucket is not None and m in ("GET", "PUT")
            and not (_OLD_UNSUPPORTED - {"acl"}) & q.keys()):
        if m == "PUT" and ctx.read_only:
            return "403 AccessDenied"
        return f"{m.title()}{'Object' if ctx.key else 'Bucket'}Acl"
    unsupported = _OLD_UNSUPPORTED & q.keys()
    if unsupported:
        return "501 NotImplemented"
    if m not in ("GET", "HEAD") and ctx.read_only:
        return "403 AccessDenied"
    if ctx.bucket is None:
        if m == "GET":
            return "ListBuckets"
        return "405 MethodNotAllowed"
    if ctx.key is None:
        if m == "PUT":
            if "versioning" in q:
                return "PutBucketVersioning"  # raised 501 NotImplemented inline
            return "CreateBucket"
        if m == "HEAD":
            return "HeadBucket"
        if m == "DELETE":
            return "DeleteBucket"
        if m == "POST" and "delete" in q:
            return "DeleteObjects"
        if m == "GET":
            if "location" in q:
                return "GetBucketLocation"
            if "versioning" in q:
                return "GetBucketVersioning"
            if "uploads" in q:
                return "ListMultipartUploads"
            if "versions" in q:
                return "ListObjectVersions"
            return "ListObjectsV2" if q.get("list-type") == "2" else "ListObjects"
        return "405 MethodNotAllowed"
    if m in ("GET", "HEAD"):
        if "uploadId" in q and m == "GET":
            return "ListParts"
        return "GetObject" if m == "GET" else "HeadObject"
    if m == "PUT":
        if "uploadId" in q or "partNumber" in q:
            # upload_part branched to _upload_part_copy on the header
            return "UploadPartCopy" if "x-amz-copy-source" in ctx.h else "UploadPart"
        if "x-amz-copy-source" in ctx.h:
            return "CopyObject"
        return "PutObject"
    if m == "DELETE":
        if "uploadId" in q:
            return "AbortMultipartUpload"
        return "DeleteObject"
    if m == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
    return "405 MethodNotAllowed"


_QUERY_KEYS = ("uploads", "uploadId", "partNumber", "delete", "location", "versioning",
               "versions", "list-type", "acl")


def _all_requests() -> Iterator[Ctx]:
    """Every level x method x subset of the sub-resources that select an operation (and one
    unsupported one), ``list-type`` 1 and 2, with and without a copy source, read-only or
    not: about 60,000 requests, all of them."""
    for level, method, n, copy, read_only in itertools.product(
            ("service", "bucket", "object"),
            ("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"),
            range(2 ** len(_QUERY_KEYS)), (False, True), (False, True)):
        keys = [k for i, k in enumerate(_QUERY_KEYS) if n >> i & 1]
        for list_type in (("1", "2") if "list-type" in keys else ("",)):
            query = {k: (list_type if k == "list-type" else "") for k in keys}
            yield _ctx(method, None if level == "service" else "b",
                       "k" if level == "object" else None, query,
                       {"x-amz-copy-source": "src/k"} if copy else {}, read_only=read_only)


def test_every_request_resolves_as_the_old_dispatcher_did() -> None:
    # the table replaced a hand-written if/elif chain: every request (method, level, any mix
    # of sub-resources, a copy source, read-only or not) must reach the same operation or
    # error
    n = 0
    for ctx in _all_requests():
        assert _outcome(ctx) == _old_dispatch(ctx), ctx
        n += 1
    assert n > 50_000


def test_unsupported_sub_resources_are_the_old_set() -> None:
    assert UNSUPPORTED | PARTLY_SUPPORTED.keys() == _OLD_UNSUPPORTED
