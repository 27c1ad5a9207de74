"""S3 features that tools use (issue 14, "Missing features"), against a real store started
with the accounts and S3 key pairs of config/local.yaml (so the second development account
is tried as shipped): GET/HEAD ``?partNumber``, SigV4 dated by ``Date``, ListBuckets paging,
ListObjectVersions and ``versionId=null``, and what one account can do to the other's data.
Chunks are 1 MiB here, so a 1.5 MiB part is two chunk blobs."""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
import urllib3
import yaml
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from fe_helpers import SERVICE, store_fixture
from s3_helpers import Raw, get_url, xml_text

from ambry.testing.frontend import StoreCluster

KIB, MIB = 1024, 1024 * 1024
REGION = "us-east-1"
LOCAL = yaml.safe_load((Path(__file__).parents[2] / "config" / "local.yaml").read_text())
#: the development key pairs as shipped: account name -> (access key, secret key)
DEV_KEYS = {k["account"]: (k["access_key"], k["secret_key"])
            for k in LOCAL["s3"]["access_keys"]}
_POOL = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    s3 = {**LOCAL["s3"], "min_part_size_bytes": "1MiB"}  # small parts keep the test fast
    yield from store_fixture(tmp_path_factory.mktemp("s3-features"), datacenters=1,
                             nodes_per_dc=3, partitions=4, accounts=LOCAL["accounts"],
                             extra={"s3": s3})


def client(store: StoreCluster, account: str = "default") -> Any:
    ak, sk = DEV_KEYS[account]
    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2,
                                                           "mode": "standard"})
    return boto3.client("s3", endpoint_url=store.s3_url(), aws_access_key_id=ak,
                        aws_secret_access_key=sk, region_name=REGION, config=cfg)


@pytest.fixture(scope="module")
def s3(store: StoreCluster) -> Any:
    return client(store)


@pytest.fixture(scope="module")
def team(store: StoreCluster) -> Any:
    return client(store, "team")


def code_of(e: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    err = e.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def signed(store: StoreCluster, method: str, path: str, *, account: str = "default",
           headers: Mapping[str, str] | None = None, body: bytes = b"",
           at: datetime.datetime | None = None, unsigned: frozenset[str] = frozenset(),
           after_signing: Mapping[str, str] | None = None) -> Raw:
    """One request signed by botocore with a development key pair. ``at`` fakes the signer's
    clock; header names in ``unsigned`` are left out of SignedHeaders (the signature is still
    right over the rest); ``after_signing`` headers are added once the request is signed."""
    ak, sk = DEV_KEYS[account]

    class Signer(S3SigV4Auth):
        def headers_to_sign(self, request: Any) -> Any:
            out = super().headers_to_sign(request)
            for name in unsigned:
                del out[name]
            return out

    req = AWSRequest(method=method, url=store.s3_url() + path, data=body,
                     headers=dict(headers or {}))
    if at is None:
        Signer(Credentials(ak, sk), "s3", REGION).add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", lambda **_: at):
            Signer(Credentials(ak, sk), "s3", REGION).add_auth(req)
    h = {**dict(req.headers.items()), **(after_signing or {})}
    r = _POOL.request(method, req.url, body=body or None, headers=h, redirect=False)
    return Raw(r.status, r.headers, r.data)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


# ------------------------------------------------------------------ GET/HEAD ?partNumber
def upload_parts(s3: Any, bucket: str, key: str, parts: dict[int, bytes]) -> str:
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=up,
                                                     PartNumber=n, Body=data)["ETag"]}
            for n, data in parts.items()]
    return str(s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up,
                                            MultipartUpload={"Parts": done})["ETag"])


def test_get_part_of_a_multipart_object_serves_that_parts_bytes(s3: Any) -> None:
    # broke: GET/HEAD ?partNumber=N was 501, so part-wise downloads and checksum checks failed
    s3.create_bucket(Bucket="parts")
    # uploaded as parts 1, 3 and 7: a GET numbers the completed parts 1, 2, 3 (as AWS)
    parts = {1: os.urandom(3 * MIB // 2), 3: os.urandom(5 * MIB // 4), 7: os.urandom(300 * KIB)}
    etag = upload_parts(s3, "parts", "model.bin", parts)
    whole = b"".join(parts.values())
    start = 0
    digests = []
    for n, data in enumerate(parts.values(), start=1):
        got = s3.get_object(Bucket="parts", Key="model.bin", PartNumber=n)
        body = got["Body"].read()
        assert body == data
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"] == f"bytes {start}-{start + len(data) - 1}/{len(whole)}"
        assert got["PartsCount"] == 3 and got["ETag"] == etag
        head = s3.head_object(Bucket="parts", Key="model.bin", PartNumber=n)
        assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert head["ContentLength"] == len(data) and head["PartsCount"] == 3
        assert head["ContentRange"] == got["ContentRange"]
        digests.append(hashlib.md5(body).digest())
        start += len(data)
    # part-wise validation as sync tools do it: the multipart ETag from the parts' MD5s
    assert etag == f'"{hashlib.md5(b"".join(digests)).hexdigest()}-3"'
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="parts", Key="model.bin", PartNumber=4)
    assert code_of(e) == ("InvalidPartNumber", 416)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="parts", Key="model.bin", PartNumber=4)
    assert code_of(e)[1] == 416
    # a plain GET still says how many parts there are, and is the whole object
    got = s3.get_object(Bucket="parts", Key="model.bin")
    assert got["Body"].read() == whole and got["PartsCount"] == 3


def test_part_number_bad_values_and_range_together_are_400(store: StoreCluster,
                                                           s3: Any) -> None:
    # broke: every ?partNumber was 501 NotImplemented
    s3.create_bucket(Bucket="parts-bad")
    s3.put_object(Bucket="parts-bad", Key="k", Body=b"0123456789")
    for bad in ("0", "10001", "abc", "-1", "1.5", "", "%C2%B2"):  # %C2%B2: "²".isdigit()
        r = signed(store, "GET", f"/parts-bad/k?partNumber={bad}")
        assert (r.status, r.code) == (400, "InvalidArgument"), (bad, r.status, r.body[:300])
    r = signed(store, "GET", "/parts-bad/k?partNumber=1", headers={"Range": "bytes=0-1"})
    assert (r.status, r.code) == (400, "InvalidRequest")
    assert signed(store, "GET", "/parts-bad/missing?partNumber=1").status == 404


def test_part_number_one_of_a_single_put_object_is_the_whole_object(s3: Any) -> None:
    # broke: 501; AWS answers part 1 of an object of one PUT as a range of all of it
    s3.create_bucket(Bucket="parts-single")
    s3.put_object(Bucket="parts-single", Key="k", Body=b"0123456789")
    got = s3.get_object(Bucket="parts-single", Key="k", PartNumber=1)
    assert got["Body"].read() == b"0123456789"
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == "bytes 0-9/10" and "PartsCount" not in got
    head = s3.head_object(Bucket="parts-single", Key="k", PartNumber=1)
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206 and head["ContentLength"] == 10
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="parts-single", Key="k", PartNumber=2)
    assert code_of(e) == ("InvalidPartNumber", 416)
    # an empty object: part 1 is empty, 200 without a Content-Range (no byte to range over)
    s3.put_object(Bucket="parts-single", Key="empty", Body=b"")
    got = s3.get_object(Bucket="parts-single", Key="empty", PartNumber=1)
    assert got["Body"].read() == b"" and got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "ContentRange" not in got


def test_multipart_object_without_a_part_map_reads_as_one_part(store: StoreCluster,
                                                                s3: Any) -> None:
    # broke: 501. An object completed before part maps were stored (made here through the
    # REST API: a composite blob with a multipart ETag and no map) has no known boundaries:
    # it is served as one part, whole, and says so, so a part-wise downloader stops at 1
    data = os.urandom(5 * MIB // 2)
    get_url(store.url("dc1", "/named/default/default/legacy-multipart"), method="PUT",
            body=data, headers={**SERVICE, "x-ambry-content-type": "application/x-test",
                                "x-ambry-um-s3.etag": '"0123456789abcdef0123456789abcdef-2"'}
            ).expect(201)
    assert s3.head_object(Bucket="default", Key="legacy-multipart")["PartsCount"] == 2
    got = s3.get_object(Bucket="default", Key="legacy-multipart", PartNumber=1)
    assert got["Body"].read() == data and got["PartsCount"] == 1
    assert got["ContentRange"] == f"bytes 0-{len(data) - 1}/{len(data)}"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="default", Key="legacy-multipart", PartNumber=2)
    assert code_of(e) == ("InvalidPartNumber", 416)


def test_a_client_cannot_forge_the_part_map_through_x_amz_meta(s3: Any) -> None:
    # the liar: the part map is user metadata of the S3 layer; a client's
    # x-amz-meta-s3.part-sizes must not split a single PUT into parts (and before the fix
    # partNumber was 501 anyway)
    s3.create_bucket(Bucket="parts-forge")
    s3.put_object(Bucket="parts-forge", Key="k", Body=b"0123456789",
                  Metadata={"s3.part-sizes": "5*2", "s3.etag": '"00-2"'})
    got = s3.get_object(Bucket="parts-forge", Key="k", PartNumber=1)
    assert got["Body"].read() == b"0123456789" and "PartsCount" not in got
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="parts-forge", Key="k", PartNumber=2)
    assert code_of(e) == ("InvalidPartNumber", 416)
    # nor does a copy of a multipart object carry the map to the (single-PUT) copy
    upload_parts(s3, "parts-forge", "mp", {1: os.urandom(MIB + 1), 2: b"tail"})
    s3.copy_object(Bucket="parts-forge", Key="mp-copy",
                   CopySource={"Bucket": "parts-forge", "Key": "mp"})
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="parts-forge", Key="mp-copy", PartNumber=2)
    assert code_of(e) == ("InvalidPartNumber", 416)


# ------------------------------------------------------------------ SigV4 dated by Date
def test_sigv4_dated_by_the_date_header_is_accepted(store: StoreCluster) -> None:
    # broke: botocore signs with Date (not X-Amz-Date) whenever the caller sets one: 403
    now = email.utils.formatdate(usegmt=True)
    r = signed(store, "PUT", "/default/dated", body=b"by date", headers={"Date": now})
    assert "X-Amz-Date" not in r.headers and r.status == 200, r.body[:300]
    r = signed(store, "GET", "/default/dated", headers={"Date": now})
    assert (r.status, r.body) == (200, b"by date")


def test_sigv4_date_header_outside_the_skew_window_or_unsigned_is_refused(
        store: StoreCluster) -> None:
    # the straggler and the liar: a Date 20 minutes old is as stale as such an X-Amz-Date
    # (and it was 403 AccessDenied "not supported" before, not the skew error)
    old = utcnow() - datetime.timedelta(minutes=20)
    r = signed(store, "GET", "/", headers={"Date": "x"}, at=old)
    assert (r.status, r.code) == (403, "RequestTimeTooSkewed"), r.body[:300]
    future = utcnow() + datetime.timedelta(minutes=20)
    r = signed(store, "GET", "/", headers={"Date": "x"}, at=future)
    assert (r.status, r.code) == (403, "RequestTimeTooSkewed")
    # a Date left out of SignedHeaders could be swapped in transit: refused
    r = signed(store, "GET", "/", headers={"Date": "x"}, unsigned=frozenset({"date"}))
    assert (r.status, r.code) == (403, "AccessDenied"), r.body[:300]
    assert b"Date" in r.body
    # a Date that is no date
    r = signed(store, "GET", "/", headers={"Date": "x"},
               after_signing={"Date": "yesterday at noon"})
    assert (r.status, r.code) == (403, "AccessDenied")
    assert signed(store, "GET", "/", headers={"Date": "x"}).status == 200


def test_sigv4_x_amz_date_wins_over_date(store: StoreCluster) -> None:
    # both present: the request is dated by X-Amz-Date, as on AWS. A fresh X-Amz-Date with
    # an ancient, unsigned Date passes; a stale X-Amz-Date with a fresh Date is too skewed
    ancient = "Mon, 01 Jan 1990 00:00:00 GMT"
    r = signed(store, "GET", "/", after_signing={"Date": ancient})
    assert r.status == 200, r.body[:300]
    old = utcnow() - datetime.timedelta(minutes=20)
    r = signed(store, "GET", "/", at=old,
               after_signing={"Date": email.utils.formatdate(usegmt=True)})
    assert (r.status, r.code) == (403, "RequestTimeTooSkewed")
    # a request signed by Date that also carries a stale X-Amz-Date is dated by the latter
    stale = (utcnow() - datetime.timedelta(minutes=20)).strftime("%Y%m%dT%H%M%SZ")
    r = signed(store, "GET", "/", headers={"Date": "x"}, after_signing={"X-Amz-Date": stale})
    assert (r.status, r.code) == (403, "RequestTimeTooSkewed")
    # (broke: a request dated by Date alone was 403 whatever its Date)
    assert signed(store, "GET", "/", headers={"Date": "x"}).status == 200


# ------------------------------------------------------------------ ListBuckets paging
def test_list_buckets_pages_with_max_buckets_and_continuation_token(team: Any) -> None:
    # broke: max-buckets, continuation-token and prefix were ignored (every bucket, one page)
    names = [f"page-{c}" for c in "abcde"]
    for n in names:
        team.create_bucket(Bucket=n)
    seen: list[str] = []
    kw: dict[str, Any] = {"MaxBuckets": 2, "Prefix": "page-"}
    pages = 0
    while True:
        r = team.list_buckets(**kw)
        assert r["Prefix"] == "page-" and len(r["Buckets"]) <= 2
        assert all(b["BucketRegion"] == REGION for b in r["Buckets"])
        seen += [b["Name"] for b in r["Buckets"]]
        pages += 1
        if "ContinuationToken" not in r:
            break
        kw["ContinuationToken"] = r["ContinuationToken"]
    assert seen == names and pages == 3
    # the paginator does the same
    got = [b["Name"] for p in team.get_paginator("list_buckets").paginate(
        Prefix="page-", PaginationConfig={"PageSize": 2}) for b in p["Buckets"]]
    assert got == names
    # without max-buckets: one page, no token, every bucket of the account (config ones too)
    r = team.list_buckets()
    assert "ContinuationToken" not in r and {"shared", *names} <= {b["Name"]
                                                                   for b in r["Buckets"]}
    assert team.list_buckets(BucketRegion="eu-west-3")["Buckets"] == []


def test_list_buckets_bad_paging_values_are_400(store: StoreCluster) -> None:
    # broke: ignored, so a client asking for 0 or a junk token got every bucket
    for q in ("max-buckets=0", "max-buckets=10001", "max-buckets=abc", "max-buckets=",
              "max-buckets=-1", "continuation-token=%21%21%21"):
        r = signed(store, "GET", f"/?{q}")
        assert (r.status, r.code) == (400, "InvalidArgument"), (q, r.status, r.body[:300])


# ------------------------------------------------------------------ ListObjectVersions
def test_list_object_versions_lists_each_object_as_version_null(store: StoreCluster,
                                                                 s3: Any) -> None:
    # broke: GET ?versions was 501, which cleanup paths of boto3 and test suites call
    s3.create_bucket(Bucket="versions")
    keys = ["a", "b/1", "b/2", "c d", "e"]
    for k in keys:
        s3.put_object(Bucket="versions", Key=k, Body=k.encode())
    r = s3.list_object_versions(Bucket="versions")
    assert [v["Key"] for v in r["Versions"]] == keys and not r["IsTruncated"]
    assert all(v["VersionId"] == "null" and v["IsLatest"] and v["StorageClass"] == "STANDARD"
               for v in r["Versions"])
    assert r["Versions"][0]["Size"] == 1 and r["Versions"][0]["ETag"] == \
        f'"{hashlib.md5(b"a").hexdigest()}"'
    assert "DeleteMarkers" not in r
    # paging: one at a time, through NextKeyMarker / NextVersionIdMarker
    got: list[str] = []
    kw: dict[str, Any] = {"MaxKeys": 2}
    while True:
        r = s3.list_object_versions(Bucket="versions", **kw)
        got += [v["Key"] for v in r["Versions"]]
        if not r["IsTruncated"]:
            break
        assert r["NextVersionIdMarker"] == "null"
        kw = {"MaxKeys": 2, "KeyMarker": r["NextKeyMarker"],
              "VersionIdMarker": r["NextVersionIdMarker"]}
    assert got == keys
    # delimiter and prefix
    r = s3.list_object_versions(Bucket="versions", Delimiter="/")
    assert [v["Key"] for v in r["Versions"]] == ["a", "c d", "e"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/"]
    r = s3.list_object_versions(Bucket="versions", Prefix="b/", KeyMarker="b/1")
    assert [v["Key"] for v in r["Versions"]] == ["b/2"]
    # encoding-type=url encodes the keys (boto3 decodes them again)
    raw = signed(store, "GET", "/versions?versions&encoding-type=url&prefix=c")
    assert xml_text(raw.expect(200).body, "Key") == "c%20d"
    # bad markers
    for q in ("version-id-marker=null", "key-marker=a&version-id-marker=3HL4kqtJlcpXroDTDmJ",
              "encoding-type=base64", "max-keys=x"):
        r2 = signed(store, "GET", f"/versions?versions&{q}")
        assert (r2.status, r2.code) == (400, "InvalidArgument"), (q, r2.body[:300])


def test_object_versions_delete_empties_the_bucket(store: StoreCluster) -> None:
    # broke: boto3's bucket.object_versions.delete() (a common cleanup) failed on ?versions
    ak, sk = DEV_KEYS["default"]
    res = boto3.resource("s3", endpoint_url=store.s3_url(), aws_access_key_id=ak,
                         aws_secret_access_key=sk, region_name=REGION,
                         config=Config(s3={"addressing_style": "path"}))
    bucket = res.Bucket("versions-cleanup")
    bucket.create()
    for i in range(7):
        bucket.put_object(Key=f"dir/{i}", Body=b"x")
    bucket.object_versions.page_size(3).delete()
    assert list(bucket.objects.all()) == []
    bucket.delete()


def test_version_id_null_on_object_requests(store: StoreCluster, s3: Any) -> None:
    # broke: ?versionId was ignored, so versionId=<anything> read or deleted the object
    s3.create_bucket(Bucket="version-null")
    s3.put_object(Bucket="version-null", Key="k", Body=b"v")
    assert s3.get_object(Bucket="version-null", Key="k", VersionId="null")["Body"].read() \
        == b"v"
    assert s3.head_object(Bucket="version-null", Key="k", VersionId="null")["ContentLength"] \
        == 1
    for method in ("GET", "HEAD", "DELETE"):
        r = signed(store, method, "/version-null/k?versionId=3HL4kqtJlcpXroDTDmJ")
        assert r.status == 400, (method, r.status)
        assert method == "HEAD" or r.code == "InvalidArgument"
    assert s3.get_object(Bucket="version-null", Key="k")["Body"].read() == b"v"  # still there
    s3.delete_object(Bucket="version-null", Key="k", VersionId="null")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="version-null", Key="k")
    assert code_of(e)[1] == 404
    # DeleteObjects: a null version deletes, another version id is an error for that key
    for k in ("x", "y"):
        s3.put_object(Bucket="version-null", Key=k, Body=b"v")
    r = s3.delete_objects(Bucket="version-null", Delete={"Objects": [
        {"Key": "x", "VersionId": "null"}, {"Key": "y", "VersionId": "abc"}]})
    assert [(d["Key"], d.get("VersionId")) for d in r["Deleted"]] == [("x", "null")]
    assert [(e["Key"], e["Code"]) for e in r["Errors"]] == [("y", "InvalidArgument")]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="version-null")["Contents"]] == ["y"]


# ------------------------------------------------------------------ two accounts
def test_the_second_development_account_cannot_reach_the_first_ones_data(
        store: StoreCluster, s3: Any, team: Any) -> None:
    # broke: config/local.yaml had one account, so this could not be tried locally. Buckets
    # are scoped per account (docs/s3.md): a name resolves in the caller's own account, so
    # the other's bucket is simply not there (404 NoSuchBucket, never its data), and the
    # same name made by each account holds two separate sets of objects.
    assert {"default", "team"} <= set(DEV_KEYS)
    s3.create_bucket(Bucket="alpha-private")
    s3.put_object(Bucket="alpha-private", Key="secret", Body=b"default's")
    up = s3.create_multipart_upload(Bucket="alpha-private", Key="mp")["UploadId"]
    team.create_bucket(Bucket="team-only")
    team.put_object(Bucket="team-only", Key="secret", Body=b"team's")
    for me, own, other in ((team, "shared", "alpha-private"), (s3, "default", "team-only")):
        for op, kw in (("head_bucket", {}), ("list_objects_v2", {}),
                       ("get_object", {"Key": "secret"}),
                       ("put_object", {"Key": "x", "Body": b"x"}),
                       ("delete_object", {"Key": "secret"}), ("delete_bucket", {})):
            with pytest.raises(ClientError) as e:
                getattr(me, op)(Bucket=other, **kw)
            assert code_of(e) == ("NoSuchBucket", 404) or op == "head_bucket", (op, e.value)
            assert code_of(e)[1] == 404
        with pytest.raises(ClientError) as e:  # copy from the other's bucket into one's own
            me.copy_object(Bucket=own, Key="stolen", CopySource={"Bucket": other,
                                                                 "Key": "secret"})
        assert code_of(e) == ("NoSuchBucket", 404)
    # the other account's upload id is nothing to this one, even under the same bucket name
    team.create_bucket(Bucket="alpha-private")
    for call in (lambda: team.list_parts(Bucket="alpha-private", Key="mp", UploadId=up),
                 lambda: team.upload_part(Bucket="alpha-private", Key="mp", UploadId=up,
                                          PartNumber=1, Body=b"x"),
                 lambda: team.abort_multipart_upload(Bucket="alpha-private", Key="mp",
                                                     UploadId=up)):
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == ("NoSuchUpload", 404)
    assert team.list_objects_v2(Bucket="alpha-private")["KeyCount"] == 0
    assert team.list_multipart_uploads(Bucket="alpha-private").get("Uploads", []) == []
    # a key pair signs only for itself: team's key with default's secret is refused
    ak, _ = DEV_KEYS["team"]
    _, default_secret = DEV_KEYS["default"]
    forged = boto3.client("s3", endpoint_url=store.s3_url(), aws_access_key_id=ak,
                          aws_secret_access_key=default_secret, region_name=REGION,
                          config=Config(s3={"addressing_style": "path"}))
    with pytest.raises(ClientError) as e:
        forged.list_buckets()
    assert code_of(e) == ("SignatureDoesNotMatch", 403)
    # and everything of the first account is untouched
    assert s3.get_object(Bucket="alpha-private", Key="secret")["Body"].read() == b"default's"
    assert [u["UploadId"] for u in s3.list_multipart_uploads(
        Bucket="alpha-private")["Uploads"]] == [up]
    assert {b["Name"] for b in team.list_buckets()["Buckets"]}.isdisjoint(
        {"default", "models", "datasets"})
