"""What a replica offers the warm tier (``api.EcStore``): the calls the encoding coordinator
and the freeing pass make, and appending / folding EC_SEGMENT records.

A mixin of ``replica.Replica`` over ``replicacore.ReplicaCore``'s log, index and
``ecstate.EcState``; every method blocks (an I/O thread). Does not own the state it changes
(``ecstate``) nor the job that calls it (the node's warm-tier component).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from ambry.common.blobstate import BlobState
from ambry.common.errors import DataCorrupt, InvalidArgument
from ambry.ec.gain import punchable_bytes
from ambry.storage.ecstate import DIR_ENTRY, EcRecord, EcState, FragmentReader
from ambry.storage.format import RecordType, body_checksum
from ambry.storage.log import Damage, Log, Position

__all__ = ["EcReplicaMixin", "SealedSegment"]

SealedSegment = tuple[int, int, int, float]  # number, generation, bytes, sealed at (mtime s)


class EcReplicaMixin:
    partition_id: int
    log: Log
    index: Any
    lock: threading.RLock
    ec: EcState
    clock: Any

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
        each, the bytes freeing it here would give back: whole pages inside those records'
        payloads, ``ambry.ec.gain.punchable_bytes``). Raises DataCorrupt on any damage: a
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
        return seg.size, bytes(out), punchable_bytes(spans)

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
        with self.ec.lock:
            return list(self.ec.records.values())

    def ec_free_pass(self, datacenter: str, usable: Collection[bytes] | None = None
                     ) -> list[int]:
        """Free the payload bytes of sealed segments encoded in ``datacenter`` (in the
        EC_SEGMENT records ``usable`` names, when given: ``EcState.free_pass``)."""
        with self.lock:  # no append folds a record while the index is read
            return self.ec.free_pass(self.log, self.index, datacenter, usable)

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
