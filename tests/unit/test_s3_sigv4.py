"""SigV4 verification (ambry.frontend.s3.sigv4) against AWS's published S3 examples, and
against requests signed by botocore itself."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import example, given, settings
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
def _aws_get_object_with_range() -> dict[str, list[str]]:
    """The headers of AWS's "GET Object" SigV4 example (a range, header auth)."""
    return headers(host="examplebucket.s3.amazonaws.com", range="bytes=0-9",
                x_amz_content_sha256=sigv4.EMPTY_SHA256, x_amz_date="20130524T000000Z",
                authorization=auth("host;range;x-amz-content-sha256;x-amz-date",
                                   "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036"
                                   "bdb41"))


def test_aws_example_get_object_with_range() -> None:
    h = _aws_get_object_with_range()
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


def test_a_rotated_secret_never_verifies_with_the_key_derived_from_the_old_one() -> None:
    # the derived signing key is kept per (secret, day, region, service); keyed by the
    # access key alone, a secret changed by a reload would go on verifying the old one
    h = _aws_get_object_with_range()

    def check(secret: str) -> str:
        return sigv4.verify(method="GET", raw_path="/test.txt", query_pairs=[], headers=h,
                            secret_of=lambda _k: secret, now_s=NOW).access_key

    assert check(SECRET) == AK
    with pytest.raises(sigv4.AuthError) as e:
        check("rotated" + SECRET)
    assert e.value.code == "SignatureDoesNotMatch"
    assert check(SECRET) == AK


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
    h = _aws_get_object_with_range()
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


# ------------------------------------------------------------------ what a signature covers
def test_covered_headers_of_header_auth_and_of_presigned_urls() -> None:
    # the payload hash and (header auth) x-amz-date are in the string to sign: covered too
    h = _aws_get_object_with_range()
    a = verify("GET", "/test.txt", h)
    assert a.covered == {"host", "range", "x-amz-content-sha256", "x-amz-date"}
    assert not a.presigned
    q = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={SCOPE}"
         "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
         "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    p = verify("GET", "/test.txt", headers(host="examplebucket.s3.amazonaws.com"), q)
    assert p.covered == {"host", "x-amz-content-sha256"} and p.presigned


def _authorized(covered: set[str], presigned: bool) -> sigv4.Authorized:
    return sigv4.Authorized("AK", sigv4.UNSIGNED_PAYLOAD, b"k", "", "", "",
                            frozenset(covered), presigned)


@pytest.mark.parametrize("presigned", [False, True])
def test_an_unsigned_amz_header_is_refused_whatever_the_auth_form(presigned: bool) -> None:
    # broke: x-amz-copy-source / x-amz-meta-* outside SignedHeaders were acted upon
    from ambry.frontend.s3.coverage import signed_view

    a = _authorized({"host", "x-amz-meta-ok"}, presigned)
    with pytest.raises(sigv4.AuthError) as e:
        signed_view({"host": "h", "x-amz-meta-ok": "1", "x-amz-copy-source": "/b/k",
                     "x-amz-meta-evil": "2"}, a)
    assert (e.value.code, e.value.status) == ("AccessDenied", 403)
    assert e.value.extra == {"HeadersNotSigned": "x-amz-copy-source, x-amz-meta-evil"}
    assert signed_view({"host": "h", "x-amz-meta-ok": "1"}, a) == \
        {"host": "h", "x-amz-meta-ok": "1"}


def test_a_presigned_url_drops_unsigned_stored_headers_and_header_auth_keeps_them() -> None:
    # broke: the holder of a presigned PUT URL chose the object's Content-Type & co
    from ambry.frontend.s3.coverage import signed_view

    sent = {"host": "h", "content-type": "text/html", "content-disposition": "inline",
            "cache-control": "no-cache", "range": "bytes=0-1", "if-match": '"e"',
            "content-md5": "x", "content-length": "3"}
    presigned = signed_view(sent, _authorized({"host", "cache-control"}, True))
    assert presigned == {"host": "h", "cache-control": "no-cache", "range": "bytes=0-1",
                         "if-match": '"e"', "content-md5": "x", "content-length": "3"}
    assert signed_view(sent, _authorized({"host"}, False)) == sent
    assert signed_view(sent, None) == sent  # anonymous: nothing signed, nothing claimed


@pytest.mark.parametrize("name,value", [("content-type", "text/\udcff"),
                                        ("x-amz-meta-\udcff", "v"),
                                        ("if-none-match", "\udcff"), ("range", "bytes=\udcff")])
def test_interpreted_headers_that_are_not_utf8_are_invalid_argument(name: str, value: str
                                                                   ) -> None:
    # broke: a signed Content-Type with a byte that is not UTF-8 was a 500
    from ambry.frontend.s3.coverage import signed_view
    from ambry.frontend.s3.errors import S3Error

    with pytest.raises(S3Error) as e:
        signed_view({"host": "h", name: value}, _authorized({"host", name}, False))
    assert (e.value.s3_code, e.value.status) == ("InvalidArgument", 400)
    e.value.message.encode("utf-8")  # the reply can be written
    signed_view({"host": "h", "user-agent": "\udcff"}, None)  # not interpreted: left alone
    # user metadata values are user data, kept whatever their bytes (app._stored_meta_value)
    signed_view({"host": "h", "x-amz-meta-k": "\udcc3"}, _authorized({"host", "x-amz-meta-k"},
                                                                    False))


def test_a_header_that_is_not_utf8_is_signed_as_the_bytes_sent() -> None:
    # broke: UnicodeEncodeError (a 500) while hashing the canonical request; AWS signs the
    # bytes as sent, and aiohttp hands them over as lone surrogates (surrogateescape)
    sent = b"text/\xff"
    h = headers(host="h", x_amz_date="20130524T000000Z",
                x_amz_content_sha256=sigv4.EMPTY_SHA256)
    h["content-type"] = [sent.decode("utf-8", "surrogateescape")]
    canonical = (b"GET\n/k\n\ncontent-type:" + sent + b"\nhost:h\nx-amz-content-sha256:"
                 + sigv4.EMPTY_SHA256.encode() + b"\nx-amz-date:20130524T000000Z\n\n"
                 b"content-type;host;x-amz-content-sha256;x-amz-date\n"
                 + sigv4.EMPTY_SHA256.encode())
    sts = (f"AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
           f"{hashlib.sha256(canonical).hexdigest()}")
    key = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")
    h["authorization"] = [auth("content-type;host;x-amz-content-sha256;x-amz-date",
                               sigv4.sign(key, sts))]
    assert verify("GET", "/k", h).access_key == AK
    h["content-type"] = ["text/\udcfe"]
    with pytest.raises(sigv4.AuthError) as e:
        verify("GET", "/k", h)
    assert e.value.code == "SignatureDoesNotMatch"


def test_a_query_that_is_not_utf8_is_a_400_not_a_crash() -> None:
    h = headers(host="h", x_amz_date="20130524T000000Z",
                x_amz_content_sha256=sigv4.EMPTY_SHA256,
                authorization=auth("host;x-amz-content-sha256;x-amz-date", "0" * 64))
    with pytest.raises(sigv4.AuthError) as e:
        verify("GET", "/k", h, "prefix=\udcff")
    assert (e.value.code, e.value.status) == ("InvalidArgument", 400)


def test_sigv2_covers_content_type_md5_and_every_amz_header() -> None:
    from ambry.frontend.s3.sigv2 import covered_by_v2

    assert covered_by_v2(["host", "content-type", "content-md5", "x-amz-meta-a",
                          "content-disposition", "cache-control"]) == \
        {"content-type", "content-md5", "x-amz-meta-a"}


@given(st.one_of(st.from_regex(r"\A[0-9]{8}T[0-9]{6}Z\Z"),
                 st.datetimes().map(lambda d: d.strftime("%Y%m%dT%H%M%SZ")).filter(
                     lambda t: len(t) == 16)))
@example("20230230T000000Z")
@example("20240229T235960Z")
@example("20231301T000000Z")
def test_amz_dates_parse_as_strptime_parses_them(text: str) -> None:
    # parse_amz_date reads the fields by position (strptime cost ~2 % of the frontend's CPU
    # per S3 request): the same seconds for every valid date, a ValueError for every date
    # strptime refuses (month 13, February 30, hour 24, ...)
    import calendar
    import time
    try:
        want: int | None = calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        want = None
    try:
        got: int | None = sigv4.parse_amz_date(text)
    except ValueError:
        got = None
    assert got == want
