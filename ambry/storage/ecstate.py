"""A replica's side of the warm tier (docs/erasure-coding.md): the EC_SEGMENT records it
knows, which of its own sealed segments had their payload bytes freed, and reading a blob
whose payload now lives only in fragments.

Replicas of a partition do not hold byte-identical logs (records arrive in different orders),
so an EC_SEGMENT record names the segment of the **encoding** replica (its incarnation, the
segment number and generation) and carries a directory of the PUT records in it (blob uuid,
offset, record length, body checksum). A replica frees a sealed segment of its own once every
PUT record its index points to there is in an encoded segment of its own datacenter with the
same body checksum: it writes ``<segment>.ecfree`` (where each record's body is now: which
EC_SEGMENT, at which offset), then punches the payload bytes out of the segment file
(``fallocate(PUNCH_HOLE)``: the file keeps its length and every offset, so the index, snapshots,
recovery's scan and the replication feed, which read record headers, keys and props, work
unchanged). Record headers, keys, properties and user metadata stay on local disk; payloads
are read through the fragments (:class:`EncodedBlobRead`), checked against the record's own
body checksum. Freed segments are never compacted or scrubbed here (their payload bytes are
zeros; the fragments' own checksums guard them).

EC_SEGMENT records are also kept as small files under ``ec/`` (written when the record is
folded), because a restart replays only the log after the last index snapshot.

Does not own talking to fragment nodes (an injected :class:`FragmentReader`), encoding (the
warm-tier component) or the fragment file format (``ambry.ec.fragfile``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
import xxhash

from ambry.common.errors import BlobNotFound, DataCorrupt, Unavailable
from ambry.storage import filenames
from ambry.storage.blobread import BlobRead
from ambry.storage.disk import Disk, OsDisk
from ambry.storage.format import RECORD_HEADER_SIZE, RecordType
from ambry.storage.log import Damage, Log, Position, ScannedRecord

__all__ = ["DIR_ENTRY", "GONE", "EcRecord", "EcState", "EncodedBlobRead", "FragmentReader",
           "current", "ec_key", "key_text", "key_text_of", "punch_hole", "successor_key"]

log = logging.getLogger(__name__)

#: one directory entry of an EC_SEGMENT record: blob uuid, record offset in the encoded
#: segment, record length, body checksum
DIR_ENTRY = struct.Struct("<16sIIQ")
_KEY = struct.Struct("<2s16sII")
_U64 = struct.Struct("<Q")


def ec_key(source: bytes, segment: int, generation: int) -> bytes:
    """The record key of an EC_SEGMENT record (26 bytes)."""
    return _KEY.pack(b"EC", source, segment, generation)


def successor_key(rec: EcRecord) -> tuple[bytes, int, int]:
    """(source, segment, generation) of the record that re-encodes ``rec``: the next
    generation of the same lineage. A first encoding's successor takes a source derived from
    the encoding replica's incarnation, so its key (and its fragment files' names) never
    meet those of a segment that replica encodes itself; a successor's successor keeps it.
    Deterministic: a coordinator that dies mid-way writes the same fragment files again."""
    source = rec.source if rec.replaces else \
        xxhash.xxh3_128_digest(b"ambry-ec-recode" + rec.source)
    return source, rec.segment, rec.generation + 1


@dataclass(frozen=True)
class EcRecord:
    """What an EC_SEGMENT record says: segment ``segment``/``generation`` of the replica
    whose incarnation is ``source`` was encoded in ``datacenter`` into k + m fragments on
    ``placement`` (fragment i on placement[i])."""

    source: bytes  # 16 bytes
    segment: int
    generation: int
    datacenter: str
    k: int
    m: int
    code: int
    stripe_bytes: int
    original_bytes: int
    placement: tuple[str, ...]
    tables_xxh3: int  # of the k + m per-stripe checksum tables, in fragment order
    directory: bytes = field(repr=False)  # DIR_ENTRY * n
    #: the key of the record this one replaces (compaction of an encoded segment re-encodes
    #: its live records into a new generation: ``ambry.warm.recode``); b"" for a first
    #: encoding
    replaces: bytes = b""

    @property
    def key(self) -> bytes:
        return ec_key(self.source, self.segment, self.generation)

    @property
    def source_hex(self) -> str:
        return self.source.hex()

    def entries(self) -> Iterator[tuple[bytes, int, int, int]]:
        return DIR_ENTRY.iter_unpack(self.directory)

    @property
    def blobs(self) -> int:
        return len(self.directory) // DIR_ENTRY.size

    def to_props(self) -> bytes:
        m: dict[str, Any] = {"v": 1, "dc": self.datacenter, "k": self.k, "m": self.m,
                             "code": self.code, "stripe": self.stripe_bytes,
                             "len": self.original_bytes, "place": list(self.placement),
                             "tables": self.tables_xxh3, "dir": self.directory}
        if self.replaces:
            # version 2: a node that does not know replacement refuses the record rather
            # than keep freeing against (and reading through) fragments that will be dropped
            m["v"], m["replaces"] = 2, self.replaces
        props: bytes = msgpack.packb(m)
        return props

    @classmethod
    def from_record(cls, key: bytes, props: bytes) -> EcRecord:
        try:
            magic, source, seg, gen = _KEY.unpack(key)
            m = msgpack.unpackb(props)
            if magic != b"EC" or m.get("v") not in (1, 2) or len(m["dir"]) % DIR_ENTRY.size:
                raise ValueError("not a version 1 or 2 EC_SEGMENT record")
            replaces = bytes(m["replaces"]) if m["v"] == 2 else b""
            if m["v"] == 2 and len(replaces) != _KEY.size:
                raise ValueError("a version 2 record names the record it replaces")
            return cls(source, seg, gen, str(m["dc"]), int(m["k"]), int(m["m"]),
                       int(m["code"]), int(m["stripe"]), int(m["len"]),
                       tuple(str(x) for x in m["place"]), int(m["tables"]), bytes(m["dir"]),
                       replaces)
        except (ValueError, KeyError, TypeError, struct.error,
                msgpack.UnpackException) as e:
            raise DataCorrupt(f"bad EC_SEGMENT record: {e}") from None


def current(records: Iterable[EcRecord]) -> list[EcRecord]:
    """The records no other record in ``records`` replaces (reads, freeing, repair and the
    encode job go by these; a replaced record's fragments are on their way out)."""
    recs = list(records)
    replaced = {r.replaces for r in recs if r.replaces}
    return [r for r in recs if r.key not in replaced]


class FragmentReader(Protocol):
    """Reads bytes of an encoded segment through its fragments (the node's warm-tier
    component implements it). Called on an I/O thread; blocks until done or raises
    ``Unavailable`` / ``DataCorrupt``."""

    def read_encoded(self, partition_id: int, rec: EcRecord, offset: int, length: int,
                     rebuild: bool = False, verified: bool = False,
                     check: Callable[[bytes], bool] | None = None) -> bytes:
        """Segment bytes ``[offset, offset + length)``; ``rebuild``: do not trust the data
        fragments (a previous read failed its check): rebuild every piece from the others,
        or, given ``check``, find the one fragment whose bytes are bad (the result passes
        ``check`` or ``DataCorrupt`` is raised);
        ``verified``: every window is checked by its node against the fragment's block
        checksums (the caller has no checksum of its own for a part of a record)."""


# ------------------------------------------------------------------------- punching holes
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc: Any = None


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free the disk blocks of ``[offset, offset + length)`` of a file, keeping its size
    (reads there return zeros). False where the file system cannot (the bytes then stay:
    reads still go through the fragments, nothing is saved)."""
    global _libc
    if length <= 0:
        return True
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS):
            return False
        raise OSError(err, os.strerror(err))
    return True


# ------------------------------------------------------------------------- the state
#: the ref index of a freed record whose payload is gone (its blob was dead, and either its
#: encoded segment was re-encoded without it or it was never encoded): like a PUT compaction
#: dropped, its index entry no longer points at it
GONE = -1


@dataclass(frozen=True)
class FreedSegment:
    generation: int
    refs: tuple[bytes, ...]  # EC_SEGMENT keys
    #: local record offset -> (index into refs or GONE, record offset in the encoded segment)
    entries: dict[int, tuple[int, int]]
    #: every live PUT of the segment is freed; False: some are not encoded (yet) in this
    #: datacenter (e.g. in the coordinator's active segment), so later passes look again
    complete: bool = True


#: a blob uuid and where its PUT record is in this replica's log
Gone = tuple[bytes, Position]


class EcState:
    """The EC_SEGMENT records and freed segments of one replica (under ``lock``)."""

    def __init__(self, directory: str, partition_id: int, disk: Disk | None = None) -> None:
        self.dir = directory
        # the replica's disk (a simulated one in tests): every file of the state goes through it
        self.disk: Disk = disk if disk is not None else OsDisk()
        self.partition_id = partition_id
        self.records: dict[bytes, EcRecord] = {}
        #: record key -> the key of the record that replaces it (re-encoded without its dead
        #: blobs): nothing is freed against a replaced record, and freed maps move off it
        self.replaced_by: dict[bytes, bytes] = {}
        self.freed: dict[int, FreedSegment] = {}
        self.reader: FragmentReader | None = None  # set by the node's warm-tier component
        self.lock = threading.Lock()
        self.bytes_freed = 0  # this process's punches (metrics)
        self._stuck: set[int] = set()  # segments kept on a replaced record (said once)

    # ---------------------------------------------------------------- persistence
    def load(self) -> None:
        rdir = os.path.join(self.dir, filenames.EC_RECORDS_DIR)
        if self.disk.exists(rdir):
            for name in self.disk.listdir(rdir):
                if name.endswith(".ecseg"):
                    key, props = _read_checked(self.disk, os.path.join(rdir, name))
                    self._remember(EcRecord.from_record(key, props))
        if not self.disk.exists(self.dir):
            return
        for name in self.disk.listdir(self.dir):
            parsed = filenames.parse_ec_freed_name(name)
            if parsed is not None:
                _key, raw = _read_checked(self.disk, os.path.join(self.dir, name))
                m = msgpack.unpackb(raw, strict_map_key=False)
                self.freed[parsed[0]] = FreedSegment(
                    parsed[1], tuple(bytes(x) for x in m["refs"]),
                    {int(off): (int(r), int(eo)) for off, r, eo in m["entries"]},
                    bool(m.get("complete", True)))

    def _remember(self, rec: EcRecord) -> None:
        self.records[rec.key] = rec
        if rec.replaces:
            # one coordinator per partition and datacenter re-encodes, with deterministic
            # keys; should two records ever replace the same one, the smaller key wins
            cur = self.replaced_by.get(rec.replaces)
            if cur is None or rec.key < cur:
                self.replaced_by[rec.replaces] = rec.key

    def fold(self, key: bytes, props: bytes) -> EcRecord:
        """An EC_SEGMENT record is in the log: remember it (kept under ``ec/`` too)."""
        rec = EcRecord.from_record(key, props)
        with self.lock:
            if rec.key in self.records:
                return self.records[rec.key]
        rdir = os.path.join(self.dir, filenames.EC_RECORDS_DIR)
        self.disk.makedirs(rdir)
        _write_checked(self.disk, os.path.join(rdir, filenames.ec_record_name(
            rec.source_hex, rec.segment, rec.generation)), key, props)
        with self.lock:
            self._remember(rec)
        return rec

    def head(self, key: bytes) -> bytes:
        """The newest record of ``key``'s lineage (``key`` itself unless it was replaced)."""
        seen = {key}
        while (nxt := self.replaced_by.get(key)) is not None and nxt not in seen:
            seen.add(nxt)
            key = nxt
        return key

    def current_records(self) -> list[EcRecord]:
        """The records not replaced by another: what reads, freeing and repair go by."""
        with self.lock:
            return [r for k, r in self.records.items() if k not in self.replaced_by]

    def references(self) -> frozenset[bytes]:
        """The records this replica's freed segments read through (a replaced record's
        fragments are dropped only when no replica of its datacenter names it here)."""
        with self.lock:
            return frozenset(k for fs in self.freed.values() for k in fs.refs)

    @property
    def frozen_segments(self) -> frozenset[int]:
        """Local segments whose payload bytes were freed: never compact or scrub them."""
        return frozenset(self.freed)

    def _save(self, number: int, freed: FreedSegment) -> None:
        """The map, durable (temp, fsync, rename): before any byte it covers is punched."""
        m = {"refs": list(freed.refs), "complete": freed.complete,
             "entries": [[off, r, eo] for off, (r, eo) in sorted(freed.entries.items())]}
        _write_checked(self.disk, os.path.join(self.dir, filenames.ec_freed_name(
            number, freed.generation)), b"", msgpack.packb(m))
        with self.lock:
            self.freed[number] = freed

    @staticmethod
    def _pack(generation: int, entries: dict[int, tuple[bytes | None, int]], complete: bool
              ) -> FreedSegment:
        used = sorted({k for k, _ in entries.values() if k is not None})
        remap = {key: i for i, key in enumerate(used)}
        return FreedSegment(generation, tuple(used),
                            {off: (GONE if key is None else remap[key], eo)
                             for off, (key, eo) in entries.items()}, complete)

    # ---------------------------------------------------------------- re-encoded records
    def remap(self, usable: Collection[bytes] | None, dead: Callable[[bytes], bool]
              ) -> list[Gone]:
        """Move freed segments off replaced records, onto the newest record of each lineage
        (once it is in ``usable``: its fragments are all there). A record the new one left
        out (its blob was dead at the coordinator and at every replica of the datacenter)
        becomes GONE; returns those, for the caller to drop from the index as compaction
        drops a PUT. A segment with such a blob that is not ``dead`` here (an undelete raced
        the coordinator's check) stays on the old record, which then keeps its fragments.
        Blocking (an I/O thread), under the replica's lock."""
        with self.lock:
            replaced = dict(self.replaced_by)
            recs = dict(self.records)
        if not replaced:
            return []
        out: list[Gone] = []
        for number, fs in sorted(self.freed.items()):
            olds = [k for k in fs.refs if k in replaced]
            if not olds:
                continue
            heads = {k: self.head(k) for k in olds}
            if any(h not in recs or (usable is not None and h not in usable)
                   for h in heads.values()):
                continue  # the new fragments are not all there (yet): stay on the old
            by_off = {k: {off: (u, total, body) for u, off, total, body in recs[k].entries()}
                      for k in olds}
            new_dir = {h: {u: (off, total, body) for u, off, total, body in recs[h].entries()}
                       for h in set(heads.values())}
            entries: dict[int, tuple[bytes | None, int]] = {}
            gone: list[Gone] = []
            why = ""
            for off, (r, eo) in fs.entries.items():
                key = None if r == GONE else fs.refs[r]
                if key is None or key not in heads:
                    entries[off] = (key, eo)
                    continue
                was = by_off[key].get(eo)
                if was is None:  # a map that disagrees with its record: leave it as it is
                    why = f"its map names offset {eo}, where the record holds no blob"
                    break
                hit = new_dir[heads[key]].get(was[0])
                if hit is not None and hit[1:] == was[1:]:
                    entries[off] = (heads[key], hit[0])
                else:
                    entries[off] = (None, 0)
                    gone.append((was[0], (number, off)))
            alive = [u for u, _pos in gone if not dead(u)]
            if alive and not why:
                why = f"{len(alive)} of the blobs the new record left out are alive here " \
                      f"(undeleted?)"
            if why:
                if number not in self._stuck:
                    self._stuck.add(number)
                    log.warning("partition %d: segment %d stays on a replaced EC record: %s",
                                self.partition_id, number, why)
                continue
            self._save(number, self._pack(fs.generation, entries, fs.complete))
            out += gone
            log.info("partition %d: segment %d moved to re-encoded records (%d payloads "
                     "gone with their dead blobs)", self.partition_id, number, len(gone))
        return out

    def gone_positions(self) -> list[Position]:
        """Where the records are whose payloads are gone (a restart drops them from an index
        whose snapshot predates the map that says so)."""
        with self.lock:
            return [(n, off) for n, fs in self.freed.items()
                    for off, (r, _eo) in fs.entries.items() if r == GONE]

    # ---------------------------------------------------------------- freeing
    def free_pass(self, log_: Log, index: Any, datacenter: str,
                  usable: Collection[bytes] | None = None,
                  dead: Callable[[bytes], bool] | None = None) -> tuple[list[int], list[Gone]]:
        """Free every sealed local segment whose live PUT records are all encoded in
        ``datacenter``, in records whose keys are in ``usable`` when given (the warm tier
        names those whose k + m fragments are all there: never free bytes against fragments
        that are lost); a PUT that is encoded nowhere but whose blob is ``dead`` (deleted or
        expired longer ago than compaction's retention, here) has its payload punched too and
        becomes GONE, as compaction would drop it (freed segments are not compacted).
        Returns the segments freed and the GONE records (the caller drops them from the
        index). Blocking (an I/O thread)."""
        with self.lock:
            mine = [r for r in self.records.values() if r.datacenter == datacenter
                    and r.key not in self.replaced_by
                    and (usable is None or r.key in usable)]
        if not mine and dead is None:
            return [], []
        where: dict[bytes, tuple[int, int, int, int]] = {}
        keys = [r.key for r in mine]
        for i, r in enumerate(mine):
            for uuid, off, total, body in r.entries():
                where[uuid] = (i, off, total, body)
        done: list[int] = []
        gone: list[Gone] = []
        for seg in list(log_.segments[:-1]):
            prev = self.freed.get(seg.number)
            if prev is not None and (prev.complete or prev.generation != seg.generation):
                continue
            if prev is None and not mine:
                continue  # a segment only dead blobs would free is left to compaction
            # a segment partly freed before keeps what it freed (its records may no longer
            # be in `usable`: their bytes are gone here, so they stay read through fragments)
            entries: dict[int, tuple[bytes | None, int]] = {} if prev is None else \
                {off: (None if r == GONE else prev.refs[r], eo)
                 for off, (r, eo) in prev.entries.items()}
            old = set(entries)
            punch: list[tuple[int, int]] = []
            new_gone: list[Gone] = []
            complete = True
            for rec in log_.scan((seg.number, 0), verify=False, end=(seg.number + 1, 0)):
                h = rec.header
                if h.type != RecordType.PUT:
                    continue
                uuid = rec.key[16:]
                cur = index.get(uuid)
                if cur is None or (cur[0], cur[1]) != rec.position:
                    continue  # not the copy reads use (a duplicate, or compacted away)
                if rec.position[1] in old:
                    continue
                hit = where.get(uuid)
                if hit is not None and hit[2] == h.total_len and hit[3] == h.body_xxh3:
                    entries[rec.position[1]] = (keys[hit[0]], hit[1])
                elif dead is not None and dead(uuid):
                    entries[rec.position[1]] = (None, 0)
                    new_gone.append((uuid, rec.position))
                else:
                    # not encoded here (yet): it stays local; the rest of the segment is
                    # freed now, this record by a later pass
                    complete = False
                    continue
                punch.append((rec.position[1] + h.payload_offset, h.payload_len))
            if not punch and (prev is None or complete == prev.complete):
                continue
            if not any(k is not None for k, _ in entries.values()):
                continue  # nothing encoded: dead blobs alone are compaction's to drop
            # the map first (durable), then the bytes go: a crash in between re-punches
            self._save(seg.number, self._pack(seg.generation, entries, complete))
            gone += new_gone
            fd = seg.file.fileno()
            for off, n in punch:
                if isinstance(fd, int) and fd >= 0 and punch_hole(fd, off, n):
                    self.bytes_freed += n
            done.append(seg.number)
            log.info("partition %d: segment %d freed%s (%d records read through fragments)",
                     self.partition_id, seg.number, "" if complete else " in part",
                     sum(1 for k, _ in entries.values() if k is not None))
        return done, gone

    def recovery_scan(self, log_: Log, start: Position,
                      on_damage: Callable[[Damage], None]) -> Iterator[ScannedRecord]:
        """``log_.scan(start, verify=True, repair=True)`` for recovery's replay, except that
        in a freed segment the records whose payloads were punched out are not checked
        against their body checksum (the bytes are zeros; the fragments' checksums guard
        them; their headers are still checked): a kill -9 after a segment was freed and
        before an index snapshot covered it must not drop its blobs as damage."""
        segs = {seg.number: seg for seg in log_.segments}
        pos = start
        buf = bytearray(1 << 20)
        for n in sorted(self.freed):
            seg = segs.get(n)
            if seg is None or (n + 1, 0) <= pos or seg.generation != self.freed[n].generation:
                continue
            yield from log_.scan(pos, on_damage=on_damage, verify=True, repair=True,
                                 end=(n, 0))
            entries = self.freed[n].entries
            for rec in log_.scan(max(pos, (n, 0)), on_damage=on_damage, verify=False,
                                 end=(n + 1, 0)):
                off = rec.position[1]
                if off in entries or log_.verify_body(seg, off, rec.header, buf):
                    yield rec
                else:
                    on_damage(Damage("corrupt", n, seg.generation, off, rec.header.total_len,
                                     "record body checksum mismatch"))
            pos = (n + 1, 0)
        yield from log_.scan(pos, on_damage=on_damage, verify=True, repair=True)

    def locate(self, pos: Position) -> tuple[EcRecord, int] | None:
        """(EC_SEGMENT, record offset in it) when the record at ``pos`` was freed here."""
        fs = self.freed.get(pos[0])
        if fs is None:
            return None
        hit = fs.entries.get(pos[1])
        if hit is None:
            return None
        if hit[0] == GONE:
            raise BlobNotFound(f"partition {self.partition_id}: the payload at {pos} was "
                               f"dropped with its dead blob")
        rec = self.records.get(fs.refs[hit[0]])
        if rec is None:
            raise DataCorrupt(f"partition {self.partition_id}: freed segment {pos[0]} names "
                              f"an EC_SEGMENT record this replica does not have")
        return rec, hit[1]

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"records": [{"source": r.source_hex, "segment": r.segment,
                                 "generation": r.generation, "datacenter": r.datacenter,
                                 "k": r.k, "m": r.m, "bytes": r.original_bytes,
                                 "stripe_bytes": r.stripe_bytes, "blobs": r.blobs,
                                 "placement": list(r.placement),
                                 "replaces": key_text_of(r.replaces),
                                 "replaced": r.key in self.replaced_by}
                                for r in self.records.values()],
                    # the records this replica's freed segments read through
                    "refs": sorted({key_text_of(k) for fs in self.freed.values()
                                    for k in fs.refs}),
                    "freed_segments": sorted(self.freed), "bytes_freed": self.bytes_freed}


def key_text_of(key: bytes) -> str:
    """An EC_SEGMENT key as people and ``ec_status`` see it: ``<source hex>/<segment>/<gen>``
    ("" for none)."""
    if not key:
        return ""
    _magic, source, seg, gen = _KEY.unpack(key)
    return f"{source.hex()}/{seg}/{gen}"


def key_text(rec: EcRecord) -> str:
    return key_text_of(rec.key)





def _write_checked(disk: Disk, path: str, key: bytes, body: bytes) -> None:
    """temp, fsync, rename, fsync the directory: a file under its name is whole."""
    raw = msgpack.packb([key, body])
    disk.write_file_atomic(path, raw + _U64.pack(xxhash.xxh3_64_intdigest(raw)))


def _read_checked(disk: Disk, path: str) -> tuple[bytes, bytes]:
    raw = disk.read_file(path)
    if len(raw) < 8 or _U64.unpack_from(raw, len(raw) - 8)[0] != \
            xxhash.xxh3_64_intdigest(raw[:-8]):
        raise DataCorrupt(f"{path}: fails its checksum")
    key, body = msgpack.unpackb(raw[:-8])
    return bytes(key), bytes(body)


# ------------------------------------------------------------------------- reading
@dataclass
class EncodedBlobRead(BlobRead):
    """A PUT record whose payload was freed locally: its body is read through the fragments
    of the encoded segment and checked against the record's own body checksum (a failed
    check reads again, rebuilding every piece from the other fragments)."""

    ec: EcRecord | None = None
    ec_offset: int = 0
    reader: FragmentReader | None = None

    def fileno(self) -> int | None:
        return None

    def payload_fd(self) -> int | None:
        return None

    def _body(self) -> bytes:
        assert self.ec is not None
        if self.reader is None:
            raise Unavailable(f"partition {self.blob_id.partition_id}: blob is erasure-coded "
                              f"and this node has no fragment reader")
        h = self.header
        def check(body: bytes) -> bool:
            return xxhash.xxh3_64_intdigest(body) == h.body_xxh3

        for rebuild in (False, True):
            body = self.reader.read_encoded(self.blob_id.partition_id, self.ec,
                                            self.ec_offset + RECORD_HEADER_SIZE, h.body_len,
                                            rebuild, check=check if rebuild else None)
            if xxhash.xxh3_64_intdigest(body) == h.body_xxh3:
                return body
            log.warning("blob %s: fragment read failed its checksum%s", self.blob_id,
                        "" if rebuild else "; rebuilding from the other fragments")
        raise DataCorrupt(f"blob {self.blob_id}: no fragment read matches its checksum")

    def read_payload(self, start: int = 0, length: int | None = None) -> bytes:
        """The whole payload, or a record no bigger than one block, is read whole and checked
        against the record's checksum. A part of a bigger record (a range of a 4 MiB chunk)
        reads only its own pieces, each checked by its fragment node against the block
        checksums: the record's checksum would need every byte of the record from k nodes,
        while a node checks a block it holds with one local read, and only the range crosses
        the network."""
        from ambry.common.errors import InvalidArgument

        assert self.ec is not None
        total = self.header.payload_len
        length = total - start if length is None else length
        if start < 0 or length < 0 or start + length > total:
            raise InvalidArgument("range outside the payload")
        po = self.header.payload_offset - RECORD_HEADER_SIZE + start
        if length == total or self.header.body_len <= self.ec.stripe_bytes // self.ec.k \
                or self.reader is None:
            return self._body()[po:po + length]
        return self.reader.read_encoded(self.blob_id.partition_id, self.ec,
                                        self.ec_offset + RECORD_HEADER_SIZE + po, length,
                                        verified=True)

    def iter_payload(self, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        # the record (at most storage.max_record_bytes; a chunk of a large blob) is read and
        # checked whole before its first byte goes out
        body = self._body()
        po = self.header.payload_offset - RECORD_HEADER_SIZE
        for off in range(po, len(body), chunk_bytes):
            yield body[off:off + chunk_bytes]
