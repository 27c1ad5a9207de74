"""The S3 API against a real store (three storage nodes and a frontend, started once for this
module) through boto3, and through botocore's signer where boto3 hides status codes, headers
or XML. Chunks are 1 MiB here, so an 8 MiB multipart part is eight chunk blobs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3.s3.transfer
import botocore.httpchecksum
import pytest
from botocore.exceptions import ClientError
from fe_helpers import SERVICE, node_records, store_fixture, until
from s3_helpers import Raw, get_url, raw, s3_client, xml_text

from ambry.common.blobid import BlobType, decode
from ambry.testing.frontend import StoreCluster

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("s3-api"), datacenters=1,
                             nodes_per_dc=3, partitions=4)


@pytest.fixture(scope="module")
def s3(store: StoreCluster) -> Any:
    return s3_client(store)


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="objects")
    return "objects"


def code_of(e: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    err = e.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def url(store: StoreCluster, path: str) -> str:
    return store.s3_url() + path


# ------------------------------------------------------------------ buckets
def test_bucket_create_head_list_delete(s3: Any, store: StoreCluster) -> None:
    s3.create_bucket(Bucket="life-cycle")
    s3.create_bucket(Bucket="life-cycle")  # your own again: 200 in us-east-1, as AWS
    assert s3.head_bucket(Bucket="life-cycle")["ResponseMetadata"]["HTTPStatusCode"] == 200
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # the account's config containers are buckets too
    assert {"default", "models", "life-cycle"} <= set(names) and names == sorted(names)
    s3.put_object(Bucket="life-cycle", Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="life-cycle")
    assert code_of(e) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="life-cycle", Key="k")
    s3.delete_bucket(Bucket="life-cycle")
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="life-cycle")
    assert code_of(e)[1] == 404
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="life-cycle")
    assert code_of(e) == ("NoSuchBucket", 404)
    # made again after deletion: a new, empty bucket
    s3.create_bucket(Bucket="life-cycle")
    assert s3.list_objects_v2(Bucket="life-cycle")["KeyCount"] == 0


@pytest.mark.parametrize("name", ["ab", "UPPER", "-dash", "a..b", "192.168.1.1", "x" * 64])
def test_invalid_bucket_names_are_400(s3: Any, name: str) -> None:
    r = raw("PUT", url_of(s3, "/" + name))
    assert (r.status, r.code) == (400, "InvalidBucketName"), r.body


def url_of(s3: Any, path: str) -> str:
    return s3.meta.endpoint_url + path


def test_config_containers_cannot_be_deleted(s3: Any) -> None:
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="models")
    assert code_of(e) == ("AccessDenied", 403)


def test_buckets_belong_to_the_key_s_account(store: StoreCluster, s3: Any) -> None:
    team = s3_client(store, account="team")
    team.create_bucket(Bucket="team-only")
    assert "team-only" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="team-only")
    assert code_of(e)[1] == 404


def test_bucket_location_and_versioning(s3: Any, bucket: str) -> None:
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)


# ------------------------------------------------------------------ objects
def test_put_get_head_with_metadata_and_content_headers(s3: Any, bucket: str) -> None:
    body = b"hello, s3" * 100
    put = s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=body, ContentType="text/plain",
                        ContentEncoding="identity", ContentDisposition='attachment; f="h.txt"',
                        CacheControl="no-cache", ContentLanguage="en",
                        Metadata={"run": "42", "Mixed-Case": "v"})
    etag = f'"{hashlib.md5(body).hexdigest()}"'
    assert put["ETag"] == etag
    got = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == body
    head = s3.head_object(Bucket=bucket, Key="dir/hello.txt")
    for r in (got, head):
        assert r["ETag"] == etag and r["ContentLength"] == len(body)
        assert r["ContentType"] == "text/plain" and r["ContentEncoding"] == "identity"
        assert r["ContentDisposition"] == 'attachment; f="h.txt"'
        assert r["CacheControl"] == "no-cache" and r["ContentLanguage"] == "en"
        assert r["Metadata"] == {"run": "42", "mixed-case": "v"}
        assert r["AcceptRanges"] == "bytes"
        assert abs(r["LastModified"].timestamp() - time.time()) < 120


def test_default_content_type_and_empty_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    r = s3.get_object(Bucket=bucket, Key="empty")
    assert r["Body"].read() == b"" and r["ContentLength"] == 0
    assert r["ContentType"] == "binary/octet-stream"
    assert r["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'


def test_overwrite_replaces_and_delete_is_204_even_when_missing(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="over", Body=b"one")
    s3.put_object(Bucket=bucket, Key="over", Body=b"two")
    assert s3.get_object(Bucket=bucket, Key="over")["Body"].read() == b"two"
    assert s3.delete_object(Bucket=bucket, Key="over")["ResponseMetadata"][
        "HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=bucket, Key="over")["ResponseMetadata"][
        "HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=bucket, Key="never-was")["ResponseMetadata"][
        "HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="over")
    assert code_of(e) == ("NoSuchKey", 404)


def test_missing_key_error_xml(s3: Any, bucket: str) -> None:
    r = raw("GET", url_of(s3, f"/{bucket}/no/such/key"))
    assert (r.status, r.code) == (404, "NoSuchKey")
    assert r.headers["Content-Type"] == "application/xml"
    assert xml_text(r.body, "Key") == "no/such/key"
    assert xml_text(r.body, "RequestId") == r.headers["x-amz-request-id"]
    h = raw("HEAD", url_of(s3, f"/{bucket}/no/such/key"))
    assert (h.status, h.body) == (404, b"")
    r = raw("GET", url_of(s3, "/no-such-bucket/k"))
    assert (r.status, r.code) == (404, "NoSuchBucket")
    assert xml_text(r.body, "BucketName") == "no-such-bucket"


@pytest.mark.parametrize("key", ["a b+c", "ünï/cødé ✓", "pct%41%2F", "tilde~!*'()", "q?x=1&y",
                                 "trailing/", "semi;colon,comma"])
def test_unusual_keys_roundtrip_and_list(s3: Any, bucket: str, key: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]
    assert [o["Key"] for o in listed][:1] == [key]


def test_key_over_the_name_limit_is_400(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="k" * 351, Body=b"x")
    assert code_of(e) == ("KeyTooLongError", 400)


# ------------------------------------------------------------------ ranges, conditions
def test_ranged_gets_within_and_across_chunks(s3: Any, bucket: str) -> None:
    body = os.urandom(3 * MIB + 123)  # a composite of 4 chunks
    s3.put_object(Bucket=bucket, Key="ranged", Body=body)
    for rng, (a, b) in {"bytes=0-9": (0, 10), "bytes=-5": (len(body) - 5, len(body)),
                        f"bytes={MIB - 3}-{MIB + 3}": (MIB - 3, MIB + 4),
                        f"bytes={3 * MIB}-": (3 * MIB, len(body)),
                        "bytes=10-99999999999": (10, len(body))}.items():
        r = s3.get_object(Bucket=bucket, Key="ranged", Range=rng)
        assert r["Body"].read() == body[a:b], rng
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert r["ContentRange"] == f"bytes {a}-{b - 1}/{len(body)}"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="ranged", Range=f"bytes={len(body)}-")
    assert code_of(e) == ("InvalidRange", 416)
    r = raw("GET", url_of(s3, f"/{bucket}/ranged"), headers={"Range": f"bytes={len(body)}-"})
    assert r.headers["Content-Range"] == f"bytes */{len(body)}"
    # a range S3 ignores (malformed / multi-range): the whole object, 200
    r = raw("GET", url_of(s3, f"/{bucket}/ranged"), headers={"Range": "bytes=5-1"})
    assert r.status == 200 and r.body == body


def test_conditional_gets(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="cond", Body=b"conditional")
    head = s3.head_object(Bucket=bucket, Key="cond")
    etag, lm = head["ETag"], head["LastModified"]
    u = url_of(s3, f"/{bucket}/cond")
    assert raw("GET", u, headers={"If-None-Match": etag}).status == 304
    assert raw("GET", u, headers={"If-Match": etag}).status == 200
    r = raw("GET", u, headers={"If-Match": '"nope"'})
    assert (r.status, r.code) == (412, "PreconditionFailed")
    later = "Fri, 01 Jan 2100 00:00:00 GMT"
    earlier = "Fri, 01 Jan 2010 00:00:00 GMT"
    assert raw("GET", u, headers={"If-Modified-Since": later}).status == 304
    assert raw("GET", u, headers={"If-Modified-Since": earlier}).status == 200
    assert raw("GET", u, headers={"If-Unmodified-Since": earlier}).status == 412
    # AWS's combinations: If-Match true + If-Unmodified-Since false -> 200
    assert raw("GET", u, headers={"If-Match": etag, "If-Unmodified-Since": earlier}
               ).status == 200
    # If-None-Match false + If-Modified-Since true -> 304
    assert raw("GET", u, headers={"If-None-Match": etag, "If-Modified-Since": earlier}
               ).status == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="cond", IfModifiedSince=lm.replace(year=2100))
    assert code_of(e)[1] == 304


def test_put_if_none_match_star(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="once", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="once", Body=b"2", IfNoneMatch="*")
    assert code_of(e) == ("PreconditionFailed", 412)


# ------------------------------------------------------------------ multipart via boto3
def test_upload_file_multipart_with_8_mib_parts_and_download_file(
        s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    data = os.urandom(20 * MIB + 4321)
    src.write_bytes(data)
    cfg = boto3.s3.transfer.TransferConfig(multipart_threshold=8 * MIB,
                                           multipart_chunksize=8 * MIB, max_concurrency=3)
    s3.upload_file(str(src), bucket, "models/model.bin", Config=cfg,
                   ExtraArgs={"Metadata": {"epoch": "7"}, "ContentType": "application/x-pt"})
    head = s3.head_object(Bucket=bucket, Key="models/model.bin")
    md5s = [hashlib.md5(data[i:i + 8 * MIB]).digest() for i in range(0, len(data), 8 * MIB)]
    assert head["ETag"] == f'"{hashlib.md5(b"".join(md5s)).hexdigest()}-3"'
    assert head["ContentLength"] == len(data) and head["Metadata"] == {"epoch": "7"}
    assert head["ContentType"] == "application/x-pt"
    dst = tmp_path / "back.bin"
    s3.download_file(bucket, "models/model.bin", str(dst), Config=cfg)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()
    # a range across the boundary of parts 1 and 2
    r = s3.get_object(Bucket=bucket, Key="models/model.bin",
                      Range=f"bytes={8 * MIB - 10}-{8 * MIB + 9}")
    assert r["Body"].read() == data[8 * MIB - 10:8 * MIB + 10]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="models/")["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == \
        [("models/model.bin", len(data), head["ETag"])]


# ------------------------------------------------------------------ listing
@pytest.fixture(scope="module")
def many(s3: Any) -> list[str]:
    """1,100 keys in a bucket of their own: 1,000 under page/, 50 under a/<n>/, 50 at top."""
    s3.create_bucket(Bucket="many")
    keys = [f"page/{i:04d}" for i in range(1000)] + \
        [f"a/{i % 5}/{i:03d}" for i in range(50)] + [f"top-{i:02d}" for i in range(50)]
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="many", Key=k, Body=k.encode()), keys))
    return sorted(keys)


def test_list_v2_paginates_over_1000_keys(s3: Any, many: list[str]) -> None:
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="many"))
    assert [len(p["Contents"]) for p in pages] == [1000, 100]
    assert pages[0]["IsTruncated"] and not pages[1]["IsTruncated"]
    assert pages[0]["KeyCount"] == 1000 and "NextContinuationToken" in pages[0]
    assert [o["Key"] for p in pages for o in p["Contents"]] == many
    small = list(s3.get_paginator("list_objects_v2").paginate(
        Bucket="many", PaginationConfig={"PageSize": 300}))
    assert [len(p["Contents"]) for p in small] == [300, 300, 300, 200]
    assert [o["Key"] for p in small for o in p["Contents"]] == many


def test_list_v1_paginates_with_markers(s3: Any, many: list[str]) -> None:
    pages = list(s3.get_paginator("list_objects").paginate(
        Bucket="many", PaginationConfig={"PageSize": 400}))
    assert [o["Key"] for p in pages for o in p["Contents"]] == many
    assert [p["IsTruncated"] for p in pages] == [True, True, False]
    first = s3.list_objects(Bucket="many", Marker="page/0997")
    assert [o["Key"] for o in first["Contents"]][:3] == ["page/0998", "page/0999", "top-00"]


def test_list_with_delimiter_prefix_and_start_after(s3: Any, many: list[str]) -> None:
    r = s3.list_objects_v2(Bucket="many", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "page/"]
    assert [o["Key"] for o in r["Contents"]] == [f"top-{i:02d}" for i in range(50)]
    assert r["KeyCount"] == 52
    r = s3.list_objects_v2(Bucket="many", Prefix="a/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == [f"a/{i}/" for i in range(5)]
    assert "Contents" not in r
    # max-keys counts prefixes and keys together; the token skips a whole prefix
    pages = list(s3.get_paginator("list_objects_v2").paginate(
        Bucket="many", Delimiter="/", PaginationConfig={"PageSize": 1}))
    items = [x for p in pages for x in [c["Prefix"] for c in p.get("CommonPrefixes", [])] +
             [o["Key"] for o in p.get("Contents", [])]]
    assert items == ["a/", "page/"] + [f"top-{i:02d}" for i in range(50)]
    r = s3.list_objects_v2(Bucket="many", StartAfter="page/0995", MaxKeys=3)
    assert [o["Key"] for o in r["Contents"]] == ["page/0996", "page/0997", "page/0998"]
    assert r["StartAfter"] == "page/0995" and r["IsTruncated"]
    assert s3.list_objects_v2(Bucket="many", MaxKeys=0)["KeyCount"] == 0


def test_list_encoding_type_url(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="enc/a b+ü", Body=b"x")
    r = raw("GET", url_of(s3, f"/{bucket}?list-type=2&prefix=enc%2F&encoding-type=url"))
    assert xml_text(r.expect(200).body, "Key") == "enc/a%20b%2B%C3%BC"
    # boto3 asks for url encoding and decodes it back
    assert s3.list_objects_v2(Bucket=bucket, Prefix="enc/")["Contents"][0]["Key"] == "enc/a b+ü"


@pytest.mark.parametrize("query,code", [
    ("list-type=2&max-keys=-1", "InvalidArgument"),
    ("list-type=2&max-keys=abc", "InvalidArgument"),
    ("list-type=2&continuation-token=%21%21", "InvalidArgument"),
    ("list-type=2&encoding-type=xml", "InvalidArgument"),
    ("policy", "NotImplemented"),  # ?acl is served since issue 14 (test_s3_header_families)
])
def test_bad_list_parameters_are_4xx_or_501(s3: Any, bucket: str, query: str,
                                            code: str) -> None:
    r = raw("GET", url_of(s3, f"/{bucket}?{query}"))
    assert r.code == code and r.status in (400, 501), r.body


# ------------------------------------------------------------------ batch delete
def test_delete_objects_batch(s3: Any) -> None:
    s3.create_bucket(Bucket="batch")
    keys = [f"k{i:03d}" for i in range(120)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="batch", Key=k, Body=b"x"), keys))
    r = s3.delete_objects(Bucket="batch", Delete={
        "Objects": [{"Key": k} for k in keys[:100]] + [{"Key": "missing"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == sorted(keys[:100] + ["missing"])
    assert "Errors" not in r
    r = s3.delete_objects(Bucket="batch", Delete={"Objects": [{"Key": k} for k in keys[100:]],
                                                  "Quiet": True})
    assert "Deleted" not in r and "Errors" not in r
    assert s3.list_objects_v2(Bucket="batch")["KeyCount"] == 0
    bad = raw("POST", url_of(s3, "/batch?delete"), body=b"<Delete><Object>",
              headers={"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    assert (bad.status, bad.code) in ((400, "MalformedXML"), (400, "BadDigest"))
    bomb = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><Delete>&a;</Delete>'
    assert raw("POST", url_of(s3, "/batch?delete"), body=bomb).code == "MalformedXML"


# ------------------------------------------------------------------ copy
def test_copy_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me", ContentType="text/x",
                  Metadata={"a": "1"})
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert r["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"copy me").hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == \
        (b"copy me", "text/x", {"a": "1"})
    s3.copy_object(Bucket=bucket, Key="dst2", CopySource=f"{bucket}/src",
                   MetadataDirective="REPLACE", Metadata={"b": "2"}, ContentType="text/y")
    got = s3.head_object(Bucket=bucket, Key="dst2")
    assert (got["ContentType"], got["Metadata"]) == ("text/y", {"b": "2"})
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src")
    assert code_of(e) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="d3", CopySource=f"{bucket}/src",
                       CopySourceIfMatch='"nope"')
    assert code_of(e) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="d3", CopySource=f"{bucket}/nothing")
    assert code_of(e) == ("NoSuchKey", 404)
    s3.create_bucket(Bucket="copy-target")
    s3.copy(CopySource={"Bucket": bucket, "Key": "src"}, Bucket="copy-target", Key="c")
    assert s3.get_object(Bucket="copy-target", Key="c")["Body"].read() == b"copy me"


def test_managed_copy_of_a_large_object_uses_upload_part_copy(s3: Any, bucket: str) -> None:
    data = os.urandom(12 * MIB)
    s3.put_object(Bucket=bucket, Key="big-src", Body=data)
    cfg = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * MIB,
                                           multipart_chunksize=6 * MIB)
    s3.copy({"Bucket": bucket, "Key": "big-src"}, bucket, "big-dst", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="big-dst")
    assert head["ETag"].endswith('-2"') and head["ContentLength"] == len(data)
    assert s3.get_object(Bucket=bucket, Key="big-dst")["Body"].read() == data


# ------------------------------------------------------------------ multipart, in detail
def test_multipart_rules(s3: Any, bucket: str) -> None:
    key = "mp/rules"
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    p1 = os.urandom(5 * MIB)
    e1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=2, Body=b"tiny")["ETag"]
    e3 = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=3, Body=b"end")["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == \
        [(1, e1, 5 * MIB), (2, e2, 4), (3, e3, 3)]
    page = s3.list_parts(Bucket=bucket, Key=key, UploadId=up, MaxParts=2)
    assert page["IsTruncated"] and page["NextPartNumberMarker"] == 2
    ups = s3.list_multipart_uploads(Bucket=bucket, Prefix="mp/")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in ups] == [(key, up)]

    def complete(*parts: tuple[int, str]) -> None:
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": t} for n, t in parts]})

    with pytest.raises(ClientError) as e:
        complete((1, e1), (2, e2), (3, e3))
    assert code_of(e) == ("EntityTooSmall", 400)
    with pytest.raises(ClientError) as e:
        complete((3, e3), (1, e1))
    assert code_of(e) == ("InvalidPartOrder", 400)
    with pytest.raises(ClientError) as e:
        complete((1, e1), (3, '"0123456789abcdef0123456789abcdef"'))
    assert code_of(e) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as e:
        complete((1, e1), (4, e3))
    assert code_of(e) == ("InvalidPart", 400)
    # re-uploading a part replaces it
    e2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=2,
                        Body=b"second part")["ETag"]
    complete((1, e1), (2, e2))  # part 3 is left out and freed
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == p1 + b"second part"
    md5s = [hashlib.md5(p1).digest(), hashlib.md5(b"second part").digest()]
    assert got["ETag"] == f'"{hashlib.md5(b"".join(md5s)).hexdigest()}-2"'
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=3, Body=b"late")
    assert code_of(e) == ("NoSuchUpload", 404)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket, Prefix="mp/")


def test_abort_frees_the_upload(s3: Any, bucket: str, store: StoreCluster) -> None:
    before = asyncio.run(node_records(store))
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp/aborted")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp/aborted", UploadId=up, PartNumber=1,
                   Body=b"x" * (2 * MIB + 5))  # three chunk blobs
    s3.upload_part(Bucket=bucket, Key="mp/aborted", UploadId=up, PartNumber=2, Body=b"y")
    assert s3.abort_multipart_upload(Bucket=bucket, Key="mp/aborted", UploadId=up)[
        "ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="mp/aborted", UploadId=up)
    assert code_of(e) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="mp/aborted", UploadId=up,
                                     MultipartUpload={"Parts": [{"PartNumber": 1,
                                                                 "ETag": '"x"'}]})
    assert code_of(e) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as e:  # an upload id of another key
        s3.list_parts(Bucket=bucket, Key="mp/other", UploadId=up)
    assert code_of(e) == ("NoSuchUpload", 404)

    async def all_deleted() -> bool:
        new = {k: v for k, v in (await node_records(store)).items() if k not in before}
        chunks = {b for _, b in new if decode(b).blob_type is BlobType.CHUNK}
        assert len(chunks) >= 4, new  # the parts' chunks were written ...
        return all("DELETE" in kinds for kinds in new.values())  # ... and every blob freed

    asyncio.run(until(all_deleted, what="every blob of the aborted upload deleted"))


def test_upload_state_survives_a_frontend_restart(s3: Any, bucket: str,
                                                   store: StoreCluster) -> None:
    key = "mp/restart"
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    p1 = os.urandom(5 * MIB)
    e1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=p1)["ETag"]
    store.frontends["dc1"].restart()
    fresh = s3_client(store)
    e2 = fresh.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=2,
                           Body=b"after restart")["ETag"]
    fresh.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert fresh.get_object(Bucket=bucket, Key=key)["Body"].read() == p1 + b"after restart"


# ------------------------------------------------------------------ auth
@pytest.mark.parametrize("version", ["s3v4", "default"])
def test_presigned_get_and_put(store: StoreCluster, bucket: str, version: str) -> None:
    # a default boto3 presigns with SigV2 query parameters; s3v4 with X-Amz-* ones
    s3 = s3_client(store, **({"signature_version": "s3v4"} if version == "s3v4" else {}))
    s3.put_object(Bucket=bucket, Key="shared/file", Body=b"presigned body")
    u = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared/file"},
                                  ExpiresIn=60)
    assert get_url(u).expect(200).body == b"presigned body"
    assert get_url(u, headers={"Range": "bytes=0-8"}).expect(206).body == b"presigned"
    tampered = get_url(u.replace("shared/file", "shared/fil"))
    assert (tampered.status, tampered.code) == (403, "SignatureDoesNotMatch")
    assert get_url(u, method="DELETE").status == 403
    short = s3.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                            "Key": "shared/file"},
                                      ExpiresIn=1)
    time.sleep(2.1)
    expired = get_url(short)
    assert (expired.status, expired.code) == (403, "AccessDenied")
    up = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "shared/up"},
                                   ExpiresIn=60)
    get_url(up, method="PUT", body=b"uploaded with a URL").expect(200)
    assert s3.get_object(Bucket=bucket, Key="shared/up")["Body"].read() == \
        b"uploaded with a URL"
    cd = s3.generate_presigned_url("get_object", Params={
        "Bucket": bucket, "Key": "shared/file", "ResponseContentDisposition": "attachment",
        "ResponseContentType": "text/csv"}, ExpiresIn=60)
    r = get_url(cd).expect(200)
    assert (r.headers["Content-Disposition"], r.headers["Content-Type"]) == \
        ("attachment", "text/csv")


def test_wrong_secret_unknown_key_and_anonymous(store: StoreCluster, bucket: str) -> None:
    bad = s3_client(store, secret="wrong-secret")
    with pytest.raises(ClientError) as e:
        bad.list_objects_v2(Bucket=bucket)
    assert code_of(e) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(ClientError) as e:
        bad.put_object(Bucket=bucket, Key="never", Body=b"x" * 1000)
    assert code_of(e) == ("SignatureDoesNotMatch", 403)
    anon = get_url(f"{store.s3_url()}/{bucket}/shared/file")
    assert (anon.status, anon.code) == (403, "AccessDenied")
    r = raw("GET", f"{store.s3_url()}/{bucket}", headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=NOPE/20240101/us-east-1/s3/aws4_request,"
                         "SignedHeaders=host;x-amz-date,Signature=" + "0" * 64,
        "x-amz-date": "20240101T000000Z", "x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
        sign=False)
    assert r.status in (403,) and r.code in ("InvalidAccessKeyId", "RequestTimeTooSkewed")


def test_payload_hash_modes(s3: Any, bucket: str) -> None:
    u = url_of(s3, f"/{bucket}/payload/unsigned")
    raw("PUT", u, body=b"unsigned payload", payload_hash="UNSIGNED-PAYLOAD").expect(200)
    assert s3.get_object(Bucket=bucket, Key="payload/unsigned")["Body"].read() == \
        b"unsigned payload"
    r = raw("PUT", url_of(s3, f"/{bucket}/payload/lying"), body=b"actual body",
            payload_hash=hashlib.sha256(b"another body").hexdigest())
    assert (r.status, r.code) == (400, "XAmzContentSHA256Mismatch")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="payload/lying")
    assert code_of(e)[1] == 404  # nothing was stored


def test_boto3_streaming_trailer_checksums(s3: Any, bucket: str, store: StoreCluster,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3 >= 1.36 sends STREAMING-UNSIGNED-PAYLOAD-TRAILER (aws-chunked with a CRC trailer)
    # over https; make it do the same over this http endpoint
    real = botocore.httpchecksum.urlparse

    def as_https(u: str) -> Any:
        return real(u.replace("http://", "https://", 1))

    monkeypatch.setattr(botocore.httpchecksum, "urlparse", as_https)
    client = s3_client(store)
    data = os.urandom(3 * MIB + 77)
    for algo in ("CRC32", "CRC32C", "CRC64NVME", "SHA256"):
        r = client.put_object(Bucket=bucket, Key=f"trailer/{algo}", Body=io.BytesIO(data),
                              ChecksumAlgorithm=algo)
        assert r["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        got = client.get_object(Bucket=bucket, Key=f"trailer/{algo}", ChecksumMode="ENABLED")
        assert got["Body"].read() == data  # botocore validates the returned checksum too
        assert got[f"Checksum{algo}"] == r[f"Checksum{algo}"]
    # parts of a multipart upload stream the same way
    cfg = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * MIB,
                                           multipart_chunksize=5 * MIB)
    client.upload_fileobj(io.BytesIO(data * 2), bucket, "trailer/mp", Config=cfg)
    assert client.get_object(Bucket=bucket, Key="trailer/mp")["Body"].read() == data * 2


def test_aws_chunked_with_a_wrong_trailer_checksum_stores_nothing(s3: Any, bucket: str) -> None:
    body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    r = raw("PUT", url_of(s3, f"/{bucket}/trailer/bad"), body=body,
            payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            headers={"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
                     "x-amz-decoded-content-length": "5"})
    assert (r.status, r.code) == (400, "BadDigest")
    r = raw("PUT", url_of(s3, f"/{bucket}/trailer/cut"), body=b"5\r\nhel",
            payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            headers={"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "5"})
    assert r.status == 400
    assert raw("HEAD", url_of(s3, f"/{bucket}/trailer/bad")).status == 404


# ------------------------------------------------------------------ both APIs, one store
def test_an_s3_bucket_is_a_container_of_the_rest_api(store: StoreCluster, s3: Any,
                                                      bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="both/apis.txt", Body=b"via s3")
    r = get_url(store.url("dc1", f"/named/default/{bucket}/both/apis.txt"))
    assert r.expect(200).body == b"via s3"
    assert r.headers["x-ambry-target-container-name"] == bucket
    listing = get_url(store.url("dc1", f"/named/default/{bucket}?prefix=both/")).expect(200)
    assert b"both/apis.txt" in listing.body
    # and a blob named through the REST API is an object to S3
    get_url(store.url("dc1", f"/named/default/{bucket}/both/rest.txt"), method="PUT",
            body=b"via rest", headers=SERVICE).expect(201)
    got = s3.get_object(Bucket=bucket, Key="both/rest.txt")
    assert got["Body"].read() == b"via rest" and len(got["ETag"]) == 34


def test_no_500_on_odd_requests(store: StoreCluster, bucket: str) -> None:
    base = store.s3_url()
    odd = [("GET", "/%ff%fe"), ("PUT", f"/{bucket}/k?partNumber=0&uploadId=x"),
           ("POST", f"/{bucket}/k"), ("PATCH", f"/{bucket}/k"), ("PUT", "/"),
           ("GET", f"/{bucket}/k?uploadId=not-an-upload"),
           ("POST", f"/{bucket}/k?uploadId=AAAAAAAAAAAAAAAAAAAAAA")]
    for method, path in odd:
        r: Raw = raw(method, base + path)
        assert 400 <= r.status < 500 or r.status == 501, (method, path, r.status, r.body)
    odd_headers = [
        {"Authorization": "AWS4-HMAC-SHA256 garbage"},
        {"Authorization": "Bearer x"},
        {"Authorization": "AWS4-HMAC-SHA256 Credential=a/b/c/s3/aws4_request, "
                          "SignedHeaders=host, Signature=zz", "x-amz-date": "nonsense"},
        {"x-amz-content-sha256": "STREAMING-NONSENSE"},
    ]
    for h in odd_headers:
        r = get_url(f"{base}/{bucket}/k", headers=h)
        assert 400 <= r.status < 500, (h, r.status, r.body)
    assert raw("PUT", f"{base}/{bucket}/odd", body=b"data", payload_hash="nothex").status == 400
    signed_odd = [{"x-amz-checksum-crc32": "!!"},
                  {"x-amz-trailer": "x-amz-checksum-crc32"}, {"Content-MD5": "short"},
                  {"x-amz-copy-source": "/"}, {"x-amz-copy-source": f"/{bucket}"},
                  {"x-amz-decoded-content-length": "x"}, {"x-amz-meta-big": "v" * 3000}]
    for h in signed_odd:
        r = raw("PUT", f"{base}/{bucket}/odd", body=b"data", headers=h)
        assert 400 <= r.status < 500, (h, r.status, r.body)
    presigned = (f"{base}/{bucket}/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2F"
                 f"20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z"
                 f"&X-Amz-Expires=0&X-Amz-SignedHeaders=host&X-Amz-Signature={'0' * 64}")
    assert 400 <= get_url(presigned).status < 500


def test_objects_are_served_with_nosniff(s3: Any, bucket: str) -> None:
    # broke: objects came back with their stored type and no nosniff, so a browser could
    # sniff a text/plain object into HTML (docs/security.md, "Content served to browsers")
    s3.put_object(Bucket=bucket, Key="page.txt", Body=b"<html><script>1</script>",
                  ContentType="text/plain")
    for got in (s3.get_object(Bucket=bucket, Key="page.txt"),
                s3.head_object(Bucket=bucket, Key="page.txt")):
        headers = got["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-type"] == "text/plain"
