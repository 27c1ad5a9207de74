"""Writing a reply's payload that does not fit one write: a stream of pieces read on the I/O
threads (``ReplyStream``) or a span of a segment file sent with ``sendfile`` (``FileStream``).

Owns the two payload senders of the node protocol server (``server``) and their socket
helpers. A failure after the reply's header is out aborts the connection, so the client sees
a truncated reply, never a silently wrong body. ``sendfile``: uvloop has no
``loop.sendfile``, so each call runs on an I/O thread and the wait for a writable socket on the
loop, on our own duplicate of the socket (docs/storage.md, "Serving reads").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from ambry.common.errors import AmbryError, DataCorrupt
from ambry.protocol import stream
from ambry.protocol.framing import pack_header
from ambry.protocol.messages import STATUS_OK, Request
from ambry.storage.metrics import NodeMetrics
from ambry.storage.ops import FileStream, ReplyStream

__all__ = ["PayloadSender", "SendConn"]

log = logging.getLogger(__name__)


class SendConn(Protocol):
    """What a sender needs of a connection (``server._Conn``)."""

    reader: stream.Reader
    writer: stream.Writer
    write_lock: asyncio.Lock

    @property
    def closing(self) -> bool: ...

    def abort(self) -> None: ...


class PayloadSender:
    """Sends large reply payloads for one node (its I/O threads, its metrics)."""

    def __init__(self, io: concurrent.futures.Executor, metrics: NodeMetrics) -> None:
        self._io = io
        self.metrics = metrics

    async def stream(self, conn: SendConn, req: Request, reply: dict[str, Any],
                     body: ReplyStream) -> str:
        """Header, then the payload piece by piece (each piece read on an I/O thread)."""
        loop = asyncio.get_running_loop()
        frame = pack_header(reply)

        async def pump(sent: list[int]) -> str | None:
            while sent[0] < body.length:
                piece = await loop.run_in_executor(self._io, next, body.pieces, None)
                if not piece:
                    raise DataCorrupt("payload ended early")
                if conn.closing:
                    return "CLIENT_GONE"
                conn.writer.write(piece)
                sent[0] += len(piece)
                self.metrics.bytes_out.inc(len(piece))
                await conn.writer.drain()
            return None

        try:
            return await _send(conn, req, frame, body.length, pump)
        finally:
            close = getattr(body.pieces, "close", None)
            if close is not None:
                close()

    async def file(self, conn: SendConn, req: Request, reply: dict[str, Any],
                   body: FileStream) -> str:
        """Header, then the payload straight from the segment file with ``sendfile`` (the
        reader verifies the checksum: the bytes never pass through this process). Each call
        runs on an I/O thread (a page not in the cache is read from disk there, never on the
        loop) and sends what the socket takes at once; when it takes nothing, the loop waits
        until it is writable again, so a reader that stops reading holds no thread. The
        connection's write lock is held throughout: nothing else is written in between."""
        sock = conn.writer.get_extra_info("socket")
        loop = asyncio.get_running_loop()
        frame = pack_header(reply)
        sock_fd = -1

        async def pump(sent: list[int]) -> str | None:
            nonlocal sock_fd
            await _flushed(conn.writer)  # the header is out: the socket is ours
            # our own descriptor of the socket: the transport may close its one (the peer
            # left) while a thread is inside sendfile
            sock_fd = os.dup(sock.fileno())
            while sent[0] < body.length:
                if conn.closing:
                    return "CLIENT_GONE"
                n = await loop.run_in_executor(self._io, _sendfile_some, sock_fd, body.fd,
                                               body.offset + sent[0], body.length - sent[0])
                if n is None:  # the socket's buffer is full
                    await _writable(loop, sock_fd, conn.reader.closed)
                    continue
                if n == 0:
                    raise DataCorrupt("the segment file ends inside the payload")
                sent[0] += n
                self.metrics.bytes_out.inc(n)
                self.metrics.sendfile_bytes.inc(n)
            return None

        try:
            if sock is None or not hasattr(os, "sendfile"):  # no socket to send from: copy
                return await self.stream(conn, req, reply, ReplyStream(
                    _file_pieces(body), body.length))
            return await _send(conn, req, frame, body.length, pump)
        finally:
            body.close()
            if sock_fd >= 0:
                os.close(sock_fd)


async def _send(conn: SendConn, req: Request, frame: bytes, length: int,
                pump: Callable[[list[int]], Awaitable[str | None]]) -> str:
    """Under the connection's write lock (nothing else is written in between): the reply's
    header ``frame``, then ``pump`` (it writes the payload, counting what it sent in
    ``sent[0]``; it returns a status when it stops early). Any failure after the header aborts
    the connection: the client sees a short reply, never a wrong one."""
    async with conn.write_lock:
        if conn.closing:
            return "CLIENT_GONE"
        conn.writer.write(frame)
        sent = [0]
        try:
            return await pump(sent) or STATUS_OK
        except AmbryError as e:
            log.error("rid=%s op=%s: %s after %d of %d payload bytes; aborting the connection",
                      req.rid, req.op, e.message, sent[0], length)
            conn.abort()
            return e.code
        except (ConnectionError, OSError):
            conn.abort()
            return "CLIENT_GONE"
        except BaseException:
            conn.abort()
            raise


#: at most this much per sendfile call (it returns sooner when the socket is full)
_SENDFILE_CALL_MAX_BYTES = 8 << 20


def _sendfile_some(sock_fd: int, file_fd: int, offset: int, count: int) -> int | None:
    """One sendfile call on the (non-blocking) socket: bytes sent, 0 at the file's end, None
    when the socket takes nothing now. Runs on an I/O thread."""
    try:
        return os.sendfile(sock_fd, file_fd, offset, min(count, _SENDFILE_CALL_MAX_BYTES))
    except BlockingIOError:
        return None


async def _flushed(writer: stream.Writer) -> None:
    """Wait until the transport has handed everything written so far to the kernel."""
    transport = writer.transport
    if transport.get_write_buffer_size() == 0:
        return
    high, low = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0, low=0)  # paused until its buffer is empty
    try:
        await writer.drain()
    finally:
        transport.set_write_buffer_limits(high=high, low=low)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int,
                    closed: asyncio.Future[None]) -> None:
    """Wait until socket ``fd`` (our own duplicate: the transport's is registered for
    reading) can take bytes again, or its connection is lost."""
    ready = loop.create_future()
    loop.add_writer(fd, _set_once, ready)
    try:
        await asyncio.wait((ready, closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_writer(fd)  # before the descriptor is closed: no stale registration


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _file_pieces(body: FileStream) -> Iterator[bytes]:
    """The span in 1 MiB preads (a transport without a socket to sendfile from)."""
    off, end = body.offset, body.offset + body.length
    while off < end:
        piece = os.pread(body.fd, min(1 << 20, end - off), off)
        if not piece:
            return
        off += len(piece)
        yield piece
