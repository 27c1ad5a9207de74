"""Read-only inspection of replica data: dump a segment, verify a replica or a node.

Owns what ``ambry admin dump-log`` and ``ambry admin verify`` report. Never writes: segments
are opened read-only and damage is reported, not repaired, so it is safe to run beside a live
node (records appended meanwhile may show up as an incomplete tail).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ambry.common.blobid import BlobId
from ambry.common.errors import AmbryError, DataCorrupt
from ambry.native import BlobIndex
from ambry.storage import filenames
from ambry.storage.disk import Disk, OsDisk
from ambry.storage.format import (
    RECORD_HEADER_SIZE,
    RecordType,
    SegmentHeader,
    decode_record_header,
    split_name_key,
)
from ambry.storage.indexentry import fold_blob_record, put_location, state_of
from ambry.storage.log import Damage, Log
from ambry.storage.snapshot import read_snapshot

__all__ = ["ReplicaReport", "dump_segment", "verify_path", "verify_replica"]


def _key_text(rtype: RecordType, key: bytes) -> str:
    if rtype.is_name:
        try:
            a, c, name = split_name_key(key)
            return f"name {a}/{c}/{name}"
        except (UnicodeDecodeError, ValueError):
            return f"name <undecodable {key.hex()}>"
    try:
        return BlobId.from_bytes(key).to_str()
    except AmbryError:
        return f"<bad id {key.hex()}>"


def dump_segment(path: str, disk: Disk | None = None) -> Iterator[dict[str, Any]]:
    """One dict per record (or per damaged range) of a segment file, in file order."""
    disk = disk or OsDisk()
    d, name = os.path.split(path)
    parsed = filenames.parse_segment_name(name)
    f = disk.open(path, readonly=True)
    try:
        hdr = SegmentHeader.decode(f.pread(32, 0))
        yield {"segment": hdr.number, "generation": hdr.generation, "file": name,
               "size": f.size(), "name_ok": parsed == (hdr.number, hdr.generation)}
    finally:
        f.close()
    lg = Log(d or ".", disk, 1 << 32)
    lg.segments = []
    from ambry.storage.log import Segment

    f = disk.open(path, readonly=True)
    seg = Segment(hdr.number, hdr.generation, f, f.size(), f.size())
    lg.segments = [seg]
    damages: list[Damage] = []
    for rec in lg.scan((hdr.number, 0), on_damage=damages.append, verify=True):
        while damages:
            yield _damage_dict(damages.pop(0))
        h = rec.header
        yield {"offset": rec.position[1], "type": h.type.name, "seq": h.sequence,
               "life_version": h.life_version, "deleted": h.deleted, "permanent": h.permanent,
               "key": _key_text(h.type, rec.key), "record_len": h.total_len,
               "payload_len": h.payload_len, "time_ms": h.time_ms, "expiry_ms": h.expiry_ms,
               "checksum": "ok"}
    for dmg in damages:
        yield _damage_dict(dmg)
    f.close()


def _damage_dict(d: Damage) -> dict[str, Any]:
    return {"offset": d.offset, "type": "DAMAGE", "kind": d.kind, "length": d.length,
            "reason": d.reason}


@dataclass
class ReplicaReport:
    path: str
    segments: int = 0
    log_bytes: int = 0
    records: dict[str, int] = field(default_factory=dict)
    blobs: int = 0
    live_blobs: int = 0
    deleted_blobs: int = 0
    damage: list[dict[str, Any]] = field(default_factory=list)
    snapshot: str = "absent"  # absent | ok | stale | corrupt
    index_mismatches: int = 0
    quarantine_reports: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        corrupt = [d for d in self.damage if d["kind"] == "corrupt"]
        return not corrupt and not self.index_mismatches and not self.error


def verify_replica(path: str, disk: Disk | None = None) -> ReplicaReport:
    """Re-read every record and checksum; rebuild the index from the log and compare it with
    the snapshot (entries the snapshot covers must agree)."""
    disk = disk or OsDisk()
    rep = ReplicaReport(path)
    lg = Log(path, disk, 1 << 32)
    try:
        lg.open_existing(readonly=True)
    except (AmbryError, OSError) as e:
        rep.error = str(e)
        return rep
    rep.segments = len(lg.segments)
    rep.log_bytes = lg.total_bytes()
    rebuilt = BlobIndex()
    damages: list[Damage] = list(lg.pending_damage)
    for rec in lg.scan((0, 0), on_damage=damages.append, verify=True):
        t = rec.header.type.name
        rep.records[t] = rep.records.get(t, 0) + 1
        if rec.header.type.is_blob:
            fold_blob_record(rebuilt, rec.position, rec.header, rec.key)
    rep.damage = [_damage_dict(d) | {"segment": d.segment} for d in damages]
    rep.blobs = len(rebuilt)
    for _key, entry in rebuilt.items():  # noqa: PERF102 - the index has no values()
        st = state_of(entry)
        if st is not None and st.deleted:
            rep.deleted_blobs += 1
        elif put_location(entry) is not None:
            rep.live_blobs += 1
    qlog = os.path.join(path, filenames.QUARANTINE_LOG)
    if disk.exists(qlog):
        rep.quarantine_reports = len(disk.read_file(qlog).splitlines())
    if disk.exists(os.path.join(path, filenames.SNAPSHOT)):
        snap = BlobIndex()
        try:
            meta = read_snapshot(disk, path, snap.load)
            segs = tuple((s.number, s.generation) for s in lg.segments)
            if meta.segments != segs[:len(meta.segments)]:
                rep.snapshot = "stale"
            else:
                rep.snapshot = "ok"
                for key, entry in snap.items():
                    if rebuilt.get(key) is None or put_location(entry) is not None and \
                            put_location(entry) != put_location(rebuilt.get(key)):
                        rep.index_mismatches += 1
        except DataCorrupt:
            rep.snapshot = "corrupt"
    for s in lg.segments:
        s.file.close()
    return rep


#: How deep :func:`verify_path` looks for node directories below the path it is given
#: (``<data root>/<node>/p<N>`` is one level; a deployment may group nodes one level more).
MAX_VERIFY_DEPTH = 3


def verify_path(path: str, disk: Disk | None = None) -> list[ReplicaReport]:
    """``path`` is a replica directory, a node data directory holding p<N> replicas, or a
    directory above node directories (the data root of ``ambry cluster up --data-dir``, one
    node directory per node): every replica found, node by node, in path order."""
    return list(_verify_below(path, disk or OsDisk(), MAX_VERIFY_DEPTH))


def _verify_below(path: str, disk: Disk, depth: int) -> Iterator[ReplicaReport]:
    try:
        names = sorted(disk.listdir(path))
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return  # a file beside the node directories (the cluster's state file, a log, ...)
    if any(filenames.parse_segment_name(n) for n in names):
        yield verify_replica(path, disk)
        return
    replicas = sorted((pid, n) for n in names
                      if (pid := filenames.parse_replica_dir_name(n)) is not None)
    if replicas:  # a node's data directory: its replicas, and nothing below them
        for _, n in replicas:
            yield verify_replica(os.path.join(path, n), disk)
        return
    if depth > 0:
        for n in names:
            if not n.startswith("."):
                yield from _verify_below(os.path.join(path, n), disk, depth - 1)


def read_record_header_at(path: str, offset: int) -> dict[str, Any]:
    f = OsDisk().open(path, readonly=True)
    try:
        h = decode_record_header(f.pread(RECORD_HEADER_SIZE, offset))
        return {"type": h.type.name, "seq": h.sequence, "len": h.total_len}
    finally:
        f.close()
