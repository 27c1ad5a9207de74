"""What a replica offers the warm tier (``api.EcStore``): the calls the encoding coordinator
and the freeing pass make, and appending / folding EC_SEGMENT records.

A mixin of ``replica.Replica`` over ``replicacore.ReplicaCore``'s log, index and
``ecstate.EcState``; every method blocks (an I/O thread). Does not own the state it changes
(``ecstate``) nor the job that calls it (the node's warm-tier component).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from ambry.common.blobstate import BlobState
from ambry.common.errors import DataCorrupt, InvalidArgument
from ambry.ec.gain import freeable_bytes
from ambry.storage.disk import Disk
from ambry.storage.ecstate import DIR_ENTRY, EcRecord, EcState, FragmentReader
from ambry.storage.format import RECORD_HEADER_SIZE, RecordType, body_checksum
from ambry.storage.indexentry import F_HAS_PUT, is_dead
from ambry.storage.log import Damage, Log, Position, Segment
from ambry.storage.skeleton import SkeletonFile, extents_of, open_segment, write_skeleton

__all__ = ["EcReplicaMixin", "SealedSegment"]

log = logging.getLogger(__name__)

SealedSegment = tuple[int, int, int, float]  # number, generation, bytes, sealed at (mtime s)


class EcReplicaMixin:
    partition_id: int
    log: Log
    index: Any
    lock: threading.RLock
    ec: EcState
    clock: Any
    config: Any
    usage: Any
    disk: Disk

    # provided by ReplicaCore
    _append: Callable[..., tuple[Position, Any]]

    if TYPE_CHECKING:
        def _check_writable(self, record_len: int, is_put: bool) -> None: ...

    def ec_sealed(self) -> list[SealedSegment]:
        """The sealed segments of this replica's log (not the active one)."""
        out = []
        for seg in list(self.log.segments[:-1]):
            path = os.path.join(self.log.dir, seg.name)
            try:
                sealed = os.stat(path).st_mtime
            except OSError:
                continue
            out.append((seg.number, seg.generation, seg.size, sealed))
        return out

    def ec_scan_segment(self, number: int, generation: int) -> tuple[int, bytes, int]:
        """Read and check every record of sealed segment ``number`` (both checksums); returns
        (its length, the directory of its PUT records that the index points to: DIR_ENTRY
        each, the bytes freeing it here gives back: those records' payloads, since a wholly
        freed segment is rewritten as its skeleton). Raises DataCorrupt on any damage: a
        damaged segment is never encoded."""
        seg = self.log.segment(number)
        if seg.generation != generation or seg is self.log.active:
            raise InvalidArgument(f"segment {number} generation {generation} is not sealed "
                                  f"here (generation {seg.generation})")
        damage: list[Damage] = []
        out = bytearray()
        spans: list[tuple[int, int]] = []
        for rec in self.log.scan((number, 0), on_damage=damage.append, verify=True,
                                 end=(number + 1, 0)):
            h = rec.header
            if h.type != RecordType.PUT:
                continue
            cur = self.index.get(rec.key[16:])
            if cur is not None and (cur[0], cur[1]) == rec.position:
                out += DIR_ENTRY.pack(rec.key[16:], rec.position[1], h.total_len, h.body_xxh3)
                spans.append((rec.position[1] + h.payload_offset, h.payload_len))
        if damage:
            raise DataCorrupt(f"partition {self.partition_id} segment {number}: "
                              f"{damage[0].reason} (not encoded)")
        # a wholly freed segment becomes its skeleton (every payload byte goes), so that is
        # what freeing it gives back in the end (whole pages only, until it is whole)
        return seg.size, bytes(out), freeable_bytes(spans)

    def ec_read(self, number: int, offset: int, length: int) -> bytes:
        seg = self.log.segment(number)
        data: bytes = seg.file.pread(length, offset)
        if len(data) != length:
            raise DataCorrupt(f"short read of segment {number} at {offset}")
        return data

    def ec_missing(self, uuids: list[bytes]) -> list[bytes]:
        """The blob uuids (16 bytes) among ``uuids`` this replica has neither the PUT of nor
        a tombstone for (a peer still needs them)."""
        out = []
        for u in uuids:
            cur = self.index.get(bytes(u))
            if cur is None or not (cur[6] & 0x01 or cur[6] & 0x02):
                out.append(bytes(u))
        return out

    def ec_apply(self, key: bytes, props: bytes) -> Position:
        """Append an EC_SEGMENT record (the coordinator, or replication bringing a peer's)
        unless this replica has it; returns where the log must be durable to."""
        rec = EcRecord.from_record(key, props)  # a bad one is refused before it is logged
        with self.lock:
            if rec.key in self.ec.records:
                return self.log.end
            self._check_writable(64 + len(key) + len(props), False)
            pos, h = self._append(RecordType.EC_SEGMENT, key, 0, BlobState(0, False, False, 0),
                                  self.clock.now_ms(), 0, [props], (len(props), 0, 0),
                                  body_checksum(key, props))
            return (pos[0], pos[1] + h.total_len)

    def ec_records(self) -> list[EcRecord]:
        """Every EC_SEGMENT record here, replaced ones too (``ecstate.current`` filters)."""
        with self.ec.lock:
            return list(self.ec.records.values())

    def ec_free_pass(self, datacenter: str, usable: Collection[bytes] | None = None
                     ) -> list[int]:
        """Move freed segments off replaced (re-encoded) records (``EcState.remap``), free
        the payload bytes of sealed segments encoded in ``datacenter`` (in the EC_SEGMENT
        records ``usable`` names, when given: ``EcState.free_pass``), and drop from the index
        the PUTs whose payloads went with their dead blobs."""
        with self.lock:  # no append folds a record while the index is read
            now = self.clock.now_ms()
            gone = self.ec.remap(usable, lambda u: self._ec_dead(u, now))
            freed, more = self.ec.free_pass(self.log, self.index, datacenter, usable,
                                            lambda u: self._ec_dead(u, now))
            self._ec_drop_gone(gone + more)
        self.ec_skeletonize()
        return freed

    def ec_skeletonize(self) -> int:
        """Rewrite each wholly freed segment as its skeleton (``ambry.storage.skeleton``:
        every byte but its freed payloads, read back as the punched segment), giving back
        the header and tail pages hole punching keeps; returns segments rewritten."""
        done = 0
        sealed = {s.number: s for s in self.log.segments[:-1]}
        for number, fs in sorted(self.ec.freed.items()):
            seg = sealed.get(number)
            if not fs.complete or seg is None or seg.generation != fs.generation or \
                    isinstance(seg.file, SkeletonFile):
                continue
            damage: list[Damage] = []
            recs: list[tuple[int, int, int | None]] = []
            for rec in self.log.scan((number, 0), on_damage=damage.append, verify=False,
                                     end=(number + 1, 0)):
                h, off = rec.header, rec.position[1]
                recs.append((off, h.total_len, h.payload_offset
                             if h.type == RecordType.PUT and off in fs.entries else None))
            if damage:
                log.warning("partition %d: segment %d not rewritten as a skeleton: %s",
                            self.partition_id, number, damage[0].reason)
                continue
            path = os.path.join(self.log.dir, seg.name)
            write_skeleton(self.disk, path, number, seg.generation, seg.size, seg.file,
                           extents_of(seg.size, recs))
            new = Segment(number, seg.generation, open_segment(self.disk, path), seg.size,
                          seg.size)
            with self.lock:  # readers holding the old file keep reading its (same) bytes
                self.log.segments[self.log.segments.index(seg)] = new
            done += 1
            log.info("partition %d: freed segment %d rewritten as its skeleton",
                     self.partition_id, number)
        return done

    def _ec_dead(self, uuid: bytes, now_ms: int) -> bool:
        e = self.index.get(uuid)
        return e is not None and is_dead(self.config.compaction_retention_s, e, e[3] * 1000,
                                         now_ms)

    def _ec_drop_gone(self, gone: list[tuple[bytes, Position]]) -> int:
        """As compaction drops a PUT: the index entry stops pointing at a record whose payload
        is gone (under the replica's lock). Idempotent: a restart runs it again for the maps'
        GONE records, in case the index snapshot predates them."""
        dropped = 0
        for uuid, pos in gone:
            e = self.index.get(uuid)
            if e is None or (e[0], e[1]) != pos or not e[6] & F_HAS_PUT:
                continue
            key = bytes(self.log.segment(pos[0]).file.pread(32, pos[1] + RECORD_HEADER_SIZE))
            self.index.put(uuid, 0, 0, 0, e[3], e[4], e[5], e[6] & ~F_HAS_PUT)
            if key[16:] == uuid:
                self.usage.change(key, e, self.index.get(uuid))
            dropped += 1
        return dropped

    def _after_replay(self) -> None:
        self.ec_settle_gone()

    def ec_settle_gone(self) -> int:
        """On open, after recovery: the GONE records of the freed maps leave the index."""
        gone = []
        for pos in self.ec.gone_positions():
            try:
                key = self.log.segment(pos[0]).file.pread(32, pos[1] + RECORD_HEADER_SIZE)
            except (DataCorrupt, OSError):
                continue
            gone.append((bytes(key[16:]), pos))
        with self.lock:
            return self._ec_drop_gone(gone)

    def ec_live(self, uuids: list[bytes]) -> list[bytes]:
        """The blob uuids among ``uuids`` this replica does not hold dead (deleted or expired
        longer than compaction's retention ago): the coordinator re-encodes a segment without
        a blob only when every replica of its datacenter holds it dead."""
        now = self.clock.now_ms()
        with self.lock:
            return [bytes(u) for u in uuids if not self._ec_dead(bytes(u), now)]

    def ec_recode_plan(self, key: bytes) -> tuple[bytes, list[bytes]]:
        """For the EC_SEGMENT record ``key``: (the directory entries of its blobs that are
        alive here, the uuids of those dead here). A blob this index does not know stays."""
        with self.ec.lock:
            rec = self.ec.records.get(key)
        if rec is None:
            raise InvalidArgument("no such EC_SEGMENT record here")
        now = self.clock.now_ms()
        live = bytearray()
        dead: list[bytes] = []
        with self.lock:
            for e in rec.entries():
                if self._ec_dead(e[0], now):
                    dead.append(e[0])
                else:
                    live += DIR_ENTRY.pack(*e)
        return bytes(live), dead

    def ec_freed_segments(self) -> frozenset[int]:
        """Local segments whose payload bytes were freed (never encoded again from here)."""
        return self.ec.frozen_segments

    def ec_status(self) -> dict[str, Any]:
        return {**self.ec.status(), **self.ec_disk()}

    def ec_disk(self) -> dict[str, int]:
        """This replica's freed segments on disk: their length (``freed_segment_bytes``) and
        the bytes they still allocate (``freed_allocated_bytes``: record headers, keys,
        properties and every 4 KiB block a payload shares with them). Their difference is
        what hole punching gave back (metrics, ``ambry admin ec-status``)."""
        logical = allocated = 0
        for seg in list(self.log.segments[:-1]):
            if seg.number not in self.ec.freed:
                continue
            try:
                blocks = os.stat(os.path.join(self.log.dir, seg.name)).st_blocks
            except OSError:
                continue
            logical += seg.size
            allocated += blocks * 512
        return {"freed_segment_bytes": logical, "freed_allocated_bytes": allocated}

    def set_fragment_reader(self, reader: FragmentReader) -> None:
        self.ec.reader = reader
