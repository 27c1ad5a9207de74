"""The node protocol server: connections, the frame loop, payload budgets, the watchdog.

Owns the node's listening socket and every connection on it: reading frames
(``ambry.protocol.framing``), pipelined requests served concurrently (at most
``max_inflight_per_connection`` per connection; the node stops reading that socket meanwhile:
TCP backpressure), replies matched by ``corr`` and written whole, the put payload budgets, the
frame watchdog, error replies and the lingering close after a request the stream cannot
survive. Each parsed request goes to the op handlers (``ops``); this file never looks inside
one. A small mutation the ops hand to the batch writer, or a GET they hand to the batch
reader (``ops.NodeOps.submit``), gets no task: its reply is written when its batch completes,
with the other replies of that batch to the same connection in one write (a GET whose payload
streams gets a task for the stream then).

Bounds: a node-wide budget of put payload bytes held in memory
(``storage.inflight_payload_budget_bytes``) of which one connection holds at most
``storage.connection_payload_budget_bytes``, and a put payload is never over
``storage.max_record_bytes``. A payload is reserved piece by piece (``_PAYLOAD_PIECE_BYTES``)
just before each piece is read, so a connection that announces 64 MiB and sends 100 bytes
holds one piece, not 64 MiB; a peer that stalls inside a frame for
``storage.frame_idle_timeout_s`` is disconnected and what it held is freed (docs/security.md,
"Gray failures and node port limits"). A put's payload is read whole before the handler is
called, so the append position is taken only once the bytes are in: a slow client never
blocks other writers.

Large GET payloads come as a ``ReplyStream`` (pread in 1 MiB pieces on the I/O threads,
checksum verified as it goes), or, for a reader that verifies the checksum itself, as a
``FileStream`` sent with ``os.sendfile``; both are written by ``sending.PayloadSender``. A
failure after the header is out aborts the connection, so the client sees a truncated reply,
never a silently wrong body.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ambry.common.config import StorageConfig
from ambry.common.errors import AmbryError, PayloadTooLarge
from ambry.protocol import stream
from ambry.protocol.framing import discard_exactly, pack_header, read_header, write_message
from ambry.protocol.messages import (
    STATUS_OK,
    BadRequestFrame,
    Request,
    parse_request,
    payload_len_of,
)
from ambry.runtime.budget import ByteBudget
from ambry.storage.metrics import NodeMetrics
from ambry.storage.ops import DEFERRED, FileStream, Payload, ReplyStream
from ambry.storage.sending import PayloadSender

__all__ = ["NodeServer"]

log = logging.getLogger(__name__)

#: A put payload is reserved and read in pieces of this size (the frontend's default chunk,
#: so a chunk is still one buffer the socket fills, with no copy).
_PAYLOAD_PIECE_BYTES = 4 << 20
#: A put payload over this size (up to one piece) is received into a reused buffer of
#: :class:`_PayloadBuffers` (a fresh ``bytearray`` of a megabyte costs its zeroing and a page
#: fault per 4 KiB: a third of a node's Python CPU per 1 MiB put).
_POOLED_PAYLOAD_MIN_BYTES = 256 * 1024
#: What the idle payload buffers of a node may hold at most.
_POOLED_IDLE_MAX_BYTES = 16 << 20
_LINGER_S = 2.0  # how long a connection closed for a bad request keeps draining the client
#: A batched request's reply is written at once unless the client left this much unread
#: (then it takes the write lock and drains, as any reply: a client that does not read is
#: held back by its in-flight slots).
_DIRECT_REPLY_MAX_BUFFERED_BYTES = 256 * 1024
#: serves one parsed request: (reply fields, payload: bytes, a ReplyStream or None)
Dispatch = Callable[[Request, Payload], Awaitable[tuple[dict[str, Any], Any]]]
#: takes a small mutation for the batch writer: False if it is not one; else calls ``done``
#: on the loop with the reply fields or the error (``ops.NodeOps.submit``)
Submit = Callable[[Request, Payload, Callable[[Any], None]], bool]


class _Conn:
    """One client connection: its reader task, write lock and in-flight requests."""

    def __init__(self, reader: stream.Reader, writer: stream.Writer, max_inflight: int,
                 payload_budget_bytes: int) -> None:
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.write_lock = asyncio.Lock()
        self.slots = asyncio.Semaphore(max_inflight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.reader_task: asyncio.Task[Any] | None = None
        self.budget = ByteBudget(payload_budget_bytes)  # this connection's share of the node's
        # requests handed to the batch writer (no task of their own), and who waits for none
        self.batched = 0
        self.idle: asyncio.Future[None] | None = None
        self.replies: list[bytes] = []  # batched replies not yet written (one write for all)
        # the frame watchdog: a frame begun and not finished, and how long it made no progress
        self.frame_open = False
        self.seen_bytes = 0
        self.idle_s = 0.0

    def open_frame(self) -> None:
        self.frame_open = True

    @property
    def closing(self) -> bool:
        return self.writer.is_closing()

    async def send(self, header: dict[str, Any], payload: bytes | None = None) -> int:
        """Write one reply (header and payload contiguously). Returns payload bytes sent."""
        frame = pack_header(header)
        async with self.write_lock:
            if self.closing:
                return 0
            write_message(self.writer, frame, payload)
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                self.abort()
        return len(payload) if payload else 0

    def abort(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()



class _PayloadBuffers:
    """Reused receive buffers for put payloads: size classes of powers of two from 512 KiB
    to one payload piece. A buffer is taken for one payload and given back only once nothing
    can touch it any more (the record was written: the writer thread or the I/O thread is done
    with it); one given back while idle buffers hold ``_POOLED_IDLE_MAX_BYTES`` is dropped.
    The buffers in use are bounded by the payload budgets, as before."""

    def __init__(self) -> None:
        self._free: dict[int, list[bytearray]] = {}
        self._idle_bytes = 0

    @staticmethod
    def size_class(n: int) -> int:
        c = 512 * 1024
        while c < n:
            c <<= 1
        return c

    def take(self, n: int) -> bytearray:
        c = self.size_class(n)
        free = self._free.get(c)
        if free:
            self._idle_bytes -= c
            return free.pop()
        return bytearray(c)

    def give_back(self, buf: bytearray) -> None:
        c = len(buf)
        if self._idle_bytes + c <= _POOLED_IDLE_MAX_BYTES:
            self._free.setdefault(c, []).append(buf)
            self._idle_bytes += c


class NodeServer:
    """The protocol server of one node. ``draining`` says when the node is stopping (new
    connections are closed at once)."""

    def __init__(self, node_id: str, dispatch: Dispatch, *, metrics: NodeMetrics,
                 io: concurrent.futures.Executor, budget: ByteBudget,
                 storage_config: Callable[[], StorageConfig], max_inflight_per_connection: int,
                 draining: Callable[[], bool], submit: Submit | None = None) -> None:
        self.node_id = node_id
        self._dispatch = dispatch
        self._submit = submit
        self._batched = 0  # requests with the batch writer, node-wide
        self._unflushed: list[_Conn] = []  # connections with batched replies to write
        self._idle: asyncio.Future[None] | None = None
        self.metrics = metrics
        self._io = io  # payload pieces of a stream are read here
        self._sender = PayloadSender(io, metrics)  # large reply payloads: streams, sendfile
        self._budget = budget
        self._payload_buffers = _PayloadBuffers()
        self._storage_config = storage_config  # the node's current config (a map reload)
        self.max_inflight_per_connection = max_inflight_per_connection
        self._is_draining = draining
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def _draining(self) -> bool:
        return self._is_draining()

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def requests_in_flight(self) -> int:
        return len(self._handlers) + self._batched

    # ================================================================ listening and stopping
    async def listen(self, host: str, port: int) -> int:
        """Start serving; returns the port bound (``port`` 0: one the OS chose)."""
        self._server = await stream.start_server(
            self._on_connect, host, port, reuse_address=True, backlog=1024)
        sock = self._server.sockets[0] if self._server.sockets else None
        return sock.getsockname()[1] if sock is not None else port

    def close_listener(self) -> None:
        if self._server is not None:
            self._server.close()

    def stop_reading(self) -> None:
        """No new connections, and no new requests read from the open ones."""
        self.close_listener()
        for conn in list(self._conns):
            if conn.reader_task is not None:
                conn.reader_task.cancel()

    async def finish_requests(self, timeout_s: float) -> None:
        """Wait (bounded) for the requests in flight; cancel those still running."""
        deadline = time.monotonic() + timeout_s
        if self._batched:  # cannot be cancelled: they finish with their batch
            self._idle = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._idle), timeout_s)
            except TimeoutError:
                log.warning("node %s: %d batched requests still running after %.1f s",
                            self.node_id, self._batched, timeout_s)
        if self._handlers:
            _done, pending = await asyncio.wait(
                set(self._handlers), timeout=max(0.0, deadline - time.monotonic()))
            if pending:
                log.warning("node %s: %d requests still running after %.1f s; cancelling",
                            self.node_id, len(pending), timeout_s)
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending, timeout=5)

    def close_connections(self) -> None:
        for conn in list(self._conns):
            conn.writer.close()
        self._conns.clear()

    async def wait_closed(self) -> None:
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except TimeoutError:
                pass

    # ================================================================ connections
    async def _on_connect(self, reader: stream.Reader, writer: stream.Writer) -> None:
        conn = _Conn(reader, writer, self.max_inflight_per_connection,
                     self._storage_config().connection_payload_budget_bytes)
        conn.reader_task = asyncio.current_task()
        if self._draining:
            writer.close()
            return
        self._conns.add(conn)
        self.metrics.connections.inc()
        drained = False
        try:
            await self._read_requests(conn)
        except asyncio.CancelledError:
            drained = True  # stop() owns the rest: wait for handlers, close the socket
        except Exception:
            log.exception("connection %s: reader failed", conn.peer)
        finally:
            self.metrics.connections.dec()
            if not drained and not self._draining:
                try:
                    # replies still owed (a client may half-close and wait)
                    await self._conn_idle(conn)
                except asyncio.CancelledError:
                    drained = True
            if not drained and not self._draining:
                writer.close()
                self._conns.discard(conn)
            # else stop() waits for this connection's requests, then closes it

    async def _read_requests(self, conn: _Conn) -> None:
        reader = conn.reader
        max_payload = self._storage_config().max_record_bytes
        while True:
            await conn.slots.acquire()
            slot_taken = True
            try:
                try:
                    header = await read_header(reader, conn.open_frame)
                except BadRequestFrame as e:
                    self._protocol_error(conn, e, None)
                    await self._close_after(conn, self._error_reply(e.corr, e.code, e.message),
                                            max_payload)
                    return
                except (asyncio.IncompleteReadError, ConnectionError, OSError):
                    return  # the peer went away mid-frame
                if header is None:
                    return
                try:
                    req = parse_request(header)
                except BadRequestFrame as e:
                    self._protocol_error(conn, e, header)
                    reply = self._error_reply(e.corr, e.code, e.message)
                    if e.fatal:
                        await self._close_after(conn, reply, max_payload)
                        return
                    n = payload_len_of(header)
                    if n > max_payload:
                        await self._close_after(conn, reply, n)
                        return
                    await conn.send(reply)
                    if n:
                        try:
                            await discard_exactly(reader, n)
                        except (asyncio.IncompleteReadError, ConnectionError, OSError):
                            return
                    conn.frame_open = False
                    continue
                payload: Payload = None
                pooled: bytearray | None = None
                budget = 0
                if req.payload_len:
                    if req.payload_len > max_payload:
                        e2 = PayloadTooLarge(f"payload of {req.payload_len} bytes is over the "
                                             f"{max_payload}-byte limit")
                        self.metrics.requests.labels(req.op, e2.code).inc()
                        # megabytes we will not store follow: answer, then close
                        await self._close_after(
                            conn, self._error_reply(req.corr, e2.code, e2.message),
                            req.payload_len)
                        return
                    held = [0]
                    try:
                        payload, pooled = await self._read_payload(conn, req.payload_len, held)
                    except (asyncio.IncompleteReadError, ConnectionError, OSError):
                        # a put cut off mid-payload: nothing reached the replica
                        log.info("rid=%s op=%s from %s: connection lost mid-payload", req.rid,
                                 req.op, conn.peer)
                        self._release_budget(conn, held[0])
                        return
                    except BaseException:
                        self._release_budget(conn, held[0])
                        raise
                    budget = held[0]
                    self.metrics.bytes_in.inc(len(payload))
                conn.frame_open = False
                if self._submit is not None and self._submit_batched(conn, req, payload,
                                                                     budget, pooled):
                    slot_taken = False  # released with the reply
                    continue
                task = asyncio.create_task(self._serve(conn, req, payload, budget, pooled))
                slot_taken = False
                conn.tasks.add(task)
                self._handlers.add(task)
                task.add_done_callback(functools.partial(self._request_done, conn))
            finally:
                if slot_taken:
                    conn.slots.release()

    async def _close_after(self, conn: _Conn, reply: dict[str, Any], unread_bytes: int) -> None:
        """Answer a request after which the stream cannot go on, then end the connection with a
        lingering close: the replies still owed go out, the write side is shut (the client reads
        the error and then EOF), and what the client is still sending is read and dropped for a
        bounded time, so that closing with unread bytes does not reset the connection and
        destroy the error reply before the client has read it."""
        await conn.send({**reply, "closing": True})
        try:
            await self._conn_idle(conn)
            async with conn.write_lock:
                if conn.writer.can_write_eof() and not conn.closing:
                    conn.writer.write_eof()
            async with asyncio.timeout(_LINGER_S):
                await discard_exactly(conn.reader, unread_bytes)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass

    async def _conn_idle(self, conn: _Conn) -> None:
        """Wait until ``conn`` owes no reply: its tasks and its batched requests are done."""
        while conn.tasks or conn.batched or conn.replies:
            if conn.replies:  # written by _flush_replies, already scheduled
                await asyncio.sleep(0)
            if conn.batched:
                conn.idle = asyncio.get_running_loop().create_future()
                await conn.idle
            if conn.tasks:
                await asyncio.wait(set(conn.tasks))

    def _request_done(self, conn: _Conn, task: asyncio.Task[None]) -> None:
        conn.tasks.discard(task)
        self._handlers.discard(task)
        conn.slots.release()

    async def _read_payload(self, conn: _Conn, n: int, held: list[int]
                            ) -> tuple[bytes | bytearray | memoryview, bytearray | None]:
        """Read a put payload of ``n`` bytes, reserving each piece in the connection's and the
        node's budget just before reading it; ``held[0]`` is what is reserved so far (the
        caller releases it). A later piece waits saying what its payload holds already
        (``ByteBudget.acquire(held=)``): payloads nearest to complete go first, and partial
        payloads holding the whole budget between them do not wait for each other forever.
        Returns the payload and, when it was received into a reused buffer (a payload of one
        piece over ``_POOLED_PAYLOAD_MIN_BYTES``), that buffer: the caller gives it back
        (``_PayloadBuffers.give_back``) once nothing uses the payload, or just drops it."""
        reader = conn.reader
        if _POOLED_PAYLOAD_MIN_BYTES < n <= _PAYLOAD_PIECE_BYTES:
            await self._reserve(conn, n, 0)
            held[0] = n
            buf = self._payload_buffers.take(n)
            view = memoryview(buf)[:n]
            await reader.readinto_exactly(view)  # an error drops buf: never given back
            return view, buf
        payload: bytes | bytearray = b""
        while len(payload) < n:
            k = min(n - len(payload), _PAYLOAD_PIECE_BYTES)
            await self._reserve(conn, k, held[0])
            held[0] += k
            piece = await reader.readexactly(k)
            if not payload:
                payload = piece
            else:  # over one piece (rare: the frontend sends chunks of one piece)
                if not isinstance(payload, bytearray):
                    payload = bytearray(payload)
                payload += piece  # grows in place: what it holds plus one piece at most
        return payload, None

    async def _reserve(self, conn: _Conn, n: int, held: int) -> None:
        await conn.budget.acquire(n, held=held)
        try:
            await self._budget.acquire(n, held=held)
        except BaseException:
            conn.budget.release(n)
            raise
        self.metrics.inflight_payload_bytes.inc(n)

    def _release_budget(self, conn: _Conn, n: int) -> None:
        if n:
            conn.budget.release(n)
            self._budget.release(n)
            self.metrics.inflight_payload_bytes.dec(n)

    def _give_back_then(self, pooled: bytearray, done: Callable[[Any], None],
                        outcome: Any) -> None:
        """A batched put's completion: its payload buffer is free again, then the reply."""
        self._payload_buffers.give_back(pooled)
        done(outcome)

    async def frame_watchdog(self) -> None:
        """Close connections that stall inside a frame for ``storage.frame_idle_timeout_s``:
        waiting for their bytes, with none arriving. (A peer that announced a 64 MiB put and
        sent 100 bytes held its reservation until it chose to hang up.) A connection the node
        itself is not reading (waiting for budget, TCP backpressure) is not idle."""
        idle_s = self._storage_config().frame_idle_timeout_s
        tick = min(1.0, max(0.01, idle_s / 4))
        while True:
            await asyncio.sleep(tick)
            for conn in list(self._conns):
                got = conn.reader.received_bytes
                if not conn.frame_open or not conn.reader.waiting or got != conn.seen_bytes:
                    conn.seen_bytes = got
                    conn.idle_s = 0.0
                    continue
                conn.idle_s += tick
                if conn.idle_s >= idle_s and not conn.closing:
                    self.metrics.idle_frames_closed.inc()
                    log.warning("connection %s stalled inside a frame for %.1f s: closing it",
                                conn.peer, conn.idle_s)
                    conn.abort()

    def _protocol_error(self, conn: _Conn, e: BadRequestFrame,
                        header: dict[str, Any] | None) -> None:
        self.metrics.protocol_errors.inc()
        rid = header.get("rid", "") if isinstance(header, dict) else ""
        log.warning("rid=%s bad request from %s: %s (%s)", rid, conn.peer, e.message,
                    "closing" if e.fatal else "continuing")

    @staticmethod
    def _error_reply(corr: int, code: str, message: str) -> dict[str, Any]:
        return {"corr": corr, "status": code, "msg": message}

    # ================================================================ serving one request
    async def _serve(self, conn: _Conn, req: Request, payload: Payload,
                     budget: int, pooled: bytearray | None = None) -> None:
        t0 = time.perf_counter()
        status = STATUS_OK
        self.metrics.inflight.inc()
        try:
            written = False
            try:
                fields, body = await self._dispatch(req, payload)
                written = True
            finally:
                payload = None
                self._release_budget(conn, budget)
                # a cancelled or failed handler may have left an I/O thread on the payload
                if written and pooled is not None:
                    self._payload_buffers.give_back(pooled)
            reply = {"corr": req.corr, "status": STATUS_OK, "msg": "", **fields}
            if isinstance(body, FileStream):
                reply["payload_len"] = body.length
                status = await self._sender.file(conn, req, reply, body)
            elif isinstance(body, ReplyStream):
                reply["payload_len"] = body.length
                status = await self._sender.stream(conn, req, reply, body)
            else:
                if body:
                    reply["payload_len"] = len(body)
                self.metrics.bytes_out.inc(await conn.send(reply, body))
        except AmbryError as e:
            status = e.code
            log.debug("rid=%s op=%s: %s %s", req.rid, req.op, e.code, e.message)
            await conn.send(self._error_reply(req.corr, e.code, e.message))
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except Exception as e:
            status = "INTERNAL"
            self.metrics.internal_errors.inc()
            log.exception("rid=%s op=%s from %s failed", req.rid, req.op, conn.peer)
            try:
                await conn.send(self._error_reply(req.corr, "INTERNAL",
                                                  f"internal error: {type(e).__name__}"))
            except Exception:  # noqa: BLE001 -- the reply to a failed request failed too
                conn.abort()
        finally:
            self.metrics.inflight.dec()
            elapsed = time.perf_counter() - t0
            self.metrics.requests.labels(req.op, status).inc()
            self.metrics.latency.labels(req.op).observe(elapsed)
            log.debug("rid=%s op=%s status=%s %.2f ms", req.rid, req.op, status,
                      elapsed * 1000)

    # ================================================================ batched requests
    def _submit_batched(self, conn: _Conn, req: Request, payload: Payload,
                        budget: int, pooled: bytearray | None = None) -> bool:
        """Hand a small mutation to the batch writer (``ops.NodeOps.submit``): no task, no
        thread hand-off of its own; :meth:`_batched_done` replies. False: serve it as any
        request."""
        assert self._submit is not None
        done: Callable[[Any], None] = functools.partial(
            self._batched_done, conn, req, budget, time.perf_counter())
        if pooled is not None:  # given back once the writer thread is done with the payload
            done = functools.partial(self._give_back_then, pooled, done)
        conn.batched += 1
        self._batched += 1
        self.metrics.inflight.inc()
        try:
            taken = self._submit(req, payload, done)
        except Exception as e:  # noqa: BLE001 -- refused on the loop: answered like any error
            done(e)
            return True
        if not taken:
            conn.batched -= 1
            self._batched -= 1
            self.metrics.inflight.dec()
        return taken

    def _batched_done(self, conn: _Conn, req: Request, budget: int, t0: float,
                      outcome: Any) -> None:
        """The reply to a batched request, on the loop: the same reply, metrics and logs as
        :meth:`_serve` gives, written at once (a header, or a GET's small payload with it)
        unless the client is not reading or a stream holds the connection. ``outcome`` is
        the reply's fields (a mutation), ``(fields, payload)`` (a GET: a payload to stream
        gets a task, as in :meth:`_serve`), ``DEFERRED`` (dispatched as any request) or the
        error."""
        self._release_budget(conn, budget)
        conn.batched -= 1
        self._batched -= 1
        body: Any = None
        if outcome is DEFERRED:  # served on its own trip: a task, as any request
            self.metrics.inflight.dec()
            self._spawn(conn, self._serve(conn, req, None, 0))
            self._note_idle(conn)
            return
        if isinstance(outcome, AmbryError):
            status = outcome.code
            log.debug("rid=%s op=%s: %s %s", req.rid, req.op, outcome.code, outcome.message)
            reply = self._error_reply(req.corr, outcome.code, outcome.message)
        elif isinstance(outcome, BaseException):
            status = "INTERNAL"
            self.metrics.internal_errors.inc()
            log.error("rid=%s op=%s from %s failed", req.rid, req.op, conn.peer,
                      exc_info=outcome)
            reply = self._error_reply(req.corr, "INTERNAL",
                                      f"internal error: {type(outcome).__name__}")
        else:
            status = STATUS_OK
            fields, body = outcome if isinstance(outcome, tuple) else (outcome, None)
            reply = {"corr": req.corr, "status": STATUS_OK, "msg": "", **fields}
            if isinstance(body, (FileStream, ReplyStream)):
                reply["payload_len"] = body.length
                self._spawn(conn, self._send_batched_stream(conn, req, reply, body, t0))
                self._note_idle(conn)
                return
            if body:
                reply["payload_len"] = len(body)
                self.metrics.bytes_out.inc(len(body))
        slot_with_task = False
        if not conn.closing:
            if body and len(body) > _DIRECT_REPLY_MAX_BUFFERED_BYTES or \
                    conn.write_lock.locked() or conn.writer.transport.get_write_buffer_size() \
                    > _DIRECT_REPLY_MAX_BUFFERED_BYTES:
                self._spawn(conn, self._send_frames(conn, pack_header(reply), body))
                slot_with_task = True
            else:
                # the replies of one batch to one connection go out in one write (one
                # send(), not one per request), right after the batch's callbacks
                if not conn.replies:
                    if not self._unflushed:
                        asyncio.get_running_loop().call_soon(self._flush_replies)
                    self._unflushed.append(conn)
                conn.replies.append(pack_header(reply))
                if body:
                    conn.replies.append(body)
        if not slot_with_task:
            conn.slots.release()
        self.metrics.inflight.dec()
        elapsed = time.perf_counter() - t0
        self.metrics.requests.labels(req.op, status).inc()
        self.metrics.latency.labels(req.op).observe(elapsed)
        self._note_idle(conn)

    def _note_idle(self, conn: _Conn) -> None:
        if conn.batched == 0 and conn.idle is not None and not conn.idle.done():
            conn.idle.set_result(None)
        if self._batched == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _spawn(self, conn: _Conn, coro: Awaitable[None]) -> None:
        """Run ``coro`` as a request task of ``conn``: it holds the request's slot until done."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            coro)  # type: ignore[arg-type]
        conn.tasks.add(task)
        self._handlers.add(task)
        task.add_done_callback(functools.partial(self._request_done, conn))

    async def _send_batched_stream(self, conn: _Conn, req: Request, reply: dict[str, Any],
                                   body: FileStream | ReplyStream, t0: float) -> None:
        """A batched GET's payload that streams (sendfile, or pread in pieces): sent as
        :meth:`_serve` sends it, with its metrics."""
        status = STATUS_OK
        try:
            if isinstance(body, FileStream):
                status = await self._sender.file(conn, req, reply, body)
            else:
                status = await self._sender.stream(conn, req, reply, body)
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        finally:
            if isinstance(body, FileStream):
                body.close()
            self.metrics.inflight.dec()
            self.metrics.requests.labels(req.op, status).inc()
            self.metrics.latency.labels(req.op).observe(time.perf_counter() - t0)

    def _flush_replies(self) -> None:
        conns, self._unflushed = self._unflushed, []
        for conn in conns:
            replies, conn.replies = conn.replies, []
            if conn.closing:
                continue
            if conn.write_lock.locked():  # a stream took the connection meanwhile: after it
                task = asyncio.get_running_loop().create_task(
                    self._send_frames(conn, b"".join(replies)))
                conn.tasks.add(task)
                self._handlers.add(task)
                task.add_done_callback(functools.partial(self._frames_sent, conn))
            else:
                conn.writer.write(b"".join(replies) if len(replies) > 1 else replies[0])

    @staticmethod
    async def _send_frames(conn: _Conn, frames: bytes,
                           payload: bytes | bytearray | None = None) -> None:
        """Write whole reply frames (the last one's payload after them) after whatever
        holds the connection, and drain."""
        async with conn.write_lock:
            if conn.closing:
                return
            write_message(conn.writer, frames, payload)
            try:
                await conn.writer.drain()
            except (ConnectionError, OSError):
                conn.abort()

    def _frames_sent(self, conn: _Conn, task: asyncio.Task[None]) -> None:
        conn.tasks.discard(task)
        self._handlers.discard(task)
