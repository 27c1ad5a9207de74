"""Request bodies of the S3 API: ``aws-chunked`` decoding and streaming verification.

Owns
  * :class:`ChunkedDecoder`, a pure (sans-I/O) parser of the ``aws-chunked`` content encoding
    in all its S3 forms: signed chunks (``<hex>;chunk-signature=<sig>\\r\\n<data>\\r\\n``),
    unsigned chunks (``<hex>\\r\\n<data>\\r\\n``), the final 0-size chunk and the trailer lines
    that follow it (``x-amz-checksum-crc32:<b64>``, ``x-amz-trailer-signature:<sig>``), ended
    by an empty line. Bytes may arrive split anywhere; data passes through without being held.
  * :class:`S3Body`, the reader the router pulls an upload from: it decodes, checks every
    chunk signature as the chunk ends, hashes the payload against ``x-amz-content-sha256``,
    computes the MD5 (the ETag) and any flexible checksum, and checks them all *before* it
    reports the end of the body, so a bad body fails the upload before the blob is named.

Memory is bounded by one read from the socket (``BODY_READ_BYTES``) plus a chunk-header line
(``MAX_LINE_BYTES``): a whole body, or a whole aws-chunk, is never buffered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from ambry.frontend.s3 import sigv4
from ambry.frontend.s3.checksums import Checksum, new_checksum
from ambry.frontend.s3.errors import S3Error

__all__ = [
    "MAX_LINE_BYTES",
    "ChunkEnd",
    "ChunkStart",
    "ChunkedDecoder",
    "Data",
    "End",
    "Event",
    "S3Body",
    "Trailer",
]

#: Longest chunk-header or trailer line accepted (a signed header is ~ 90 bytes).
MAX_LINE_BYTES = 4096
#: Largest chunk size a header may announce (S3 clients use 8 KiB .. a few MiB).
MAX_CHUNK_BYTES = 1 << 40
_HEX = re.compile(r"[0-9a-fA-F]{1,16}", re.ASCII)
_SIG = re.compile(r"[0-9a-f]{64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ChunkStart:
    size: int
    signature: str | None


@dataclass(frozen=True, slots=True)
class Data:
    data: bytes


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    pass


@dataclass(frozen=True, slots=True)
class Trailer:
    name: str   # lower-case
    value: str
    line: bytes  # as sent, without CRLF (the trailer signature covers it)


@dataclass(frozen=True, slots=True)
class End:
    pass


Event = ChunkStart | Data | ChunkEnd | Trailer | End


def _bad(msg: str) -> S3Error:
    return S3Error("IncompleteBody" if "ended" in msg else "InvalidRequest",
                   f"malformed aws-chunked body: {msg}", 400)


class ChunkedDecoder:
    """Feed raw ``aws-chunked`` bytes, get events. ``signed``: chunk headers must carry a
    ``chunk-signature``; otherwise they must not. Errors raise :class:`S3Error` (400)."""

    def __init__(self, *, signed: bool) -> None:
        self.signed = signed
        self._state = "header"  # header | data | data_crlf | trailer | done
        self._line = bytearray()
        self._remaining = 0
        self.decoded_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, raw: bytes) -> list[Event]:
        out: list[Event] = []
        pos, n = 0, len(raw)
        while pos < n:
            st = self._state
            if st == "data":
                take = min(self._remaining, n - pos)
                out.append(Data(raw[pos:pos + take]))
                self._remaining -= take
                self.decoded_bytes += take
                pos += take
                if self._remaining == 0:
                    self._state = "data_crlf"
                continue
            if st == "done":
                raise _bad("data after the final chunk")
            # line-oriented states: header, data_crlf, trailer
            end = raw.find(b"\n", pos)
            piece = raw[pos:] if end < 0 else raw[pos:end + 1]
            pos += len(piece)
            self._line += piece
            if len(self._line) > MAX_LINE_BYTES:
                raise _bad("chunk header or trailer line too long")
            if end < 0:
                continue
            if not self._line.endswith(b"\r\n"):
                raise _bad("line not ended by CRLF")
            line = bytes(self._line[:-2])
            self._line.clear()
            self._on_line(line, out)
        return out

    def _on_line(self, line: bytes, out: list[Event]) -> None:
        st = self._state
        if st == "data_crlf":
            if line:
                raise _bad("chunk data longer than its size")
            out.append(ChunkEnd())
            self._state = "header"
            return
        if st == "trailer":
            if not line:
                out.append(End())
                self._state = "done"
                return
            name, colon, value = line.partition(b":")
            if not colon or not name:
                raise _bad("malformed trailer line")
            try:
                out.append(Trailer(name.decode("ascii").strip().lower(),
                                   value.decode("ascii").strip(), line))
            except UnicodeDecodeError:
                raise _bad("trailer is not ASCII") from None
            return
        # a chunk header: <hex>[;chunk-signature=<sig>]
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise _bad("chunk header is not ASCII") from None
        size_text, semi, ext = text.partition(";")
        if _HEX.fullmatch(size_text) is None:
            raise _bad(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size > MAX_CHUNK_BYTES:
            raise _bad("chunk size too large")
        sig: str | None = None
        if semi:
            k, eq, v = ext.partition("=")
            if k != "chunk-signature" or not eq or _SIG.fullmatch(v) is None:
                raise _bad("bad chunk extension")
            sig = v
        if self.signed and sig is None:
            raise S3Error("SignatureDoesNotMatch", "a chunk of a signed stream has no "
                                                   "chunk-signature", 403)
        if not self.signed and sig is not None:
            raise _bad("chunk-signature in an unsigned stream")
        out.append(ChunkStart(size, sig))
        if size:
            self._remaining = size
            self._state = "data"
        else:
            out.append(ChunkEnd())
            self._state = "trailer"

    def finish(self) -> None:
        """The raw body ended: it must have ended exactly at the end of the encoding."""
        if self._state != "done":
            raise _bad("the body ended before the final chunk")


ReadRaw = Callable[[int], Awaitable[bytes]]


class S3Body:
    """An upload body as the router reads it (``read(n)``, ``b""`` only at a verified end).

    ``auth`` is the verified signature (None for anonymous requests); ``headers`` maps
    lower-case names to values. After the end: ``md5_hex``, ``size``, ``checksum`` (the
    algorithm and base64 value, if the client sent one).
    """

    def __init__(self, read_raw: ReadRaw, headers: Mapping[str, str],
                 auth: sigv4.Authorized | None, *, read_bytes: int = 256 * 1024) -> None:
        self._read_raw = read_raw
        self._read_bytes = read_bytes
        self._auth = auth
        self._pending: list[bytes] = []
        self._pending_off = 0
        self._eof = False
        self.size = 0
        self._md5 = hashlib.md5()
        payload = headers.get("x-amz-content-sha256", "")
        if auth is not None:
            payload = auth.payload_hash
        self._mode = payload
        self._raw_sha = hashlib.sha256() if re.fullmatch(r"[0-9a-f]{64}", payload) else None
        streaming = payload.startswith("STREAMING-")
        if streaming and payload not in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER,
                                         sigv4.STREAMING_UNSIGNED_TRAILER):
            raise S3Error("InvalidArgument", f"unsupported payload mode {payload}", 400)
        self._signed = payload in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER)
        if self._signed and auth is None:
            raise S3Error("AccessDenied", "a signed stream needs a signed request", 403)
        self._decoder = ChunkedDecoder(signed=self._signed) if streaming else None
        self._prev_sig = auth.seed_signature if auth is not None else ""
        self._chunk_sha: hashlib._Hash | None = None
        self._chunk_sig: str | None = None
        self._trailer_lines: list[bytes] = []
        self._trailer_sig: str | None = None
        self._trailers: dict[str, str] = {}
        dl = headers.get("x-amz-decoded-content-length")
        if dl is not None and not dl.isdigit():
            raise S3Error("InvalidArgument", "x-amz-decoded-content-length must be an integer")
        self.declared_size: int | None = int(dl) if dl is not None else None
        if self._decoder is None:
            cl = headers.get("content-length")
            self.declared_size = int(cl) if cl is not None and cl.isdigit() else None
        # flexible checksum: value in a header now, or named by x-amz-trailer for later
        self.checksum_algorithm: str | None = None
        self._checksum_expected: str | None = None
        self._checksum: Checksum | None = None
        for name, value in headers.items():
            if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-type":
                self._set_checksum(name[len("x-amz-checksum-"):], value)
        trailer = headers.get("x-amz-trailer")
        if trailer is not None:
            if self._decoder is None:
                raise S3Error("InvalidRequest", "x-amz-trailer needs an aws-chunked body")
            t = trailer.strip().lower()
            if not t.startswith("x-amz-checksum-"):
                raise S3Error("InvalidRequest", f"unsupported trailer {trailer!r}")
            self._set_checksum(t[len("x-amz-checksum-"):], None)
        self._content_md5: bytes | None = None
        if "content-md5" in headers:
            try:
                self._content_md5 = base64.b64decode(headers["content-md5"], validate=True)
            except (binascii.Error, ValueError):
                self._content_md5 = b""
            if len(self._content_md5) != 16:
                raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
        self.checksum_value: str | None = None

    def _set_checksum(self, algorithm: str, value: str | None) -> None:
        if self._checksum is not None:
            raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header")
        ck = new_checksum(algorithm)
        if ck is None:
            raise S3Error("InvalidRequest", f"unsupported checksum algorithm {algorithm!r}")
        self.checksum_algorithm = algorithm.lower()
        self._checksum = ck
        self._checksum_expected = value

    @property
    def md5_hex(self) -> str:
        return self._md5.hexdigest()

    @property
    def md5_digest(self) -> bytes:
        return self._md5.digest()

    # ------------------------------------------------------------------ reading
    async def read(self, n: int) -> bytes:
        while not self._pending and not self._eof:
            await self._pull()
        if not self._pending:
            return b""
        head = self._pending[0]
        if self._pending_off == 0 and len(head) <= n:
            self._pending.pop(0)
            return head
        out = head[self._pending_off:self._pending_off + n]
        self._pending_off += len(out)
        if self._pending_off >= len(head):
            self._pending.pop(0)
            self._pending_off = 0
        return out

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.declared_size is not None and self.size > self.declared_size:
            raise S3Error("IncompleteBody", "the body is longer than its declared length")
        self._md5.update(data)
        if self._checksum is not None:
            self._checksum.update(data)
        self._pending.append(data)

    async def _pull(self) -> None:
        raw = await self._read_raw(self._read_bytes)
        if self._raw_sha is not None:
            self._raw_sha.update(raw)
        if not raw:
            self._eof = True
            if self._decoder is not None:
                self._decoder.finish()
            self._final_checks()
            return
        if self._decoder is None:
            self._emit(raw)
            return
        for ev in self._decoder.feed(raw):
            self._on_event(ev)

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, Data):
            if self._chunk_sha is not None:
                self._chunk_sha.update(ev.data)
            self._emit(ev.data)
        elif isinstance(ev, ChunkStart):
            self._chunk_sig = ev.signature
            self._chunk_sha = hashlib.sha256() if self._signed else None
        elif isinstance(ev, ChunkEnd):
            if self._signed:
                assert self._auth is not None and self._chunk_sha is not None
                assert self._chunk_sig is not None
                sts = sigv4.chunk_string_to_sign(self._auth.amz_date, self._auth.scope,
                                                 self._prev_sig, self._chunk_sha.hexdigest())
                if not hmac.compare_digest(sigv4.sign(self._auth.key, sts), self._chunk_sig):
                    raise S3Error("SignatureDoesNotMatch", "a chunk signature does not "
                                                           "match", 403)
                self._prev_sig = self._chunk_sig
        elif isinstance(ev, Trailer):
            if ev.name == "x-amz-trailer-signature":
                self._trailer_sig = ev.value
            else:
                if self._trailer_sig is not None:
                    raise _bad("a trailer after the trailer signature")
                self._trailer_lines.append(ev.line + b"\n")
                self._trailers[ev.name] = ev.value
        elif isinstance(ev, End):
            pass

    def _final_checks(self) -> None:
        if self._raw_sha is not None and self._raw_sha.hexdigest() != self._mode:
            raise S3Error("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' "
                                                       "header does not match what was "
                                                       "computed.")
        if self._mode == sigv4.STREAMING_SIGNED_TRAILER:
            assert self._auth is not None
            if self._trailer_sig is None:
                raise S3Error("SignatureDoesNotMatch", "the trailer is not signed", 403)
            sts = sigv4.trailer_string_to_sign(self._auth.amz_date, self._auth.scope,
                                               self._prev_sig, b"".join(self._trailer_lines))
            if not hmac.compare_digest(sigv4.sign(self._auth.key, sts), self._trailer_sig):
                raise S3Error("SignatureDoesNotMatch", "the trailer signature does not "
                                                       "match", 403)
        if self._decoder is not None and self._trailers and self._checksum is None:
            raise _bad("trailers without x-amz-trailer")
        if self.declared_size is not None and self.size != self.declared_size:
            raise S3Error("IncompleteBody", "You did not provide the number of bytes "
                                            "specified by the Content-Length HTTP header")
        if self._content_md5 is not None and self._content_md5 != self._md5.digest():
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we "
                                       "received.")
        if self._checksum is not None:
            assert self.checksum_algorithm is not None
            expected = self._checksum_expected
            if expected is None:
                expected = self._trailers.get("x-amz-checksum-" + self.checksum_algorithm)
                if expected is None:
                    raise S3Error("InvalidRequest", "the x-amz-trailer checksum was not sent")
            got = self._checksum.b64digest()
            if got != expected.strip():
                raise S3Error("BadDigest", f"The {self.checksum_algorithm.upper()} you "
                                           f"specified did not match the calculated "
                                           f"checksum.")
            self.checksum_value = got
