"""S3 behaviours where this store answered differently from AWS (issue 14, "Real bugs"), each
against a real store: retried CompleteMultipartUpload, UploadPartCopy ranges, ListObjects V1
encoding, non-ASCII metadata, Content-Encoding with aws-chunked, presigned expiry, non-UTF-8
keys, unknown Expect values, re-creating your own bucket, and repeated part numbers.

Raw requests go out through http.client (urllib3), which sends header values as ISO-8859-1
bytes; :func:`wire_raw` signs exactly those bytes, so a test can put a 0xE9 byte on the wire."""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.header
import hashlib
import http.client
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import yaml
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from fe_helpers import node_records, store_fixture
from s3_helpers import KEYS, REGION, Raw, raw, s3_client, xml_text

from ambry.common.blobid import BlobType, decode
from ambry.testing.cluster import free_ports
from ambry.testing.frontend import TEST_S3, FrontendProcess, StoreCluster

MIN_PART = 1024  # s3.min_part_size_bytes of this store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("s3-compat"), datacenters=1,
                             nodes_per_dc=3, partitions=4,
                             extra={"s3": {**TEST_S3, "min_part_size_bytes": MIN_PART}})


@pytest.fixture(scope="module")
def second_frontend(store: StoreCluster) -> FrontendProcess:
    """Another frontend of dc1 (frontends are stateless: any of them takes any request)."""
    return store.add_frontend("dc1")


@pytest.fixture(scope="module")
def s3(store: StoreCluster) -> Any:
    return s3_client(store)


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="compat")
    return "compat"


def url(store: StoreCluster, path: str) -> str:
    return store.s3_url() + path


class _WireSigV4(S3SigV4Auth):
    """botocore's signer, hashing the canonical request as the bytes http.client sends
    (header values in ISO-8859-1) instead of their UTF-8 encoding."""

    def string_to_sign(self, request: Any, canonical_request: str) -> str:
        return "\n".join(["AWS4-HMAC-SHA256", request.context["timestamp"],
                          self.credential_scope(request),
                          hashlib.sha256(canonical_request.encode("latin-1")).hexdigest()])


def wire_raw(method: str, target: str, headers: Mapping[str, str], body: bytes = b"",
             account: str = "default") -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One signed request whose header values go out as ISO-8859-1 bytes; (status, raw
    reply headers as bytes, body)."""
    ak, sk = KEYS[account]
    req = AWSRequest(method=method, url=target, data=body, headers=dict(headers))
    _WireSigV4(Credentials(ak, sk), "s3", REGION).add_auth(req)
    parts = urlsplit(target)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest(method, parts.path + (f"?{parts.query}" if parts.query else ""),
                        skip_host=True, skip_accept_encoding=True)
        if "host" not in {k.lower() for k in req.headers}:
            conn.putheader("Host", parts.netloc)
        for k, v in req.headers.items():
            conn.putheader(k, v.encode("latin-1") if isinstance(v, str) else v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        # http.client decodes header bytes as ISO-8859-1: encoding back gives the raw bytes
        got = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in r.getheaders()]
        return r.status, got, data
    finally:
        conn.close()


def header(raw_headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for k, v in raw_headers if k.lower() == name), None)


# ------------------------------------------------------------------ retried completion
def _complete_xml(parts: list[tuple[int, str]]) -> bytes:
    return ("<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
        + "</CompleteMultipartUpload>").encode()


def _result(r: Raw) -> tuple[str | None, ...]:
    return tuple(xml_text(r.body, t) for t in ("Location", "Bucket", "Key", "ETag"))


def _upload_two_parts(s3: Any, bucket: str, key: str) -> tuple[str, list[tuple[int, str]]]:
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for n, body in ((1, b"a" * MIN_PART), (2, b"tail")):
        parts.append((n, s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n,
                                        Body=body)["ETag"]))
    return up, parts


def test_retried_complete_returns_the_first_result_from_any_frontend(
        store: StoreCluster, s3: Any, bucket: str, second_frontend: FrontendProcess) -> None:
    # a retried CompleteMultipartUpload (the SDK lost the first reply) was 404 NoSuchUpload,
    # turning a successful upload into a client error; AWS answers 200 with the same result
    key = "mp/retried complete"
    up, parts = _upload_two_parts(s3, bucket, key)
    target = url(store, f"/{bucket}/{quote(key)}?uploadId={up}")
    first = raw("POST", target, _complete_xml(parts)).expect(200)
    again = raw("POST", target, _complete_xml(parts)).expect(200)
    assert _result(again) == _result(first) and _result(first)[3].endswith('-2"')
    # the second frontend of the datacenter, and the first one after a restart, agree
    r = raw("POST", f"{second_frontend.s3_url}/{bucket}/{quote(key)}?uploadId={up}", _complete_xml(parts))
    assert _result(r.expect(200))[1:] == _result(first)[1:]
    store.frontends["dc1"].restart()
    assert _result(raw("POST", target, _complete_xml(parts)).expect(200)) == _result(first)
    assert s3_client(store).get_object(Bucket=bucket, Key=key)["Body"].read() == \
        b"a" * MIN_PART + b"tail"
    # the upload is finished: other operations on it find no upload
    assert raw("GET", target).status == 404
    assert raw("PUT", target + "&partNumber=3", b"x").code == "NoSuchUpload"


def test_retried_complete_with_other_parts_or_after_an_overwrite_is_no_such_upload(
        store: StoreCluster, s3: Any, bucket: str) -> None:
    # a retry only repeats the completion it retries: another part list, or a key that now
    # holds another object, must not claim the object as this upload's result
    key = "mp/retried then changed"
    up, parts = _upload_two_parts(s3, bucket, key)
    target = url(store, f"/{bucket}/{quote(key)}?uploadId={up}")
    raw("POST", target, _complete_xml(parts)).expect(200)
    r = raw("POST", target, _complete_xml(parts[:1]))
    assert (r.status, r.code) == (404, "NoSuchUpload"), r.body
    s3.put_object(Bucket=bucket, Key=key, Body=b"overwritten")
    r = raw("POST", target, _complete_xml(parts))
    assert (r.status, r.code) == (404, "NoSuchUpload"), r.body
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"overwritten"


def test_concurrent_completions_through_two_frontends_stitch_once(
        store: StoreCluster, s3: Any, bucket: str, second_frontend: FrontendProcess) -> None:
    # the race: an SDK whose first completion timed out retries through another frontend
    # while the first still runs. Both used to stitch a composite of the same chunks; the
    # second name write replaced the first and deleted its composite, chunks included, so
    # the object lost its bytes. Exactly one may stitch; every 200 shows the same result
    key = "mp/raced completion"
    up, parts = _upload_two_parts(s3, bucket, key)
    before = asyncio.run(node_records(store))
    path = f"/{bucket}/{quote(key)}?uploadId={up}"
    targets = [url(store, path), second_frontend.s3_url + path] * 3
    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        results = list(pool.map(lambda t: raw("POST", t, _complete_xml(parts)), targets))
    assert all(r.status == 200 or (r.status, r.code) == (404, "NoSuchUpload")
               for r in results), [(r.status, r.body[:200]) for r in results]
    ok = {_result(r)[1:] for r in results if r.status == 200}
    assert len(ok) == 1, results
    new_composites = {b for (_, b) in asyncio.run(node_records(store))
                      if decode(b).blob_type is BlobType.METADATA} - \
        {b for (_, b) in before}
    assert len(new_composites) == 1, new_composites
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"a" * MIN_PART + b"tail"
    # a retry now, from either frontend, gets the same result
    assert {_result(raw("POST", t, _complete_xml(parts)).expect(200))[1:]
            for t in targets[:2]} == ok


def test_a_copy_of_a_completed_object_is_not_its_upload_s_result(
        store: StoreCluster, s3: Any, bucket: str) -> None:
    # CopyObject copies user metadata: it must not carry the upload's identity along, or a
    # retried completion would answer 200 for a key that holds a copy
    key = "mp/copied"
    up, parts = _upload_two_parts(s3, bucket, key)
    target = url(store, f"/{bucket}/{quote(key)}?uploadId={up}")
    raw("POST", target, _complete_xml(parts)).expect(200)
    s3.copy_object(Bucket=bucket, Key="mp/copy", CopySource={"Bucket": bucket, "Key": key})
    s3.delete_object(Bucket=bucket, Key=key)
    s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": "mp/copy"})
    assert raw("POST", target, _complete_xml(parts)).code == "NoSuchUpload"


def test_complete_with_a_repeated_part_number_is_invalid_part_order(
        store: StoreCluster, s3: Any, bucket: str) -> None:
    # AWS wants the list strictly ascending: a part number twice is InvalidPartOrder (400),
    # whatever the ETags, and the upload stays open
    key = "mp/repeated"
    up, parts = _upload_two_parts(s3, bucket, key)
    target = url(store, f"/{bucket}/{quote(key)}?uploadId={up}")
    for listed in ([parts[0], parts[0], parts[1]], [parts[0], (1, '"0123"'), parts[1]],
                   [parts[1], parts[0]]):
        r = raw("POST", target, _complete_xml(listed))
        assert (r.status, r.code) == (400, "InvalidPartOrder"), (listed, r.body)
    raw("POST", target, _complete_xml(parts)).expect(200)


# ------------------------------------------------------------------ UploadPartCopy ranges
@pytest.mark.parametrize(("rng", "status", "code"), [
    ("bytes=50-200", 400, "InvalidRange"),     # runs past the end of the 100-byte source
    ("bytes=100-100", 400, "InvalidRange"),    # starts past it
    ("bytes=abc", 400, "InvalidArgument"),
    ("bytes=10-", 400, "InvalidArgument"),     # both ends are required
    ("bytes=-10", 400, "InvalidArgument"),
    ("bytes=20-10", 400, "InvalidArgument"),
    ("items=0-10", 400, "InvalidArgument"),
    ("bytes=0-9,20-29", 400, "InvalidArgument"),
])
def test_upload_part_copy_ranges_are_checked_as_aws(store: StoreCluster, s3: Any, bucket: str,
                                                    rng: str, status: int, code: str) -> None:
    # a range past the end of the source was copied short with 200, and a malformed one
    # answered 416: AWS answers 400 InvalidRange and 400 InvalidArgument
    s3.put_object(Bucket=bucket, Key="copy/source", Body=bytes(range(100)))
    up = s3.create_multipart_upload(Bucket=bucket, Key="copy/dest")["UploadId"]
    r = raw("PUT", url(store, f"/{bucket}/copy/dest?partNumber=1&uploadId={up}"),
            headers={"x-amz-copy-source": f"/{bucket}/copy/source",
                     "x-amz-copy-source-range": rng})
    assert (r.status, r.code) == (status, code), r.body
    ok = s3.upload_part_copy(Bucket=bucket, Key="copy/dest", UploadId=up, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "copy/source"},
                             CopySourceRange="bytes=90-99")
    s3.complete_multipart_upload(Bucket=bucket, Key="copy/dest", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": ok["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="copy/dest")["Body"].read() == bytes(range(90, 100))


# ------------------------------------------------------------------ listing encoding
def _elements(body: bytes, tag: str) -> list[str]:
    return [el.text or "" for el in ET.fromstring(body).iter()
            if el.tag.rsplit("}", 1)[-1] == tag]


def test_list_objects_v1_url_encoding_leaves_the_prefix_alone(store: StoreCluster, s3: Any,
                                                             bucket: str) -> None:
    # ListObjects V1 with encoding-type=url encoded <Prefix> as well; AWS encodes keys,
    # Delimiter, Marker, NextMarker and CommonPrefixes there (boto3 decodes exactly those,
    # so a prefix with a space came back as "sp%20ace/"), and V2 encodes Prefix too
    for k in ("sp ace/a+b", "sp ace/dir é/x", "sp ace/z"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    q = "encoding-type=url&prefix=sp%20ace%2F&delimiter=%2F&max-keys=1"
    v1 = raw("GET", url(store, f"/{bucket}?{q}&marker=sp%20ace%2F%20")).expect(200).body
    assert _elements(v1, "Prefix") == ["sp ace/"] + _elements(v1, "Prefix")[1:]
    assert _elements(v1, "Key") == ["sp%20ace/a%2Bb"]
    assert _elements(v1, "Marker") == ["sp%20ace/%20"]
    assert _elements(v1, "NextMarker") == ["sp%20ace/a%2Bb"]
    assert _elements(v1, "Delimiter") == ["/"]
    v1 = raw("GET", url(store, f"/{bucket}?{q}&marker=sp%20ace%2Fb")).expect(200).body
    assert _elements(v1, "Prefix") == ["sp ace/", "sp%20ace/dir%20%C3%A9/"]
    v2 = raw("GET", url(store, f"/{bucket}?list-type=2&{q}&start-after=sp%20ace%2F%20")
             ).expect(200).body
    assert _elements(v2, "Prefix") == ["sp%20ace/"]
    assert _elements(v2, "StartAfter") == ["sp%20ace/%20"]
    assert _elements(v2, "Key") == ["sp%20ace/a%2Bb"]
    # and through boto3, which asks for encoding-type=url on its own and decodes
    listed = s3.list_objects(Bucket=bucket, Prefix="sp ace/", Delimiter="/")
    assert listed["Prefix"] == "sp ace/"
    assert [c["Prefix"] for c in listed["CommonPrefixes"]] == ["sp ace/dir é/"]
    assert [o["Key"] for o in listed["Contents"]] == ["sp ace/a+b", "sp ace/z"]
    assert s3.list_objects_v2(Bucket=bucket, Prefix="sp ace/", Delimiter="/")["Prefix"] == \
        "sp ace/"


# ------------------------------------------------------------------ metadata bytes
def test_non_ascii_metadata_values_come_back_as_sent_or_rfc2047(store: StoreCluster,
                                                                 bucket: str) -> None:
    # a 0xE9 byte (ISO-8859-1 "é", what http.client and Java send for "é") was refused or
    # came back as UTF-8 C3 A9; UTF-8 must come back byte for byte, RFC 2047 words as sent,
    # and bytes that HTTP replies here cannot carry as they are (not UTF-8, control
    # characters; aiohttp refuses the latter at the door) as an RFC 2047 word that decodes to exactly those bytes
    target = url(store, f"/{bucket}/meta/latin1")
    sent = {"x-amz-meta-latin": "caf\xe9", "x-amz-meta-utf8": "café".encode().decode("latin-1"),
            "x-amz-meta-word": "=?UTF-8?B?Y2Fmw6k=?=", "x-amz-meta-ascii": "plain"}
    status, _, body = wire_raw("PUT", target, sent, b"payload")
    assert status == 200, body
    for method in ("GET", "HEAD"):
        status, got, _ = wire_raw(method, target, {})
        assert status == 200
        assert header(got, b"x-amz-meta-utf8") == "café".encode()
        assert header(got, b"x-amz-meta-word") == b"=?UTF-8?B?Y2Fmw6k=?="
        assert header(got, b"x-amz-meta-ascii") == b"plain"
        latin = header(got, b"x-amz-meta-latin")
        assert latin is not None and latin.isascii()
        [(raw_bytes, charset)] = email.header.decode_header(latin.decode())
        assert isinstance(raw_bytes, bytes) and raw_bytes == b"caf\xe9", (latin, charset)


def test_aws_chunked_is_not_stored_as_a_content_encoding(store: StoreCluster, s3: Any,
                                                        bucket: str) -> None:
    # Content-Encoding "gzip, aws-chunked" was stored verbatim; aws-chunked only frames the
    # request body, so AWS keeps "gzip", and nothing when it was the only coding
    body = b"5\r\nhello\r\n0\r\n\r\n"
    for key, enc, kept in (("enc/gzip", "gzip, aws-chunked", "gzip"),
                           ("enc/only", "aws-chunked", None),
                           ("enc/upper", "AWS-Chunked,br", "br")):
        raw("PUT", url(store, f"/{bucket}/{key}"), body,
            headers={"Content-Encoding": enc, "x-amz-decoded-content-length": "5"},
            payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER").expect(200)
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == b"hello"
        assert got.get("ContentEncoding") == kept, (enc, got.get("ContentEncoding"))


def test_user_metadata_named_like_the_layer_s_own_keys_stays_user_metadata(
        s3: Any, bucket: str) -> None:
    # x-amz-meta-s3.cache-control was stored under the S3 layer's own key and came back as a
    # real Cache-Control header (and x-amz-meta-s3.etag was silently dropped); AWS keeps any
    # x-amz-meta-* as user metadata
    meta = {"s3.cache-control": "no-store", "s3.etag": "forged", "s3.part-sizes": "1",
            "plain": "v"}
    s3.put_object(Bucket=bucket, Key="meta/namespaced", Body=b"abc", Metadata=meta)
    for got in (s3.head_object(Bucket=bucket, Key="meta/namespaced"),
                s3.get_object(Bucket=bucket, Key="meta/namespaced")):
        assert got["Metadata"] == meta
        assert "CacheControl" not in got
        assert got["ETag"] == '"' + hashlib.md5(b"abc").hexdigest() + '"'
    s3.copy_object(Bucket=bucket, Key="meta/copied",
                   CopySource={"Bucket": bucket, "Key": "meta/namespaced"})
    assert s3.head_object(Bucket=bucket, Key="meta/copied")["Metadata"] == meta


# ------------------------------------------------------------------ small ones
@pytest.mark.parametrize("expires", ["-1", "-604800", "604801"])
def test_presigned_expires_out_of_range_is_403(store: StoreCluster, bucket: str,
                                               expires: str) -> None:
    # a negative X-Amz-Expires was 400; AWS refuses expiry out of 0..7 days with 403
    s3 = s3_client(store, signature_version="s3v4")
    s3.put_object(Bucket=bucket, Key="presigned", Body=b"x")
    u = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned"},
                                  ExpiresIn=60)
    tampered = u.replace("X-Amz-Expires=60", f"X-Amz-Expires={expires}")
    assert tampered != u
    r = raw("GET", tampered, sign=False)
    assert (r.status, r.code) == (403, "AuthorizationQueryParametersError"), r.body


def test_presigned_expires_zero_has_expired(store: StoreCluster, bucket: str) -> None:
    s3 = s3_client(store, signature_version="s3v4")
    s3.put_object(Bucket=bucket, Key="presigned", Body=b"x")
    u = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned"},
                                  ExpiresIn=60)
    r = raw("GET", u.replace("X-Amz-Expires=60", "X-Amz-Expires=0"), sign=False)
    assert (r.status, r.code) == (403, "AccessDenied"), r.body


@pytest.mark.parametrize("path", ["/compat/bad%E9key", "/compat/bad%C3key",
                                  "/compat/ok/%FF%FE"])
def test_a_key_that_is_not_utf8_is_400(store: StoreCluster, bucket: str, path: str) -> None:
    # a key whose bytes are not UTF-8 was 404; AWS refuses the request with 400
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        status, _, body = wire_raw(method, url(store, path), {})
        assert status == 400, (method, path, status, body)
        if method != "HEAD":
            assert xml_text(body, "Code") in ("InvalidURI", "InvalidArgument"), body


def test_an_unknown_expect_value_is_ignored_by_s3(store: StoreCluster, s3: Any) -> None:
    # "Expect: 200" got 417 on PutObject and CreateBucket; AWS ignores expectations it does
    # not know. The REST port keeps RFC 9110's 417, as a clear 4xx and never a 500
    raw("PUT", url(store, "/expect-ignored"), headers={"Expect": "200"}).expect(200)
    raw("PUT", url(store, "/expect-ignored/k"), b"body", headers={"Expect": "200"}).expect(200)
    assert s3.get_object(Bucket="expect-ignored", Key="k")["Body"].read() == b"body"
    r = raw("PUT", url(store, "/expect-ignored/k2"), b"body2",
            headers={"Expect": "100-continue"})
    assert r.status == 200
    rest = raw("POST", store.url("dc1", "/"), b"x", sign=False,
               headers={"Expect": "200", "x-ambry-service-id": "t",
                        "x-ambry-content-type": "text/plain"})
    assert rest.status == 417


def _frontend_in_region(store: StoreCluster, region: str, tmp: Path) -> FrontendProcess:
    cfg = yaml.safe_load(store.config_path.read_text())
    cfg["s3"] = {**cfg["s3"], "region": region}
    path = tmp / f"config-{region}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port, s3_port = free_ports(2, "127.0.0.1")
    f = FrontendProcess("dc1", path, "127.0.0.1", port, tmp / f"frontend-{region}.log",
                        s3_port=s3_port)
    f.name = f"frontend-{region}"
    return f


def test_recreating_your_own_bucket_is_200_only_in_us_east_1(
        store: StoreCluster, s3: Any, tmp_path: Path) -> None:
    # AWS answers 200 to CreateBucket of a bucket you own in us-east-1 (legacy behaviour)
    # and 409 BucketAlreadyOwnedByYou in every other region; it was 409 everywhere
    s3.create_bucket(Bucket="mine-twice")
    again = raw("PUT", url(store, "/mine-twice")).expect(200)
    assert again.headers.get("Location") == "/mine-twice"
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]].count("mine-twice") == 1
    eu = _frontend_in_region(store, "eu-west-1", tmp_path)
    eu.start()
    try:
        eu.wait_ready()
        r = raw("PUT", eu.s3_url + "/mine-twice")
        assert (r.status, r.code) == (409, "BucketAlreadyOwnedByYou"), r.body
    finally:
        eu.terminate()
    # another account's bucket of the same name is its own bucket here (per-account names)
    team = s3_client(store, account="team")
    with pytest.raises(ClientError):
        team.head_bucket(Bucket="mine-twice")
