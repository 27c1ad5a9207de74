"""Fuzzing the S3 API with hypothesis against real processes (3 storage nodes and a frontend).

Requests are drawn as method x path (service, bucket, object; buckets and keys that exist and
that do not, hostile keys and percent-escapes) x query sub-resources and parameters x headers
(``x-amz-*``, conditionals, ranges, checksums, copy sources, metadata; values with bytes that are
not UTF-8) x bodies (bytes, XML of every document S3 takes, broken and hostile XML), and are
sent signed with SigV4 by botocore (header auth and presigned URLs) with the test keys,
unsigned, signed with a wrong secret, or with a garbage ``Authorization``.

Must hold (issue 13 item 6): no status >= 500, except 501 ``NotImplemented`` for S3 features
Ambry-py does not offer (as AWS answers them); every error other than on HEAD is S3 error XML
with a ``Code``. The fast variant (``make test``) is derandomized; the large budget
(``make faults``) prints its seed (replay with ``AMBRY_TEST_SEED=<seed>``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import hypothesis
import pytest
import urllib3
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fe_helpers import SERVICE, fuzz_settings, seed_from_env, store_fixture
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from s3_helpers import KEYS, REGION, raw

from ambry.testing.frontend import StoreCluster

FAST_EXAMPLES = int(os.environ.get("AMBRY_FUZZ_S3_EXAMPLES", "150"))
SLOW_EXAMPLES = int(os.environ.get("AMBRY_FUZZ_S3_SLOW_EXAMPLES", "5000"))  # 2-6 min on a 2-core box
BUCKET = "fuzz"
KNOWN_KEY = "known/object.bin"
_POOL = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("fuzz-s3"), datacenters=1,
                             nodes_per_dc=3, partitions=4)


@dataclass
class Known:
    base: str
    upload_id: str
    names: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def known(store: StoreCluster) -> Known:
    """A bucket with an object and an open multipart upload, so fuzzed requests reach the
    object, listing and multipart code, not only the parsers."""
    base = store.s3_url("dc1")
    raw("PUT", f"{base}/{BUCKET}").expect(200)
    raw("PUT", f"{base}/{BUCKET}/{KNOWN_KEY}", b"known body",
        {"Content-Type": "text/plain", "x-amz-meta-origin": "fuzz"}).expect(200)
    r = raw("POST", f"{base}/{BUCKET}/mpu/key?uploads").expect(200)
    upload_id = ET.fromstring(r.body).findtext("{*}UploadId") or ""
    assert upload_id
    # the REST API's named-blob view of the same store must not matter here
    assert SERVICE
    return Known(base, upload_id)


# ------------------------------------------------------------------------------ strategies
_latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                exclude_characters="\x7f"), max_size=30)
_HOSTILE_VALUES = ["", "0", "-1", "1", "2", "10000", "99999999999999999999", "abc", "true",
                   "\xff\xfe", "é", "%ff", "*", "/", "..", "a" * 2000, "bytes=0-0",
                   "bytes=5-1", "bytes=-0", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                   "UNSIGNED-PAYLOAD", "0" * 64, "AAAAAA==", "Sun, 06 Nov 1994 08:49:37 GMT",
                   '"etag"', "/fuzz/known/object.bin", "/nosuchbucket/x", "/fuzz",
                   "fuzz/known/object.bin?versionId=1", "REPLACE", "COPY", "CRC32",
                   "x-amz-checksum-crc32", "aws-chunked", "1-2"]
# no surrounding whitespace (NEL and NBSP too): a client library would not send it
_value = st.one_of(st.sampled_from(_HOSTILE_VALUES), _latin1).map(str.strip)

_QUERY_NAMES = ["uploads", "uploadId", "partNumber", "list-type", "prefix", "delimiter",
                "max-keys", "continuation-token", "start-after", "marker", "encoding-type",
                "fetch-owner", "delete", "location", "versioning", "acl", "tagging",
                "versions", "versionId", "max-parts", "part-number-marker", "max-uploads",
                "key-marker", "upload-id-marker", "response-content-type",
                "response-content-disposition", "response-cache-control", "policy", "cors",
                "x-id", "X-Amz-Date", "X-Amz-Expires", "Signature", "AWSAccessKeyId",
                "Expires", "max-buckets", "bucket-region", "version-id-marker"]
_HEADER_NAMES = ["Content-Type", "Content-MD5", "Content-Encoding", "Content-Disposition",
                 "Cache-Control", "Expires", "Range", "If-Match", "If-None-Match",
                 "If-Modified-Since", "If-Unmodified-Since", "x-amz-copy-source",
                 "x-amz-copy-source-range", "x-amz-copy-source-if-match",
                 "x-amz-metadata-directive", "x-amz-meta-a", "x-amz-meta-b",
                 "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-sha256",
                 "x-amz-checksum-crc64nvme", "x-amz-checksum-algorithm",
                 "x-amz-sdk-checksum-algorithm", "x-amz-trailer",
                 "x-amz-decoded-content-length", "x-amz-storage-class", "x-amz-tagging",
                 "x-amz-acl", "x-amz-expected-bucket-owner", "x-amz-date",
                 "x-amz-server-side-encryption", "x-amz-request-payer", "Expect", "Date",
                 "x-amz-grant-read", "x-amz-grant-full-control", "x-amz-object-lock-mode",
                 "x-amz-object-lock-retain-until-date", "x-amz-website-redirect-location",
                 "x-amz-write-offset-bytes", "x-amz-source-expected-bucket-owner",
                 "x-amz-server-side-encryption-customer-key", "x-amz-tagging-directive",
                 "x-amz-bucket-object-lock-enabled", "x-amz-object-ownership"]
_KEYS = [KNOWN_KEY, "mpu/key", "new/key.bin", "a", "é/ü", "x" * 1100, "..", "./a", "a//b",
         " lead", "trail ", "%", "?", "#frag", "\t"]
_BUCKETS = [BUCKET, "nosuchbucket", "models", "default", "Bad_Bucket", "ab", "x" * 70,
            "-dash", "192.168.1.1", "xn--a", "a..b"]


def _xml_bodies(upload_id: str) -> st.SearchStrategy[bytes]:
    parts = st.lists(st.tuples(st.integers(-1, 10_001), st.sampled_from(
        ['"00000000000000000000000000000000"', '"bad"', "", "x" * 100])), max_size=4)

    def complete(ps: list[tuple[int, str]]) -> bytes:
        inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
                        for n, e in ps)
        return f"<CompleteMultipartUpload>{inner}</CompleteMultipartUpload>".encode()

    keys = st.lists(st.sampled_from(_KEYS), max_size=4)

    def delete(ks: list[str]) -> bytes:
        inner = "".join(f"<Object><Key>{k}</Key></Object>" for k in ks)
        return f"<Delete><Quiet>true</Quiet>{inner}</Delete>".encode()

    return st.one_of(
        parts.map(complete),
        keys.map(delete),
        st.sampled_from([
            (b"<CreateBucketConfiguration><LocationConstraint>us-east-1</LocationConstraint>"
            b"</CreateBucketConfiguration>"),
            (b"<CreateBucketConfiguration><LocationConstraint>mars-1</LocationConstraint>"
            b"</CreateBucketConfiguration>"),
            b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
            b"<a>" * 5000 + b"</a>" * 5000,
            (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b '
            b'"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
            b"<Delete><Object><Key>&c;</Key></Object></Delete>"),
            (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&e;'
            b"</Key></Object></Delete>"),
            b"<Delete><Object><Key>unterminated",
            b"\xff\xfe<\x00D\x00",
            b"not xml at all",
            b"<CompleteMultipartUpload/>",
            # PUT ?acl bodies: the owner's full control, another grantee, garbage grants
            (b'<AccessControlPolicy><Owner><ID>default</ID></Owner><AccessControlList><Grant>'
             b'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
             b'xsi:type="CanonicalUser"><ID>default</ID></Grantee><Permission>FULL_CONTROL'
             b"</Permission></Grant></AccessControlList></AccessControlPolicy>"),
            (b"<AccessControlPolicy><AccessControlList><Grant><Grantee><URI>http://acs."
             b"amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ"
             b"</Permission></Grant></AccessControlList></AccessControlPolicy>"),
            b"<AccessControlPolicy><AccessControlList><Grant/>" * 50,
            f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{upload_id}"
            f"</ETag></Part></CompleteMultipartUpload>".encode(),
        ]))


@dataclass
class S3Request:
    method: str
    path: str  # already percent-encoded
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    auth: str  # sigv4 | presigned | unsigned | wrong-secret | garbage

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return (f"S3Request({self.method} {self.path}?{self.query} auth={self.auth} "
                f"headers={self.headers!r} body={self.body[:200]!r}"
                f"{'...' if len(self.body) > 200 else ''})")


@st.composite
def s3_requests(draw: st.DrawFn, upload_id: str) -> S3Request:
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "GET", "PUT",
                                   "OPTIONS", "PATCH"]))
    level = draw(st.sampled_from(["service", "bucket", "object", "object", "object"]))
    path = "/"
    if level != "service":
        bucket = draw(st.one_of(st.sampled_from(_BUCKETS), _latin1.filter(bool)))
        path += quote(bucket, safe="")
        if level == "object":
            key = draw(st.one_of(st.sampled_from(_KEYS), st.text(min_size=1, max_size=40)))
            path += "/" + quote(key, safe="/")
        # raw escapes a client library would never send: non-UTF-8, broken, NUL
        path += draw(st.sampled_from(["", "", "", "%ff", "%zz", "%00", "%c3%28", "/"]))
    names = st.sampled_from(_QUERY_NAMES)
    query = draw(st.lists(st.tuples(names, st.one_of(
        st.just(upload_id), st.just(""), _value)), max_size=3))
    headers = draw(st.dictionaries(st.sampled_from(_HEADER_NAMES), _value, max_size=4))
    body = draw(st.one_of(st.just(b""), st.binary(max_size=256), _xml_bodies(upload_id)))
    auth = draw(st.sampled_from(["sigv4", "sigv4", "sigv4", "presigned", "unsigned",
                                 "wrong-secret", "garbage"]))
    if auth == "garbage":
        headers["Authorization"] = draw(st.one_of(st.sampled_from([
            "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256 Credential=AKIDTESTDEFAULT00001/x/y/z",
            "AWS4-HMAC-SHA256 Credential=AKIDTESTDEFAULT00001/20990101/us-east-1/s3/"
            "aws4_request, SignedHeaders=host, Signature=" + "0" * 64,
            "AWS AKIDTESTDEFAULT00001:c2ln", "AWS4-HMAC-SHA256 Credential=,,,,",
            "Bearer x"]), _value))
    if draw(st.booleans()) and auth in ("sigv4", "wrong-secret"):
        headers["x-amz-content-sha256"] = draw(st.sampled_from(
            ["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
             "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "0" * 64, "nothex"]))
    return S3Request(method, path, query, headers, body, auth)


def _encode_query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(quote(k, safe="-_.~") + ("=" + quote(v, safe="-_.~") if v else "")
                    for k, v in pairs)


def send(base: str, req: S3Request) -> tuple[int, dict[str, str], bytes]:
    q = _encode_query(req.query)
    url = base + req.path + ("?" + q if q else "")
    headers = dict(req.headers)
    if req.auth in ("sigv4", "wrong-secret", "presigned"):
        ak, sk = KEYS["default"]
        if req.auth == "wrong-secret":
            sk += "-not"
        aws = AWSRequest(method=req.method, url=url, data=req.body, headers=headers)
        creds = Credentials(ak, sk)
        signer = (S3SigV4QueryAuth(creds, "s3", REGION, expires=300)
                  if req.auth == "presigned" else S3SigV4Auth(creds, "s3", REGION))
        if "x-amz-content-sha256" in headers:  # keep the drawn one, as a client could send
            hashed = headers["x-amz-content-sha256"]
            signer.payload = lambda request: hashed  # type: ignore[method-assign]
        try:
            signer.add_auth(aws)
        except (UnicodeError, ValueError, TypeError):
            pass  # botocore could not sign what was drawn: it goes out as drawn
        else:
            headers = dict(aws.headers.items())
            url = aws.url
    r = _POOL.request(req.method, url, body=req.body or None, headers=headers,
                      redirect=False, preload_content=True)
    return r.status, dict(r.headers.items()), r.data


def _check(status: int, headers: dict[str, str], body: bytes, req: S3Request) -> None:
    code = None
    # errors of the S3 app (it stamps x-amz-request-id; aiohttp's own, such as 417 for an
    # unknown Expect, come before it) are S3 error XML
    ours = any(k.lower() == "x-amz-request-id" for k in headers)
    if ours and body and req.method != "HEAD" and status >= 300:
        try:
            code = ET.fromstring(body).findtext("Code")
        except ET.ParseError:
            raise AssertionError(f"{status} error body is not XML: {body[:300]!r}") from None
        assert code, f"{status} error without <Code>: {body[:300]!r}"
    if status == 501:
        assert code in (None, "NotImplemented"), (status, code)  # None: HEAD has no body
        return
    assert status < 500, f"{status} {code}: {body[:500]!r}"


def _settings(examples: int, **kw: Any) -> hypothesis.settings:
    return fuzz_settings(examples, HealthCheck.large_base_example, **kw)


def _fuzz(known: Known, settings: hypothesis.settings, seed: int | None = None) -> None:
    @settings
    @given(s3_requests(known.upload_id))
    def run(req: S3Request) -> None:
        status, headers, body = send(known.base, req)
        try:
            _check(status, headers, body, req)
        except AssertionError as e:
            raise AssertionError(f"{e}\nrequest: {req!r}") from None

    if seed is not None:
        run = hypothesis.seed(seed)(run)
    run()
    # and the port still serves an honest client: a write and its read-back (the fuzzer may
    # itself have deleted KNOWN_KEY, since it draws DELETEs of the known keys)
    after = f"{known.base}/{BUCKET}/after-fuzz/{os.urandom(8).hex()}"
    assert raw("PUT", after, b"after the fuzz").status == 200
    got = raw("GET", after)
    assert (got.status, got.body) == (200, b"after the fuzz")


def test_s3_fuzz_no_5xx(known: Known) -> None:
    # small derandomized budget: the same requests on every run, a few seconds
    _fuzz(known, _settings(FAST_EXAMPLES, derandomize=True))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_s3_fuzz_large_budget(known: Known) -> None:
    _fuzz(known, _settings(SLOW_EXAMPLES), seed=seed_from_env())
