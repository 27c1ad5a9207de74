"""NodeClient: the async client of one storage node, over a small pool of pipelined connections.

Owns the pool (opening connections, one connect at a time, choosing the least loaded, retiring
the ones a node ends), a timeout on every call, turning error replies back into the typed
errors of ``ambry.common.errors``, and the node protocol's operations, one method each. Does
not own the wire side of a connection or reading reply payloads (``connection``: a reply with
a payload must be read or released, see there), nor retries or replica choice (the frontend's
router does that): a call that cannot get an answer raises
:class:`~ambry.common.errors.Unavailable` and the caller decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Mapping
from typing import Any, Self

from ambry.common.blobid import BlobId
from ambry.common.errors import AmbryError, Unavailable, error_from_code
from ambry.common.properties import BlobProperties
from ambry.protocol import stream
from ambry.protocol.connection import Connection, GetReply, Reply
from ambry.protocol.framing import pack_header
from ambry.protocol.messages import (
    MAX_CONFIRM_INCARNATIONS,
    MAX_CONFIRMS_PER_REQUEST,
    STATUS_OK,
    EntriesReply,
    MutationReply,
    NameRecord,
    StateReply,
    state_from_wire,
)

__all__ = ["MAX_CONFIRMS_QUEUED", "GetReply", "NodeClient", "Reply"]

#: confirmations a client holds for its node at most (a node that stopped answering)
MAX_CONFIRMS_QUEUED = 16_384


#: a payload-less request joins a connection with corked headers only while that connection
#: has fewer requests than this in flight (else it takes the least loaded, as any request)
_CORK_SHARE_MAX_LOAD = 8

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
        self._conns: list[Connection] = []
        self._open_lock = asyncio.Lock()
        self._corr = itertools.count(1)
        self._closed = False
        # blob id -> incarnations it is durable on, to tell this node on the next request
        # (``confirm``); bounded: a confirmation dropped only costs the node's peers a check
        self._confirms: dict[bytes, list[bytes]] = {}

    # ------------------------------------------------------------------------ connections
    async def _open(self) -> Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_ms / 1000):
                reader, writer = await stream.open_connection(self.host, self.port)
        except TimeoutError:
            raise Unavailable(f"connect to {self.peer} timed out after "
                              f"{self.connect_timeout_ms} ms") from None
        except OSError as e:
            raise Unavailable(f"connect to {self.peer}: {e.strerror or e}") from None
        return Connection(reader, writer, self.peer, self.request_timeout_ms / 1000)

    def _pick(self) -> tuple[Connection | None, bool]:
        """(least loaded usable connection, whether it is good enough to use now)."""
        for c in self._conns:
            if c.retired and not c.pending and not c.closed:
                c.fail(Unavailable(f"connection to {self.peer} retired"))
        self._conns = [c for c in self._conns if not c.closed]
        usable = [c for c in self._conns if not c.retired]
        best = min(usable, key=lambda c: c.load, default=None)
        return best, best is not None and (best.load == 0 or len(usable) >= self.pool_size)

    def _corked(self) -> Connection | None:
        """A connection with request headers corked in this loop step and few requests in
        flight: a payload-less request joins them (one write, one packet to the node, which
        parses them together and serves them in one batch)."""
        if self._closed:
            return None
        for c in self._conns:
            if c.corked is not None and c.load < _CORK_SHARE_MAX_LOAD and not c.closed \
                    and not c.retired:
                return c
        return None

    async def _connection(self) -> Connection:
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
        if self._confirms:
            header["confirms"] = self._take_confirms()
        if payload:
            header["payload_len"] = len(payload)
        frame = pack_header(header)
        t_ms = self.request_timeout_ms if timeout_ms is None else timeout_ms
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        conn: Connection | None = None
        mark: list[int] = []
        try:
            async with asyncio.timeout(t_ms / 1000):
                conn = (self._corked() if not payload else None) or await self._connection()
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
                fut.result().release_soon()
            raise
        finally:
            if conn is not None:
                conn.pending.pop(corr, None)
        status = reply.header.get("status")
        if status != STATUS_OK:
            reply.release_soon()
            raise error_from_code(str(status), str(reply.header.get("msg", "")))
        return reply

    # ------------------------------------------------------------------------ confirmations
    def confirm(self, blob_id: bytes, incarnation: bytes) -> bool:
        """Queue "``blob_id`` is durable on the replica of ``incarnation``" for this node: it
        rides on the next request sent to it (``flush_confirms`` sends it alone). Returns
        True when the queue was empty (the caller may schedule a flush)."""
        was_empty = not self._confirms
        incs = self._confirms.get(blob_id)
        if incs is None:
            if len(self._confirms) >= MAX_CONFIRMS_QUEUED:
                return False
            self._confirms[blob_id] = [incarnation]
        elif incarnation not in incs and len(incs) < MAX_CONFIRM_INCARNATIONS:
            incs.append(incarnation)
        return was_empty

    @property
    def confirms_queued(self) -> int:
        return len(self._confirms)

    def _take_confirms(self) -> list[list[Any]]:
        q = self._confirms
        if len(q) <= MAX_CONFIRMS_PER_REQUEST:
            self._confirms = {}
            return [[k, v] for k, v in q.items()]
        out = []
        for k in list(itertools.islice(q, MAX_CONFIRMS_PER_REQUEST)):
            out.append([k, q.pop(k)])
        return out

    async def flush_confirms(self, rid: str | None = None) -> None:
        """Send the queued confirmations now, alone (an idle frontend's flush)."""
        if self._confirms:
            await self._call("confirm", rid=rid)

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
        inc = reply.header.get("incarnation")
        return MutationReply(str(reply.header["result"]), int(reply.header["life_version"]),
                             bytes(inc) if isinstance(inc, (bytes, bytearray)) else None)

    async def get(self, blob_id: BlobId | bytes, *, include_deleted: bool = False,
                  include_expired: bool = False, range: tuple[int, int] | None = None,
                  info_only: bool = False, partition: int | None = None,
                  rid: str | None = None, client_verifies: bool = False) -> GetReply:
        """The blob's metadata and a handle on its payload (read, iterate or release it).
        ``range`` = (start, length), clamped to the blob's end by the node. ``client_verifies``:
        the caller checks the payload against the record's checksum itself
        (``GetReply.payload_check``), so the node may send a large one unread, with sendfile."""
        raw, pid = _id_and_partition(blob_id, partition)
        fields: dict[str, Any] = {"partition": pid, "blob_id": raw,
                                  "include_deleted": include_deleted,
                                  "include_expired": include_expired, "info_only": info_only}
        if client_verifies:
            fields["client_verifies"] = True
        if range is not None:
            fields["range"] = [int(range[0]), int(range[1])]
        reply = await self.request("get", fields, rid=rid)
        try:
            return GetReply(reply.header, reply._stream)
        except (KeyError, TypeError, ValueError, AmbryError) as e:
            reply.release_soon()
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

    async def name_claim(self, partition: int, entry: NameRecord, rid: str | None = None
                         ) -> NameRecord | None:
        """An upsert of a name decided at the replica in one step (no reservation): the
        entry it replaced there. NameBusy while the name is reserved or being written
        there, or its entry there is newer than ``entry``."""
        wire = entry.to_wire()
        del wire["deleted"]
        h = await self._call("name_claim", {"partition": partition, **wire}, rid)
        e = h.get("prev")
        return NameRecord.from_wire(e) if e else None

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
                        wait_ms: int = 0, rid: str | None = None,
                        confirmed_on: Mapping[int, bytes] | None = None, hold_ms: int = 0,
                        hold_dc: int | None = None
                        ) -> list[tuple[int, list[dict[str, Any]], tuple[bytes, int], int]]:
        """One batched replication pull: the records after each token of each partition the
        peer shares, held up to ``wait_ms`` while there are none (long poll).
        ``confirmed_on`` (partition -> this puller's replica incarnation): the peer skips the
        PUTs confirmed durable there, and holds young unconfirmed PUTs of blobs from
        datacenter ``hold_dc`` up to ``hold_ms`` (``ambry.storage.confirms``)."""
        wire = [[pid, list(tok) if tok is not None else None] for pid, tok in requests]
        fields: dict[str, Any] = {"requests": wire, "max_entries": max_entries,
                                  "max_bytes": max_bytes, "wait_ms": wait_ms}
        if confirmed_on:
            fields["confirmed_on"] = [[pid, inc] for pid, inc in confirmed_on.items()]
            if hold_ms:
                fields["hold_ms"] = hold_ms
                fields["hold_dc"] = hold_dc
        reply = await self.request("replicate", fields,
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


def _abandon(conn: Connection | None, mark: list[int],
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
