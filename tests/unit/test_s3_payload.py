"""aws-chunked decoding and streaming body checks (ambry.frontend.s3.payload, .checksums)."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import zlib

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.frontend.s3 import sigv4
from ambry.frontend.s3.checksums import (
    ALGORITHMS,
    crc32c_py,
    crc64nvme_py,
    new_checksum,
)
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.payload import (
    ChunkedDecoder,
    ChunkEnd,
    ChunkStart,
    Data,
    End,
    S3Body,
    Trailer,
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def decode(pieces: list[bytes], signed: bool = False) -> tuple[bytes, list[object]]:
    d = ChunkedDecoder(signed=signed)
    data = bytearray()
    events: list[object] = []
    for p in pieces:
        for ev in d.feed(p):
            if isinstance(ev, Data):
                data += ev.data
            else:
                events.append(ev)
    d.finish()
    return bytes(data), events


def unsigned_encoding(chunks: list[bytes], trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    return out + b"0\r\n" + trailer + b"\r\n"


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_unsigned_chunks_decode_the_same_however_the_bytes_are_split(
        chunks: list[bytes], cuts: list[int]) -> None:
    raw = unsigned_encoding(chunks, b"x-amz-checksum-crc32:AAAAAA==\r\n")
    data, events = decode(split_at(raw, cuts))
    assert data == b"".join(chunks)
    assert [e for e in events if isinstance(e, ChunkStart)] == \
        [ChunkStart(len(c), None) for c in chunks] + [ChunkStart(0, None)]
    assert Trailer("x-amz-checksum-crc32", "AAAAAA==", b"x-amz-checksum-crc32:AAAAAA==") \
        in events
    assert isinstance(events[-1], End)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_signed_chunk_headers_split_anywhere(chunks: list[bytes], cuts: list[int]) -> None:
    sig = "ab" * 32
    raw = b"".join(b"%x;chunk-signature=%s\r\n%s\r\n" % (len(c), sig.encode(), c)
                   for c in chunks) + b"0;chunk-signature=" + sig.encode() + b"\r\n\r\n"
    data, events = decode(split_at(raw, cuts), signed=True)
    assert data == b"".join(chunks)
    assert sum(isinstance(e, ChunkEnd) for e in events) == len(chunks) + 1


@pytest.mark.parametrize("raw,signed", [
    (b"5\r\nhello\r\n", False),                       # no final chunk
    (b"5\r\nhelloX\r\n0\r\n\r\n", False),            # data longer than its size
    (b"zz\r\nhello\r\n0\r\n\r\n", False),            # not hex
    (b"5\nhello\r\n0\r\n\r\n", False),               # LF without CR
    (b"5\r\nhello\r\n0\r\n\r\nextra", False),        # bytes after the end
    (b"5\r\nhello\r\n0\r\n\r\n", True),              # unsigned chunk in a signed stream
    (b"5;chunk-signature=" + b"a" * 64 + b"\r\nhello\r\n0\r\n\r\n", False),
    (b"5;chunk-signature=xyz\r\nhello\r\n0\r\n\r\n", False),
    (b"1" * 5000 + b"\r\n", False),                  # endless header line
    (b"0\r\nno-colon\r\n\r\n", False),               # bad trailer
])
def test_malformed_encodings_are_400_or_403(raw: bytes, signed: bool) -> None:
    with pytest.raises(S3Error) as e:
        decode([raw], signed=signed)
    assert e.value.status in (400, 403)


# ------------------------------------------------------------------ S3Body
async def read_all(body: S3Body, n: int = 1000) -> bytes:
    out = bytearray()
    while True:
        piece = await body.read(n)
        if not piece:
            return bytes(out)
        out += piece


def reader(data: bytes, step: int = 333):  # type: ignore[no-untyped-def]
    pos = [0]

    async def read(n: int) -> bytes:
        piece = data[pos[0]:pos[0] + min(n, step)]
        pos[0] += len(piece)
        return piece

    return read


def unsigned_auth(mode: str) -> sigv4.Authorized:
    return sigv4.Authorized("AK", mode, b"k" * 32, "20130524/us-east-1/s3/aws4_request",
                            "20130524T000000Z", "0" * 64)


async def test_botocore_unsigned_trailer_body_with_crc32_is_verified() -> None:
    data = bytes(range(256)) * 300
    wrapped = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=Crc32Checksum,
                                checksum_name="x-amz-checksum-crc32", chunk_size=7000).read()
    h = {"x-amz-trailer": "x-amz-checksum-crc32",
         "x-amz-decoded-content-length": str(len(data)), "content-encoding": "aws-chunked"}
    body = S3Body(reader(wrapped), h, unsigned_auth(sigv4.STREAMING_UNSIGNED_TRAILER))
    assert await read_all(body) == data
    assert body.checksum_value == base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    # one flipped byte of payload fails the trailer checksum
    bad = bytearray(wrapped)
    bad[wrapped.index(b"\r\n") + 10] ^= 1
    body = S3Body(reader(bytes(bad)), h, unsigned_auth(sigv4.STREAMING_UNSIGNED_TRAILER))
    with pytest.raises(S3Error) as e:
        await read_all(body)
    assert e.value.s3_code == "BadDigest"


async def test_signed_stream_with_signed_trailer() -> None:
    key = sigv4.signing_key("secret", "20130524", "us-east-1", "s3")
    scope, date, seed = "20130524/us-east-1/s3/aws4_request", "20130524T000000Z", "1" * 64
    data = b"trailer test " * 1000
    prev = seed
    raw = b""
    for piece in (data[:5000], data[5000:], b""):
        sig = sigv4.sign(key, sigv4.chunk_string_to_sign(date, scope, prev,
                                                         hashlib.sha256(piece).hexdigest()))
        raw += b"%x;chunk-signature=%s\r\n" % (len(piece), sig.encode())
        raw += piece + b"\r\n" if piece else b""
        prev = sig
    ck = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    trailer = f"x-amz-checksum-crc32:{ck}\n".encode()
    tsig = sigv4.sign(key, sigv4.trailer_string_to_sign(date, scope, prev, trailer))
    raw += trailer.replace(b"\n", b"\r\n") + f"x-amz-trailer-signature:{tsig}\r\n\r\n".encode()
    a = sigv4.Authorized("AK", sigv4.STREAMING_SIGNED_TRAILER, key, scope, date, seed)
    h = {"x-amz-trailer": "x-amz-checksum-crc32",
         "x-amz-decoded-content-length": str(len(data))}
    body = S3Body(reader(raw, 77), h, a)
    assert await read_all(body) == data
    bad = raw.replace(tsig.encode(), b"0" * 64)
    with pytest.raises(S3Error) as e:
        await read_all(S3Body(reader(bad, 77), h, a))
    assert e.value.s3_code == "SignatureDoesNotMatch"


async def test_payload_sha256_is_checked_before_the_end_is_reported() -> None:
    data = b"x" * 10_000
    good = hashlib.sha256(data).hexdigest()
    body = S3Body(reader(data), {"content-length": str(len(data))}, unsigned_auth(good))
    assert await read_all(body) == data
    body = S3Body(reader(data), {"content-length": str(len(data))},
                  unsigned_auth(hashlib.sha256(b"other").hexdigest()))
    with pytest.raises(S3Error) as e:
        await read_all(body)
    assert e.value.s3_code == "XAmzContentSHA256Mismatch"


@pytest.mark.parametrize("headers,code", [
    ({"content-md5": base64.b64encode(hashlib.md5(b"nope").digest()).decode()}, "BadDigest"),
    ({"x-amz-checksum-sha256": base64.b64encode(b"0" * 32).decode()}, "BadDigest"),
    ({"x-amz-decoded-content-length": "5", "x-amz-trailer": "x-amz-checksum-crc32"},
     "IncompleteBody"),
])
async def test_digest_and_length_mismatches(headers: dict[str, str], code: str) -> None:
    data = b"hello world"
    mode = sigv4.UNSIGNED_PAYLOAD
    raw = data
    if "x-amz-trailer" in headers:
        mode = sigv4.STREAMING_UNSIGNED_TRAILER
        raw = unsigned_encoding([data], b"x-amz-checksum-crc32:AAAAAA==\r\n")
    with pytest.raises(S3Error) as e:
        await read_all(S3Body(reader(raw), headers, unsigned_auth(mode)))
    assert e.value.s3_code == code


def test_unknown_checksum_algorithm_and_bad_content_md5_are_400() -> None:
    with pytest.raises(S3Error):
        S3Body(reader(b""), {"x-amz-checksum-md6": "x"}, unsigned_auth(sigv4.UNSIGNED_PAYLOAD))
    with pytest.raises(S3Error) as e:
        S3Body(reader(b""), {"content-md5": "!!"}, unsigned_auth(sigv4.UNSIGNED_PAYLOAD))
    assert e.value.s3_code == "InvalidDigest"


# ------------------------------------------------------------------ checksums
def test_crc_check_values() -> None:
    # the standard check inputs of the CRC catalogue
    assert crc32c_py(b"123456789") == 0xE3069283
    assert crc64nvme_py(b"123456789") == 0xAE8B14860A799888


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.binary(max_size=200), max_size=5))
def test_native_crcs_match_their_python_twins(parts: list[bytes]) -> None:
    data = b"".join(parts)
    for name, fn, width in (("crc32c", crc32c_py, 4), ("crc64nvme", crc64nvme_py, 8)):
        ck = ALGORITHMS[name]()
        for p in parts:
            ck.update(p)
        assert ck.b64digest() == base64.b64encode(fn(data).to_bytes(width, "big")).decode()
    sha = new_checksum("SHA256")
    assert sha is not None
    sha.update(data)
    assert sha.b64digest() == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_botocore_and_ambry_agree_on_crc32() -> None:
    c = Crc32Checksum()
    c.update(b"abc" * 1000)
    mine = ALGORITHMS["crc32"]()
    mine.update(b"abc" * 1000)
    assert c.b64digest() == mine.b64digest()
