"""The node's op handlers: what each request of the node protocol does, in one place.

Owns the dispatch table (op name -> handler) and every handler: checking a request's fields
beyond the schema (``ambry.protocol.messages.parse_request`` checked their types), calling the
replica through the declared API (``api.ReplicaStore``: blocking calls on the node's I/O
threads), waiting until a mutation is durable before answering, and shaping the reply
(lists cut to keep the reply header bounded, large payloads as a :class:`ReplyStream`). Also
owns the long poll of ``replicate`` and the :class:`ChangeSignal` that ends it. Does not own
connections, frames or payload budgets (``server``), nor what an operation means to the store
(``replica``).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

from ambry.common.blobid import BlobId
from ambry.common.clock import Clock
from ambry.common.config import StorageConfig
from ambry.common.errors import InvalidArgument, ReplicaUnavailable
from ambry.common.namerecord import NameRecord
from ambry.common.properties import BlobProperties
from ambry.protocol.messages import (
    MAX_ENTRIES_BATCH,
    MAX_ENTRIES_BYTES,
    MAX_HEADER_BYTES,
    MAX_LIST_LIMIT,
    Request,
    state_to_wire,
)
from ambry.storage.api import BlobRead, MutationResult, ReplicaStore, RunIO
from ambry.storage.batchreader import BatchReader
from ambry.storage.batchwriter import BATCH_MAX_PAYLOAD_BYTES, BatchWriter
from ambry.storage.confirms import ConfirmationBook
from ambry.storage.ecstate import EncodedBlobRead
from ambry.storage.pullpoll import serve_replicate

__all__ = ["DEFERRED", "ChangeSignal", "FileStream", "NodeOps", "Payload", "ReplyStream"]

_STREAM_CHUNK_BYTES = 1 << 20
# replies must stay under the header bound: batches of entries/names are cut at this size
_REPLY_LIST_BUDGET_BYTES = MAX_HEADER_BYTES - 64 * 1024
_U16 = 0xFFFF
#: the ops ``submit`` sends through the batch writer (small puts, and the state changes)
_BATCHED_OPS = frozenset({"put", "delete", "ttl_update", "undelete"})
_U64 = 2**64 - 1
#: A request's payload as the node read it: a large one is the bytearray the socket wrote it
#: into (``ambry.protocol.stream``), not a copy of it.
Payload = bytes | bytearray | memoryview | None
#: what a handler returns: the reply's fields, and its payload (bytes, a stream, or None)
Handler = Callable[[Request, Payload], Awaitable[tuple[dict[str, Any], Any]]]
#: what a batched GET's job returns when it must be served on its own trip (an encoded
#: record, read through other nodes' fragments): the server dispatches it as any request
DEFERRED = object()


class ReplyStream:
    """A reply payload produced piece by piece by a blocking iterator (run on I/O threads)."""

    def __init__(self, pieces: Iterator[bytes], length: int) -> None:
        self.pieces = pieces
        self.length = length


class FileStream:
    """A reply payload that is a span of a segment file, sent with ``sendfile`` (the server's
    ``_send_file``): the bytes go from the page cache to the socket, never through Python.
    Owns ``fd`` (a duplicate of the segment's descriptor): :meth:`close` it when done."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a reply never sent (its request cancelled) frees it too
        self.close()




class ChangeSignal:
    """Set whenever a record was appended: wakes the peers' long-polling ``replicate``
    requests. Each wake-up replaces the event, so a waiter sees only changes after it
    looked."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def notify(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


class NodeOps:
    """The handlers of one node, over its replicas (a live mapping the node keeps)."""

    def __init__(self, node_id: str, replicas: Mapping[int, ReplicaStore],
                 failed_replicas: Mapping[int, str], *, clock: Clock,
                 storage_config: Callable[[], StorageConfig], run_io: RunIO,
                 changes: ChangeSignal, draining: Callable[[], bool],
                 writer: BatchWriter | None = None,
                 reader: BatchReader | None = None) -> None:
        self.node_id = node_id
        self._reader = reader  # GETs go through it a batch at a time (submit)
        self._writer = writer  # small mutations go through it a batch at a time (submit)
        self.replicas = replicas
        self.failed_replicas = failed_replicas
        self.clock = clock
        self._storage_config = storage_config  # the node's current config (a map reload)
        self._run_io = run_io
        self._changes = changes
        self._is_draining = draining
        self.table: dict[str, Handler] = {
            "ping": self._op_ping, "put": self._op_put, "get": self._op_get,
            "delete": self._op_delete, "ttl_update": self._op_ttl_update,
            "undelete": self._op_undelete, "name_put": self._op_name_put,
            "name_claim": self._op_name_claim,
            "name_get": self._op_name_get, "name_list": self._op_name_list,
            "name_reserve": self._op_name_reserve, "name_release": self._op_name_release,
            "entries_since": self._op_entries_since, "stats": self._op_stats,
            "blob_state": self._op_blob_state, "replicate": self._op_replicate,
            "digest": self._op_digest,
        }
        # what frontends confirmed durable where: replicate skips it for the peers that
        # have it (ambry.storage.confirms); "confirm" is a frontend's idle flush of them
        self.confirms = ConfirmationBook()
        self.table["confirm"] = self._op_confirm

    async def dispatch(self, req: Request, payload: Payload) -> tuple[dict[str, Any], Any]:
        """Serve one parsed request: (reply fields, payload: bytes, a ReplyStream or None)."""
        if req.confirms:
            self.confirms.note(req.confirms)
        return await self.table[req.op](req, payload)

    def durable_fields(self, r: ReplicaStore) -> dict[str, Any]:
        """What a put reply adds when its ack is durable (fsync policy): the replica's
        incarnation, which the frontend passes on as a confirmation (ambry.storage.confirms).
        Under page-cache an ack survives a process crash but not a power loss, which keeps
        the incarnation: a confirmation would then skip a record the replica lost."""
        if self._storage_config().durability != "fsync":
            return {}
        return {"incarnation": r.incarnation}

    async def _op_confirm(self, _req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        return {}, None  # (dispatch noted what it carried)

    def submit(self, req: Request, payload: Payload,
               done: Callable[[Any], None]) -> bool:
        """Serve a small mutation through the batch writer, or a GET through the batch
        reader, without a task or a thread hand-off of its own: False when ``req`` is neither
        (the caller dispatches it), else ``done`` is called on the loop with the reply's
        fields (a mutation, once its record is durable), ``(fields, payload)`` (a GET),
        :data:`DEFERRED` (a GET to dispatch as any request) or the error. A request the loop
        can refuse at once raises here (AmbryError)."""
        op = req.op
        if op == "get":
            rd = self._reader
            if rd is None or not rd.running or not self._storage_config().batch_reads:
                return False
            if req.confirms:
                self.confirms.note(req.confirms)
            rd.submit(self.get_job(req, defer_remote=True), done)
            return True
        w = self._writer
        if w is None or not w.running or op not in _BATCHED_OPS or (
                op == "put" and payload is not None
                and len(payload) > BATCH_MAX_PAYLOAD_BYTES):
            return False
        if req.confirms:
            self.confirms.note(req.confirms)
        if op == "put":
            a = req.args
            r = self._replica(a["partition"])
            bid = BlobId.from_bytes(a["blob_id"])
            props = BlobProperties.from_wire(a["props"])
            w.submit(r, r.put, (bid, props, a["usermeta"], payload or b""),
                     functools.partial(_mutation_done, done, self.durable_fields(r)))
            return True
        r, bid, t, lv = self._mutation_args(req)
        if op == "delete":
            w.submit(r, functools.partial(
                r.delete, tombstone_if_missing=req.args["tombstone_if_missing"]),
                (bid, t, lv), functools.partial(_mutation_done, done, None))
        else:
            fn = r.ttl_update if op == "ttl_update" else r.undelete
            w.submit(r, fn, (bid, t, lv), functools.partial(_mutation_done, done, None))
        return True

    @property
    def _changed(self) -> asyncio.Event:
        return self._changes.event

    @property
    def _draining(self) -> bool:
        return self._is_draining()

    def _notify_change(self) -> None:
        self._changes.notify()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._run_io(fn, *args)

    def _replica(self, partition: int) -> ReplicaStore:
        r = self.replicas.get(partition)
        if r is None:
            if partition in self.failed_replicas:
                raise ReplicaUnavailable(f"replica of partition {partition} on {self.node_id} "
                                         f"failed to open")
            raise ReplicaUnavailable(f"partition {partition} has no replica on {self.node_id}")
        return r

    # ================================================================ the handlers
    async def _op_ping(self, req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        # "serving": the partitions whose replica here is open and not rebuilding, i.e. can
        # answer every request, "not found" included; a frontend reports ready only once
        # enough replicas of every partition serve (ambry.frontend.readiness)
        serving = sorted(pid for pid, r in self.replicas.items() if not r.rebuilding)
        return {"node": self.node_id, "time_ms": self.clock.now_ms(), "serving": serving}, None

    async def _op_put(self, req: Request, payload: Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        bid = BlobId.from_bytes(a["blob_id"])
        props = BlobProperties.from_wire(a["props"])
        res = await self._run(r.put, bid, props, a["usermeta"], payload or b"")
        await r.durable_async(res.end)
        self._notify_change()
        return {"result": res.status, "life_version": res.life_version,
                **self.durable_fields(r)}, None

    async def _op_get(self, req: Request, _p: Payload) -> tuple[dict[str, Any], Any]:
        reply: tuple[dict[str, Any], Any] = await self._run(
            self.get_job(req, defer_remote=False))
        return reply

    def get_job(self, req: Request, *, defer_remote: bool
                ) -> Callable[[], Any]:
        """A GET's blocking part, for one trip to an I/O thread: locate the record, read and
        verify a small payload (or take the file span a verifying reader gets by sendfile),
        and shape the reply: (fields, payload: bytes, a FileStream, a ReplyStream or None).
        The request's fields are checked here, on the loop (bad input raises at once). With
        ``defer_remote`` (the batch reader), a record whose payload is read through the
        fragments of an encoded segment (other nodes) returns :data:`DEFERRED` instead: it is
        served on its own trip, not holding up the rest of its batch."""
        a = req.args
        r = self._replica(a["partition"])
        bid = BlobId.from_bytes(a["blob_id"])
        rng = a["range"]
        if rng is not None and (len(rng) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in rng)):
            raise InvalidArgument("range must be [start >= 0, length >= 0]")
        cfg = self._storage_config()
        verify_max = cfg.verify_on_read_max_bytes
        # the reader hashes the whole payload itself: send it from the page cache unread
        sendfile_min = cfg.sendfile_min_bytes if a["client_verifies"] else 0
        include_deleted, include_expired = a["include_deleted"], a["include_expired"]
        info_only = a["info_only"]

        def locate_and_read() -> Any:
            # one trip to an I/O thread for a small blob: locate, then read (and verify)
            read: BlobRead = r.get(bid, include_deleted, include_expired)
            total = read.payload_len
            start, length = 0, total
            if rng is not None:
                start, length = int(rng[0]), int(rng[1])
                if start > total:
                    raise InvalidArgument(f"range starts at {start}, past the blob's "
                                          f"{total} bytes")
                length = min(length, total - start)
            data = None
            span = None
            if not info_only and length:
                if defer_remote and isinstance(read, EncodedBlobRead):
                    return DEFERRED
                if sendfile_min and length == total >= sendfile_min:
                    fd = read.payload_fd()
                    if fd is not None:
                        span = FileStream(fd, read.payload_file_offset, length)
                if span is None and read.header.total_len <= verify_max:
                    data = read.read_payload(start, length)  # verifies the whole record first
            fields = {"props": read.properties.to_wire(), "usermeta": read.user_metadata,
                      "state": state_to_wire(read.state, read.expiry_ms),
                      "blob_size": read.payload_len, "range_start": start}
            if span is not None:
                # unverified here: the reader checks the bytes against the record's checksum
                # before it passes the last of them on (docs/storage.md, "Serving reads")
                fields["body_xxh3"] = read.header.body_xxh3
                fields["body_prefix"] = read.body_prefix
                return fields, span
            if info_only or length == 0:
                return fields, None
            if data is not None:
                return fields, data
            if start == 0 and length == read.payload_len:
                return fields, ReplyStream(read.iter_payload(_STREAM_CHUNK_BYTES), length)
            return fields, ReplyStream(_range_pieces(read, start, length), length)

        return locate_and_read

    def _mutation_args(self, req: Request
                       ) -> tuple[ReplicaStore, BlobId, int | None, int | None]:
        a = req.args
        r = self._replica(a["partition"])
        bid = BlobId.from_bytes(a["blob_id"])
        t, lv = a["time_ms"], a["life_version"]
        if t is not None and not 0 <= t <= _U64:
            raise InvalidArgument("time_ms out of range")
        if lv is not None and not 0 <= lv <= _U16:
            raise InvalidArgument("life_version must be in [0, 65535]")
        return r, bid, t, lv

    async def _op_delete(self, req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        r, bid, t, lv = self._mutation_args(req)
        res = await self._run(functools.partial(
            r.delete, bid, t, lv, tombstone_if_missing=req.args["tombstone_if_missing"]))
        await r.durable_async(res.end)
        self._notify_change()
        return {"result": res.status, "life_version": res.life_version}, None

    async def _op_ttl_update(self, req: Request,
                             _p: Payload) -> tuple[dict[str, Any], None]:
        r, bid, t, lv = self._mutation_args(req)
        res = await self._run(r.ttl_update, bid, t, lv)
        await r.durable_async(res.end)
        self._notify_change()
        return {"result": res.status, "life_version": res.life_version}, None

    async def _op_undelete(self, req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        r, bid, t, lv = self._mutation_args(req)
        res = await self._run(r.undelete, bid, t, lv)
        await r.durable_async(res.end)
        self._notify_change()
        return {"result": res.status, "life_version": res.life_version}, None

    @staticmethod
    def _check_container(a: dict[str, Any]) -> None:
        if not (0 <= a["account_id"] <= _U16 and 0 <= a["container_id"] <= _U16):
            raise InvalidArgument("account_id and container_id must be in [0, 65535]")

    @classmethod
    def _name_record(cls, a: dict[str, Any], deleted: bool) -> NameRecord:
        """The name record a name_put / name_claim carries, its fields checked."""
        cls._check_container(a)
        for k in ("ts_ms", "created_ms", "size"):
            if not 0 <= a[k] <= _U64:
                raise InvalidArgument(f"{k} out of range")
        if not 0 <= a["dc_id"] <= 0xFF:
            raise InvalidArgument("dc_id must be in [0, 255]")
        return NameRecord(a["account_id"], a["container_id"], a["name"], a["blob_id"],
                          a["ts_ms"], a["dc_id"], deleted, a["size"], a["content_type"],
                          a["created_ms"])

    async def _op_name_put(self, req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        entry = self._name_record(a, a["deleted"])
        token, base = a["token"], a["base"]
        if token is not None and base is not None:
            if not (len(base) == 3 and all(isinstance(x, int) and not isinstance(x, bool)
                                           for x in base[:2])
                    and isinstance(base[2], (bytes, bytearray))):
                raise InvalidArgument("base must be [ts_ms, dc_id, blob_id]")
            base = (base[0], base[1], bytes(base[2]))
        fut = await self._run(functools.partial(
            r.name_put, entry, bytes(token) if token is not None else None, base))
        await asyncio.wrap_future(fut)
        self._notify_change()
        return {}, None

    async def _op_name_claim(self, req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        entry = self._name_record(a, False)
        prev, fut = await self._run(r.name_claim, entry)
        await asyncio.wrap_future(fut)
        self._notify_change()
        return {"prev": prev.to_wire() if prev is not None else None}, None

    async def _op_name_reserve(self, req: Request,
                               _p: Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        self._check_container(a)
        if not 1 <= len(a["token"]) <= 64:
            raise InvalidArgument("token must be 1 to 64 bytes")
        granted, e = await self._run(functools.partial(
            r.name_reserve, a["account_id"], a["container_id"], a["name"], bytes(a["token"]),
            a["lease_ms"]))
        return {"granted": granted,
                "entry": e.to_wire() if e is not None else None}, None

    async def _op_name_release(self, req: Request,
                               _p: Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        self._check_container(a)
        r.name_release(a["account_id"], a["container_id"], a["name"], bytes(a["token"]))
        return {}, None

    async def _op_name_get(self, req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        self._check_container(a)
        # a name the view holds in memory is answered here, without a thread hand-off
        e = r.name_get_cached(a["account_id"], a["container_id"], a["name"])
        if e is None:
            e = await self._run(r.name_get, a["account_id"], a["container_id"], a["name"])
        return {"entry": e.to_wire() if e is not None else None}, None

    async def _op_name_list(self, req: Request,
                            _p: Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        self._check_container(a)
        limit = max(1, min(a["limit"], MAX_LIST_LIMIT))
        entries = await self._run(functools.partial(
            r.name_list, a["account_id"], a["container_id"], a["prefix"], a["start_after"],
            limit, a["include_deleted"]))
        out: list[dict[str, Any]] = []
        used = 0
        truncated = False
        for e in entries:
            w = e.to_wire()
            used += _approx_wire_bytes(w)
            if used > _REPLY_LIST_BUDGET_BYTES and out:
                truncated = True  # the client continues from the last name it got
                break
            out.append(w)
        return {"entries": out, "truncated": truncated}, None

    async def _entries(self, r: ReplicaStore, tok: Any, max_entries: int, max_bytes: int
                       ) -> tuple[list[dict[str, Any]], tuple[bytes, int], int]:
        token: tuple[bytes, int] | None = None
        if tok is not None:
            if (not isinstance(tok, (list, tuple)) or len(tok) != 2
                    or not isinstance(tok[0], (bytes, bytearray))
                    or not isinstance(tok[1], int) or isinstance(tok[1], bool) or tok[1] < 0):
                raise InvalidArgument("token must be [incarnation bytes, sequence >= 0]")
            token = (bytes(tok[0]), int(tok[1]))
        max_entries = max(1, min(max_entries, MAX_ENTRIES_BATCH))
        max_bytes = max(1, min(max_bytes, MAX_ENTRIES_BYTES))
        if token is not None and r.caught_up(token):
            return [], token, 0
        entries, new_token, remaining = await self._run(r.entries_since, token, max_entries,
                                                        max_bytes)
        out: list[dict[str, Any]] = []
        used = 0
        last_seq = token[1] if token is not None and token[0] == new_token[0] else 0
        for i, e in enumerate(entries):
            w = e.to_wire()
            used += _approx_wire_bytes(w)
            if used > _REPLY_LIST_BUDGET_BYTES and out:
                # cut to keep the header bounded: the token covers what is returned, the rest
                # counts as remaining
                remaining += sum(x.record_len for x in entries[i:])
                new_token = (new_token[0], last_seq)
                break
            out.append(w)
            last_seq = e.sequence
        return out, new_token, remaining

    async def _op_entries_since(self, req: Request,
                                _p: Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        out, new_token, remaining = await self._entries(r, a["token"], a["max_entries"],
                                                        a["max_bytes"])
        return {"entries": out, "token": [new_token[0], new_token[1]],
                "remaining_bytes": remaining}, None

    async def _op_replicate(self, req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        """Batched pull for every partition a peer shares with this node; long-polls, and
        filters what an intra-DC peer already has (``pullpoll``)."""
        return await serve_replicate(
            req.args, self._replica, changed=lambda: self._changed, book=self.confirms,
            run_io=self._run_io, draining=lambda: self._draining,
            reply_budget_bytes=_REPLY_LIST_BUDGET_BYTES), None

    async def _op_digest(self, req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        r = self._replica(req.args["partition"])
        return await self._run(r.digest), None

    async def _op_stats(self, req: Request, _p: Payload) -> tuple[dict[str, Any], None]:
        def collect() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for pid, r in sorted(self.replicas.items()):
                m = asdict(r.stats())
                m["damage"] = [{"kind": d.kind, "segment": d.segment, "offset": d.offset,
                                "length": d.length, "reason": d.reason}
                               for d in list(r.damage)]
                m["usage_ready"] = r.usage.ready
                m["usage"] = [[a, c, t.bytes, t.blobs, t.expiring_chunk_bytes,
                               t.expired_bytes]
                              for (a, c), t in sorted(r.usage_totals().items())]
                out.append(m)
            for pid, err in sorted(self.failed_replicas.items()):
                out.append({"partition_id": pid, "error": err})
            return out

        b = self.confirms
        return {"node": self.node_id, "replicas": await self._run(collect),
                "confirms": {"kept": len(b), "noted": b.noted, "skipped": b.skipped,
                             "held": b.held, "sent": b.sent}}, None

    async def _op_blob_state(self, req: Request,
                             _p: Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        bid = BlobId.from_bytes(a["blob_id"])
        if bid.partition_id != r.partition_id:
            raise InvalidArgument(f"blob {bid} belongs to partition {bid.partition_id}")
        state, has_put = await self._run(r.state, bid)
        return {"state": state_to_wire(state) if state is not None else None,
                "has_put": has_put}, None


def _mutation_done(done: Callable[[dict[str, Any] | BaseException], None],
                   extra: dict[str, Any] | None,
                   outcome: MutationResult | BaseException) -> None:
    """The reply fields of a batched mutation, as its ``_op_*`` handler gives them."""
    if isinstance(outcome, BaseException):
        done(outcome)
    elif extra:
        done({"result": outcome.status, "life_version": outcome.life_version, **extra})
    else:
        done({"result": outcome.status, "life_version": outcome.life_version})


def _range_pieces(read: BlobRead, start: int, length: int) -> Iterator[bytes]:
    # a range of a large record: read as it is, in bounded pieces (a whole-record check would
    # read the entire record for every range request; the scrubber checks sealed segments)
    off = start
    end = start + length
    while off < end:
        n = min(_STREAM_CHUNK_BYTES, end - off)
        yield read.read_payload(off, n)
        off += n




def _approx_wire_bytes(m: dict[str, Any]) -> int:
    n = 16
    for k, v in m.items():
        n += len(k) + 10
        if isinstance(v, (bytes, str)):
            n += len(v) * (4 if isinstance(v, str) else 1)
    return n
