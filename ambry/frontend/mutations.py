"""DELETE, TTL update and undelete of blobs by id.

Owns the mutation rules of DESIGN.md section 5 as the router applies them: a mutation at 2 of 3
local replicas, or at the blob's origin DC when no local replica has it (that DC's answer is
authoritative for 404); a delete tombstones replicas that never saw the blob once another
proves it exists; the order over a composite blob (TTL update and undelete touch the chunks
first, delete touches the metadata blob first, then its chunks in the background). Does not
own names (``names``: a name's delete ends here) nor the quorum rule (``quorum``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any

from ambry.common.blobid import BlobId, BlobType
from ambry.common.clock import Clock
from ambry.common.config import FrontendConfig
from ambry.common.errors import (
    AmbryError,
    BlobDeleted,
    BlobExpired,
    BlobNotDeleted,
    BlobNotFound,
    DataCorrupt,
    Unavailable,
)
from ambry.frontend.chunking import ChunkRef
from ambry.frontend.clusterview import ClusterView
from ambry.frontend.fanout import NODE_ERRORS, FanOut
from ambry.frontend.quorum import Outcome
from ambry.frontend.reads import Reader
from ambry.frontend.verdicts import raise_for
from ambry.protocol.client import NodeClient

__all__ = ["Mutator", "TtlUpdateTooLate"]

log = logging.getLogger(__name__)


class TtlUpdateTooLate(AmbryError):
    """TTL update within ``ttl_update_buffer_s`` of expiry (HTTP 405)."""

    code = "TTL_UPDATE_TOO_LATE"


class Mutator:
    def __init__(self, fe: FrontendConfig, view: ClusterView, fanout: FanOut, clock: Clock,
                 reader: Reader) -> None:
        self.fe = fe
        self.view = view
        self.fanout = fanout
        self.clock = clock
        self.reader = reader

    async def mutate_blob(self, op: str, blob_id: BlobId, rid: str, **kw: Any) -> Outcome:
        """One mutation at 2 of 3 local replicas; when no local replica has the blob, at the
        blob's origin DC (whose answer is authoritative for 404)."""
        view = self.view
        view.check_id(blob_id)
        t = self.clock.now_ms()

        def call(c: NodeClient) -> Awaitable[Any]:
            fn = getattr(c, op)
            return fn(blob_id, time_ms=t, rid=rid, **kw)  # type: ignore[no-any-return]

        local = [n.id for n in view.local_replicas(blob_id.partition_id)]
        verdict, results, errors = await self.fanout.quorum(local, op, call)
        # A replica without the blob answers a TTL update with "marked" (it keeps the update
        # for when replication brings the blob): a success that proves nothing. When every
        # local answer is one, no local replica has the blob yet, and the origin DC must be
        # updated too (before this, a TTL update through a DC the blob had not reached
        # answered 200 and left the blob's only copies, in its origin DC, untouched).
        only_marked = (verdict is Outcome.SUCCESS and op == "ttl_update" and
                       all(getattr(r, "result", None) == "marked" for r in results.values()))
        if verdict is not Outcome.NOT_FOUND and not only_marked:
            raise_for(verdict, f"blob {blob_id}", errors)
            return verdict
        origin = view.origin_dc_name(blob_id)
        if origin is None or origin == view.dc.name:
            if only_marked:
                return verdict  # the origin's own replicas keep the marker until they catch up
            raise_for(Outcome.NOT_FOUND, f"blob {blob_id}")
        assert origin is not None
        remote = [n.id for n in view.cmap.replicas_in(blob_id.partition_id, origin)]
        verdict, _, errors = await self.fanout.quorum(remote, op, call)
        raise_for(verdict, f"blob {blob_id}", errors)
        return verdict

    async def _delete_at(self, node_ids: Sequence[str], blob_id: BlobId, t: int, rid: str,
                         tombstone: bool, enough: int | None = None) -> dict[str, Outcome]:
        """Delete at every node given, each bounded by its timeout. Waits for every answer,
        or only until ``enough`` succeeded: the rest then finish in the background and are
        missing from the result. (Waiting for all made every DELETE take the whole node
        timeout while one replica hung, though 2 of 3 had already acknowledged it.) Every
        answer is noted when it comes, a straggler's too."""
        fanout = self.fanout

        async def call(nid: str) -> Outcome:
            try:
                await fanout.client(nid).delete(blob_id, time_ms=t, rid=rid,
                                                tombstone_if_missing=tombstone)
            except NODE_ERRORS as e:
                return fanout.note(nid, "delete", e)
            return fanout.note(nid, "delete", None)

        outs: dict[str, Outcome] = {}

        def decided(nid: str, out: Outcome | None, _exc: BaseException | None) -> bool:
            assert out is not None, "call notes its own errors"
            outs[nid] = out
            return enough is not None and \
                sum(1 for o in outs.values() if o is Outcome.SUCCESS) >= enough

        await fanout.fan_out(node_ids, call, decided)
        return outs

    async def delete_one(self, blob_id: BlobId, rid: str) -> None:
        """DELETE of one blob at 2 of 3 local replicas (DESIGN.md section 5, issue rules):
        replicas that never saw the blob get a tombstone when another replica (local or in the
        origin DC) proves it exists; 404 only when every origin replica says not-found; when
        the origin DC is unreachable, local tombstones are written and the delete succeeds."""
        view = self.view
        view.check_id(blob_id)
        t = self.clock.now_ms()
        local = [n.id for n in view.local_replicas(blob_id.partition_id)]
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
        origin = view.origin_dc_name(blob_id)
        if origin is None or origin == view.dc.name:
            if len(missing) == len(local):
                raise BlobNotFound(f"blob {blob_id} not found")
            raise Unavailable(f"blob {blob_id}: too few replicas answered")
        # no local replica has it (yet): the origin DC decides
        remote = [n.id for n in view.cmap.replicas_in(blob_id.partition_id, origin)]
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
                info = await self.reader.get(blob_id, include_deleted=True,
                                             include_expired=True, info_only=True, rid=rid)
                chunks = info.chunks
            except (BlobNotFound, BlobDeleted, BlobExpired, DataCorrupt, Unavailable):
                # the delete itself decides below. (BlobDeleted: a DC holding only the
                # tombstone of a composite cannot list its chunks; a second DELETE there
                # answered 410 instead of 202.)
                chunks = []
        await self.delete_one(blob_id, rid)
        for ref in chunks:
            if ref.blob_id not in keep_chunks:
                self.fanout.spawn(self._delete_chunk_quietly(self.view.parse_id(ref.blob_id),
                                                             rid))

    async def _delete_chunk_quietly(self, bid: BlobId, rid: str) -> None:
        """Delete one chunk of a deleted composite wherever it lives: like the composite
        itself, through the origin DC when no local replica has it (deleting at local
        replicas only left a composite deleted through another DC with all its chunks)."""
        try:
            await self.delete_one(bid, rid)
        except AmbryError as e:
            log.info("rid=%s delete of chunk %s: %s", rid, bid, e.message)

    async def delete_ignoring_missing(self, bid: BlobId, rid: str,
                                      keep_chunks: frozenset[str] = frozenset()) -> None:
        try:
            await self.delete(bid, rid, keep_chunks)
        except (BlobNotFound, BlobDeleted):
            pass

    async def update_ttl(self, blob_id: BlobId, rid: str = "") -> None:
        """Make a blob permanent: chunks first, then the metadata blob."""
        info = await self.reader.get(blob_id, info_only=True, rid=rid)
        if info.state.permanent or info.expiry_ms == 0:
            return
        now = self.clock.now_ms()
        if info.expiry_ms - now < self.fe.ttl_update_buffer_s * 1000:
            raise TtlUpdateTooLate(f"blob {blob_id} expires within "
                                   f"{self.fe.ttl_update_buffer_s} s")
        for ref in info.chunks:
            await self.mutate_blob("ttl_update", self.view.parse_id(ref.blob_id), rid)
        await self.mutate_blob("ttl_update", blob_id, rid)

    async def undelete(self, blob_id: BlobId, rid: str = "") -> None:
        """A new life for a deleted blob: chunks first, then the metadata blob."""
        info = await self.reader.get(blob_id, include_deleted=True, info_only=True, rid=rid)
        if not info.state.deleted:
            raise BlobNotDeleted(f"blob {blob_id} is not deleted")
        lv = info.state.life_version + 1
        for ref in info.chunks:
            try:
                await self.mutate_blob("undelete", self.view.parse_id(ref.blob_id), rid,
                                       life_version=lv)
            except BlobNotDeleted:
                pass  # chunks of a composite are not deleted with it when the delete failed
        await self.mutate_blob("undelete", blob_id, rid, life_version=lv)
