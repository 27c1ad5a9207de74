"""Compaction: give back the disk of blobs deleted or expired longer ago than the retention.

Owns choosing what to keep in a sealed segment and swapping the rewritten segment in
crash-safely. Works on any replica through ``api.CompactionHooks`` (its log, index, name view
and the hooks that hold records still); it never imports ``replica``. The active (last) segment is never compacted. Records are copied byte for byte
(same sequence numbers, same checksums); only their offsets change.

What is dropped from a sealed segment:
  * a PUT whose blob is dead: deleted, or expired and not made permanent, longer ago than
    ``compaction_retention_s``; also a PUT the index does not point to (a stray duplicate);
  * a NAME_PUT / NAME_DELETE superseded by a later version of the same name.
Everything else is kept, notably DELETE tombstones (small), so that a PUT arriving late by
replication from a lagging peer still finds the blob deleted.

Crash safety (SeaweedFS-style vacuum with a marker)::

  1. copy kept records to <n>_<gen+1>.log.tmp, fdatasync           (crash: tmp is deleted)
  2. write compaction.marker {segment, old, new} atomically          (commit point)
  3. rename tmp -> <n>_<gen+1>.log, fsync dir; remove <n>_<gen>.log; fsync dir
  4. remove the marker
A restart that finds the marker rolls steps 3-4 forward before anything else opens the log.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from ambry.storage import filenames
from ambry.storage.api import CompactionHooks
from ambry.storage.format import SEGMENT_HEADER_SIZE, RecordType, SegmentHeader
from ambry.storage.indexentry import F_HAS_PUT, is_dead
from ambry.storage.log import Segment
from ambry.storage.names import name_from_record

__all__ = ["CompactionReport", "compact", "roll_forward"]

log = logging.getLogger(__name__)


@dataclass
class CompactionReport:
    segments_compacted: int = 0
    records_dropped: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    aborted: int = 0


def roll_forward(replica: CompactionHooks) -> None:
    """Finish a swap that a crash interrupted (called on open, before the log is read)."""
    d = replica.disk
    marker = os.path.join(replica.dir, filenames.COMPACTION_MARKER)
    if not d.exists(marker):
        return
    m = json.loads(d.read_file(marker))
    n, old, new = int(m["segment"]), int(m["old"]), int(m["new"])
    final = os.path.join(replica.dir, filenames.segment_name(n, new))
    tmp = os.path.join(replica.dir, filenames.segment_tmp_name(n, new))
    oldp = os.path.join(replica.dir, filenames.segment_name(n, old))
    if not d.exists(final):
        d.rename(tmp, final)
        d.fsync_dir(replica.dir)
    if d.exists(oldp):
        d.remove(oldp)
        d.fsync_dir(replica.dir)
    d.remove(marker)
    d.fsync_dir(replica.dir)
    log.info("replica %s: rolled forward compaction of segment %d to generation %d",
             replica.dir, n, new)


def _dead(replica: CompactionHooks, entry: tuple[int, ...], expiry_ms: int, now_ms: int
          ) -> bool:
    return is_dead(replica.config.compaction_retention_s, entry, expiry_ms, now_ms)


def _plan(replica: CompactionHooks, seg: Segment, now_ms: int
          ) -> tuple[list[tuple[int, int, bytes]], list[bytes], int]:
    """(kept records as (offset, length, uuid-or-empty), blob ids (32 bytes) whose PUT is
    dropped, records dropped)."""
    keep: list[tuple[int, int, bytes]] = []
    dropped_puts: list[bytes] = []
    dropped = 0
    for rec in replica.log.scan((seg.number, SEGMENT_HEADER_SIZE), verify=False,
                                end=(seg.number + 1, 0)):
        h = rec.header
        off = rec.position[1]
        if h.type == RecordType.PUT:
            uuid = rec.key[16:]
            entry = replica.index.get(uuid)
            if entry is None or not entry[6] & F_HAS_PUT or (entry[0], entry[1]) != rec.position:
                dropped += 1
                continue
            if _dead(replica, entry, h.expiry_ms, now_ms):
                dropped_puts.append(rec.key)
                dropped += 1
                continue
            keep.append((off, h.total_len, uuid))
        elif h.type.is_name:
            cur = name_from_record(rec.key, h.time_ms, h.type == RecordType.NAME_DELETE,
                                   replica.read_props(rec.position, h))
            assert replica.names is not None
            now = replica.names.get(cur.account_id, cur.container_id, cur.name)
            if now is not None and now.version > cur.version:
                dropped += 1
                continue
            keep.append((off, h.total_len, b""))
        else:
            keep.append((off, h.total_len, b""))
    return keep, dropped_puts, dropped


def compact(replica: CompactionHooks, now_ms: int | None = None,
            min_reclaim_ratio: float = 0.1) -> CompactionReport:
    """Compact every sealed segment where at least ``min_reclaim_ratio`` of it is reclaimable.
    Blocking (run it on an I/O thread); appends and reads go on meanwhile."""

    now = replica.clock.now_ms() if now_ms is None else now_ms
    # one compaction at a time, no usage pass reading the log meanwhile, and no snapshot
    # during a swap
    with replica.records_moving():
        return _compact_locked(replica, now, min_reclaim_ratio)


def _compact_locked(replica: CompactionHooks, now: int, min_reclaim_ratio: float
                    ) -> CompactionReport:
    report = CompactionReport()
    d = replica.disk
    for seg in list(replica.log.segments[:-1]):
        if seg.number in replica.ec.frozen_segments:
            continue  # payloads freed (erasure-coded): the warm tier re-encodes and punches
            # what dies there (ambry.warm.recode, EcState.free_pass)
        keep, dropped_puts, dropped = _plan(replica, seg, now)
        if not dropped:
            continue
        kept_bytes = SEGMENT_HEADER_SIZE + sum(length for _, length, _ in keep)
        if seg.size - kept_bytes < seg.size * min_reclaim_ratio:
            continue
        new_gen = seg.generation + 1
        tmp = os.path.join(replica.dir, filenames.segment_tmp_name(seg.number, new_gen))
        out = d.open(tmp, create=True)
        out.truncate(0)
        out.pwrite(SegmentHeader(seg.number, new_gen).encode(), 0)
        moved: dict[bytes, int] = {}
        woff = SEGMENT_HEADER_SIZE
        for off, length, uuid in keep:
            # copy in bounded pieces: records can be large
            copied = 0
            while copied < length:
                piece = seg.file.pread(min(4 << 20, length - copied), off + copied)
                out.pwrite(piece, woff + copied)
                copied += len(piece)
            if uuid:
                moved[uuid] = woff
            woff += length
        out.fdatasync()
        out.close()
        with replica.lock:
            # Re-check under the lock: a blob we planned to drop may have come back to life
            # (undelete) since the plan; then this segment waits for the next round.
            still_dead = all(
                (e := replica.index.get(k[16:])) is not None
                and _dead(replica, e, e[3] * 1000, now)
                for k in dropped_puts)
            if not still_dead:
                d.remove(tmp)
                report.aborted += 1
                continue
            marker = os.path.join(replica.dir, filenames.COMPACTION_MARKER)
            d.write_file_atomic(marker, json.dumps(
                {"segment": seg.number, "old": seg.generation, "new": new_gen}).encode())
            final = os.path.join(replica.dir, filenames.segment_name(seg.number, new_gen))
            d.rename(tmp, final)
            d.fsync_dir(replica.dir)
            new_seg = Segment(seg.number, new_gen, d.open(final), woff, woff)
            i = replica.log.segments.index(seg)
            replica.log.segments[i] = new_seg
            # a move within a segment changes no blob's usage (usage passes, which depend on
            # positions, hold the snapshot lock as compaction does)
            assert not replica.usage.pass_running
            for uuid, new_off in moved.items():
                e = replica.index.get(uuid)
                assert e is not None
                replica.index.put(uuid, e[0], new_off, e[2], e[3], e[4], e[5], e[6])
            for key in dropped_puts:
                e = replica.index.get(key[16:])
                assert e is not None
                replica.index.put(key[16:], 0, 0, 0, e[3], e[4], e[5], e[6] & ~F_HAS_PUT)
                replica.usage.change(key, e, replica.index.get(key[16:]))
            d.remove(os.path.join(replica.dir, filenames.segment_name(seg.number,
                                                                      seg.generation)))
            d.fsync_dir(replica.dir)
            d.remove(marker)
            d.fsync_dir(replica.dir)
            replica.sample_segment_starts()
        report.segments_compacted += 1
        report.records_dropped += dropped
        report.bytes_before += seg.size
        report.bytes_after += woff
        log.info("replica %s: compacted segment %d: %d -> %d bytes, %d records dropped",
                 replica.dir, seg.number, seg.size, woff, dropped)
    if report.segments_compacted:
        replica.write_snapshot()
    return report
