"""The router: turns one blob operation into calls on storage-node replicas.

Owns replica fan-out and quorums (via ``quorum``), replica choice and failure detection (via
``failure``), chunking of large uploads and their composite metadata blobs (via ``chunking``),
streaming of GETs chunk by chunk with bounded prefetch, the per-frontend in-flight byte budget,
named-blob resolution, and the ordering rules of DESIGN.md section 5 (TTL update and undelete
touch chunks first, delete touches the metadata blob first; a failed upload leaves no reachable
chunks). Does not own HTTP (``app``), nor any disk: everything goes through ``NodeClient``.

Verdicts are :class:`~ambry.frontend.quorum.Outcome` values turned into typed errors here, so
the HTTP layer maps errors in exactly one table.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import secrets
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import xxhash

from ambry.common.blobid import BlobId, BlobType, decode, new_blob_id
from ambry.common.blobstate import BlobState
from ambry.common.budget import ByteBudget
from ambry.common.clock import Clock, SystemClock
from ambry.common.config import ClusterConfig, NodeConfig
from ambry.common.errors import (
    AmbryError,
    BadRequest,
    BlobAlreadyExists,
    BlobDeleted,
    BlobExpired,
    BlobNotDeleted,
    BlobNotFound,
    DataCorrupt,
    InvalidArgument,
    LifeVersionConflict,
    PartitionReadOnly,
    PayloadTooLarge,
    ProtocolError,
    ReplicaUnavailable,
    Unavailable,
)
from ambry.common.properties import BlobProperties
from ambry.frontend.chunking import ChunkRef, decode_metadata, encode_metadata, slices_for_range
from ambry.frontend.containers import ContainerRegistry
from ambry.frontend.failure import (
    FailureDetector,
    HedgeDelay,
    ReadOnlyPartitions,
    choose_partition,
    order_replicas_for_get,
)
from ambry.frontend.getplan import GetPlan
from ambry.frontend.namewrite import ReservationTally, Verdict, backoff_s, name_version
from ambry.frontend.quorum import Outcome, QuorumTracker
from ambry.protocol.client import GetReply, NodeClient
from ambry.protocol.messages import NameRecord

__all__ = ["BlobRead", "ByteBudget", "NameConflict", "Router", "StoredBlob",
           "TtlUpdateTooLate", "name_partition", "require_absent"]

log = logging.getLogger(__name__)

ReadBody = Callable[[int], Awaitable[bytes]]  # read up to n bytes; b"" only at the end
UserMeta = bytes | Callable[[], bytes]  # user metadata, or how to get it once the body is read
_STREAM_PIECE_BYTES = 1 << 20


class NameConflict(AmbryError):
    """PUT of a name that exists, without upsert (HTTP 409)."""

    code = "NAME_ALREADY_EXISTS"


class TtlUpdateTooLate(AmbryError):
    """TTL update within ``ttl_update_buffer_s`` of expiry (HTTP 405)."""

    code = "TTL_UPDATE_TOO_LATE"


def _reason(exc: BaseException | None) -> str:
    """One line on why a node call failed, for the operator."""
    if exc is None:
        return "no error"
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _outcome_of(exc: BaseException | None) -> Outcome:
    if exc is None:
        return Outcome.SUCCESS
    if isinstance(exc, BlobNotFound):
        return Outcome.NOT_FOUND
    if isinstance(exc, BlobDeleted):
        return Outcome.DELETED
    if isinstance(exc, BlobExpired):
        return Outcome.EXPIRED
    if isinstance(exc, BlobAlreadyExists):
        return Outcome.ALREADY_EXISTS
    if isinstance(exc, (BlobNotDeleted, LifeVersionConflict)):
        return Outcome.CONFLICT
    if isinstance(exc, PartitionReadOnly):
        return Outcome.READ_ONLY
    if isinstance(exc, (Unavailable, ReplicaUnavailable, OSError, asyncio.TimeoutError,
                        ProtocolError)):
        return Outcome.UNAVAILABLE
    return Outcome.ERROR


def _raise_for(verdict: Outcome, what: str, errors: Sequence[BaseException] = ()) -> None:
    if verdict is Outcome.SUCCESS:
        return
    if verdict is Outcome.NOT_FOUND:
        raise BlobNotFound(f"{what} not found")
    if verdict is Outcome.DELETED:
        raise BlobDeleted(f"{what} is deleted")
    if verdict is Outcome.EXPIRED:
        raise BlobExpired(f"{what} has expired")
    if verdict is Outcome.ALREADY_EXISTS:
        raise BlobAlreadyExists(f"{what} already exists")
    if verdict is Outcome.CONFLICT:
        for e in errors:
            if isinstance(e, (BlobNotDeleted, LifeVersionConflict)):
                raise type(e)(e.message)
        raise BlobNotDeleted(f"{what}: conflicting state")
    if verdict is Outcome.ERROR:
        for e in errors:  # a client error the node found (bad range, ...) is the client's
            if isinstance(e, BadRequest):
                raise type(e)(e.message)
        corrupt = [e for e in errors if isinstance(e, DataCorrupt)]
        if corrupt and len(corrupt) == len(errors):
            # rot on every replica that answered: say so (a retry elsewhere will not help
            # until the scrubber repairs it), rather than "too few replicas answered"
            raise DataCorrupt(f"{what}: corrupt on every replica that answered "
                              f"({corrupt[0].message})")
    raise Unavailable(f"{what}: too few replicas answered")


def require_absent(current: NameRecord | None) -> None:
    """The condition of a create: no live entry (REST without upsert; 409 otherwise)."""
    if current is not None and not current.deleted:
        raise NameConflict(f"name {current.name!r} exists (send x-ambry-named-upsert: true)")


def name_partition(partition_ids: Sequence[int], account_id: int, container_id: int) -> int:
    """All names of a container live on one partition, chosen by xxh3(account, container)."""
    pids = sorted(partition_ids)
    h = xxhash.xxh3_64_intdigest(struct.pack(">HH", account_id, container_id))
    return pids[h % len(pids)]


@dataclass
class StoredBlob:
    blob_id: BlobId
    size: int
    created_ms: int


@dataclass
class BlobRead:
    """What a GET/HEAD found. ``body`` yields the requested bytes (None for info only)."""

    blob_id: BlobId
    properties: BlobProperties
    user_metadata: bytes
    state: BlobState
    expiry_ms: int
    total_size: int
    range_start: int = 0
    length: int = 0
    body: AsyncIterator[bytes | bytearray] | None = None
    chunks: list[ChunkRef] = field(default_factory=list)
    _reply: GetReply | None = None

    async def aclose(self) -> None:
        """Stop reading: frees the node connection even if ``body`` was never started."""
        if self.body is not None:
            await self.body.aclose()  # type: ignore[attr-defined]
        if self._reply is not None:
            await self._reply.release()


class Router:
    def __init__(self, config: ClusterConfig, datacenter: str, *, clock: Clock | None = None,
                 rnd: random.Random | None = None,
                 id_bytes: Callable[[int], bytes] = secrets.token_bytes,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_node_error: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.fe = config.frontend
        self.cmap = config.cluster_map
        self.dc = self.cmap.datacenter(datacenter)
        self.clock = clock or SystemClock()
        # ``rnd`` only spreads load (partition and replica choice). Blob ids come from
        # ``id_bytes``, the OS's CSPRNG unless a test injects another: an id is the read
        # capability of a blob, and a Mersenne Twister gives its state away after 624 words
        # (156 ids), so later ids could be predicted. Kept apart so that a test seeding
        # ``rnd`` for repeatable choices never makes ids repeatable.
        self.rnd = rnd or random.SystemRandom()
        self.id_bytes = id_bytes
        self.detector = FailureDetector(monotonic, self.fe.failure_threshold_errors,
                                        self.fe.failure_backoff_s)
        self.read_only = ReadOnlyPartitions(monotonic, self.fe.read_only_cooldown_s)
        self.hedge = HedgeDelay(max_s=self.fe.node_timeout_ms / 1000)
        self.budget = ByteBudget(self.fe.inflight_budget_bytes)
        self.straggler_bytes = 0  # payloads held only by stragglers (_release_when_done)
        self.metrics_name_busy = 0  # reservation rounds lost to another writer
        self.partition_ids = self.cmap.partition_ids
        self._clients: dict[str, NodeClient] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._on_node_error = on_node_error
        self.writable = sorted(p.id for p in self.cmap.partitions
                               if len(self.cmap.replicas_in(p.id, self.dc.name)) >= 1)
        # containers created at run time (S3 buckets), resolved like config ones
        self.containers = ContainerRegistry(self)

    def reload(self, config: ClusterConfig) -> None:
        """Adopt a grown cluster map (checked first with ``ambry.common.mapchange``): new
        partitions become writable and valid in blob ids, new nodes are reached through the
        new map. Requests in flight keep working: every partition and node they know of is in
        the new map, unchanged (no await here, so no request sees half of each map). The
        ``frontend:`` settings stay as they are until a restart."""
        cmap = config.cluster_map
        cmap.datacenter(self.dc.name)
        writable = sorted(p.id for p in cmap.partitions
                          if len(cmap.replicas_in(p.id, self.dc.name)) >= 1)
        self.config = config
        self.cmap = cmap
        self.partition_ids = cmap.partition_ids
        self.writable = writable

    # ------------------------------------------------------------------ plumbing
    def client(self, node_id: str) -> NodeClient:
        c = self._clients.get(node_id)
        if c is None:
            host, port = self.config.address_of(node_id, self.dc.name)
            c = self._clients[node_id] = NodeClient(
                host, port, pool_size=self.fe.node_pool_size,
                connect_timeout_ms=self.fe.node_connect_timeout_ms,
                request_timeout_ms=self.fe.node_timeout_ms)
        return c

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)
        for c in self._clients.values():
            await c.close()
        self._clients.clear()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    def _note(self, node_id: str, op: str, exc: BaseException | None) -> Outcome:
        out = _outcome_of(exc)
        if out is Outcome.UNAVAILABLE:
            if self.detector.record_failure(node_id):  # once per outage, naming the node
                log.warning("node %s (%s) is down: %d failures in a row, the last on %s: %s; "
                            "skipped for %.0f s, then probed", node_id, self._address(node_id),
                            self.detector.threshold_errors, op, _reason(exc),
                            self.detector.backoff_s)
            if self._on_node_error:
                self._on_node_error(node_id, op)
        elif out is Outcome.ERROR:
            log.warning("node %s %s: %r", node_id, op, exc)
            if self._on_node_error:
                self._on_node_error(node_id, op)
        elif self.detector.record_success(node_id):
            log.info("node %s (%s) answers again", node_id, self._address(node_id))
        return out

    def _address(self, node_id: str) -> str:
        try:
            host, port = self.config.address_of(node_id, self.dc.name)
        except AmbryError:  # a node that left the map: its id says enough
            return "?"
        return f"{host}:{port}"

    def local_replicas(self, pid: int) -> list[NodeConfig]:
        return self.cmap.replicas_in(pid, self.dc.name)

    def _check_id(self, blob_id: BlobId) -> None:
        if blob_id.partition_id not in self.partition_ids:
            raise BadRequest(f"blob id names unknown partition {blob_id.partition_id}")

    def parse_id(self, text: str) -> BlobId:
        return decode(text, self.partition_ids)

    def new_id(self, account_id: int, container_id: int, partition_id: int,
               blob_type: BlobType = BlobType.SIMPLE) -> BlobId:
        """A fresh blob id of this datacenter: its UUID is 16 bytes of ``id_bytes``."""
        return new_blob_id(self.dc.id, account_id, container_id, partition_id, blob_type,
                           randbytes=self.id_bytes)

    # ------------------------------------------------------------------ write fan-out
    async def _quorum(self, node_ids: Sequence[str], op: str,
                      call: Callable[[NodeClient], Awaitable[Any]], w: int = 2,
                      stragglers: list[asyncio.Task[Any]] | None = None,
                      ) -> tuple[Outcome, dict[str, Any], list[BaseException]]:
        """Send ``call`` to every node at once; return when ``w`` succeeded or that became
        impossible. The stragglers go on in the background for ``straggler_grace_ms``
        (:meth:`_watch_stragglers`); they are added to ``stragglers`` when given, so a
        caller can keep what they hold (a payload) accounted for until they end."""
        n = len(node_ids)
        if n == 0:
            return Outcome.UNAVAILABLE, {}, []
        tracker = QuorumTracker(n, min(w, n))
        results: dict[str, Any] = {}
        errors: list[BaseException] = []

        async def one(node_id: str) -> tuple[str, Any, BaseException | None]:
            try:
                return node_id, await call(self.client(node_id)), None
            except asyncio.CancelledError:
                raise
            except (TimeoutError, AmbryError, OSError) as e:
                return node_id, None, e

        tasks = [asyncio.ensure_future(one(nid)) for nid in node_ids]
        try:
            for fut in asyncio.as_completed(tasks):
                nid, res, exc = await fut
                tracker.record(nid, self._note(nid, op, exc))
                if exc is None:
                    results[nid] = res
                else:
                    errors.append(exc)
                if tracker.done:
                    break
        finally:
            for t in tasks:
                if not t.done():
                    self._background.add(t)
                    t.add_done_callback(self._background.discard)
                    if stragglers is not None:
                        stragglers.append(t)
        # (only once decided: calls of a request cancelled mid-quorum keep their full timeout)
        self._watch_stragglers([(nid, t) for nid, t in zip(node_ids, tasks, strict=True)
                                if not t.done()])
        return tracker.result(), results, errors

    def _watch_stragglers(self, late: list[tuple[str, asyncio.Future[Any]]]) -> None:
        """Replica calls still running once their quorum is decided get ``straggler_grace_ms``
        more; then each counts as a failure of its node (it did not answer within a bound:
        a stopped node is skipped after ``failure_threshold_errors`` of them, not after as
        many node timeouts) and is cancelled, dropping the payload it held (NodeClient closes
        a connection that still holds an unsent payload). The copy a cancelled write misses
        is brought by intra-DC replication."""
        if not late:
            return

        def expire() -> None:
            for nid, t in late:
                if not t.done():
                    self.detector.record_failure(nid)
                    if self._on_node_error:
                        self._on_node_error(nid, "straggler")
                    t.cancel()

        timer = asyncio.get_running_loop().call_later(self.fe.straggler_grace_ms / 1000,
                                                      expire)
        left = [len(late)]

        def one_done(_t: asyncio.Future[Any]) -> None:
            left[0] -= 1
            if left[0] == 0:
                timer.cancel()

        for _nid, t in late:
            t.add_done_callback(one_done)

    def _write_targets(self, node_ids: Sequence[str], w: int = 2) -> list[str]:
        """The replicas a write goes to: those the failure detector has not given up on (a
        due probe is granted here), or all of them when fewer than ``w`` are left. A node in
        backoff would only straggle: its copy comes by replication."""
        up = [n for n in node_ids if self.detector.is_available(n)]
        return up if len(up) >= min(w, len(node_ids)) else list(node_ids)

    async def _put_replicas(self, blob_id: BlobId, props: BlobProperties, usermeta: bytes,
                            payload: bytes | bytearray | memoryview, rid: str,
                            hold: list[asyncio.Task[Any]] | None = None
                            ) -> tuple[Outcome, dict[str, Any]]:
        nodes = self._write_targets([n.id for n in self.local_replicas(blob_id.partition_id)])
        verdict, results, _ = await self._quorum(
            nodes, "put", lambda c: c.put(blob_id, props, usermeta, payload, rid=rid),
            stragglers=hold)
        return verdict, results

    def _release_when_done(self, tasks: list[asyncio.Task[Any]], n: int) -> None:
        """Give ``n`` bytes back to the budget now that the quorum is decided, though
        stragglers in ``tasks`` still hold the payload: they are counted in
        ``straggler_bytes`` instead, up to a quarter of the budget, for at most
        ``straggler_grace_ms``. (Holding the budget until they ended made every upload wait
        for a stopped replica's node timeout: PUT p50 went from 150 ms to 9.3 s.) Beyond that
        quarter, they keep the reservation until they end, as before, so memory stays
        bounded by the budget and a quarter of it."""
        pending = [t for t in tasks if not t.done()]
        if not pending:
            self.budget.release(n)
            return
        left = [len(pending)]
        apart = self.straggler_bytes + n <= self.fe.inflight_budget_bytes // 4
        if apart:
            self.budget.release(n)
            self.straggler_bytes += n

        def one_done(_t: asyncio.Task[Any]) -> None:
            left[0] -= 1
            if left[0] == 0:
                if apart:
                    self.straggler_bytes -= n
                else:
                    self.budget.release(n)

        for t in pending:
            t.add_done_callback(one_done)

    async def _put_one_blob(self, blob_type: BlobType, account_id: int, container_id: int,
                            props: BlobProperties, usermeta: bytes,
                            payload: bytes | bytearray | memoryview, rid: str,
                            hold: list[asyncio.Task[Any]] | None = None) -> BlobId:
        """Store one record-sized blob on some writable partition of this DC (new id per
        try). Replica writes still running when it returns are added to ``hold``."""
        tried: set[int] = set()
        for _attempt in range(self.fe.put_attempts):
            pid = choose_partition(self.writable, tried | self.read_only.current(), self.rnd)
            if pid is None:
                break
            tried.add(pid)
            bid = self.new_id(account_id, container_id, pid, blob_type)
            verdict, results = await self._put_replicas(bid, props, usermeta, payload, rid,
                                                        hold)
            if verdict is Outcome.SUCCESS:
                return bid
            if verdict is Outcome.READ_ONLY:
                self.read_only.mark(pid)
            if results:  # a minority stored it: remove the orphan
                self._spawn(self._delete_quietly(bid, rid))
            log.info("rid=%s put on partition %d failed (%s); trying another", rid, pid,
                     verdict.name)
        raise Unavailable("no writable partition took the blob")

    async def _delete_quietly(self, bid: BlobId, rid: str) -> None:
        nodes = [n.id for n in self.local_replicas(bid.partition_id)]
        t = self.clock.now_ms()
        await self._quorum(nodes, "delete", lambda c: c.delete(bid, time_ms=t, rid=rid), w=3)

    # ------------------------------------------------------------------ PUT
    async def put(self, read: ReadBody, *, account_id: int, container_id: int,
                  props: BlobProperties, usermeta: UserMeta, declared_size: int | None,
                  content_xxh3: str | None, rid: str, chunk_upload: bool = False
                  ) -> StoredBlob:
        """Store the body that ``read`` yields. Small bodies become one simple blob; larger
        ones chunks plus a metadata blob. On any failure (short body, checksum mismatch,
        client gone, quorum lost) the chunks written so far are deleted and nothing is
        returned. ``chunk_upload``: the body must fit one chunk; stored as a CHUNK blob for
        a later stitch. ``usermeta`` may be a function, called once the whole body is read
        (S3 keeps the body's MD5 there)."""
        cs = self.fe.chunk_size_bytes
        hasher = xxhash.xxh3_64() if content_xxh3 else None
        if declared_size is not None and declared_size > self.fe.max_blob_size_bytes:
            raise PayloadTooLarge(f"blob of {declared_size} bytes is over the "
                                  f"{self.fe.max_blob_size_bytes}-byte limit")
        # Read one chunk, then peek one byte to tell a one-record blob from a chunked one.
        # Every chunk held in memory is reserved in the frontend-wide byte budget as its
        # bytes arrive (_read_up_to), never before: a client that sends nothing holds none.
        budget: list[int] = []  # reservations not yet handed to a chunk task
        hold: list[asyncio.Task[Any]] = []  # replica writes still holding a payload
        try:
            pending = [await _read_up_to(read, cs, self.budget, budget)]
            more = await read(1) if len(pending[0]) == cs else b""
            if hasher is not None:
                hasher.update(pending[0])
            if not more:  # fits one record: a simple blob (or a chunk for stitching)
                first = pending.pop()
                _check_size(len(first), declared_size, final=True)
                _check_xxh3(hasher, content_xxh3)
                p = _with_size(self._pending(props) if chunk_upload else props, len(first))
                btype = BlobType.CHUNK if chunk_upload else BlobType.SIMPLE
                bid = await self._put_one_blob(btype, account_id, container_id, p,
                                               _usermeta(usermeta), first, rid, hold)
                return StoredBlob(bid, len(first), props.created_ms)
            if chunk_upload:
                raise PayloadTooLarge(f"a chunk upload must fit one chunk ({cs} bytes)")
            # ``pending`` hands the chunk over: this frame keeps no reference to it, so its
            # memory goes when its replica writes end, as its reservation does.
            return await self._put_chunked(read, pending, more, budget, hasher,
                                           account_id=account_id, container_id=container_id,
                                           props=props, usermeta=usermeta,
                                           declared_size=declared_size,
                                           content_xxh3=content_xxh3, rid=rid)
        finally:
            for n in budget:  # one release per reservation (each was capped at the limit)
                self._release_when_done(hold, n)

    async def _put_chunked(self, read: ReadBody, pending: list[bytes], carry: bytes,
                           budget: list[int], hasher: Any, *, account_id: int, container_id: int,
                           props: BlobProperties, usermeta: UserMeta, declared_size: int | None,
                           content_xxh3: str | None, rid: str) -> StoredBlob:
        """Upload chunks with at most ``upload_window_chunks`` in flight, then the metadata
        blob. ``pending`` chunks were read already (and hashed) and own the reservations in
        ``budget``; ``carry`` is body read past them, the start of the next chunk. The
        caller releases whatever is left in ``budget`` when this returns or fails.

        The chunks of a permanent blob are written with ``pending_chunk_ttl_s`` and made
        permanent only once every chunk is stored and the body checked, before the
        metadata blob is written: a frontend killed before then leaves chunks that expire
        (docs/security.md, "Orphaned chunks"), and a permanent metadata blob never lists a
        chunk that can expire."""
        chunks, total = await self._upload_chunks(
            read, pending, carry, budget, hasher, account_id=account_id,
            container_id=container_id, props=props, declared_size=declared_size,
            content_xxh3=content_xxh3, rid=rid)
        try:
            if props.ttl_s == -1:
                try:
                    await self._lift_ttls([self.parse_id(c.blob_id) for c in chunks], rid)
                except BlobExpired:
                    raise InvalidArgument(
                        f"the upload took longer than frontend.pending_chunk_ttl_s "
                        f"({self.fe.pending_chunk_ttl_s} s): its first chunks expired"
                    ) from None
            bid = await self._put_one_blob(BlobType.METADATA, account_id, container_id,
                                           _with_size(props, total), _usermeta(usermeta),
                                           encode_metadata(chunks), rid)
        except BaseException:
            self._spawn(self._delete_chunks_when_done(
                set(), [self.parse_id(c.blob_id) for c in chunks], rid))
            raise
        return StoredBlob(bid, total, props.created_ms)

    async def put_chunks(self, read: ReadBody, *, account_id: int, container_id: int,
                         props: BlobProperties, rid: str) -> tuple[list[ChunkRef], int]:
        """Store a body as CHUNK blobs of ``chunk_size_bytes`` only, without a metadata blob
        (an S3 multipart part: :meth:`stitch_chunks` names them later); the chunks and the
        body size. An empty body gives no chunk. On failure no chunk stays reachable."""
        budget: list[int] = []
        try:
            return await self._upload_chunks(read, [], b"", budget, None, account_id=account_id,
                                              container_id=container_id, props=props,
                                              declared_size=None, content_xxh3=None, rid=rid)
        finally:
            for n in budget:
                self._release_when_done([], n)

    async def _upload_chunks(self, read: ReadBody, pending: list[bytes], carry: bytes,
                             budget: list[int], hasher: Any, *, account_id: int,
                             container_id: int, props: BlobProperties,
                             declared_size: int | None, content_xxh3: str | None, rid: str
                             ) -> tuple[list[ChunkRef], int]:
        """The chunk loop of :meth:`_put_chunked`: every chunk stored, in order, and the
        total size; on failure the chunks stored are deleted (in the background). The
        chunks of a permanent blob are written with the pending TTL (:meth:`_pending`)."""
        cs = self.fe.chunk_size_bytes
        chunk_props = self._pending(props)
        window = asyncio.Semaphore(self.fe.upload_window_chunks)
        slots: list[ChunkRef | None] = []
        written: list[BlobId] = []
        inflight: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []
        total = 0

        async def store(index: int, data: bytes, reserved: int) -> None:
            hold: list[asyncio.Task[Any]] = []
            try:
                p = _with_size(chunk_props, len(data))
                bid = await self._put_one_blob(BlobType.CHUNK, account_id, container_id, p,
                                               b"", data, rid, hold)
                written.append(bid)
                slots[index] = ChunkRef(bid.to_str(), len(data))
            except Exception as e:  # noqa: BLE001 - reported to the uploading loop
                failure.append(e)
            finally:
                window.release()
                self._release_when_done(hold, reserved)

        try:
            while True:
                if failure:
                    raise failure[0]
                if pending:
                    data = pending.pop(0)
                else:
                    data = await _read_up_to(read, cs, self.budget, budget, carry)
                    carry = b""
                    if not data:
                        break
                    if hasher is not None:
                        hasher.update(data)
                total += len(data)
                if total > self.fe.max_blob_size_bytes:
                    raise PayloadTooLarge(f"blob is over the {self.fe.max_blob_size_bytes}-"
                                          f"byte limit")
                _check_size(total, declared_size, final=False)
                await window.acquire()
                slots.append(None)
                # hand this chunk's reservation over to its task
                t = asyncio.ensure_future(store(len(slots) - 1, data, budget.pop(0)))
                del data  # the task owns it now
                inflight.add(t)
                t.add_done_callback(inflight.discard)
            if inflight:
                await asyncio.gather(*inflight)
            if failure:
                raise failure[0]
            _check_size(total, declared_size, final=True)
            _check_xxh3(hasher, content_xxh3)
            chunks = [c for c in slots if c is not None]
            assert len(chunks) == len(slots), "a chunk task ended without a result"
            return chunks, total
        except BaseException:
            # A failed upload leaves no reachable chunks. The chunk puts already sent are
            # left to finish (each is bounded by the node timeout) and every chunk stored is
            # then deleted, in the background: the client may be gone, and this task may be
            # cancelled. (Cancelling them instead orphaned chunks whose put had reached the
            # replicas before the task recorded the id: a client that hung up mid-upload
            # left permanent chunks behind.) ``written`` is shared: late puts land in it.
            self._spawn(self._delete_chunks_when_done(set(inflight), written, rid))
            raise

    def _pending(self, props: BlobProperties) -> BlobProperties:
        """Properties of a chunk written before the blob that will list it is complete: a
        permanent blob's chunks get ``pending_chunk_ttl_s`` (from the blob's creation time),
        lifted by :meth:`_lift_ttls` once the blob is complete; chunks of a blob with a TTL
        keep it (they expire with the blob anyway, and a TTL update can only make a blob
        permanent, never extend its TTL)."""
        if props.ttl_s != -1:
            return props
        return BlobProperties(size=props.size, created_ms=props.created_ms,
                              ttl_s=self.fe.pending_chunk_ttl_s,
                              content_type=props.content_type, service_id=props.service_id,
                              owner_id=props.owner_id, filename=props.filename,
                              account_id=props.account_id, container_id=props.container_id,
                              extra=dict(props.extra))

    async def _lift_ttls(self, chunk_ids: Sequence[BlobId], rid: str) -> None:
        """Make chunks permanent, up to 16 at a time (each is a quorum write of a small
        record). Raises the first failure; chunks lifted by then stay lifted."""
        gate = asyncio.Semaphore(16)

        async def lift(b: BlobId) -> None:
            async with gate:
                await self._mutate_blob("ttl_update", b, rid)

        await asyncio.gather(*(lift(b) for b in chunk_ids))

    async def _delete_chunks_when_done(self, inflight: set[asyncio.Task[None]],
                                       written: list[BlobId], rid: str) -> None:
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        await asyncio.gather(*(self._delete_quietly(bid, rid) for bid in written),
                             return_exceptions=True)

    async def stitch(self, chunk_ids: Sequence[str], *, account_id: int, container_id: int,
                     props: BlobProperties, usermeta: bytes, rid: str) -> StoredBlob:
        """One composite blob from chunks uploaded with ``x-ambry-chunk-upload``."""
        if not chunk_ids:
            raise InvalidArgument("stitch needs at least one chunk id")
        ids = []
        for text in chunk_ids:
            if not isinstance(text, str):
                raise InvalidArgument("chunk ids must be strings")
            bid = self.parse_id(text)
            if bid.blob_type is not BlobType.CHUNK:
                raise InvalidArgument(f"{text} was not uploaded as a chunk")
            if (bid.account_id, bid.container_id) != (account_id, container_id):
                raise InvalidArgument(f"chunk {text} belongs to another container")
            ids.append(bid)
        infos = await asyncio.gather(*(self.get(b, info_only=True, rid=rid) for b in ids))
        refs = [ChunkRef(b.to_str(), i.total_size) for b, i in zip(ids, infos, strict=True)]
        lift = [b for b, info in zip(ids, infos, strict=True)
                if info.properties.ttl_s != -1 and not info.state.permanent]
        if props.ttl_s != -1:  # a composite with a TTL never outlives one of its chunks
            expiry_ms = props.created_ms + props.ttl_s * 1000
            for b, info in zip(ids, infos, strict=True):
                if info.expiry_ms and info.expiry_ms < expiry_ms:
                    raise InvalidArgument(
                        f"chunk {b.to_str()} expires before the stitched blob would: upload "
                        f"chunks with an x-ambry-ttl of at least the blob's")
        return await self.stitch_chunks(refs, account_id=account_id, container_id=container_id,
                                        props=props, usermeta=usermeta, make_permanent=lift,
                                        rid=rid)

    async def stitch_chunks(self, refs: Sequence[ChunkRef], *, account_id: int,
                            container_id: int, props: BlobProperties, usermeta: bytes,
                            make_permanent: Sequence[BlobId] = (), rid: str) -> StoredBlob:
        """One composite blob of chunks whose sizes the caller knows (from :meth:`stitch`,
        or the parts of an S3 multipart upload, each several chunks). Chunks take the
        composite's TTL: when it is permanent, ``make_permanent`` chunks get a TTL update
        first (a few at a time), so the composite never outlives a chunk."""
        if props.ttl_s == -1 and make_permanent:
            await self._lift_ttls(make_permanent, rid)
        total = sum(r.size for r in refs)
        bid = await self._put_one_blob(BlobType.METADATA, account_id, container_id,
                                       _with_size(props, total), usermeta,
                                       encode_metadata(refs), rid)
        return StoredBlob(bid, total, props.created_ms)

    # ------------------------------------------------------------------ GET
    async def _get_reply(self, blob_id: BlobId, rid: str, **kw: Any) -> GetReply:
        """The first valid reply for one blob, asking replicas in waves (2 local, the 3rd,
        the origin DC, the others). Raises the verdict's error otherwise."""
        self._check_id(blob_id)
        part = self.cmap.partition(blob_id.partition_id)
        origin = self.cmap.datacenter_by_id(blob_id.datacenter_id).name \
            if any(d.id == blob_id.datacenter_id for d in self.cmap.datacenters) else self.dc.name
        local = [n.id for n in self.local_replicas(part.id)]
        remote: dict[str, list[str]] = collections.defaultdict(list)
        dc_of: dict[str, str] = {}
        for nid in part.replicas:
            node = self.cmap.node(nid)
            dc_of[nid] = node.datacenter
            if node.datacenter != self.dc.name:
                remote[node.datacenter].append(nid)
        origin_count = sum(1 for nid in part.replicas if dc_of[nid] == origin)
        errors: list[BaseException] = []
        self.rnd.shuffle(local)  # spread reads over the replicas (the first is asked alone)
        plan = GetPlan(order_replicas_for_get(local, remote, origin, self.detector), dc_of,
                       origin, origin_count, self.dc.name, hedge=self.fe.get_hedge_ms != 0)

        async def one(nid: str) -> tuple[str, GetReply | None, BaseException | None]:
            t0 = time.monotonic()
            try:
                reply = await self.client(nid).get(blob_id, rid=rid, **kw)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, AmbryError, OSError, ValueError) as e:
                return nid, None, e
            if dc_of[nid] == self.dc.name:
                self.hedge.record(time.monotonic() - t0)
            return nid, reply, None

        tasks: dict[str, asyncio.Task[tuple[str, GetReply | None, BaseException | None]]] = {}
        seen: set[str] = set()  # replicas whose reply this loop took charge of
        winner: GetReply | None = None

        def ask(nids: list[str]) -> None:
            for nid in nids:
                tasks[nid] = asyncio.ensure_future(one(nid))

        try:
            ask(plan.start())
            while not plan.finished:
                ready = [t for nid, t in tasks.items() if t.done() and nid not in seen]
                if not ready:
                    hedge = self.hedge.delay() if self.fe.get_hedge_ms < 0 else \
                        self.fe.get_hedge_ms / 1000
                    done, _ = await asyncio.wait(
                        [t for t in tasks.values() if not t.done()],
                        timeout=hedge if plan.hedge_pending else None,
                        return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        ask(plan.hedge_expired())  # the hedge: no answer in time
                    continue
                nid, reply, exc = ready[0].result()
                seen.add(nid)
                if exc is not None:
                    errors.append(exc)
                if reply is not None:
                    if winner is None:
                        winner = reply
                    else:
                        await reply.release()
                ask(plan.answered(nid, self._note(nid, "get", exc)))
            decided = plan.decided
            if decided is Outcome.SUCCESS and winner is not None:
                return winner
            if winner is not None:
                await winner.release()
                winner = None
            if decided is not None:
                _raise_for(decided, f"blob {blob_id}", errors)
        finally:
            # A replica that answered after the deciding one, but before this loop looked
            # at its task, holds a reply whose payload pins its node connection: release
            # it now. (Only cancelling the unfinished tasks left such a reply unread, and
            # the connection stalled for node_timeout_ms before the client dropped it,
            # failing every request pipelined on it: GETs took 5 s instead of 0.1 s.)
            for nid, t in tasks.items():
                if not t.done():
                    t.cancel()
                    t.add_done_callback(_release_result)
                elif not t.cancelled() and t.exception() is None and nid not in seen:
                    _release_result(t)
        verdict = plan.verdict()
        if verdict is Outcome.UNAVAILABLE and any(_outcome_of(e) is Outcome.ERROR
                                                   for e in errors):
            verdict = Outcome.ERROR
        _raise_for(verdict, f"blob {blob_id}", errors)
        raise Unavailable(f"blob {blob_id}: no replica answered")

    async def get(self, blob_id: BlobId, *, include_deleted: bool = False,
                  include_expired: bool = False, info_only: bool = False,
                  range_resolver: Callable[[int], tuple[int, int] | None] | None = None,
                  rid: str = "") -> BlobRead:
        """Find a blob; for a composite one, resolve its chunk list. ``range_resolver`` maps
        the blob's total size to the (start, length) to serve, or None for all of it (it may
        raise RangeNotSatisfiable). A whole simple blob takes one round trip to one replica."""
        composite = blob_id.blob_type is BlobType.METADATA
        opts = {"include_deleted": include_deleted, "include_expired": include_expired}
        whole_simple = not composite and not info_only and range_resolver is None
        reply = await self._get_reply(blob_id, rid, info_only=not (composite or whole_simple),
                                      **opts)
        props = reply.properties
        total = props.size
        chunks: list[ChunkRef] = []
        if composite:
            async with reply:
                total, chunks = decode_metadata(await reply.read())
        read = BlobRead(blob_id, props, reply.user_metadata, reply.state, reply.expiry_ms,
                        total, chunks=chunks)
        if whole_simple:
            read.length = total
            read._reply = reply
            read.body = _stream_reply(reply, total, blob_id)
            return read
        if info_only:
            return read
        span = range_resolver(total) if range_resolver is not None else None
        start, length = span if span is not None else (0, total)
        read.range_start, read.length = start, length
        if composite:
            read.body = self._composite_body(chunks, start, length, rid)
        else:
            read.body = self._simple_range_body(blob_id, start, length, rid, opts)
        return read

    async def _simple_range_body(self, blob_id: BlobId, start: int, length: int, rid: str,
                                 opts: dict[str, bool]) -> AsyncIterator[bytes | bytearray]:
        if length == 0:
            return
        reply = await self._get_reply(blob_id, rid, range=(start, length), **opts)
        async for piece in _stream_reply(reply, length, blob_id):
            yield piece

    async def _fetch_chunk(self, ref: ChunkRef, start: int, length: int, rid: str
                           ) -> bytes | bytearray:
        bid = self.parse_id(ref.blob_id)
        reply = await self._get_reply(bid, rid, include_deleted=True, include_expired=True,
                                      range=(start, length))
        async with reply:
            data = await reply.read()
        if len(data) != length:
            raise DataCorrupt(f"chunk {ref.blob_id}: got {len(data)} of {length} bytes")
        return data

    async def _composite_body(self, chunks: list[ChunkRef], start: int, length: int,
                              rid: str) -> AsyncIterator[bytes | bytearray]:
        """Chunks in order, with at most ``download_prefetch_chunks`` fetched ahead."""
        slices = slices_for_range([c.size for c in chunks], start, length)
        ahead: collections.deque[tuple[int, asyncio.Task[bytes | bytearray]]] = \
            collections.deque()
        nxt = 0
        try:
            while nxt < len(slices) or ahead:
                while nxt < len(slices) and len(ahead) <= self.fe.download_prefetch_chunks:
                    s = slices[nxt]
                    ahead.append((s.index, asyncio.ensure_future(
                        self._fetch_chunk(chunks[s.index], s.start, s.length, rid))))
                    nxt += 1
                index, task = ahead.popleft()
                try:
                    data = await task
                except AmbryError as e:  # name the chunk: the caller logs it with the blob
                    raise type(e)(f"chunk {index} of {len(chunks)} ({chunks[index].blob_id}): "
                                  f"{e.message}") from None
                for i in range(0, len(data), _STREAM_PIECE_BYTES):
                    yield data[i:i + _STREAM_PIECE_BYTES]
        finally:
            for _, t in ahead:
                t.cancel()

    # ------------------------------------------------------------------ DELETE / TTL / UNDELETE
    async def _mutate_blob(self, op: str, blob_id: BlobId, rid: str, **kw: Any) -> Outcome:
        """One mutation at 2 of 3 local replicas; when no local replica has the blob, at the
        blob's origin DC (whose answer is authoritative for 404)."""
        self._check_id(blob_id)
        t = self.clock.now_ms()

        def call(c: NodeClient) -> Awaitable[Any]:
            fn = getattr(c, op)
            return fn(blob_id, time_ms=t, rid=rid, **kw)  # type: ignore[no-any-return]

        local = [n.id for n in self.local_replicas(blob_id.partition_id)]
        verdict, results, errors = await self._quorum(local, op, call)
        # A replica without the blob answers a TTL update with "marked" (it keeps the update
        # for when replication brings the blob): a success that proves nothing. When every
        # local answer is one, no local replica has the blob yet, and the origin DC must be
        # updated too (before this, a TTL update through a DC the blob had not reached
        # answered 200 and left the blob's only copies, in its origin DC, untouched).
        only_marked = (verdict is Outcome.SUCCESS and op == "ttl_update" and
                       all(getattr(r, "result", None) == "marked" for r in results.values()))
        if verdict is not Outcome.NOT_FOUND and not only_marked:
            _raise_for(verdict, f"blob {blob_id}", errors)
            return verdict
        origin_dc = next((d for d in self.cmap.datacenters if d.id == blob_id.datacenter_id),
                         None)
        if origin_dc is None or origin_dc.name == self.dc.name:
            if only_marked:
                return verdict  # the origin's own replicas keep the marker until they catch up
            _raise_for(Outcome.NOT_FOUND, f"blob {blob_id}")
        assert origin_dc is not None
        remote = [n.id for n in self.cmap.replicas_in(blob_id.partition_id, origin_dc.name)]
        verdict, _, errors = await self._quorum(remote, op, call)
        _raise_for(verdict, f"blob {blob_id}", errors)
        return verdict

    async def _delete_at(self, node_ids: Sequence[str], blob_id: BlobId, t: int, rid: str,
                         tombstone: bool, enough: int | None = None) -> dict[str, Outcome]:
        """Delete at every node given, each bounded by its timeout. Waits for every answer,
        or only until ``enough`` succeeded: the rest then finish in the background and are
        missing from the result. (Waiting for all made every DELETE take the whole node
        timeout while one replica hung, though 2 of 3 had already acknowledged it.)"""
        async def one(nid: str) -> tuple[str, Outcome]:
            try:
                await self.client(nid).delete(blob_id, time_ms=t, rid=rid,
                                              tombstone_if_missing=tombstone)
                return nid, self._note(nid, "delete", None)
            except (AmbryError, OSError, TimeoutError) as e:
                return nid, self._note(nid, "delete", e)

        tasks = [asyncio.ensure_future(one(n)) for n in node_ids]
        outs: dict[str, Outcome] = {}
        try:
            for fut in asyncio.as_completed(tasks):
                nid, out = await fut
                outs[nid] = out
                if enough is not None and \
                        sum(1 for o in outs.values() if o is Outcome.SUCCESS) >= enough:
                    break
        finally:
            for task in tasks:
                if not task.done():
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
        return outs

    async def _delete_one(self, blob_id: BlobId, rid: str) -> None:
        """DELETE of one blob at 2 of 3 local replicas (DESIGN.md section 5, issue rules):
        replicas that never saw the blob get a tombstone when another replica (local or in the
        origin DC) proves it exists; 404 only when every origin replica says not-found; when
        the origin DC is unreachable, local tombstones are written and the delete succeeds."""
        self._check_id(blob_id)
        t = self.clock.now_ms()
        local = [n.id for n in self.local_replicas(blob_id.partition_id)]
        need = min(2, len(local))
        outs = await self._delete_at(local, blob_id, t, rid, tombstone=False, enough=need)
        ok = [n for n, o in outs.items() if o is Outcome.SUCCESS]
        missing = [n for n, o in outs.items() if o is Outcome.NOT_FOUND]
        if ok:
            if len(ok) < need and missing:
                more = await self._delete_at(missing, blob_id, t, rid, tombstone=True)
                ok += [n for n, o in more.items() if o is Outcome.SUCCESS]
            if len(ok) < need:
                raise Unavailable(f"blob {blob_id}: delete reached {len(ok)} of {need} replicas")
            return
        origin = next((d for d in self.cmap.datacenters if d.id == blob_id.datacenter_id), None)
        if origin is None or origin.name == self.dc.name:
            if len(missing) == len(local):
                raise BlobNotFound(f"blob {blob_id} not found")
            raise Unavailable(f"blob {blob_id}: too few replicas answered")
        # no local replica has it (yet): the origin DC decides
        remote = [n.id for n in self.cmap.replicas_in(blob_id.partition_id, origin.name)]
        routs = await self._delete_at(remote, blob_id, t, rid, tombstone=False)
        if remote and all(o is Outcome.NOT_FOUND for o in routs.values()):
            raise BlobNotFound(f"blob {blob_id} not found")
        # exists in the origin DC, or the origin cannot tell: tombstone locally
        tomb = await self._delete_at(local, blob_id, t, rid, tombstone=True, enough=need)
        if sum(1 for o in tomb.values() if o is Outcome.SUCCESS) < need:
            raise Unavailable(f"blob {blob_id}: too few replicas took the tombstone")

    async def delete(self, blob_id: BlobId, rid: str = "",
                     keep_chunks: frozenset[str] = frozenset()) -> None:
        """Metadata blob first (the blob disappears at once), then its chunks (except
        ``keep_chunks``: ids another composite of the same chunks still lists)."""
        chunks: list[ChunkRef] = []
        if blob_id.blob_type is BlobType.METADATA:
            try:
                info = await self.get(blob_id, include_deleted=True, include_expired=True,
                                      info_only=True, rid=rid)
                chunks = info.chunks
            except (BlobNotFound, BlobDeleted, BlobExpired, DataCorrupt, Unavailable):
                # the delete itself decides below. (BlobDeleted: a DC holding only the
                # tombstone of a composite cannot list its chunks; a second DELETE there
                # answered 410 instead of 202.)
                chunks = []
        await self._delete_one(blob_id, rid)
        for ref in chunks:
            if ref.blob_id not in keep_chunks:
                self._spawn(self._delete_chunk_quietly(self.parse_id(ref.blob_id), rid))

    async def _delete_chunk_quietly(self, bid: BlobId, rid: str) -> None:
        """Delete one chunk of a deleted composite wherever it lives: like the composite
        itself, through the origin DC when no local replica has it (deleting at local
        replicas only left a composite deleted through another DC with all its chunks)."""
        try:
            await self._delete_one(bid, rid)
        except AmbryError as e:
            log.info("rid=%s delete of chunk %s: %s", rid, bid, e.message)

    async def update_ttl(self, blob_id: BlobId, rid: str = "") -> None:
        """Make a blob permanent: chunks first, then the metadata blob."""
        info = await self.get(blob_id, info_only=True, rid=rid)
        if info.state.permanent or info.expiry_ms == 0:
            return
        now = self.clock.now_ms()
        if info.expiry_ms - now < self.fe.ttl_update_buffer_s * 1000:
            raise TtlUpdateTooLate(f"blob {blob_id} expires within "
                                   f"{self.fe.ttl_update_buffer_s} s")
        for ref in info.chunks:
            await self._mutate_blob("ttl_update", self.parse_id(ref.blob_id), rid)
        await self._mutate_blob("ttl_update", blob_id, rid)

    async def undelete(self, blob_id: BlobId, rid: str = "") -> None:
        """A new life for a deleted blob: chunks first, then the metadata blob."""
        info = await self.get(blob_id, include_deleted=True, info_only=True, rid=rid)
        if not info.state.deleted:
            raise BlobNotDeleted(f"blob {blob_id} is not deleted")
        lv = info.state.life_version + 1
        for ref in info.chunks:
            try:
                await self._mutate_blob("undelete", self.parse_id(ref.blob_id), rid,
                                        life_version=lv)
            except BlobNotDeleted:
                pass  # chunks of a composite are not deleted with it when the delete failed
        await self._mutate_blob("undelete", blob_id, rid, life_version=lv)

    # ------------------------------------------------------------------ named blobs
    def _name_nodes(self, account_id: int, container_id: int) -> tuple[int, list[str]]:
        pid = name_partition(self.cmap.name_partition_ids, account_id, container_id)
        nodes = self.detector.order([n.id for n in self.local_replicas(pid)])
        return pid, nodes

    async def _name_read(self, account_id: int, container_id: int,
                         call: Callable[[NodeClient, int], Awaitable[Any]], rid: str
                         ) -> list[Any]:
        """Answers of 2 local replicas of the container's name partition: 2 are asked, the
        3rd too when one fails or both have not answered within the hedge delay (waiting
        for both made every name read wait for a stopped replica's node timeout)."""
        pid, nodes = self._name_nodes(account_id, container_id)
        need = min(2, len(nodes))
        answers: list[Any] = []
        asked: dict[asyncio.Future[Any], str] = {}
        waiting = list(nodes)

        def ask() -> None:
            nid = waiting.pop(0)
            t = asyncio.ensure_future(call(self.client(nid), pid))
            t.add_done_callback(_retrieve)  # a straggler's late error is nobody's
            asked[t] = nid

        for _ in range(need):
            ask()
        try:
            while len(answers) < need:
                pending = [t for t in asked if not t.done()]
                if not pending:
                    if not waiting:
                        break
                    ask()
                    continue
                done, _ = await asyncio.wait(
                    pending, timeout=self.hedge.delay() if waiting else None,
                    return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    ask()  # the hedge: no answer in time, ask the 3rd as well
                for t in done:
                    nid = asked[t]
                    if t.exception() is None:
                        self._note(nid, "name_read", None)
                        answers.append(t.result())
                        continue
                    exc = t.exception()
                    assert exc is not None
                    if not isinstance(exc, (AmbryError, OSError, asyncio.TimeoutError)):
                        raise exc
                    self._note(nid, "name_read", exc)
                    if waiting:
                        ask()
        finally:
            self._watch_stragglers([(nid, t) for t, nid in asked.items() if not t.done()])
        if len(answers) < need:
            raise Unavailable("too few replicas of the name partition answered")
        return answers

    async def lookup_name(self, account_id: int, container_id: int, name: str,
                          rid: str = "") -> NameRecord | None:
        """The newest entry for a name across 2 local replicas (deleted ones included)."""
        answers = await self._name_read(
            account_id, container_id,
            lambda c, pid: c.name_get(pid, account_id, container_id, name, rid=rid), rid)
        best: NameRecord | None = None
        for e in answers:
            if e is not None and (best is None or name_version(e) > name_version(best)):
                best = e
        return best

    async def resolve_name(self, account_id: int, container_id: int, name: str,
                           rid: str = "") -> BlobId:
        e = await self.lookup_name(account_id, container_id, name, rid)
        if e is None:
            raise BlobNotFound(f"no blob named {name!r}")
        if e.deleted:  # "as for ids" (DESIGN.md section 4): a deleted name is gone, 410
            raise BlobDeleted(f"the blob named {name!r} is deleted")
        return BlobId.from_bytes(e.blob_id)

    async def _reserve_name(self, pid: int, nodes: Sequence[str], account_id: int,
                            container_id: int, name: str, token: bytes, rid: str
                            ) -> NameRecord | None:
        """Hold the name on a majority of its local replicas (retrying with backoff while
        another writer holds it); the name's current entry as that majority sees it."""
        deadline = time.monotonic() + self.fe.name_busy_wait_ms / 1000
        lease_ms = self.fe.name_lease_ms
        attempt = 0
        while True:
            tally = ReservationTally(len(nodes))

            async def one(nid: str) -> tuple[str, tuple[bool, NameRecord | None] | None]:
                try:
                    return nid, await self.client(nid).name_reserve(
                        pid, account_id, container_id, name, token, lease_ms, rid=rid)
                except asyncio.CancelledError:
                    raise
                except (TimeoutError, AmbryError, OSError) as e:
                    self._note(nid, "name_reserve", e)
                    return nid, None

            tasks = [asyncio.ensure_future(one(nid)) for nid in nodes]
            try:
                for fut in asyncio.as_completed(tasks):
                    nid, ans = await fut
                    if ans is None:
                        tally.record(nid, None)
                    else:
                        self._note(nid, "name_reserve", None)
                        tally.record(nid, ans[0], ans[1])
                    if tally.verdict() is not Verdict.PENDING:
                        break
            finally:
                for t in tasks:  # a late answer only holds a lease that our release ends
                    if not t.done():
                        self._background.add(t)
                        t.add_done_callback(self._background.discard)
            verdict = tally.verdict()
            if verdict is Verdict.HELD:
                return tally.current
            self._spawn(self._release_name(pid, nodes, account_id, container_id, name,
                                           token, rid))
            if verdict is Verdict.UNAVAILABLE:
                raise Unavailable("too few replicas of the name partition answered")
            wait = backoff_s(attempt, self.rnd)
            if time.monotonic() + wait > deadline:
                raise Unavailable(f"name {name!r} is busy: other writers hold it")
            attempt += 1
            self.metrics_name_busy += 1
            await asyncio.sleep(wait)

    async def _release_name(self, pid: int, nodes: Sequence[str], account_id: int,
                            container_id: int, name: str, token: bytes, rid: str) -> None:
        async def one(nid: str) -> None:
            try:
                await self.client(nid).name_release(pid, account_id, container_id, name,
                                                    token, rid=rid)
            except (TimeoutError, AmbryError, OSError):
                pass  # the lease ends on its own

        await asyncio.gather(*(one(n) for n in nodes))

    async def write_name(self, account_id: int, container_id: int, name: str,
                         decide: Callable[[NameRecord | None], NameRecord | None], rid: str
                         ) -> tuple[NameRecord | None, NameRecord | None]:
        """Change a name as one conditional write decided at its replicas: reserve it on a
        majority of the local replicas, let ``decide(current)`` build the new entry (or raise,
        e.g. NameConflict; or return None to write nothing), and write it under the
        reservation. Returns (the entry it was based on, the entry written). Of concurrent
        writers of one name in this datacenter, each decides on the entry the one before it
        wrote (see ``namewrite``), so "create if absent" has exactly one winner."""
        pid, nodes = self._name_nodes(account_id, container_id)
        token = secrets.token_bytes(16)
        current = await self._reserve_name(pid, nodes, account_id, container_id, name,
                                           token, rid)
        try:
            record = decide(current)
        except BaseException:
            self._spawn(self._release_name(pid, nodes, account_id, container_id, name,
                                           token, rid))
            raise
        if record is None:
            self._spawn(self._release_name(pid, nodes, account_id, container_id, name,
                                           token, rid))
            return current, None
        base = name_version(current) if current is not None else None
        verdict, _, errors = await self._quorum(
            nodes, "name_put",
            lambda c: c.name_put(pid, record, rid=rid, token=token, base=base))
        if verdict is not Outcome.SUCCESS:
            self._spawn(self._release_name(pid, nodes, account_id, container_id, name,
                                           token, rid))
            # NameBusy from a replica means the reservation was lost there (lease ended and
            # another writer took it): the outcome is unknown, as for any failed quorum
            _raise_for(Outcome.UNAVAILABLE if verdict is Outcome.ERROR else verdict,
                       f"name {name!r}", errors)
        return current, record

    def _next_name_ts(self, current: NameRecord | None) -> int:
        return max(self.clock.now_ms(), (current.ts_ms + 1) if current is not None else 0)

    async def put_named(self, name: str, read: ReadBody, *, account_id: int, container_id: int,
                        props: BlobProperties, usermeta: bytes, declared_size: int | None,
                        content_xxh3: str | None, upsert: bool, rid: str) -> StoredBlob:
        """Store the blob, then point the name at it (the name only once the blob is
        durable). Without upsert an existing live name is a 409, decided at the name's
        replicas (two concurrent creates: one 201, one 409); with upsert the blob it pointed
        to is deleted afterwards so it does not leak disk."""
        if not upsert:  # fail fast, before the body is uploaded; decided again at the end
            old = await self.lookup_name(account_id, container_id, name, rid)
            if old is not None and not old.deleted:
                raise NameConflict(f"name {name!r} exists (send x-ambry-named-upsert: true)")
        stored = await self.put(read, account_id=account_id, container_id=container_id,
                                props=props, usermeta=usermeta, declared_size=declared_size,
                                content_xxh3=content_xxh3, rid=rid)
        await self.bind_name(name, stored, account_id=account_id, container_id=container_id,
                             content_type=props.content_type, rid=rid,
                             condition=None if upsert else require_absent)
        return stored

    async def stitch_named(self, name: str, chunk_ids: Sequence[str], *, account_id: int,
                           container_id: int, props: BlobProperties, usermeta: bytes,
                           upsert: bool, rid: str) -> StoredBlob:
        """Stitch chunks (as :meth:`stitch`) into a blob and point ``name`` at it, with the
        rules of :meth:`put_named` (409 without upsert, decided at the name's replicas).

        A retry of a stitch that already landed (the name points to a composite of exactly
        these chunks) answers that blob again and changes nothing: a second composite of
        the same chunks would replace it, and deleting the replaced one deleted the chunks
        under the new one. For the same reason the chunks the new blob lists are never
        deleted with the blob it replaces, nor with the new blob when the name is refused
        (the client may stitch them again)."""
        current = await self.lookup_name(account_id, container_id, name, rid)
        if current is not None and not current.deleted:
            landed = await self._stitched_from(current, chunk_ids, rid)
            if landed is not None:
                return landed
            if not upsert:  # fail fast, before any chunk TTL is lifted
                raise NameConflict(f"name {name!r} exists (send x-ambry-named-upsert: true)")
        stored = await self.stitch(chunk_ids, account_id=account_id, container_id=container_id,
                                   props=props, usermeta=usermeta, rid=rid)
        keep = frozenset(self.parse_id(c).to_str() for c in chunk_ids)
        await self.bind_name(name, stored, account_id=account_id, container_id=container_id,
                             content_type=props.content_type, rid=rid,
                             condition=None if upsert else require_absent, keep_chunks=keep)
        return stored

    async def _stitched_from(self, entry: NameRecord, chunk_ids: Sequence[str], rid: str
                             ) -> StoredBlob | None:
        """The blob of ``entry`` if it is a composite of exactly ``chunk_ids``."""
        bid = BlobId.from_bytes(entry.blob_id)
        if bid.blob_type is not BlobType.METADATA:
            return None
        try:
            wanted = [self.parse_id(c).to_str() for c in chunk_ids]
            info = await self.get(bid, info_only=True, rid=rid)
        except AmbryError:
            return None  # bad ids get their 400 from the stitch; a gone blob is not ours
        if [r.blob_id for r in info.chunks] != wanted:
            return None
        return StoredBlob(bid, info.total_size, info.properties.created_ms)

    async def bind_name(self, name: str, stored: StoredBlob, *, account_id: int,
                        container_id: int, content_type: str, rid: str,
                        condition: Callable[[NameRecord | None], None] | None = None,
                        keep_chunks: frozenset[str] = frozenset()
                        ) -> NameRecord | None:
        """Point a name at a blob already stored (and durable); the blob the name pointed to
        before is deleted afterwards. ``condition(current)`` raises (NameConflict, an S3
        PreconditionFailed, ...) to refuse the write; it is decided under the name's
        reservation, so it holds against concurrent writers of this datacenter.
        ``content_type`` goes into the name entry (listings show it). If the name is not
        written, the new blob is deleted. Returns the entry the name had before."""

        def decide(current: NameRecord | None) -> NameRecord:
            if condition is not None:
                condition(current)
            return NameRecord(account_id, container_id, name, stored.blob_id.to_bytes(),
                              self._next_name_ts(current), self.dc.id, False, stored.size,
                              content_type, stored.created_ms)

        try:
            old, record = await self.write_name(account_id, container_id, name, decide, rid)
        except BaseException:
            self._spawn(self.delete(stored.blob_id, rid, keep_chunks))
            raise
        assert record is not None
        if old is not None and not old.deleted and old.blob_id != record.blob_id:
            self._spawn(self._delete_ignoring_missing(BlobId.from_bytes(old.blob_id), rid,
                                                      keep_chunks))
        return old

    async def _delete_ignoring_missing(self, bid: BlobId, rid: str,
                                       keep_chunks: frozenset[str] = frozenset()) -> None:
        try:
            await self.delete(bid, rid, keep_chunks)
        except (BlobNotFound, BlobDeleted):
            pass

    async def delete_named(self, name: str, *, account_id: int, container_id: int,
                           rid: str) -> None:
        def decide(current: NameRecord | None) -> NameRecord | None:
            if current is None:
                raise BlobNotFound(f"no blob named {name!r}")
            if current.deleted:
                return None  # as for ids: deleting a deleted blob is a 202
            return NameRecord(account_id, container_id, name, b"",
                              self._next_name_ts(current), self.dc.id, True)

        old, record = await self.write_name(account_id, container_id, name, decide, rid)
        if record is not None and old is not None:
            await self._delete_ignoring_missing(BlobId.from_bytes(old.blob_id), rid)

    async def list_named(self, *, account_id: int, container_id: int, prefix: str,
                         start_after: str, limit: int, rid: str
                         ) -> tuple[list[NameRecord], bool]:
        """Live names under ``prefix`` after ``start_after``, merged from 2 replicas; and
        whether more follow."""
        answers = await self._name_read(
            account_id, container_id,
            lambda c, pid: c.name_list(pid, account_id, container_id, prefix, start_after,
                                       limit + 1, rid=rid), rid)
        merged: dict[str, NameRecord] = {}
        for entries in answers:
            for e in entries:
                cur = merged.get(e.name)
                if cur is None or name_version(e) > name_version(cur):
                    merged[e.name] = e
        names = sorted(merged)
        # each replica returned at most limit+1 names: beyond the smallest "last name" of a
        # replica that was cut short, the merge may miss names; stop there.
        cut = min((entries[-1].name for entries in answers if len(entries) > limit),
                  default=None)
        if cut is not None:
            names = [n for n in names if n <= cut]
        more = len(names) > limit
        return [merged[n] for n in names[:limit]], more


async def _stream_reply(reply: GetReply, length: int, blob_id: BlobId
                        ) -> AsyncIterator[bytes | bytearray]:
    try:
        got = 0
        async for piece in reply.iter_chunks(_STREAM_PIECE_BYTES):
            got += len(piece)
            yield piece
        if got != length:
            raise DataCorrupt(f"blob {blob_id}: node sent {got} of {length} bytes")
    finally:
        await reply.release()


def _log_failure(t: asyncio.Task[Any]) -> None:
    if not t.cancelled() and t.exception() is not None:
        log.warning("background task failed: %r", t.exception())


def _retrieve(t: asyncio.Future[Any]) -> None:
    if not t.cancelled():
        t.exception()


def _release_result(t: asyncio.Task[Any]) -> None:
    if t.cancelled() or t.exception() is not None:
        return
    _nid, reply, _exc = t.result()
    if reply is not None:
        reply._release_soon()


async def _read_up_to(read: ReadBody, n: int, budget: ByteBudget, reserved: list[int],
                      prefix: bytes = b"") -> bytes:
    """Up to ``n`` bytes of body (fewer only at its end), ``prefix`` first. Pieces are joined
    once at the end (a body that came in one piece is returned as is): no buffer is sized
    for a whole chunk before the bytes are there (a 4 KiB upload must not fault in 4 MiB),
    none grows by copying, and the pieces die as soon as the join returns.

    Each piece is reserved in ``budget`` once it has arrived, never before: ``reserved``
    gets a new last entry, this chunk's reservation, which grows piece by piece (the caller
    releases it, or hands it to the chunk's writer). A client that sends headers and then
    nothing holds no budget (reserving a whole chunk up front let 32 such connections freeze
    every upload of a frontend); one that trickles holds what it sent. While a piece waits
    for its reservation it is the one read of this upload held outside the budget (at most
    ``BODY_READ_BYTES``); ``held=`` lets partial chunks filling the budget finish rather than
    wait for each other (``ByteBudget``)."""
    reserved.append(0)
    pieces: list[bytes] = []
    got = 0
    piece = prefix
    while True:
        if piece:
            granted = await budget.acquire(len(piece), held=reserved[-1])
            reserved[-1] += granted
            pieces.append(piece)
            got += len(piece)
        if got >= n:
            break
        piece = await read(n - got)
        if not piece:
            break
    if len(pieces) == 1:
        return pieces[0]
    return b"".join(pieces)


def _usermeta(um: UserMeta) -> bytes:
    return um() if callable(um) else um


def _with_size(props: BlobProperties, size: int) -> BlobProperties:
    return BlobProperties(size=size, created_ms=props.created_ms, ttl_s=props.ttl_s,
                          content_type=props.content_type, service_id=props.service_id,
                          owner_id=props.owner_id, filename=props.filename,
                          account_id=props.account_id, container_id=props.container_id,
                          extra=dict(props.extra))


def _check_size(got: int, declared: int | None, final: bool) -> None:
    if declared is None:
        return
    if got > declared or (final and got != declared):
        raise BadRequest(f"body has {'more' if got > declared else 'fewer'} bytes than "
                         f"x-ambry-blob-size ({declared})")


def _check_xxh3(hasher: Any, expected: str | None) -> None:
    if hasher is None or expected is None:
        return
    if hasher.hexdigest() != expected.strip().lower().rjust(16, "0"):
        raise BadRequest("body does not match x-ambry-content-xxh3")


