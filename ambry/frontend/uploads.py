"""PUT: storing a body as one blob, or as chunks plus a composite metadata blob.

Owns :class:`Uploader`: reading the body as it comes, each chunk reserved in the frontend's
byte budget only once its bytes arrived; one record-sized blob written at a write quorum on
some writable partition (a new id and another partition per try, read-only partitions avoided
for a while); chunked uploads with at most ``upload_window_chunks`` in flight; the pending
TTL of the chunks of a permanent blob, lifted only once the metadata blob can be written; and
the rule that a failed upload leaves no reachable chunk (DESIGN.md section 5). Does not own
HTTP, the chunk math (``chunking``), stitching (``stitching``) nor names (``names``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from ambry.common.blobid import BlobId, BlobType
from ambry.common.clock import Clock
from ambry.common.config import FrontendConfig
from ambry.common.errors import (
    BadRequest,
    BlobExpired,
    InvalidArgument,
    PayloadTooLarge,
    Unavailable,
)
from ambry.common.properties import BlobProperties
from ambry.frontend.chunking import ChunkRef, encode_metadata
from ambry.frontend.clusterview import ClusterView
from ambry.frontend.confirms import PutConfirmer
from ambry.frontend.failure import ReadOnlyPartitions, choose_partition
from ambry.frontend.fanout import FanOut
from ambry.frontend.mutations import Mutator
from ambry.frontend.quorum import Outcome
from ambry.protocol.client import NodeClient
from ambry.protocol.messages import MutationReply
from ambry.runtime.budget import ByteBudget

__all__ = ["ReadBody", "StoredBlob", "Uploader", "UserMeta", "with_size"]

log = logging.getLogger(__name__)

ReadBody = Callable[[int], Awaitable[bytes]]  # read up to n bytes; b"" only at the end
UserMeta = bytes | Callable[[], bytes]  # user metadata, or how to get it once the body is read


@dataclass
class StoredBlob:
    blob_id: BlobId
    size: int
    created_ms: int


class Uploader:
    def __init__(self, fe: FrontendConfig, view: ClusterView, fanout: FanOut, clock: Clock,
                 rnd: random.Random, read_only: ReadOnlyPartitions, mutator: Mutator) -> None:
        self.fe = fe
        self.view = view
        self.fanout = fanout
        self.clock = clock
        self.rnd = rnd
        self.read_only = read_only
        self.mutator = mutator
        # tells each replica which others acked a PUT: their peers then skip those records
        self.confirmer = PutConfirmer(fe.replica_confirm_flush_ms, fanout.spawn)

    # ------------------------------------------------------------------ one blob
    async def _put_replicas(self, blob_id: BlobId, props: BlobProperties, usermeta: bytes,
                            payload: bytes | bytearray | memoryview, rid: str,
                            hold: list[asyncio.Task[Any]] | None = None
                            ) -> tuple[Outcome, dict[str, Any]]:
        fanout = self.fanout
        nodes = fanout.write_targets([n.id for n in
                                      self.view.local_replicas(blob_id.partition_id)])
        call: Callable[[NodeClient], Awaitable[MutationReply]]
        if self.confirmer.enabled:
            raw = blob_id.to_bytes()
            targets = [fanout.client(n) for n in nodes]

            async def call(c: NodeClient) -> MutationReply:
                reply = await c.put(blob_id, props, usermeta, payload, rid=rid)
                self.confirmer.acked(raw, c, reply.incarnation, targets)  # late acks too
                return reply
        else:
            def call(c: NodeClient) -> Awaitable[MutationReply]:
                return c.put(blob_id, props, usermeta, payload, rid=rid)
        verdict, results, _ = await fanout.quorum(nodes, "put", call, stragglers=hold)
        return verdict, results

    async def put_one_blob(self, blob_type: BlobType, account_id: int, container_id: int,
                           props: BlobProperties, usermeta: bytes,
                           payload: bytes | bytearray | memoryview, rid: str,
                           hold: list[asyncio.Task[Any]] | None = None) -> BlobId:
        """Store one record-sized blob on some writable partition of this DC (new id per
        try). Replica writes still running when it returns are added to ``hold``."""
        tried: set[int] = set()
        for _attempt in range(self.fe.put_attempts):
            pid = choose_partition(self.view.writable, tried | self.read_only.current(),
                                   self.rnd)
            if pid is None:
                break
            tried.add(pid)
            bid = self.view.new_id(account_id, container_id, pid, blob_type)
            verdict, results = await self._put_replicas(bid, props, usermeta, payload, rid,
                                                        hold)
            if verdict is Outcome.SUCCESS:
                return bid
            if verdict is Outcome.READ_ONLY:
                self.read_only.mark(pid)
            if results:  # a minority stored it: remove the orphan
                self.fanout.spawn(self._delete_quietly(bid, rid))
            log.info("rid=%s put on partition %d failed (%s); trying another", rid, pid,
                     verdict.name)
        raise Unavailable("no writable partition took the blob")

    async def _delete_quietly(self, bid: BlobId, rid: str) -> None:
        nodes = [n.id for n in self.view.local_replicas(bid.partition_id)]
        t = self.clock.now_ms()
        await self.fanout.quorum(nodes, "delete", lambda c: c.delete(bid, time_ms=t, rid=rid),
                                 w=3)

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
            pending = [await _read_up_to(read, cs, self.fanout.budget, budget)]
            more = await read(1) if len(pending[0]) == cs else b""
            if hasher is not None:
                hasher.update(pending[0])
            if not more:  # fits one record: a simple blob (or a chunk for stitching)
                first = pending.pop()
                _check_size(len(first), declared_size, final=True)
                _check_xxh3(hasher, content_xxh3)
                p = with_size(self._pending(props) if chunk_upload else props, len(first))
                btype = BlobType.CHUNK if chunk_upload else BlobType.SIMPLE
                bid = await self.put_one_blob(btype, account_id, container_id, p,
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
                self.fanout.release_when_done(hold, n)

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
                    await self.lift_ttls([self.view.parse_id(c.blob_id) for c in chunks], rid)
                except BlobExpired:
                    raise InvalidArgument(
                        f"the upload took longer than frontend.pending_chunk_ttl_s "
                        f"({self.fe.pending_chunk_ttl_s} s): its first chunks expired"
                    ) from None
            bid = await self.put_one_blob(BlobType.METADATA, account_id, container_id,
                                          with_size(props, total), _usermeta(usermeta),
                                          encode_metadata(chunks), rid)
        except BaseException:
            self.fanout.spawn(self._delete_chunks_when_done(
                set(), [self.view.parse_id(c.blob_id) for c in chunks], rid))
            raise
        return StoredBlob(bid, total, props.created_ms)

    async def put_chunks(self, read: ReadBody, *, account_id: int, container_id: int,
                         props: BlobProperties, rid: str) -> tuple[list[ChunkRef], int]:
        """Store a body as CHUNK blobs of ``chunk_size_bytes`` only, without a metadata blob
        (an S3 multipart part: ``stitch_chunks`` names them later); the chunks and the
        body size. An empty body gives no chunk. On failure no chunk stays reachable."""
        budget: list[int] = []
        try:
            return await self._upload_chunks(read, [], b"", budget, None, account_id=account_id,
                                             container_id=container_id, props=props,
                                             declared_size=None, content_xxh3=None, rid=rid)
        finally:
            for n in budget:
                self.fanout.release_when_done([], n)

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
                p = with_size(chunk_props, len(data))
                bid = await self.put_one_blob(BlobType.CHUNK, account_id, container_id, p,
                                              b"", data, rid, hold)
                written.append(bid)
                slots[index] = ChunkRef(bid.to_str(), len(data))
            except Exception as e:  # noqa: BLE001 - reported to the uploading loop
                failure.append(e)
            finally:
                window.release()
                self.fanout.release_when_done(hold, reserved)

        try:
            while True:
                if failure:
                    raise failure[0]
                if pending:
                    data = pending.pop(0)
                else:
                    data = await _read_up_to(read, cs, self.fanout.budget, budget, carry)
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
            self.fanout.spawn(self._delete_chunks_when_done(set(inflight), written, rid))
            raise

    # ------------------------------------------------------------------ chunk TTLs
    def _pending(self, props: BlobProperties) -> BlobProperties:
        """Properties of a chunk written before the blob that will list it is complete: a
        permanent blob's chunks get ``pending_chunk_ttl_s`` (from the blob's creation time),
        lifted by :meth:`lift_ttls` once the blob is complete; chunks of a blob with a TTL
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

    async def lift_ttls(self, chunk_ids: Sequence[BlobId], rid: str) -> None:
        """Make chunks permanent, up to 16 at a time (each is a quorum write of a small
        record). Raises the first failure; chunks lifted by then stay lifted."""
        gate = asyncio.Semaphore(16)

        async def lift(b: BlobId) -> None:
            async with gate:
                await self.mutator.mutate_blob("ttl_update", b, rid)

        await asyncio.gather(*(lift(b) for b in chunk_ids))

    async def _delete_chunks_when_done(self, inflight: set[asyncio.Task[None]],
                                       written: list[BlobId], rid: str) -> None:
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        await asyncio.gather(*(self._delete_quietly(bid, rid) for bid in written),
                             return_exceptions=True)


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


def with_size(props: BlobProperties, size: int) -> BlobProperties:
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
