"""Read-only inspection of replica data: dump a segment, verify a replica or a node.

Owns what ``ambry admin dump-log`` and ``ambry admin verify`` report. Never writes: segments
are opened read-only and damage is reported, not repaired, so it is safe to run beside a live
node (records appended meanwhile may show up as an incomplete tail).

Erasure-coded segments (docs/erasure-coding.md): a replica that freed a sealed segment keeps
a ``<segment>.ecfree`` map of the PUT records whose payload bytes it punched out (they live in
fragments now). Verify counts those records as ``freed`` instead of reporting their
(zeroed) payloads as damage, and checks every other record of the segment as usual; the
dump shows which records were freed and what an EC_SEGMENT record says.
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
from ambry.storage.ecstate import GONE, EcRecord, EcState, key_text_of
from ambry.storage.format import (
    RECORD_HEADER_SIZE,
    RecordType,
    SegmentHeader,
    decode_record_header,
    split_name_key,
)
from ambry.storage.indexentry import fold_blob_record, put_location, state_of
from ambry.storage.log import Damage, Log
from ambry.storage.skeleton import open_segment
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
    freed = _freed_offsets(d or ".").get(parsed[0], (None, {}))[1] if parsed else {}
    f = open_segment(disk, path, readonly=True)
    try:
        hdr = SegmentHeader.decode(f.pread(32, 0))
        yield {"segment": hdr.number, "generation": hdr.generation, "file": name,
               "size": f.size(), "name_ok": parsed == (hdr.number, hdr.generation)}
    finally:
        f.close()
    lg = Log(d or ".", disk, 1 << 32)
    lg.segments = []
    from ambry.storage.log import Segment

    f = open_segment(disk, path, readonly=True)
    seg = Segment(hdr.number, hdr.generation, f, f.size(), f.size())
    lg.segments = [seg]
    damages: list[Damage] = []
    buf = bytearray(1 << 20)
    for rec in lg.scan((hdr.number, 0), on_damage=damages.append, verify=not freed):
        while damages:
            yield _damage_dict(damages.pop(0))
        h = rec.header
        row = {"offset": rec.position[1], "type": h.type.name, "seq": h.sequence,
               "life_version": h.life_version, "deleted": h.deleted, "permanent": h.permanent,
               "key": _key_text(h.type, rec.key), "record_len": h.total_len,
               "payload_len": h.payload_len, "time_ms": h.time_ms, "expiry_ms": h.expiry_ms,
               "checksum": "ok"}
        if rec.position[1] in freed:  # payload punched out: it lives in fragments
            # ("gone": its blob was dead and its encoded segment re-encoded without it)
            row["checksum"] = "gone" if freed[rec.position[1]] else "freed"
        elif freed and not lg.verify_body(seg, rec.position[1], h, buf):
            yield _damage_dict(Damage("corrupt", hdr.number, hdr.generation, rec.position[1],
                                      h.total_len, "record body checksum mismatch"))
            continue
        if h.type == RecordType.EC_SEGMENT:
            row |= _ec_segment_text(rec.key, lg, rec.position, h)
        yield row
    for dmg in damages:
        yield _damage_dict(dmg)
    f.close()


def _ec_segment_text(key: bytes, lg: Log, pos: tuple[int, int], h: Any) -> dict[str, Any]:
    """What an EC_SEGMENT record says (its props hold the record)."""
    try:
        props = lg.read((pos[0], pos[1] + h.props_offset), h.props_len)
        r = EcRecord.from_record(key, props)
    except (AmbryError, AttributeError) as e:
        return {"key": f"<EC_SEGMENT unreadable: {e}>"}
    return {"key": f"ec segment {r.segment} gen {r.generation} of {r.source_hex}",
            "ec": {"datacenter": r.datacenter, "k": r.k, "m": r.m, "code": r.code,
                   "stripe_bytes": r.stripe_bytes, "bytes": r.original_bytes,
                   "blobs": r.blobs, "placement": list(r.placement),
                   **({"replaces": key_text_of(r.replaces)} if r.replaces else {})}}


def _freed_offsets(replica_dir: str) -> dict[int, tuple[int, dict[int, bool]]]:
    """segment -> (generation, {offset of a PUT record whose payload was freed: whether it
    is GONE}), from the replica's ``.ecfree`` maps (each checked against its own
    checksum)."""
    st = EcState(replica_dir, -1)
    try:
        st.load()
    except (DataCorrupt, OSError):
        return {}
    return {n: (f.generation, {off: r == GONE for off, (r, _eo) in f.entries.items()})
            for n, f in st.freed.items()}


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
    freed_segments: int = 0  # sealed segments whose payloads live in fragments (.ecfree)
    freed_records: int = 0  # PUT records among them whose payload bytes were punched out
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
    try:
        ecs = EcState(path, -1)
        ecs.load()
        freed = {n: (f.generation, set(f.entries)) for n, f in ecs.freed.items()}
    except (DataCorrupt, OSError) as e:
        rep.error = f"erasure-coding state (.ecfree / ec/): {e}"
        freed = {}
    rep.freed_segments = len(freed)
    for rec in _scan_with_freed(lg, freed, damages):
        if rec.position[1] in freed.get(rec.position[0], (0, set()))[1]:
            rep.freed_records += 1
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


def _scan_with_freed(lg: Log, freed: dict[int, tuple[int, set[int]]],
                     damages: list[Damage]) -> Iterator[Any]:
    """Every record of the log, verified, except that in a freed segment the records whose
    payloads were punched out are not checked against their body checksum (their bytes are
    in fragments, which ``fragfile.verify`` and the node's scrub check)."""
    buf = bytearray(1 << 20)
    start = 0
    for seg in list(lg.segments):
        if seg.number not in freed:
            continue
        if freed[seg.number][0] != seg.generation:
            damages.append(Damage("corrupt", seg.number, seg.generation, 0, 0,
                                  f".ecfree map of generation {freed[seg.number][0]} beside "
                                  f"segment generation {seg.generation}"))
            continue
        yield from lg.scan((start, 0), on_damage=damages.append, verify=True,
                           end=(seg.number, 0))
        for rec in lg.scan((seg.number, 0), on_damage=damages.append, verify=False,
                           end=(seg.number + 1, 0)):
            off = rec.position[1]
            if off not in freed[seg.number][1] and not lg.verify_body(seg, off, rec.header, buf):
                damages.append(Damage("corrupt", seg.number, seg.generation, off,
                                      rec.header.total_len, "record body checksum mismatch"))
                continue
            yield rec
        start = seg.number + 1
    yield from lg.scan((start, 0), on_damage=damages.append, verify=True)


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
