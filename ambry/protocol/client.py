"""NodeClient: the async client of one storage node, over a small pool of pipelined connections.

Owns connecting, pipelining requests (many in flight per connection, replies matched by
``corr``), timeouts on every call, turning error replies back into the typed errors of
``ambry.common.errors``, and streaming reply payloads without buffering them. Does not own
retries or replica choice (the frontend's router does that): a call that cannot get an answer
raises :class:`~ambry.common.errors.Unavailable` and the caller decides.

A reply with a payload (``get``) holds its connection's read side until the payload is
consumed: read it (``await reply.read()``), iterate it (``async for piece in
reply.iter_chunks()``), or give it back (``await reply.release()`` / ``async with reply``). A
consumer that makes no progress for ``request_timeout_ms`` gets its connection closed (the
other calls on it fail with Unavailable and are retried by their callers), so a forgotten reply
costs one connection, never the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any, Self

from ambry.common.blobid import BlobId
from ambry.common.errors import AmbryError, Unavailable, error_from_code
from ambry.common.properties import BlobProperties
from ambry.protocol import stream
from ambry.protocol.framing import pack_header, read_header, write_message
from ambry.protocol.messages import (
    STATUS_OK,
    EntriesReply,
    MutationReply,
    NameRecord,
    StateReply,
    state_from_wire,
)

__all__ = ["GetReply", "NodeClient", "Reply"]

log = logging.getLogger(__name__)

_INLINE_PAYLOAD_MAX_BYTES = 256 * 1024  # smaller reply payloads are read by the connection
_READ_WHOLE_MAX_BYTES = 16 * 1024 * 1024  # Reply.read() of at most this: one read, one buffer
_STREAMING_LOAD = 1_000_000  # a connection busy streaming a payload is the last choice


class _PayloadStream:
    """The payload bytes of one reply, read straight from the connection."""

    def __init__(self, conn: _Connection, length: int) -> None:
        self._conn = conn
        self.length = length
        self.remaining = length
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_progress = time.monotonic()
        self._busy = False

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
            await self.read_chunk(1 << 20)


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
        """Drop whatever of the payload was not read (frees the connection)."""
        if self._stream is not None and self._stream.remaining:
            try:
                await self._stream.discard()
            except Unavailable:
                pass

    def _release_soon(self) -> None:
        if self._stream is not None and self._stream.remaining:
            task = asyncio.get_running_loop().create_task(self.release())
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


_BACKGROUND: set[asyncio.Task[None]] = set()


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


class _Connection:
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
        self.written_bytes = 0  # handed to the transport so far
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
        """Write one message; ``mark`` gets where it ends in ``written_bytes``."""
        async with self.write_lock:
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


class NodeClient:
    """Async client for one storage node (``host:port``). Safe to share between tasks."""

    def __init__(self, host: str, port: int, *, pool_size: int = 8,
                 connect_timeout_ms: int = 2000, request_timeout_ms: int = 10_000) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self.host = host
        self.port = port
        self.pool_size = pool_size
        self.connect_timeout_ms = connect_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.peer = f"{host}:{port}"
        self._conns: list[_Connection] = []
        self._open_lock = asyncio.Lock()
        self._corr = itertools.count(1)
        self._closed = False

    # ------------------------------------------------------------------------ connections
    async def _open(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_ms / 1000):
                reader, writer = await stream.open_connection(self.host, self.port)
        except TimeoutError:
            raise Unavailable(f"connect to {self.peer} timed out after "
                              f"{self.connect_timeout_ms} ms") from None
        except OSError as e:
            raise Unavailable(f"connect to {self.peer}: {e.strerror or e}") from None
        return _Connection(reader, writer, self.peer, self.request_timeout_ms / 1000)

    def _pick(self) -> tuple[_Connection | None, bool]:
        """(least loaded usable connection, whether it is good enough to use now)."""
        for c in self._conns:
            if c.retired and not c.pending and not c.closed:
                c.fail(Unavailable(f"connection to {self.peer} retired"))
        self._conns = [c for c in self._conns if not c.closed]
        usable = [c for c in self._conns if not c.retired]
        best = min(usable, key=lambda c: c.load, default=None)
        return best, best is not None and (best.load == 0 or len(usable) >= self.pool_size)

    async def _connection(self) -> _Connection:
        if self._closed:
            raise Unavailable("client is closed")
        best, good = self._pick()
        if good or (best is not None and self._open_lock.locked()):
            assert best is not None
            return best
        async with self._open_lock:  # one connect at a time: no stampede of new connections
            best, good = self._pick()
            if good:
                assert best is not None
                return best
            try:
                conn = await self._open()
            except Unavailable:
                if best is not None and not best.closed:
                    return best
                raise
            if self._closed:
                conn.fail(Unavailable("client is closed"))
                raise Unavailable("client is closed")
            self._conns.append(conn)
            return conn

    @property
    def connections(self) -> int:
        return sum(1 for c in self._conns if not c.closed and not c.retired)

    async def close(self) -> None:
        self._closed = True
        conns, self._conns = self._conns, []
        for c in conns:
            c.fail(Unavailable("client is closed"))
        for c in conns:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await c.reader_task
            with contextlib.suppress(Exception):
                await c.writer.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------ raw requests
    async def request(self, op: str, fields: dict[str, Any] | None = None,
                      payload: bytes | bytearray | memoryview | None = None, *, rid: str | None = None,
                      timeout_ms: int | None = None) -> Reply:
        """Send one request and wait for its reply header. Error replies raise their typed
        error; no reply in time raises Unavailable. A reply with a payload must be consumed
        or released by the caller."""
        corr = next(self._corr)
        header: dict[str, Any] = {"op": op, "corr": corr, "rid": rid or os.urandom(6).hex()}
        if fields:
            header.update(fields)
        if payload:
            header["payload_len"] = len(payload)
        frame = pack_header(header)
        t_ms = self.request_timeout_ms if timeout_ms is None else timeout_ms
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        conn: _Connection | None = None
        mark: list[int] = []
        try:
            async with asyncio.timeout(t_ms / 1000):
                conn = await self._connection()
                conn.pending[corr] = fut
                try:
                    await conn.send(frame, payload, mark)
                except Unavailable:
                    # the node may answer (e.g. PAYLOAD_TOO_LARGE) and close before it has
                    # read all we send: its answer, if it came, is the better error
                    if not (fut.done() and not fut.cancelled() and fut.exception() is None):
                        raise
                reply = await fut
        except TimeoutError:
            _abandon(conn, mark, payload)
            raise Unavailable(f"{op} to {self.peer} timed out after {t_ms} ms") from None
        except BaseException:
            _abandon(conn, mark, payload)
            if conn is not None:
                conn.pending.pop(corr, None)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result()._release_soon()
            raise
        finally:
            if conn is not None:
                conn.pending.pop(corr, None)
        status = reply.header.get("status")
        if status != STATUS_OK:
            reply._release_soon()
            raise error_from_code(str(status), str(reply.header.get("msg", "")))
        return reply

    async def _call(self, op: str, fields: dict[str, Any] | None = None,
                    rid: str | None = None) -> dict[str, Any]:
        reply = await self.request(op, fields, rid=rid)
        await reply.release()
        return reply.header

    # ------------------------------------------------------------------------ ops
    async def ping(self, rid: str | None = None) -> dict[str, Any]:
        return await self._call("ping", rid=rid)

    async def put(self, blob_id: BlobId | bytes, props: BlobProperties | dict[str, Any],
                  usermeta: bytes, payload: bytes | bytearray | memoryview, *, partition: int | None = None,
                  rid: str | None = None) -> MutationReply:
        raw, pid = _id_and_partition(blob_id, partition)
        wire_props = props.to_wire() if isinstance(props, BlobProperties) else props
        reply = await self.request("put", {"partition": pid, "blob_id": raw,
                                           "props": wire_props, "usermeta": usermeta},
                                   payload if len(payload) else None, rid=rid)
        return MutationReply(str(reply.header["result"]), int(reply.header["life_version"]))

    async def get(self, blob_id: BlobId | bytes, *, include_deleted: bool = False,
                  include_expired: bool = False, range: tuple[int, int] | None = None,
                  info_only: bool = False, partition: int | None = None,
                  rid: str | None = None) -> GetReply:
        """The blob's metadata and a handle on its payload (read, iterate or release it).
        ``range`` = (start, length), clamped to the blob's end by the node."""
        raw, pid = _id_and_partition(blob_id, partition)
        fields: dict[str, Any] = {"partition": pid, "blob_id": raw,
                                  "include_deleted": include_deleted,
                                  "include_expired": include_expired, "info_only": info_only}
        if range is not None:
            fields["range"] = [int(range[0]), int(range[1])]
        reply = await self.request("get", fields, rid=rid)
        try:
            return GetReply(reply.header, reply._stream)
        except (KeyError, TypeError, ValueError, AmbryError) as e:
            reply._release_soon()
            raise Unavailable(f"malformed get reply from {self.peer}: {e!r}") from None

    async def get_bytes(self, blob_id: BlobId | bytes, **kw: Any
                        ) -> tuple[GetReply, bytes | bytearray]:
        """``get`` and read the whole payload (for small blobs and tests)."""
        reply = await self.get(blob_id, **kw)
        async with reply:
            return reply, await reply.read()

    async def _mutate(self, op: str, blob_id: BlobId | bytes, time_ms: int | None,
                      life_version: int | None, partition: int | None, rid: str | None,
                      **extra: Any) -> MutationReply:
        raw, pid = _id_and_partition(blob_id, partition)
        fields: dict[str, Any] = {"partition": pid, "blob_id": raw, **extra}
        if time_ms is not None:
            fields["time_ms"] = time_ms
        if life_version is not None:
            fields["life_version"] = life_version
        h = await self._call(op, fields, rid)
        return MutationReply(str(h["result"]), int(h["life_version"]))

    async def delete(self, blob_id: BlobId | bytes, *, time_ms: int | None = None,
                     life_version: int | None = None, tombstone_if_missing: bool = True,
                     partition: int | None = None, rid: str | None = None) -> MutationReply:
        return await self._mutate("delete", blob_id, time_ms, life_version, partition, rid,
                                  tombstone_if_missing=tombstone_if_missing)

    async def ttl_update(self, blob_id: BlobId | bytes, *, time_ms: int | None = None,
                         life_version: int | None = None, partition: int | None = None,
                         rid: str | None = None) -> MutationReply:
        return await self._mutate("ttl_update", blob_id, time_ms, life_version, partition, rid)

    async def undelete(self, blob_id: BlobId | bytes, *, time_ms: int | None = None,
                       life_version: int | None = None, partition: int | None = None,
                       rid: str | None = None) -> MutationReply:
        return await self._mutate("undelete", blob_id, time_ms, life_version, partition, rid)

    async def blob_state(self, blob_id: BlobId | bytes, *, partition: int | None = None,
                         rid: str | None = None) -> StateReply:
        raw, pid = _id_and_partition(blob_id, partition)
        h = await self._call("blob_state", {"partition": pid, "blob_id": raw}, rid)
        st = h.get("state")
        return StateReply(state_from_wire(st) if st else None, bool(h.get("has_put")))

    async def name_put(self, partition: int, entry: NameRecord, rid: str | None = None, *,
                       token: bytes | None = None,
                       base: tuple[int, int, bytes] | None = None) -> None:
        """Write a name entry; with ``token`` it is the conditional write of a reservation
        (NameBusy when the token does not hold the name and its entry is no longer ``base``)."""
        args: dict[str, Any] = {"partition": partition, **entry.to_wire()}
        if token is not None:
            args["token"] = token
            args["base"] = list(base) if base is not None else None
        await self._call("name_put", args, rid)

    async def name_reserve(self, partition: int, account_id: int, container_id: int,
                           name: str, token: bytes, lease_ms: int, rid: str | None = None
                           ) -> tuple[bool, NameRecord | None]:
        """Ask for the name's reservation: (granted, the replica's current entry)."""
        h = await self._call("name_reserve", {
            "partition": partition, "account_id": account_id, "container_id": container_id,
            "name": name, "token": token, "lease_ms": lease_ms}, rid)
        e = h.get("entry")
        return bool(h.get("granted")), (NameRecord.from_wire(e) if e else None)

    async def name_release(self, partition: int, account_id: int, container_id: int,
                           name: str, token: bytes, rid: str | None = None) -> None:
        await self._call("name_release", {
            "partition": partition, "account_id": account_id, "container_id": container_id,
            "name": name, "token": token}, rid)

    async def name_get(self, partition: int, account_id: int, container_id: int, name: str,
                       rid: str | None = None) -> NameRecord | None:
        h = await self._call("name_get", {"partition": partition, "account_id": account_id,
                                          "container_id": container_id, "name": name}, rid)
        e = h.get("entry")
        return NameRecord.from_wire(e) if e else None

    async def name_list(self, partition: int, account_id: int, container_id: int,
                        prefix: str = "", start_after: str = "", limit: int = 1000,
                        rid: str | None = None, include_deleted: bool = False
                        ) -> list[NameRecord]:
        """Up to ``limit`` live names under ``prefix`` after ``start_after``, in name order;
        with ``include_deleted`` deleted names (tombstones) too, so that a merge of several
        replicas' answers sees a delete that one of them already has.
        (The node may cut a reply short to keep it under the header bound and says so with
        ``truncated``; this method then asks again from the last name it got.)"""
        out: list[NameRecord] = []
        while True:
            args: dict[str, Any] = {
                "partition": partition, "account_id": account_id,
                "container_id": container_id, "prefix": prefix, "start_after": start_after,
                "limit": limit - len(out)}
            if include_deleted:  # (only then: the frame stays as it was for other callers)
                args["include_deleted"] = True
            h = await self._call("name_list", args, rid)
            got = [NameRecord.from_wire(e) for e in h.get("entries", [])]
            out += got
            if not h.get("truncated") or not got or len(out) >= limit:
                return out
            start_after = got[-1].name

    async def entries_since(self, partition: int, token: tuple[bytes, int] | None,
                            max_entries: int = 1000, max_bytes: int = 4 * 1024 * 1024,
                            rid: str | None = None) -> EntriesReply:
        h = await self._call("entries_since", {
            "partition": partition, "token": list(token) if token is not None else None,
            "max_entries": max_entries, "max_bytes": max_bytes}, rid)
        tok = h["token"]
        return EntriesReply(list(h.get("entries", [])), (bytes(tok[0]), int(tok[1])),
                            int(h.get("remaining_bytes", 0)))

    async def replicate(self, requests: list[tuple[int, tuple[bytes, int] | None]], *,
                        max_entries: int = 1000, max_bytes: int = 4 * 1024 * 1024,
                        wait_ms: int = 0, rid: str | None = None
                        ) -> list[tuple[int, list[dict[str, Any]], tuple[bytes, int], int]]:
        """One batched replication pull: the records after each token of each partition the
        peer shares, held up to ``wait_ms`` while there are none (long poll)."""
        wire = [[pid, list(tok) if tok is not None else None] for pid, tok in requests]
        reply = await self.request("replicate", {"requests": wire, "max_entries": max_entries,
                                                 "max_bytes": max_bytes, "wait_ms": wait_ms},
                                   rid=rid, timeout_ms=self.request_timeout_ms + wait_ms)
        await reply.release()
        out = []
        for pid, entries, tok, remaining in reply.header.get("results", []):
            out.append((int(pid), list(entries), (bytes(tok[0]), int(tok[1])), int(remaining)))
        return out

    async def digest(self, partition: int, rid: str | None = None) -> dict[str, Any]:
        return await self._call("digest", {"partition": partition}, rid)

    async def stats(self, rid: str | None = None) -> list[dict[str, Any]]:
        h = await self._call("stats", rid=rid)
        return list(h.get("replicas", []))


def _abandon(conn: _Connection | None, mark: list[int],
             payload: bytes | bytearray | memoryview | None) -> None:
    """A request given up (timed out, cancelled) whose payload the transport still holds:
    close its connection. Its payload stays in memory as long as the transport holds it,
    which, for a stopped node, is until the connection dies; and a frame cut short cannot
    be followed by another anyway. (Header-only requests are small: a hedged GET given up
    must not cost the requests pipelined behind it.)"""
    if conn is None or not mark or not payload or conn.closed or conn.sent(mark[0]):
        return
    conn.writer.transport.abort()  # close() would keep the unsent bytes until they drain
    conn.fail(Unavailable(f"gave up on a request to {conn.peer} before its payload was sent"))


def _id_and_partition(blob_id: BlobId | bytes, partition: int | None) -> tuple[bytes, int]:
    if isinstance(blob_id, BlobId):
        return blob_id.to_bytes(), blob_id.partition_id if partition is None else partition
    raw = bytes(blob_id)
    if partition is None:
        if len(raw) < 16:
            raise ValueError("pass partition= with a raw blob id this short")
        partition = int.from_bytes(raw[8:16], "big")
    return raw, partition
