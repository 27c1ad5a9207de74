"""Byte streams of the node protocol over an ``asyncio.BufferedProtocol``: fewer copies than
``asyncio.StreamReader`` for megabyte payloads.

A StreamReader receives every piece as a fresh ``bytes`` (uvloop allocates one per recv),
appends it to its ``bytearray`` (copy), and ``readexactly``/``read`` slice the answer out of it
(copy, into freshly allocated memory: page faults). For 1-4 MiB payloads those copies were a
third of the frontend's Python CPU. Here the transport receives straight into memory the
reader owns (``get_buffer``): a reused receive buffer for headers and small payloads, and,
while a caller waits for a large payload, the payload's own final ``bytearray``, so those bytes
are copied once, by the kernel.

Owns: the read side (:class:`Reader`, which is the transport's protocol), the write side
(:class:`Writer`, the transport with ``drain``), flow control both ways, and
``open_connection``/``start_server`` shaped like asyncio's. Only what the node protocol's two
ends use is here: ``readexactly``, ``read``, and the writer calls of ``asyncio.StreamWriter``.
Errors are asyncio's: ``readexactly`` at end of stream raises ``asyncio.IncompleteReadError``
with the bytes it got, ``read`` returns ``b""``, a lost connection raises its error in every
waiting reader and ``drain`` (``ConnectionResetError`` if it had none).

One reader task at a time (as with StreamReader): a second concurrent read is a bug and raises
RuntimeError.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any, cast

__all__ = ["LARGE_READ_BYTES", "MAX_BUFFERED_BYTES", "RECV_BUFFER_BYTES", "Reader", "Writer",
           "open_connection", "start_server"]

log = logging.getLogger(__name__)

#: Initial size of a connection's receive buffer; also what one recv is always offered.
RECV_BUFFER_BYTES = 256 * 1024
#: The receive buffer is compacted or grown when less than this is free at its end.
_MIN_FREE_BYTES = 64 * 1024
#: Reading from the socket pauses when this much has been received and not read (TCP
#: backpressure on the peer), and resumes once the reader has taken it down to half. At most
#: this plus ``RECV_BUFFER_BYTES`` is ever buffered.
MAX_BUFFERED_BYTES = 1024 * 1024
#: ``readexactly(n)``/``read(n)`` of at least this many bytes that are not all here yet get a
#: buffer of their own that the socket fills directly. Below it the copy out of the receive
#: buffer is cheaper than allocating.
LARGE_READ_BYTES = 64 * 1024


class Reader(asyncio.BufferedProtocol):
    """The read side of a connection, and the protocol of its transport."""

    def __init__(self, client_connected_cb: Callable[[Reader, Writer], Coroutine[Any, Any, None]] | None
                 = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._cb = client_connected_cb
        self._task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.writer: Writer | None = None
        # receive buffer: [_rpos, _wpos) is received and unread
        self._buf = bytearray(RECV_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._rpos = 0
        self._wpos = 0
        # while a large read waits: the socket writes into _dest[_filled:]; the waiter is woken
        # once _filled >= _dest_min
        self._dest: bytearray | memoryview | None = None
        self._dest_view: memoryview | None = None
        self._filled = 0
        self._dest_min = 0
        self._into_dest = False  # the last get_buffer handed out the end of _dest
        self._need = 0  # a waiter on the receive buffer wants this many unread bytes
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._exception: BaseException | None = None
        self._read_paused = False
        #: bytes received so far: a watchdog comparing it over time sees a stalled peer
        self.received_bytes = 0
        # write side
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost = False
        self._closed: asyncio.Future[None] = self._loop.create_future()

    # ------------------------------------------------------------------ protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP transport (uvloop's do not subclass asyncio.Transport: no isinstance check)
        self.transport = cast(asyncio.Transport, transport)
        self.writer = Writer(self.transport, self)
        if self._cb is not None:
            self._task = self._loop.create_task(self._cb(self, self.writer))
            self._task.add_done_callback(self._cb_done)

    def _cb_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._loop.call_exception_handler({
                "message": "Unhandled exception in client_connected_cb", "exception": exc,
                "transport": self.transport})
            if self.transport is not None:
                self.transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._dest_view is not None and self._filled < len(self._dest_view):
            self._into_dest = True
            return self._dest_view[self._filled:]
        self._into_dest = False
        unread = self._wpos - self._rpos
        if len(self._buf) - self._wpos < _MIN_FREE_BYTES:
            self._make_room(unread)
        # never offer more than keeps the buffered bytes under MAX + one RECV
        end = min(len(self._buf), self._wpos + max(MAX_BUFFERED_BYTES + RECV_BUFFER_BYTES
                                                   - unread, _MIN_FREE_BYTES))
        return self._view[self._wpos:end]

    def _make_room(self, unread: int) -> None:
        """Free the end of the receive buffer: move the unread bytes to the front, or, when
        they fill over half of it, into one twice as big (at most 2 MiB: unread stays under
        MAX_BUFFERED_BYTES). The transport holds no view of the buffer between calls, but a
        new bytearray is allocated rather than the old one resized all the same."""
        if unread * 2 <= len(self._buf):
            self._view[:unread] = self._view[self._rpos:self._wpos]
        else:
            buf = bytearray(len(self._buf) * 2)
            buf[:unread] = self._view[self._rpos:self._wpos]
            self._buf, self._view = buf, memoryview(buf)
        self._rpos, self._wpos = 0, unread

    def buffer_updated(self, nbytes: int) -> None:
        self.received_bytes += nbytes
        if self._into_dest:
            self._filled += nbytes
            if self._filled >= self._dest_min:
                self._wake()
            return
        self._wpos += nbytes
        unread = self._wpos - self._rpos
        if unread >= self._need:
            self._wake()
        if unread >= MAX_BUFFERED_BYTES and not self._read_paused:
            assert self.transport is not None
            self._read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep the write side open: a half-closed peer still reads its replies

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is not None:
            self._exception = exc
        self._eof = True
        self._wake()
        for w in self._drain_waiters:
            if not w.done():
                w.set_exception(exc if exc is not None else ConnectionResetError(
                    "Connection lost"))
        self._drain_waiters.clear()
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()

    # ------------------------------------------------------------------ reading
    def exception(self) -> BaseException | None:
        return self._exception

    @property
    def closed(self) -> asyncio.Future[None]:
        """Done once the connection is lost (never fails: await it, or wait on it)."""
        return self._closed

    @property
    def waiting(self) -> bool:
        """Whether a read is waiting for bytes from the peer (not for its own caller)."""
        return self._waiter is not None

    def at_eof(self) -> bool:
        return self._eof and self._wpos == self._rpos

    async def readexactly(self, n: int) -> bytes | bytearray:
        """Exactly ``n`` bytes: ``bytes`` when they were buffered (or ``n`` is small), else the
        ``bytearray`` the socket filled. ``asyncio.IncompleteReadError`` if the stream ends
        first."""
        if not self._check_size(n, "readexactly size can not be less than zero"):
            return b""
        while True:
            unread = self._wpos - self._rpos
            if unread >= n:
                return self._take(n)
            if self._eof:
                partial = self._take(unread)
                raise asyncio.IncompleteReadError(partial, n)
            if n >= LARGE_READ_BYTES:
                return await self._read_into_own(n, n)
            await self._wait_for(n)

    async def readinto_exactly(self, into: memoryview) -> None:
        """Fill ``into`` (the caller's buffer, e.g. a reused payload buffer: no allocation
        here) with exactly its length of bytes; the socket writes straight into it.
        ``asyncio.IncompleteReadError`` if the stream ends first. After an error or a
        cancellation ``into`` holds nothing the caller may use (what arrived stays readable
        from the stream, copied out of ``into``)."""
        n = len(into)
        if not self._check_size(n, "readinto_exactly of a negative size"):
            return
        unread = self._wpos - self._rpos
        if unread >= n:
            into[:] = self._view[self._rpos:self._rpos + n]
            self._rpos += n
            if self._rpos == self._wpos:
                self._rpos = self._wpos = 0
            if self._read_paused and self._wpos - self._rpos <= MAX_BUFFERED_BYTES // 2:
                self._resume_reading()
            return
        if self._eof:
            raise asyncio.IncompleteReadError(self._take(unread), n)
        await self._read_into_own(n, n, into)

    async def read(self, n: int) -> bytes | bytearray:
        """Up to ``n`` bytes, as soon as any are here; ``b""`` at end of stream."""
        if not self._check_size(n, "read of everything up to EOF is not supported"):
            return b""
        while True:
            unread = self._wpos - self._rpos
            if unread:
                return self._take(min(n, unread))
            if self._eof:
                return b""
            if n >= LARGE_READ_BYTES:
                return await self._read_into_own(n, 1)
            await self._wait_for(1)

    def _check_size(self, n: int, negative: str) -> bool:
        """Raise the connection's error, or ValueError(``negative``) for n < 0; False for 0."""
        if self._exception is not None:
            raise self._exception
        if n < 0:
            raise ValueError(negative)
        return n > 0

    async def _wait_for(self, need: int) -> None:
        """Wait until ``need`` bytes are buffered, EOF, or the connection failed (raised)."""
        self._need = need
        try:
            await self._wait()
        finally:
            self._need = 0
        if self._exception is not None:
            raise self._exception

    def _take(self, k: int) -> bytes:
        data = self._view[self._rpos:self._rpos + k].tobytes()
        self._rpos += k
        if self._rpos == self._wpos:
            self._rpos = self._wpos = 0
        if self._read_paused and self._wpos - self._rpos <= MAX_BUFFERED_BYTES // 2:
            self._resume_reading()
        return data

    def _resume_reading(self) -> None:
        self._read_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def _read_into_own(self, n: int, wake_at: int, into: memoryview | None = None
                             ) -> bytes | bytearray:
        """Read into a new ``bytearray(n)`` (or the caller's ``into``, then returned
        empty): the unread bytes are copied to its start, the socket writes the rest into it
        (``get_buffer``). Returns it once ``wake_at`` bytes are in, cut to what arrived
        (``read``) or whole (``readexactly``)."""
        dest = bytearray(n) if into is None else bytearray()
        view = memoryview(dest) if into is None else into
        unread = self._wpos - self._rpos
        view[:unread] = self._view[self._rpos:self._wpos]
        self._rpos = self._wpos = 0
        self._dest, self._dest_view, self._filled, self._dest_min = dest, view, unread, wake_at
        if self._read_paused:
            self._resume_reading()
        try:
            while self._filled < wake_at and not self._eof:
                await self._wait()
        except BaseException:
            # cancelled: what arrived stays readable
            filled = self._detach()
            if self._exception is None and filled:
                if into is not None:  # the caller's buffer is not ours to keep: copy
                    dest = bytearray(into[:filled])
                self._unread_front(dest, filled)
            raise
        filled = self._detach()
        if self._exception is not None:
            raise self._exception
        if into is not None:
            if filled < n:
                raise asyncio.IncompleteReadError(bytes(view[:filled]), n)
            return dest
        if filled < wake_at:  # end of stream
            if wake_at < n:
                return b""  # read(): nothing came
            raise asyncio.IncompleteReadError(bytes(view[:filled]), n)
        if filled < n:
            del view
            try:
                del dest[filled:]  # shrinks in place: no copy
            except BufferError:  # a view of it is still alive somewhere: copy
                return dest[:filled]
        return dest

    def _detach(self) -> int:
        filled = self._filled
        self._dest = self._dest_view = None
        self._filled = self._dest_min = 0
        return filled

    def _unread_front(self, dest: bytearray, filled: int) -> None:
        """Put ``dest[:filled]`` back in front of the receive buffer (a cancelled large read:
        the stream stays readable from where it was)."""
        unread = self._wpos - self._rpos
        if unread == 0:
            self._buf, self._view = dest, memoryview(dest)
            self._rpos, self._wpos = 0, filled
        else:
            buf = bytearray(max(RECV_BUFFER_BYTES, filled + unread + _MIN_FREE_BYTES))
            buf[:filled] = memoryview(dest)[:filled]
            buf[filled:filled + unread] = self._view[self._rpos:self._wpos]
            self._buf, self._view = buf, memoryview(buf)
            self._rpos, self._wpos = 0, filled + unread

    async def _wait(self) -> None:
        if self._waiter is not None:
            raise RuntimeError("two tasks are reading one connection")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # ------------------------------------------------------------------ writing
    async def _drain_helper(self) -> None:
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._write_paused:
            return
        w = self._loop.create_future()
        self._drain_waiters.append(w)
        await w


class Writer:
    """The write side: ``asyncio.StreamWriter``'s calls over the transport."""

    __slots__ = ("_protocol", "transport")

    def __init__(self, transport: asyncio.Transport, protocol: Reader) -> None:
        self.transport = transport
        self._protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.transport.write(data)

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def write_eof(self) -> None:
        self.transport.write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark; raise the
        connection's error once it is lost."""
        exc = self._protocol.exception()
        if exc is not None:
            raise exc
        if self.transport.is_closing():
            await asyncio.sleep(0)  # let connection_lost run, so the error below is seen
        await self._protocol._drain_helper()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._protocol._closed)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: a late failure is not logged as "never retrieved"


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int
                   ) -> list[tuple[socket.AddressFamily, str]]:
    """The stream addresses of ``host``, in the resolver's order. A caller cancelled while the
    name is being resolved (a connect timeout) leaves the lookup running in the resolver's
    thread: its outcome is retrieved here, where uvloop's own lookup in ``create_connection``
    left a ``gaierror`` that asyncio logged as "Future exception was never retrieved", with no
    word of which node it was about."""
    lookup = asyncio.ensure_future(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    lookup.add_done_callback(_retrieve)
    infos = await asyncio.shield(lookup)
    addrs: list[tuple[socket.AddressFamily, str]] = list(
        dict.fromkeys((info[0], str(info[4][0])) for info in infos))
    if not addrs:
        raise OSError(f"no address for {host}")
    return addrs


async def open_connection(host: str, port: int) -> tuple[Reader, Writer]:
    """Connect to ``host:port``; the reader and writer of the connection. The name is
    resolved first (:func:`_resolve`), then each address is tried in turn (as
    ``create_connection`` does with a name)."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, addr in await _resolve(loop, host, port):
        try:
            _transport, protocol = await loop.create_connection(Reader, addr, port,
                                                                family=family)
            break
        except OSError as e:
            last = e
    else:
        assert last is not None
        raise last
    assert protocol.writer is not None
    return protocol, protocol.writer


async def start_server(client_connected_cb: Callable[[Reader, Writer], Coroutine[Any, Any, None]],
                       host: str | None, port: int, *, backlog: int = 100,
                       reuse_address: bool | None = None) -> asyncio.Server:
    """Listen on ``host:port``; each connection runs ``client_connected_cb(reader, writer)`` in
    a task of its own (an exception from it is logged and closes the connection)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: Reader(client_connected_cb), host, port,
                                    backlog=backlog, reuse_address=reuse_address)
