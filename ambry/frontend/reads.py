"""GET, HEAD and BlobInfo: finding a blob on its replicas and streaming its bytes.

Owns :class:`Reader`: the wave/hedge loop that drives the pure ``getplan.GetPlan`` over real
replica calls (:meth:`Reader.get_reply`), releasing every reply it does not use; resolving a
composite blob's chunk list; and the body iterators: a simple blob streamed off one node
reply, a range of one, and a composite's chunks in order with at most
``download_prefetch_chunks`` fetched ahead (memory per request bounded by that, never by
the blob's size). Does not own HTTP (range headers are parsed by the apps, which pass a
``range_resolver``), the wave order (``failure.order_replicas_for_get``) nor the read rule
(``quorum``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ambry.common.blobid import BlobId, BlobType
from ambry.common.blobstate import BlobState
from ambry.common.config import FrontendConfig
from ambry.common.errors import AmbryError, DataCorrupt, Unavailable
from ambry.common.properties import BlobProperties
from ambry.frontend.chunking import ChunkRef, decode_metadata, slices_for_range
from ambry.frontend.clusterview import ClusterView
from ambry.frontend.failure import HedgeDelay, order_replicas_for_get
from ambry.frontend.fanout import FanOut
from ambry.frontend.getplan import GetPlan
from ambry.frontend.quorum import Outcome
from ambry.frontend.verdicts import outcome_of, raise_for
from ambry.protocol.client import GetReply
from ambry.protocol.connection import PayloadCheck

__all__ = ["BlobRead", "Reader"]

log = logging.getLogger(__name__)

_STREAM_PIECE_BYTES = 1 << 20
#: a simple blob sent unverified is read whole and checked before any of it goes on when it is
#: at most this big (a chunk: the memory a composite GET holds per chunk anyway)
_VERIFY_WHOLE_MAX_BYTES = 4 << 20


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
        """Stop reading: frees the node connection even if ``body`` was never started.

        A reply has one owner of its release at a time: ``_reply`` is this object's while
        ``body`` has not started; the body takes it (``take_reply``) when it starts and then
        releases it itself, within ``body.aclose()`` here, in this task (its inner generators
        are closed by it, never left for the garbage collector to close later in a task of
        its own, racing this one)."""
        if self.body is not None:
            await self.body.aclose()  # type: ignore[attr-defined]
        reply = self.take_reply()
        if reply is not None:
            await reply.release()

    def take_reply(self) -> GetReply | None:
        """The reply this read holds, handed over with the duty to release it."""
        reply, self._reply = self._reply, None
        return reply


class Reader:
    def __init__(self, fe: FrontendConfig, view: ClusterView, fanout: FanOut,
                 hedge: HedgeDelay, rnd: random.Random) -> None:
        self.fe = fe
        self.view = view
        self.fanout = fanout
        self.hedge = hedge
        self.rnd = rnd

    async def get_reply(self, blob_id: BlobId, rid: str, **kw: Any) -> GetReply:
        """The first valid reply for one blob, asking replicas in waves (2 local, the 3rd,
        the origin DC, the others). Raises the verdict's error otherwise."""
        view = self.view
        view.check_id(blob_id)
        cmap = view.cmap
        here = view.dc.name
        part = cmap.partition(blob_id.partition_id)
        origin = view.origin_dc_name(blob_id) or here
        local = [n.id for n in view.local_replicas(part.id)]
        remote: dict[str, list[str]] = collections.defaultdict(list)
        dc_of: dict[str, str] = {}
        for nid in part.replicas:
            node = cmap.node(nid)
            dc_of[nid] = node.datacenter
            if node.datacenter != here:
                remote[node.datacenter].append(nid)
        origin_count = sum(1 for nid in part.replicas if dc_of[nid] == origin)
        errors: list[BaseException] = []
        self.rnd.shuffle(local)  # spread reads over the replicas (the first is asked alone)
        plan = GetPlan(order_replicas_for_get(local, remote, origin, self.fanout.detector),
                       dc_of, origin, origin_count, here, hedge=self.fe.get_hedge_ms != 0)

        async def one(nid: str) -> tuple[str, GetReply | None, BaseException | None]:
            t0 = time.monotonic()
            try:
                reply = await self.fanout.client(nid).get(blob_id, rid=rid, **kw)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, AmbryError, OSError, ValueError) as e:
                return nid, None, e
            if dc_of[nid] == here:
                self.hedge.record(time.monotonic() - t0)
            reply.source = nid
            return nid, reply, None

        # a replica's reply is this loop's to handle (or release) while the plan has it open
        tasks: dict[str, asyncio.Task[tuple[str, GetReply | None, BaseException | None]]] = {}
        winner: GetReply | None = None

        def ask(nids: list[str]) -> None:
            for nid in nids:
                tasks[nid] = asyncio.ensure_future(one(nid))

        try:
            ask(plan.start())
            while not plan.finished:
                ready = [t for nid, t in tasks.items() if t.done() and nid in plan.open]
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
                if exc is not None:
                    errors.append(exc)
                if reply is not None:
                    if winner is None:
                        winner = reply
                    else:
                        await reply.release()
                ask(plan.answered(nid, self.fanout.note(nid, "get", exc)))
            decided = plan.decided
            if decided is Outcome.SUCCESS and winner is not None:
                return winner
            if winner is not None:
                await winner.release()
                winner = None
            if decided is not None:
                raise_for(decided, f"blob {blob_id}", errors)
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
                elif not t.cancelled() and t.exception() is None and nid in plan.open:
                    _release_result(t)
        verdict = plan.verdict()
        if verdict is Outcome.UNAVAILABLE and any(outcome_of(e) is Outcome.ERROR
                                                   for e in errors):
            verdict = Outcome.ERROR
        raise_for(verdict, f"blob {blob_id}", errors)
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
        reply = await self.get_reply(blob_id, rid, info_only=not (composite or whole_simple),
                                     client_verifies=whole_simple, **opts)
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
            read._reply = reply  # the read's until the body starts, then the body's
            read.body = self._whole_simple_body(read, total, blob_id, rid, opts)
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
        reply = await self.get_reply(blob_id, rid, range=(start, length), **opts)
        async with contextlib.aclosing(_stream_reply(reply, length, blob_id)) as pieces:
            async for piece in pieces:
                yield piece

    async def _whole_simple_body(self, read: BlobRead, total: int, blob_id: BlobId, rid: str,
                                 opts: dict[str, bool]) -> AsyncIterator[bytes | bytearray]:
        """A whole simple blob. When the node sent it unverified (sendfile), its checksum is
        checked here before the last byte goes on: a blob of up to a chunk is read whole and
        checked before any of it is passed on (a damaged copy is then fetched again from
        another replica), a larger one is streamed with its last piece held back (a damaged
        copy cuts the response short)."""
        reply = read.take_reply()  # the body's from here: _stream_reply or `async with` frees it
        if reply is None:
            raise RuntimeError("a whole simple body is iterated once")
        check = reply.payload_check()
        if check is None or total > _VERIFY_WHOLE_MAX_BYTES:
            async with contextlib.aclosing(_stream_reply(reply, total, blob_id, check)) as ps:
                async for piece in ps:
                    yield piece
            return
        async with reply:
            data = await reply.read()
        if len(data) != total:
            raise DataCorrupt(f"blob {blob_id}: node sent {len(data)} of {total} bytes")
        check.update(data)
        if check.ok():
            yield data
            return
        await self._damaged_copy(reply.source, blob_id, rid)
        retry = await self.get_reply(blob_id, rid, **opts)
        async with contextlib.aclosing(_stream_reply(retry, total, blob_id)) as pieces:
            async for piece in pieces:
                yield piece

    async def _fetch_chunk(self, ref: ChunkRef, start: int, length: int, rid: str
                           ) -> bytes | bytearray:
        bid = self.view.parse_id(ref.blob_id)
        data = await self._read_chunk(bid, start, length, rid, client_verifies=True)
        if data is None:
            # nodes that verify find and report their damage, and another replica answers
            data = await self._read_chunk(bid, start, length, rid, client_verifies=False)
        if data is None or len(data) != length:
            got = "a damaged copy" if data is None else f"{len(data)} of {length} bytes"
            raise DataCorrupt(f"chunk {ref.blob_id}: got {got}")
        return data

    async def _read_chunk(self, bid: BlobId, start: int, length: int, rid: str,
                          client_verifies: bool) -> bytes | bytearray | None:
        """One chunk's bytes, or None when they fail the checksum the node sent with them."""
        reply = await self.get_reply(bid, rid, include_deleted=True, include_expired=True,
                                     range=(start, length), client_verifies=client_verifies)
        async with reply:
            data = await reply.read()
        check = reply.payload_check()
        if check is not None:
            check.update(data)
            if not check.ok():
                await self._damaged_copy(reply.source, bid, rid)
                return None
        return data

    async def _damaged_copy(self, nid: str, blob_id: BlobId, rid: str) -> None:
        """A replica sent a copy that fails its checksum: ask it again, verifying this time,
        so that it finds the damage itself and reports it (its scrubber repairs it from a
        peer). Whatever it answers is dropped."""
        log.warning("rid=%s blob %s: the copy %s sent fails its checksum", rid, blob_id,
                    nid or "a replica")
        if not nid:
            return
        try:
            reply = await self.fanout.client(nid).get(blob_id, rid=rid, include_deleted=True,
                                                      include_expired=True)
            await reply.release()
        except (TimeoutError, AmbryError, OSError, ValueError):
            pass  # DATA_CORRUPT: reported

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
                yield data  # one write of the whole chunk (slicing it copied it once more)
        finally:
            for _, t in ahead:
                t.cancel()


async def _stream_reply(reply: GetReply, length: int, blob_id: BlobId,
                        check: PayloadCheck | None = None
                        ) -> AsyncGenerator[bytes | bytearray, None]:
    """The reply's payload as it arrives; with ``check``, each piece is held back until the
    next one arrives, and the last until the checksum held (a damaged copy ends the body
    short, never complete with wrong bytes)."""
    try:
        got = 0
        held: bytes | bytearray = b""
        async for piece in reply.iter_chunks(_STREAM_PIECE_BYTES):
            got += len(piece)
            if check is None:
                yield piece
                continue
            check.update(piece)
            if held:
                yield held
            held = piece
        if got != length:
            raise DataCorrupt(f"blob {blob_id}: node sent {got} of {length} bytes")
        if check is not None:
            if not check.ok():
                raise DataCorrupt(f"blob {blob_id}: the copy a replica sent fails its checksum")
            if held:
                yield held
    finally:
        await reply.release()


def _release_result(t: asyncio.Task[Any]) -> None:
    if t.cancelled() or t.exception() is not None:
        return
    _nid, reply, _exc = t.result()
    if reply is not None:
        reply.release_soon()
