"""SigV4 verification (ambry.frontend.s3.sigv4) against AWS's published S3 examples, and
against requests signed by botocore itself."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.frontend.s3 import sigv4
from ambry.frontend.s3.payload import S3Body

# The key pair and date of AWS's "Signature Calculations for the Authorization Header"
# examples (Amazon S3 API reference, sig-v4-header-based-auth and sigv4-query-string-auth).
AK = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
NOW = sigv4.parse_amz_date("20130524T000000Z")
SCOPE = f"{AK}/20130524/us-east-1/s3/aws4_request"


def secret_of(key: str) -> str | None:
    return SECRET if key == AK else None


def headers(**kw: str) -> dict[str, list[str]]:
    return {k.replace("_", "-"): [v] for k, v in kw.items()}


def auth(signed: str, sig: str) -> str:
    return f"AWS4-HMAC-SHA256 Credential={SCOPE},SignedHeaders={signed},Signature={sig}"


def verify(method: str, path: str, h: dict[str, list[str]], query: str = "",
           now: float = NOW) -> sigv4.Authorized:
    pairs = [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p]
    return sigv4.verify(method=method, raw_path=path, query_pairs=pairs,  # type: ignore[arg-type]
                        headers=h, secret_of=secret_of, now_s=now)


# ------------------------------------------------------------------ AWS's examples
def test_aws_example_get_object_with_range() -> None:
    h = headers(host="examplebucket.s3.amazonaws.com", range="bytes=0-9",
                x_amz_content_sha256=sigv4.EMPTY_SHA256, x_amz_date="20130524T000000Z",
                authorization=auth("host;range;x-amz-content-sha256;x-amz-date",
                                   "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036"
                                   "bdb41"))
    a = verify("GET", "/test.txt", h)
    assert a.access_key == AK and a.payload_hash == sigv4.EMPTY_SHA256


@pytest.mark.parametrize("path", ["/test$file.text", "/test%24file.text"])
def test_aws_example_put_object_either_path_encoding(path: str) -> None:
    body_sha = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    assert body_sha == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    h = headers(host="examplebucket.s3.amazonaws.com", date="Fri, 24 May 2013 00:00:00 GMT",
                x_amz_date="20130524T000000Z", x_amz_storage_class="REDUCED_REDUNDANCY",
                x_amz_content_sha256=body_sha,
                authorization=auth("date;host;x-amz-content-sha256;x-amz-date;"
                                   "x-amz-storage-class",
                                   "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece"
                                   "108bd"))
    assert verify("PUT", path, h).payload_hash == body_sha


def test_aws_example_get_bucket_lifecycle() -> None:
    h = headers(host="examplebucket.s3.amazonaws.com", x_amz_date="20130524T000000Z",
                x_amz_content_sha256=sigv4.EMPTY_SHA256,
                authorization=auth("host;x-amz-content-sha256;x-amz-date",
                                   "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a01367"
                                   "83543"))
    verify("GET", "/", h, "lifecycle")


def test_aws_example_list_objects() -> None:
    h = headers(host="examplebucket.s3.amazonaws.com", x_amz_date="20130524T000000Z",
                x_amz_content_sha256=sigv4.EMPTY_SHA256,
                authorization=auth("host;x-amz-content-sha256;x-amz-date",
                                   "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69"
                                   "dc6f7"))
    verify("GET", "/", h, "max-keys=2&prefix=J")


def test_aws_example_presigned_url() -> None:
    q = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={SCOPE}"
         "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
         "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    h = headers(host="examplebucket.s3.amazonaws.com")
    assert verify("GET", "/test.txt", h, q).payload_hash == sigv4.UNSIGNED_PAYLOAD
    # one second before expiry it works, at expiry it is refused
    verify("GET", "/test.txt", h, q, now=NOW + 86399)
    with pytest.raises(sigv4.AuthError) as e:
        verify("GET", "/test.txt", h, q, now=NOW + 86400)
    assert e.value.code == "AccessDenied" and "expired" in e.value.message
    with pytest.raises(sigv4.AuthError) as e:
        verify("GET", "/test.txt", h, q.replace("86400", "86401"))
    assert e.value.code == "SignatureDoesNotMatch"


# The streaming example (sigv4-streaming.html): 66560 bytes of "a" in chunks of 64 KiB + 1 KiB.
STREAM_HEADERS = headers(
    host="s3.amazonaws.com", x_amz_date="20130524T000000Z",
    x_amz_storage_class="REDUCED_REDUNDANCY", x_amz_content_sha256=sigv4.STREAMING_SIGNED,
    content_encoding="aws-chunked", x_amz_decoded_content_length="66560",
    content_length="66824",
    authorization=auth("content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                       "x-amz-decoded-content-length;x-amz-storage-class",
                       "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"))
STREAM_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    b"\r\n" + b"a" * 65536 + b"\r\n"
    b"400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    b"\r\n" + b"a" * 1024 + b"\r\n"
    b"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    b"\r\n\r\n")


async def read_all(body: S3Body, n: int = 7000) -> bytes:
    out = bytearray()
    while True:
        piece = await body.read(n)
        if not piece:
            return bytes(out)
        out += piece


def raw_reader(data: bytes, step: int):  # type: ignore[no-untyped-def]
    pos = [0]

    async def read(n: int) -> bytes:
        piece = data[pos[0]:pos[0] + min(n, step)]
        pos[0] += len(piece)
        return piece

    return read


async def test_aws_example_streaming_chunk_signatures() -> None:
    a = verify("PUT", "/examplebucket/chunkObject.txt", STREAM_HEADERS)
    assert a.seed_signature.startswith("4f232c43")
    assert len(STREAM_BODY) == 66824
    body = S3Body(raw_reader(STREAM_BODY, 999), {k: v[0] for k, v in STREAM_HEADERS.items()}, a)
    assert await read_all(body) == b"a" * 66560
    assert body.md5_hex == hashlib.md5(b"a" * 66560).hexdigest()


async def test_streaming_with_a_tampered_chunk_is_refused() -> None:
    from ambry.frontend.s3.errors import S3Error

    a = verify("PUT", "/examplebucket/chunkObject.txt", STREAM_HEADERS)
    bad = STREAM_BODY.replace(b"a" * 1024, b"a" * 1023 + b"b")
    body = S3Body(raw_reader(bad, 4096), {k: v[0] for k, v in STREAM_HEADERS.items()}, a)
    with pytest.raises(S3Error) as e:
        await read_all(body)
    assert e.value.s3_code == "SignatureDoesNotMatch"


# ------------------------------------------------------------------ errors
def test_wrong_secret_is_signature_does_not_match() -> None:
    h = headers(host="examplebucket.s3.amazonaws.com", range="bytes=0-9",
                x_amz_content_sha256=sigv4.EMPTY_SHA256, x_amz_date="20130524T000000Z",
                authorization=auth("host;range;x-amz-content-sha256;x-amz-date", "0" * 64))
    with pytest.raises(sigv4.AuthError) as e:
        verify("GET", "/test.txt", h)
    assert (e.value.code, e.value.status) == ("SignatureDoesNotMatch", 403)
    assert "0" * 64 not in e.value.message


@pytest.mark.parametrize("authz,code", [
    ("AWS AKID:c2lnbmF0dXJl", "InvalidRequest"),  # SigV2
    ("AWS4-HMAC-SHA256 Credential=x", "AuthorizationHeaderMalformed"),
    ((f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/ec2/aws4_request,"
     f"SignedHeaders=host,Signature={'a' * 64}"), "AuthorizationHeaderMalformed"),
    ((f"AWS4-HMAC-SHA256 Credential={SCOPE},SignedHeaders=x-amz-date;host,"
     f"Signature={'a' * 64}"), "AuthorizationHeaderMalformed"),  # not sorted
    ((f"AWS4-HMAC-SHA256 Credential=NOBODY/20130524/us-east-1/s3/aws4_request,"
     f"SignedHeaders=host,Signature={'a' * 64}"), "InvalidAccessKeyId"),
])
def test_malformed_or_unknown_credentials(authz: str, code: str) -> None:
    h = headers(host="h", x_amz_date="20130524T000000Z",
                x_amz_content_sha256=sigv4.EMPTY_SHA256, authorization=authz)
    with pytest.raises(sigv4.AuthError) as e:
        verify("GET", "/", h)
    assert e.value.code == code
    assert e.value.status in (400, 403)


def test_a_request_dated_too_far_from_now_is_refused() -> None:
    h = headers(host="examplebucket.s3.amazonaws.com", range="bytes=0-9",
                x_amz_content_sha256=sigv4.EMPTY_SHA256, x_amz_date="20130524T000000Z",
                authorization=auth("host;range;x-amz-content-sha256;x-amz-date",
                                   "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036"
                                   "bdb41"))
    verify("GET", "/test.txt", h, now=NOW + sigv4.MAX_SKEW_S)
    with pytest.raises(sigv4.AuthError) as e:
        verify("GET", "/test.txt", h, now=NOW + sigv4.MAX_SKEW_S + 1)
    assert e.value.code == "RequestTimeTooSkewed"


# ------------------------------------------------------------------ botocore as the signer
CREDS = Credentials("AKIDBOTOCORE", "botocore-secret/+=")


def botocore_headers(method: str, url: str, body: bytes = b"",
                     extra: dict[str, str] | None = None) -> tuple[str, dict[str, list[str]]]:
    req = AWSRequest(method=method, url=url, data=body, headers=dict(extra or {}))
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(req)
    parts = urlsplit(req.url)
    h = {k.lower(): [v] for k, v in req.headers.items()}
    h["host"] = [parts.netloc]
    return parts.path, h


# keys as S3 allows them: any UTF-8 without control characters
KEYS = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(key=KEYS, prefix=KEYS, body=st.binary(max_size=64))
def test_botocore_signed_requests_verify(key: str, prefix: str, body: bytes) -> None:
    from urllib.parse import quote

    url = (f"http://127.0.0.1:1175/bucket/{quote(key, safe='/~')}"
           f"?prefix={quote(prefix, safe='')}&list-type=2&x")
    path, h = botocore_headers("PUT", url, body, {"x-amz-meta-k": "  a   b "})
    query = urlsplit(url).query
    from urllib.parse import unquote
    pairs = [(unquote(k), unquote(v)) for k, _, v in (p.partition("=") for p in query.split("&"))]
    a = sigv4.verify(method="PUT", raw_path=path, query_pairs=pairs, headers=h,
                     secret_of=lambda k: CREDS.secret_key if k == CREDS.access_key else None,
                     now_s=sigv4.parse_amz_date(h["x-amz-date"][0]))
    assert a.payload_hash == hashlib.sha256(body).hexdigest()
    # the same request for another key is refused
    with pytest.raises(sigv4.AuthError):
        sigv4.verify(method="PUT", raw_path=path + "x", query_pairs=pairs, headers=h,
                     secret_of=lambda k: CREDS.secret_key, now_s=sigv4.parse_amz_date(
                         h["x-amz-date"][0]))


def test_botocore_presigned_url_verifies_and_binds_method_and_path() -> None:
    req = AWSRequest(method="GET", url="http://127.0.0.1:1175/bucket/dir/a%20b.txt")
    S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=60).add_auth(req)
    parts = urlsplit(req.url)
    from urllib.parse import unquote
    pairs = [(unquote(k), unquote(v)) for k, _, v in
             (p.partition("=") for p in parts.query.split("&"))]
    date = dict(pairs)["X-Amz-Date"]
    kw = {"query_pairs": pairs, "headers": {"host": ["127.0.0.1:1175"]},
              "secret_of": lambda k: CREDS.secret_key, "now_s": sigv4.parse_amz_date(date)}
    sigv4.verify(method="GET", raw_path=parts.path, **kw)  # type: ignore[arg-type]
    for method, path in (("PUT", parts.path), ("GET", parts.path + "2")):
        with pytest.raises(sigv4.AuthError) as e:
            sigv4.verify(method=method, raw_path=path, **kw)  # type: ignore[arg-type]
        assert e.value.code == "SignatureDoesNotMatch"
