"""The S3 port against liars and vandals (issue 13): requests whose signature covers less than
the request (an ``x-amz-*`` header added to a presigned URL or to a header-signed request),
header, path and query bytes that are not UTF-8, and clients that hang up in the middle of a
download. One real store (three storage nodes and a frontend) for the module."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fe_helpers import SERVICE, store_fixture
from s3_helpers import KEYS, REGION, Raw, get_url, raw, s3_client, xml_text

from ambry.testing.frontend import StoreCluster

MIB = 1024 * 1024
BUCKET = "hostile"
OTHER = "models"  # a config container of the same account: another bucket of the signer's


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("s3-hostile"), datacenters=1,
                             nodes_per_dc=3, partitions=4)


@pytest.fixture(scope="module")
def s3(store: StoreCluster) -> Any:
    client = s3_client(store)
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=OTHER, Key="secret", Body=b"the other bucket's secret")
    return client


def presigner(store: StoreCluster, version: str) -> Any:
    return s3_client(store, **({"signature_version": "s3v4"} if version == "v4" else {}))


def signed_then_added(method: str, url: str, added: Mapping[str, str], body: bytes = b"",
                      signed: Mapping[str, str] | None = None) -> Raw:
    """A request header-signed by botocore, sent with ``added`` headers the signature does not
    cover (what a proxy, or whoever holds a signed request, could add)."""
    ak, sk = KEYS["default"]
    req = AWSRequest(method=method, url=url, data=body, headers=dict(signed or {}))
    S3SigV4Auth(Credentials(ak, sk), "s3", REGION).add_auth(req)
    h = dict(req.headers.items())
    h.update(added)
    return get_url(req.url, method=method, body=body or None, headers=h)


def assert_not_signed(r: Raw, *names: str) -> None:
    assert (r.status, r.code) == (403, "AccessDenied"), (r.status, r.body[:300])
    listed = xml_text(r.body, "HeadersNotSigned") or ""
    assert {n.strip() for n in listed.split(",")} == set(names), listed


# ------------------------------------------------------------------ x-amz-* not signed
@pytest.mark.parametrize("version", ["v4", "v2"])
def test_presigned_put_with_an_added_copy_source_does_not_copy(
        store: StoreCluster, s3: Any, version: str) -> None:
    # broke: a presigned PUT (SignedHeaders=host) sent with an unsigned x-amz-copy-source ran
    # a CopyObject, so the URL's key received any object of the signer's account
    key = f"target-{version}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"original")
    url = presigner(store, version).generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=300)
    r = get_url(url, method="PUT", headers={"x-amz-copy-source": f"/{OTHER}/secret"})
    if version == "v4":
        assert_not_signed(r, "x-amz-copy-source")
    else:  # SigV2 signs every x-amz-* header: the added one breaks the signature
        assert (r.status, r.code) == (403, "SignatureDoesNotMatch"), r.body[:300]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"original"
    # the URL still does what it was signed for
    get_url(url, method="PUT", body=b"uploaded").expect(200)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"uploaded"


def test_header_signed_requests_with_added_amz_headers_are_refused(
        store: StoreCluster, s3: Any) -> None:
    # broke: unsigned x-amz-meta-* and x-amz-copy-source were honoured with header auth too
    u = f"{store.s3_url()}/{BUCKET}/header-auth"
    s3.put_object(Bucket=BUCKET, Key="header-auth", Body=b"original")
    r = signed_then_added("PUT", u, {"x-amz-meta-owner": "mallory"}, body=b"evil")
    assert_not_signed(r, "x-amz-meta-owner")
    r = signed_then_added("PUT", u, {"x-amz-copy-source": f"/{OTHER}/secret",
                                     "x-amz-metadata-directive": "REPLACE"})
    assert_not_signed(r, "x-amz-copy-source", "x-amz-metadata-directive")
    got = s3.get_object(Bucket=BUCKET, Key="header-auth")
    assert got["Body"].read() == b"original" and got["Metadata"] == {}
    # the same headers, signed, are a normal request
    r = raw("PUT", u, headers={"x-amz-copy-source": f"/{OTHER}/secret"}).expect(200)
    assert s3.get_object(Bucket=BUCKET, Key="header-auth")["Body"].read() == \
        b"the other bucket's secret"
    raw("PUT", u, body=b"mine", headers={"x-amz-meta-owner": "me"}).expect(200)
    assert s3.head_object(Bucket=BUCKET, Key="header-auth")["Metadata"] == {"owner": "me"}


# every kind of S3 route: the refusal happens before dispatch, for all of them
ROUTES = [("GET", "/"), ("PUT", "/fresh-bucket"), ("HEAD", f"/{BUCKET}"),
          ("GET", f"/{BUCKET}?list-type=2"), ("GET", f"/{BUCKET}?uploads"),
          ("POST", f"/{BUCKET}?delete"), ("DELETE", f"/{BUCKET}"),
          ("PUT", f"/{BUCKET}/k"), ("GET", f"/{BUCKET}/k"), ("HEAD", f"/{BUCKET}/k"),
          ("DELETE", f"/{BUCKET}/k"), ("POST", f"/{BUCKET}/k?uploads"),
          ("PUT", f"/{BUCKET}/k?partNumber=1&uploadId=x"),
          ("POST", f"/{BUCKET}/k?uploadId=x"), ("DELETE", f"/{BUCKET}/k?uploadId=x")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_an_unsigned_amz_header(store: StoreCluster, s3: Any, method: str,
                                                    path: str) -> None:
    # broke: nothing checked that x-amz-* headers were covered by the signature
    r = signed_then_added(method, store.s3_url() + path, {"x-amz-meta-x": "1",
                                                         "X-Amz-Copy-Source": "/a/b"})
    if method == "HEAD":
        assert r.status == 403
    else:
        assert_not_signed(r, "x-amz-meta-x", "x-amz-copy-source")


def test_presigned_get_with_added_amz_header_is_refused(store: StoreCluster, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="readable", Body=b"data")
    url = presigner(store, "v4").generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "readable"}, ExpiresIn=300)
    assert_not_signed(get_url(url, headers={"x-amz-checksum-mode": "ENABLED"}),
                      "x-amz-checksum-mode")
    assert get_url(url, headers={"Range": "bytes=1-2"}).expect(206).body == b"at"


# ------------------------------------------------------------------ standard headers
@pytest.mark.parametrize("version", ["v4", "v2"])
def test_presigned_put_does_not_store_unsigned_content_headers(
        store: StoreCluster, s3: Any, version: str) -> None:
    # broke: whoever held a presigned PUT URL chose the stored Content-Type (text/html on a
    # domain the signer trusts), Content-Disposition, Cache-Control...
    key = f"unsigned-ct-{version}"
    url = presigner(store, version).generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=300)
    added = {"Content-Disposition": "inline; filename=x.html", "Cache-Control": "max-age=9",
             "Content-Language": "xx", "Content-Encoding": "identity"}
    if version == "v4":  # SigV2 signs Content-Type whenever one is sent
        added["Content-Type"] = "text/html"
    get_url(url, method="PUT", body=b"<script>", headers=added).expect(200)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "binary/octet-stream"
    for k in ("ContentDisposition", "CacheControl", "ContentLanguage", "ContentEncoding"):
        assert k not in head, (k, head)


def test_presigned_put_stores_what_it_signed(store: StoreCluster, s3: Any) -> None:
    url = presigner(store, "v4").generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": "signed-ct", "ContentType": "text/csv",
                              "ContentDisposition": "attachment", "Metadata": {"run": "42"}},
        ExpiresIn=300)
    signed = urlsplit(url).query
    assert "content-type" in signed and "x-amz-meta-run" in signed, signed
    get_url(url, method="PUT", body=b"a,b", headers={
        "Content-Type": "text/csv", "Content-Disposition": "attachment",
        "x-amz-meta-run": "42"}).expect(200)
    head = s3.head_object(Bucket=BUCKET, Key="signed-ct")
    assert (head["ContentType"], head["ContentDisposition"], head["Metadata"]) == \
        ("text/csv", "attachment", {"run": "42"})
    # a signed header sent with another value breaks the signature
    r = get_url(url, method="PUT", body=b"a,b", headers={
        "Content-Type": "text/html", "Content-Disposition": "attachment",
        "x-amz-meta-run": "42"})
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")


def test_header_signed_put_keeps_an_unsigned_content_type(store: StoreCluster, s3: Any
                                                          ) -> None:
    # as AWS: the sender of a header-signed request holds the key, and some SDKs never sign
    # Content-Type (aws-sdk-js v2) or Cache-Control (v3); only presigned URLs drop them
    u = f"{store.s3_url()}/{BUCKET}/header-ct"
    signed_then_added("PUT", u, {"Content-Type": "text/plain", "Cache-Control": "no-cache"},
                      body=b"text").expect(200)
    head = s3.head_object(Bucket=BUCKET, Key="header-ct")
    assert (head["ContentType"], head["CacheControl"]) == ("text/plain", "no-cache")


# ------------------------------------------------------------------ bytes that are not UTF-8
def _b(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def _raw_request(store: StoreCluster, method: str, target: bytes,
                 headers: Mapping[str | bytes, bytes], body: bytes = b"") -> Raw:
    """One request written byte for byte (http.client would refuse these headers)."""
    port = urlsplit(store.s3_url()).port
    assert port is not None
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [_b(k) + b": " + v for k, v in headers.items()]
    lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        return Raw(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


def _sign_bytes(store: StoreCluster, method: str, path: bytes,
                headers: Mapping[str | bytes, bytes], body: bytes = b""
                ) -> dict[str | bytes, bytes]:
    """SigV4 header auth over raw header bytes, written from AWS's spec (botocore can only
    sign text): every header is signed, as a client that sent these bytes would."""
    ak, sk = KEYS["default"]
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    payload = hashlib.sha256(body).hexdigest()
    h = {_b(k).lower(): v for k, v in headers.items()}
    h.update({b"host": urlsplit(store.s3_url()).netloc.encode(),
              b"x-amz-date": amz_date.encode(), b"x-amz-content-sha256": payload.encode()})
    names = sorted(h)
    canonical = b"\n".join([method.encode(), path, b"",
                            *[n + b":" + h[n].strip() for n in names], b"",
                            b";".join(names), payload.encode()])
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical).hexdigest()}"
    key = ("AWS4" + sk).encode()
    for part in (amz_date[:8], REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    h[b"authorization"] = (f"AWS4-HMAC-SHA256 Credential={ak}/{scope},SignedHeaders=".encode()
                           + b";".join(names) + f",Signature={sig}".encode())
    out: dict[str | bytes, bytes] = {}
    out.update(h.items())
    return out


def test_raw_byte_signer_matches_the_server(store: StoreCluster, s3: Any) -> None:
    # the signer of the tests below is right: an ASCII request signed by it is accepted
    path = f"/{BUCKET}/raw-signed".encode()
    h = _sign_bytes(store, "PUT", path, {"content-type": b"text/x-raw"}, b"raw")
    _raw_request(store, "PUT", path, h, b"raw").expect(200)
    assert s3.head_object(Bucket=BUCKET, Key="raw-signed")["ContentType"] == "text/x-raw"


# (x-amz-meta-* values are kept whatever their bytes: test_s3_compat_bugs.py)
@pytest.mark.parametrize("header", ["content-type", "x-amz-copy-source",
                                    "content-disposition", "cache-control", "if-match",
                                    "range", "x-amz-checksum-mode"])
def test_signed_non_utf8_header_values_are_400(store: StoreCluster, s3: Any,
                                               header: str) -> None:
    # broke: a signed PUT with Content-Type b"text/\xff" was a 500 (UnicodeEncodeError)
    path = f"/{BUCKET}/not-utf8".encode()
    h = _sign_bytes(store, "PUT", path, {header: b"/" + OTHER.encode() + b"/se\xffcret"},
                    b"data")
    r = _raw_request(store, "PUT", path, h, b"data")
    assert (r.status, r.code) == (400, "InvalidArgument"), (r.status, r.body[:300])
    assert header.encode() in r.body  # the reply names the header


def test_non_utf8_paths_queries_and_header_names_are_4xx(store: StoreCluster, s3: Any
                                                        ) -> None:
    # raw (unescaped) bytes that are not UTF-8, in each part of a request, signed or not
    cases: list[tuple[str, bytes, dict[str | bytes, bytes]]] = [
        ("GET", f"/{BUCKET}/k\xff".encode("latin-1"), {}),
        ("GET", b"/b\xffd/k", {}),
        ("GET", f"/{BUCKET}?prefix=\xff".encode("latin-1"), {}),
        ("GET", f"/{BUCKET}/k%ff%fe".encode(), {}),
        ("PUT", f"/{BUCKET}/k".encode(), {"x-amz-meta-\xff".encode("latin-1"): b"v"}),
    ]
    for method, target, headers in cases:
        for signed in (False, True):
            h: Mapping[str | bytes, bytes] = \
                _sign_bytes(store, method, target, headers) if signed else headers
            r = _raw_request(store, method, target, h)
            assert 400 <= r.status < 500, (method, target, headers, signed, r.status, r.body)
    # a copy source escaped as %XX that is not UTF-8 is a 400, not a lookup of U+FFFD
    r = raw("PUT", f"{store.s3_url()}/{BUCKET}/copy-target",
            headers={"x-amz-copy-source": f"/{OTHER}/%FF%FE"})
    assert (r.status, r.code) == (400, "InvalidArgument"), (r.status, r.body[:300])


# ------------------------------------------------------------------ clients that hang up
_METRIC = re.compile(r'^(\w+)_total\{op="([^"]*)",status="(\d+)"\} ([0-9.e+]+)$',
                     re.MULTILINE)


def _statuses(store: StoreCluster, metric: str, op: str) -> dict[str, float]:
    text = get_url(store.url("dc1", "/metrics")).expect(200).body.decode()
    return {status: float(v) for name, o, status, v in _METRIC.findall(text)
            if name == metric and o == op}


def _inflight(store: StoreCluster) -> float:
    text = get_url(store.url("dc1", "/metrics")).expect(200).body.decode()
    m = re.search(r"^ambry_frontend_inflight_requests ([0-9.e+]+)$", text, re.MULTILINE)
    assert m is not None
    return float(m.group(1))


def _hang_up(store: StoreCluster, port: int, request: bytes, read_bytes: int) -> None:
    """Send a GET, read ``read_bytes`` of the reply (or, for 0, wait until the frontend is
    serving it), then reset the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(request)
        if read_bytes == 0:  # the /metrics request that asks is in flight too
            _wait_for(lambda: _inflight(store) >= 2, "the GET in flight")
        got = b""
        while len(got) < read_bytes:
            piece = sock.recv(64 * 1024)
            assert piece, got[:300]
            got += piece
        assert read_bytes == 0 or got.startswith(b"HTTP/1.1 200"), got[:300]
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def _wait_for(cond: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def big_key(s3: Any) -> str:
    s3.put_object(Bucket=BUCKET, Key="big/abort", Body=b"\x5a" * (24 * MIB))
    return "big/abort"


@pytest.mark.parametrize("read_bytes", [256 * 1024, 0])
@pytest.mark.parametrize("api", ["s3", "rest"])
def test_a_client_hanging_up_mid_get_is_a_client_abort_not_a_500(
        store: StoreCluster, s3: Any, big_key: str, api: str, read_bytes: int) -> None:
    # broke: a client that closed the connection during an S3 GET was logged as an ERROR
    # (with a traceback) and counted as status 500, so /metrics could not tell a broken
    # download link from a broken server; the REST port did the same
    fe = store.frontends["dc1"]
    log_before = fe.log_path.stat().st_size
    if api == "s3":
        metric, op = "ambry_s3_requests", "GET object"
        path = f"/{BUCKET}/{big_key}".encode()
        h = _sign_bytes(store, "GET", path, {})
        port = urlsplit(store.s3_url()).port
        request = b"GET " + path + b" HTTP/1.1\r\n" + b"".join(
            _b(k) + b": " + v + b"\r\n" for k, v in h.items()) + b"\r\n"
    else:
        metric, op = "ambry_frontend_requests", "GET /named/{account}/{container}/{name}"
        port = fe.port
        request = (f"GET /named/default/{BUCKET}/{big_key} HTTP/1.1\r\nHost: x\r\n"
                   f"x-ambry-service-id: {SERVICE['x-ambry-service-id']}\r\n\r\n").encode()
    before = _statuses(store, metric, op)
    assert port is not None
    _hang_up(store, port, request, read_bytes)
    _wait_for(lambda: _statuses(store, metric, op).get("499", 0) > before.get("499", 0),
              f"{op} counted as 499")
    after = _statuses(store, metric, op)
    assert after.get("500", 0) == before.get("500", 0), after
    with fe.log_path.open("rb") as f:
        f.seek(log_before)
        logged = f.read().decode(errors="replace")
    assert "ERROR" not in logged and "Traceback" not in logged, logged[-3000:]
    if api == "s3":  # and a whole download still counts as a 200
        assert len(s3.get_object(Bucket=BUCKET, Key=big_key)["Body"].read()) == 24 * MIB
        assert _statuses(store, metric, op)["200"] == after.get("200", 0) + 1
