"""Seekable readers over one blob: range requests with adaptive read-ahead.

Owns :class:`AsyncBlobReader` (the one implementation) and the sync face of it,
:class:`BlobReader` (an :class:`io.BufferedReader` over a raw reader that calls the async one
on the client's loop thread), so ``zipfile``, ``tarfile``, ``numpy.load`` and ``torch.load``
read a blob without downloading it first.

How reads become requests: a read at position ``p`` opens ``GET Range: bytes=p-q`` and keeps
the reply open; the next read that continues at ``q`` opens the next range with twice the
read-ahead (up to ``max_read_ahead_bytes``), so a sequential read quickly moves in large
ranges, and once a range of the largest size was read through, the next one asks for the
rest of the blob; a seek elsewhere falls back to the small initial read-ahead, so random
access fetches little more than it reads. A short forward seek inside the open range reads and
drops the gap instead of opening a new request. Ranges are bounded, so the network never
carries much more than asked: :attr:`AsyncBlobReader.bytes_requested` counts every byte of
every range opened.

End to end: bytes handed out contiguously from offset 0 are hashed as they go; when that
prefix reaches the end of the blob, the xxh3 stored at upload is checked and a mismatch
raises :class:`~ambry.client.IntegrityError`. (Reads that skip around cannot be verified as
a whole; each range is still checked to be the range asked for.) A reply cut mid-body is
re-requested from the byte where it stopped, up to the retry policy's attempts.

Does not own request retries and failover (``_transport``).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, Self, TypeVar

import aiohttp
import xxhash

from ambry.client._download import check_range_reply
from ambry.client._errors import ConnectionFailed, IntegrityError
from ambry.client._transport import Transport
from ambry.client._types import BlobInfo

__all__ = ["AsyncBlobReader", "BlobReader"]

T = TypeVar("T")

#: A forward seek of at most this many bytes inside the open range is read and dropped.
_SKIP_MAX_BYTES = 256 * 1024
_ITER_PIECE_BYTES = 1024 * 1024


class AsyncBlobReader:
    """A seekable, read-only view of one blob (by id; a named blob is pinned to the id it
    named when opened). Not safe for concurrent use by several tasks. Close it (or use
    ``async with``) to release its connection.

    ``info`` is the blob's :class:`BlobInfo`; ``size`` its length. ``requests`` and
    ``bytes_requested`` count the range requests made and the bytes they covered.
    """

    def __init__(self, transport: Transport, info: BlobInfo, *,
                 headers: Mapping[str, str] | None = None, read_ahead_bytes: int = 256 * 1024,
                 max_read_ahead_bytes: int = 16 * 1024 * 1024, request_id: str = "") -> None:
        if read_ahead_bytes < 1 or max_read_ahead_bytes < read_ahead_bytes:
            raise ValueError("need 1 <= read_ahead_bytes <= max_read_ahead_bytes")
        self._t = transport
        self.info = info
        self.size = info.size
        self.blob_id = info.blob_id
        self._path = "/" + info.blob_id
        self._headers = dict(headers or {})
        self._ra_min = read_ahead_bytes
        self._ra_max = max_read_ahead_bytes
        self._ra = read_ahead_bytes
        self._rid = request_id or transport.new_request_id()
        self._pos = 0
        self._resp: aiohttp.ClientResponse | None = None
        self._resp_pos = 0
        self._resp_end = 0
        self._last_end = -1
        self._hasher = xxhash.xxh3_64()
        self._hashed = 0
        self._verified = False
        self.closed = False
        self.requests = 0
        self.bytes_requested = 0

    # ------------------------------------------------------------------ position
    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (no I/O); past the end is allowed and reads return ``b""``."""
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    # ------------------------------------------------------------------ reading
    async def readinto(self, buf: memoryview | bytearray) -> int:
        """Read up to ``len(buf)`` bytes at the position into ``buf`` (from one range; may
        return fewer); 0 at the end."""
        self._check_open()
        out = memoryview(buf).cast("B")
        want = min(len(out), self.size - self._pos)
        if want <= 0:
            return 0
        await self._position_reply(want)
        got = 0
        failures = 0
        while got < want:
            if self._resp is None:
                await self._open_at(self._pos + got, want - got)
            assert self._resp is not None
            n = min(want - got, self._resp_end - self._resp_pos)
            try:
                piece = await self._resp.content.read(n)
                if not piece:
                    raise aiohttp.ClientPayloadError("reply ended before its Content-Range")
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                self._drop_reply()
                failures += 1
                if failures >= self._t.retry.attempts:
                    raise ConnectionFailed(f"reading blob {self.blob_id}: {e}") from e
                continue
            out[got:got + len(piece)] = piece
            got += len(piece)
            self._resp_pos += len(piece)
            if self._resp_pos >= self._resp_end:
                self._resp.release()  # fully read: the connection goes back to the pool
                self._resp = None
        self._account(out[:got])
        self._pos += got
        return got

    async def read(self, n: int = -1) -> bytes:
        """``n`` bytes (fewer only at the end); all the rest for ``n < 0``."""
        self._check_open()
        left = max(0, self.size - self._pos)
        n = left if n is None or n < 0 else min(n, left)
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = await self.readinto(view[got:])
            if k == 0:
                break
            got += k
        del view
        return bytes(buf[:got]) if got != n else bytes(buf)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The rest of the blob in pieces of up to 1 MiB."""
        while True:
            piece = await self.read(_ITER_PIECE_BYTES)
            if not piece:
                return
            yield piece

    async def aclose(self) -> None:
        self._drop_reply()
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed blob reader")

    def _drop_reply(self) -> None:
        if self._resp is not None:
            self._resp.close()  # unread bytes left: the connection cannot be reused
            self._resp = None

    async def _position_reply(self, want: int) -> None:
        """Keep the open reply if it continues at the position (reading and dropping a short
        gap); else drop it (the next read opens a new range)."""
        r = self._resp
        if r is None or self._resp_pos == self._pos:
            return
        gap = self._pos - self._resp_pos
        if 0 < gap <= _SKIP_MAX_BYTES and self._pos < self._resp_end:
            try:
                while self._resp_pos < self._pos:
                    piece = await r.content.read(self._pos - self._resp_pos)
                    if not piece:
                        break
                    self._resp_pos += len(piece)
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            if self._resp_pos == self._pos:
                return
        self._drop_reply()

    async def _open_at(self, pos: int, want: int) -> None:
        sequential = pos == self._last_end
        if sequential and self._ra >= self._ra_max:
            # a long sequential read (a whole-blob stream): ask for the rest in one range, so
            # the frontend streams it with its own chunk prefetch instead of a request per
            # range (closing the reply early stops the stream; little more than the socket
            # buffers is wasted)
            end = self.size
        else:
            self._ra = min(self._ra * 2, self._ra_max) if sequential else self._ra_min
            end = min(self.size, pos + max(want, self._ra))
        hdrs = {**self._headers, "Range": f"bytes={pos}-{end - 1}"}
        resp, _ = await self._t.open("GET", self._path, headers=hdrs,
                                     what=f"read blob {self.blob_id}", rid=self._rid)
        try:
            check_range_reply(resp.status, resp.headers, pos, end - pos, self.blob_id,
                              f"read blob {self.blob_id}")
        except BaseException:
            resp.close()
            raise
        self._resp, self._resp_pos, self._resp_end = resp, pos, end
        self._last_end = end
        self.requests += 1
        self.bytes_requested += end - pos

    def _account(self, data: memoryview) -> None:
        """Hash bytes that extend the verified prefix; check the whole blob at its end."""
        start = self._pos
        end = start + len(data)
        if start <= self._hashed < end:
            self._hasher.update(data[self._hashed - start:])
            self._hashed = end
        if self._hashed == self.size and not self._verified:
            self._verified = True
            want = self.info.content_xxh3
            if want is not None and self._hasher.hexdigest() != want.rjust(16, "0"):
                raise IntegrityError(f"blob {self.blob_id}: xxh3 of the bytes read "
                                     f"{self._hasher.hexdigest()} != {want} stored at upload")


class _SyncRaw(io.RawIOBase):
    """The raw layer of :class:`BlobReader`: each call runs the async reader's method on the
    client's event loop thread and waits for it."""

    def __init__(self, reader: AsyncBlobReader,
                 call: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        super().__init__()
        self._r = reader
        self._call = call

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n: int = self._call(self._r.readinto(memoryview(b).cast("B")))
        return n

    def readall(self) -> bytes:
        data: bytes = self._call(self._r.read(-1))
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._r.seek(offset, whence)

    def tell(self) -> int:
        return self._r.tell()

    def close(self) -> None:
        if not self.closed:
            try:
                self._call(self._r.aclose())
            except RuntimeError:
                pass  # the client (and its loop) is already closed: nothing left to release
        super().close()


class BlobReader(io.BufferedReader):
    """A seekable, buffered, read-only binary file over one blob (see the module docstring
    for how reads become range requests). Use it as a context manager or ``close()`` it.

    Works where a binary file is expected::

        with client.open(blob_id) as f, zipfile.ZipFile(f) as z:
            data = z.read("member.txt")

    Not thread-safe (as any file object); each thread should open its own reader.
    """

    def __init__(self, reader: AsyncBlobReader,
                 call: Callable[[Coroutine[Any, Any, Any]], Any],
                 buffer_size: int = 128 * 1024) -> None:
        super().__init__(_SyncRaw(reader, call), buffer_size)
        self._reader = reader

    @property
    def info(self) -> BlobInfo:
        return self._reader.info

    @property
    def blob_id(self) -> str:
        return self._reader.blob_id

    @property
    def size(self) -> int:
        return self._reader.size

    @property
    def requests(self) -> int:
        """Range requests made so far."""
        return self._reader.requests

    @property
    def bytes_requested(self) -> int:
        """Bytes covered by the range requests made so far (what crossed the network, at
        most)."""
        return self._reader.bytes_requested
