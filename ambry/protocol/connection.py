"""One pipelined connection to a storage node, and the replies it hands out.

Owns the wire side of :class:`~ambry.protocol.client.NodeClient`: writing request frames
(many in flight per connection), the read loop that matches replies to requests by ``corr``,
reading small reply payloads itself and handing large ones to the caller as a stream, and
failing every waiting call with :class:`~ambry.common.errors.Unavailable` when the connection
breaks. Does not own the pool of connections, timeouts per call or the operations
(``client``).

A reply with a payload (``get``) holds its connection's read side until the payload is
consumed: read it (``await reply.read()``), iterate it (``async for piece in
reply.iter_chunks()``), or give it back (``await reply.release()`` / ``async with reply``;
idempotent, and concurrent releases share one drop that a cancelled caller does not stop). A
consumer that makes no progress for the stall timeout (the client's ``request_timeout_ms``)
gets its connection closed (the other calls on it fail with Unavailable and are retried by
their callers), so a forgotten reply costs one connection, never the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Self

import xxhash

from ambry.common.errors import AmbryError, Unavailable
from ambry.common.properties import BlobProperties
from ambry.protocol import stream
from ambry.protocol.framing import read_header, write_message
from ambry.protocol.messages import state_from_wire

__all__ = ["Connection", "GetReply", "PayloadCheck", "Reply"]

log = logging.getLogger(__name__)

_INLINE_PAYLOAD_MAX_BYTES = 256 * 1024  # smaller reply payloads are read by the connection
_READ_WHOLE_MAX_BYTES = 16 * 1024 * 1024  # Reply.read() of at most this: one read, one buffer
_STREAMING_LOAD = 1_000_000  # a connection busy streaming a payload is the last choice
#: A request without a payload whose header is at most this big is corked: the headers
#: written to one connection in one loop step leave in one write (one send(), one loopback
#: packet the node reads and parses together), not one each.
CORK_MAX_FRAME_BYTES = 4096


class _PayloadStream:
    """The payload bytes of one reply, read straight from the connection."""

    def __init__(self, conn: Connection, length: int) -> None:
        self._conn = conn
        self.length = length
        self.remaining = length
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_progress = time.monotonic()
        self._busy = False
        self._idle = asyncio.Event()  # set while no read_chunk is in progress
        self._idle.set()
        self._dropping: asyncio.Task[None] | None = None  # the one release of the unread rest

    def _done(self, exc: BaseException | None = None) -> None:
        if not self.finished.done():
            if exc is None:
                self.finished.set_result(None)
            else:
                self.finished.set_exception(exc)
                self.finished.exception()  # mark retrieved: the read loop may not be waiting

    async def read_chunk(self, max_bytes: int, exactly: bool = False) -> bytes | bytearray:
        """Up to ``max_bytes`` of the payload (``exactly``: that many, or all that is left);
        b"" once it is all read."""
        if self.remaining == 0:
            return b""
        if self.finished.done():
            raise Unavailable(f"connection to {self._conn.peer} lost mid-payload")
        if self._busy:
            raise RuntimeError("a reply payload is read by one task at a time")
        self._busy = True
        self._idle.clear()
        try:
            async with asyncio.timeout(self._conn.stall_timeout_s):
                n = min(max_bytes, self.remaining)
                piece = await (self._conn.reader.readexactly(n) if exactly else
                               self._conn.reader.read(n))
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
            err = Unavailable(f"reading a payload from {self._conn.peer}: {type(e).__name__}")
            self._done(err)
            self._conn.fail(err)
            raise err from None
        finally:
            self._busy = False
            self._idle.set()
        if not piece:
            err = Unavailable(f"connection to {self._conn.peer} closed mid-payload "
                              f"({self.remaining} of {self.length} bytes missing)")
            self._done(err)
            self._conn.fail(err)
            raise err
        self.remaining -= len(piece)
        self.last_progress = time.monotonic()
        if self.remaining == 0:
            self._done()
        return piece

    async def discard(self) -> None:
        while self.remaining:
            if self._busy:  # a read of another task is in progress: let it finish first
                await self._idle.wait()
                continue
            await self.read_chunk(1 << 20)

    def release_soon(self) -> asyncio.Task[None] | None:
        """Start dropping the unread rest of the payload, once: every later call gets the same
        task (None when nothing is left). It runs in a task of its own, so a caller that is
        cancelled while it waits never leaves a half-dropped payload holding the connection's
        read side (and every reply pipelined behind it) until the stall timeout."""
        if self._dropping is None and self.remaining:
            self._dropping = _spawn(self._drop())
        return self._dropping

    async def release(self) -> None:
        """Drop the unread rest and wait until it is dropped. Idempotent, and safe to call
        from several tasks at once: they all wait for the one drop."""
        task = self.release_soon()
        if task is not None:
            await asyncio.shield(task)

    async def _drop(self) -> None:
        try:
            await self.discard()
        except Unavailable:
            pass  # the connection failed and was closed: nothing is held any more


class _BufferedPayload:
    """A small reply payload the connection has already read (same interface as the stream)."""

    def __init__(self, data: bytes | bytearray) -> None:
        self._data = data
        self.length = len(data)
        self.remaining = len(data)

    async def read_chunk(self, max_bytes: int) -> bytes | bytearray:
        off = self.length - self.remaining
        if off == 0 and max_bytes >= self.length:
            piece = self._data  # the common case: all of it, no copy
        else:
            piece = self._data[off:off + max_bytes]
        self.remaining -= len(piece)
        return piece

    async def discard(self) -> None:
        self.remaining = 0

    def release_soon(self) -> None:
        self.remaining = 0  # read already: nothing holds the connection

    async def release(self) -> None:
        self.remaining = 0


class Reply:
    """A reply header, and its payload if it has one."""

    def __init__(self, header: dict[str, Any],
                 stream: _PayloadStream | _BufferedPayload | None) -> None:
        self.header = header
        self._stream = stream

    @property
    def payload_len(self) -> int:
        return self._stream.length if self._stream is not None else 0

    async def read(self) -> bytes | bytearray:
        """The whole (rest of the) payload."""
        if self._stream is None:
            return b""
        if isinstance(self._stream, _PayloadStream) and \
                self._stream.remaining <= _READ_WHOLE_MAX_BYTES:
            # one buffer the socket writes into (ambry.protocol.stream), not pieces joined:
            # a 4 MiB chunk was copied once more by the join
            return await self._stream.read_chunk(self._stream.remaining, exactly=True)
        parts: list[bytes | bytearray] = []
        while True:
            piece = await self._stream.read_chunk(1 << 20)
            if not piece:
                return b"".join(parts)
            parts.append(piece)

    async def iter_chunks(self, chunk_bytes: int = 1 << 20) -> AsyncIterator[bytes | bytearray]:
        """The payload in pieces of at most ``chunk_bytes``."""
        if self._stream is None:
            return
        while True:
            piece = await self._stream.read_chunk(chunk_bytes)
            if not piece:
                return
            yield piece

    async def release(self) -> None:
        """Drop whatever of the payload was not read (frees the connection). Idempotent and
        safe to call concurrently: the payload is dropped once (whichever Reply wraps it) and
        a second call while that is in progress waits for it."""
        if self._stream is not None:
            await self._stream.release()

    def release_soon(self) -> None:
        """``release`` without waiting for it (from a callback, or code that cannot await)."""
        if self._stream is not None:
            self._stream.release_soon()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


_BACKGROUND: set[asyncio.Task[None]] = set()


def _spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task kept referenced until it is done (the loop holds tasks only weakly)."""
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


class GetReply(Reply):
    """Reply to ``get``: the blob's properties, user metadata, state and payload."""

    def __init__(self, header: dict[str, Any],
                 stream: _PayloadStream | _BufferedPayload | None) -> None:
        super().__init__(header, stream)
        self.properties = BlobProperties.from_wire(header["props"])
        self.user_metadata: bytes = bytes(header.get("usermeta") or b"")
        self.state = state_from_wire(header["state"])
        self.expiry_ms: int = int(header["state"].get("expiry_ms", 0))
        self.blob_size: int = int(header.get("blob_size", 0))
        self.range_start: int = int(header.get("range_start", 0))
        # set when the node sent the payload without hashing it (``client_verifies``): the
        # record's checksum, and the record's bytes it covers before the payload
        xxh3 = header.get("body_xxh3")
        prefix = header.get("body_prefix", b"")
        if xxh3 is not None and not (isinstance(xxh3, int) and isinstance(prefix, bytes)):
            raise ValueError("body_xxh3 must be an int and body_prefix bytes")
        self.body_xxh3: int | None = xxh3
        self.body_prefix: bytes = prefix
        self.source = ""  # the node that sent it, when the caller notes it

    def payload_check(self) -> PayloadCheck | None:
        """A fresh check of the payload against the record's checksum, or None when the node
        verified it before sending (then there is nothing to check)."""
        if self.body_xxh3 is None:
            return None
        return PayloadCheck(self.body_prefix, self.body_xxh3)


class PayloadCheck:
    """The record checksum (xxh3_64 of key | props | usermeta | payload) computed over a
    payload as it passes, to compare with the one the node stored at write time."""

    __slots__ = ("_expected", "_hash")

    def __init__(self, prefix: bytes, expected: int) -> None:
        self._hash = xxhash.xxh3_64(prefix)
        self._expected = expected

    def update(self, piece: bytes | bytearray | memoryview) -> None:
        self._hash.update(piece)

    def ok(self) -> bool:
        return self._hash.intdigest() == self._expected


class Connection:
    """One connection to a node: requests written in turn, replies read by one task."""

    def __init__(self, reader: stream.Reader, writer: stream.Writer, peer: str,
                 stall_timeout_s: float) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.stall_timeout_s = stall_timeout_s
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.write_lock = asyncio.Lock()
        self.closed = False
        self.retired = False
        self.streaming: _PayloadStream | None = None
        self.written_bytes = 0  # handed to the transport so far (corked frames included)
        # payload-less request headers of this loop step, written together by _uncork
        self.corked: list[bytes] | None = None
        self.reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def load(self) -> int:
        return len(self.pending) + (_STREAMING_LOAD if self.streaming is not None else 0)

    def sent(self, end: int) -> bool:
        """Whether the transport has passed everything up to ``end`` (of ``written_bytes``)
        to the kernel."""
        return self.written_bytes - self.writer.transport.get_write_buffer_size() >= end

    async def send(self, frame: bytes, payload: bytes | bytearray | memoryview | None,
                   mark: list[int] | None = None) -> None:
        """Write one message; ``mark`` gets where it ends in ``written_bytes``. A small
        header without a payload is corked: written with the others of this loop step, in
        order, before anything written after them."""
        if not payload and len(frame) <= CORK_MAX_FRAME_BYTES:
            if self.closed:
                raise Unavailable(f"connection to {self.peer} is closed")
            if self.corked is None:
                self.corked = [frame]
                asyncio.get_running_loop().call_soon(self._uncork)
            else:
                self.corked.append(frame)
            self.written_bytes += len(frame)
            if mark is not None:
                mark.append(self.written_bytes)
            return
        async with self.write_lock:
            if self.closed:
                raise Unavailable(f"connection to {self.peer} is closed")
            self._uncork()  # what was corked goes first
            if self.closed:
                raise Unavailable(f"connection to {self.peer} is closed")
            try:
                # uvloop raises RuntimeError ("the handler is closed") from write() once the
                # node's end reset the connection but before connection_lost reached the read
                # loop: a node that died mid-upload, the same as an OSError, not a bug
                write_message(self.writer, frame, payload)
                self.written_bytes += len(frame) + (len(payload) if payload else 0)
                if mark is not None:
                    mark.append(self.written_bytes)
                await self.writer.drain()
            except (OSError, RuntimeError) as e:
                if isinstance(e, RuntimeError) and not self.writer.is_closing():
                    raise  # not a closed transport: a bug, seen as it is
                err = Unavailable(f"writing to {self.peer}: {e}")
                self.fail(err)
                raise err from None

    def _uncork(self) -> None:
        """Write the corked headers in one write (no await: nothing can come in between).
        A request whose header never left fails with the connection, as any."""
        frames, self.corked = self.corked, None
        if not frames or self.closed:
            return
        try:
            self.writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
        except (OSError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and not self.writer.is_closing():
                raise  # not a closed transport: a bug, seen as it is
            self.fail(Unavailable(f"writing to {self.peer}: {e}"))

    async def _read_loop(self) -> None:
        try:
            while True:
                header = await read_header(self.reader)
                if header is None:
                    raise Unavailable(f"{self.peer} closed the connection")
                corr = header.get("corr")
                n = header.get("payload_len") or 0
                if not isinstance(n, int) or n < 0:
                    raise Unavailable(f"{self.peer} sent a bad payload_len")
                fut = self.pending.pop(corr, None) if isinstance(corr, int) else None
                if header.get("closing"):
                    self.retired = True  # the node ends this connection: no new requests
                if n == 0:
                    if fut is not None and not fut.done():
                        fut.set_result(Reply(header, None))
                    continue
                if n <= _INLINE_PAYLOAD_MAX_BYTES:
                    # small: read it here, sparing the hand-over to the caller's task
                    data = await self.reader.readexactly(n)
                    if fut is not None and not fut.done():
                        fut.set_result(Reply(header, _BufferedPayload(data)))
                    continue
                stream = _PayloadStream(self, n)
                if fut is None or fut.done():  # the caller gave up: skip the payload
                    await stream.discard()
                    continue
                self.streaming = stream
                fut.set_result(Reply(header, stream))
                await self._wait_consumed(stream)
                self.streaming = None
        except asyncio.CancelledError:
            self.fail(Unavailable(f"connection to {self.peer} closed"))
            raise
        except AmbryError as e:
            self.fail(e if isinstance(e, Unavailable) else Unavailable(f"{self.peer}: {e}"))
        except (OSError, asyncio.IncompleteReadError) as e:
            self.fail(Unavailable(f"connection to {self.peer} broken: {type(e).__name__}"))
        except Exception as e:  # a bug: never leave callers hanging
            log.exception("node client read loop for %s failed", self.peer)
            self.fail(Unavailable(f"connection to {self.peer} failed: {e!r}"))

    async def _wait_consumed(self, stream: _PayloadStream) -> None:
        """Wait until the caller has read the payload; a caller stalled for longer than the
        stall timeout costs this connection."""
        while True:
            left = stream.last_progress + self.stall_timeout_s - time.monotonic()
            if left <= 0:
                raise Unavailable(f"reply payload from {self.peer} not consumed for "
                                  f"{self.stall_timeout_s:.1f} s")
            done, _ = await asyncio.wait({stream.finished}, timeout=left)
            if done:
                stream.finished.result()  # raises if the stream failed
                return

    def fail(self, err: AmbryError) -> None:
        if self.closed:
            return
        self.closed = True
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)
        if self.streaming is not None:
            self.streaming._done(err)
        with contextlib.suppress(Exception):
            self.writer.close()
        if asyncio.current_task() is not self.reader_task:
            self.reader_task.cancel()
