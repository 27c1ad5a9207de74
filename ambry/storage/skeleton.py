"""The skeleton of a freed segment: what a replica keeps of a sealed segment whose live
payloads all live in fragments (docs/erasure-coding.md, "Skeletons of freed segments").

Hole punching frees only whole 4 KiB pages inside payloads: a record's header page and its
payload's last page stay, so a freed segment of 4 KiB blobs frees nothing and one of 200 KiB
blobs keeps 8 KiB a record. Once a segment is freed whole (``.ecfree`` ``complete``), the
replica rewrites it as a skeleton under the same name: every byte of the segment except the
payloads of its freed records, and a table of where those bytes sit. :class:`SkeletonFile`
reads it back as the punched segment file it replaces, byte for byte (a freed payload reads
as zeros, as a punched hole does), so the log, its scans, recovery, the index, the
replication feed and the inspection tools work on it unchanged; it is read-only.

File format (integers little-endian)::

    offset      size     field
    0           8        magic b"AMBRYSK\\n"
    8           1        version (1)
    9           3        reserved, zero
    12          4        segment number
    16          4        segment generation
    20          4        extent count E
    24          8        the segment's length (what reads see)
    32          16 x E   extents, in segment order, not overlapping: u64 segment offset,
                         u64 length
    32 + 16E    8        xxh3_64 of bytes [0, 32 + 16E)
    40 + 16E    ...      the extents' bytes, back to back

Every byte of the segment outside the extents reads as zero. The records in the extents carry
their own checksums (a header checksum each; a body checksum over key, properties, user
metadata and payload, checked against the payload read through the fragments), so the table
alone has one of its own. Written as ``<name>.skel.tmp``, fsync'd and renamed over the
segment (a crash leaves the old segment or the whole skeleton, never half of one; recovery
removes ``.tmp`` files).
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterable

import xxhash

from ambry.common.errors import DataCorrupt, StorageError
from ambry.storage.disk import Disk, DiskFile

__all__ = ["MAGIC", "SkeletonFile", "extents_of", "open_segment", "write_skeleton"]

MAGIC = b"AMBRYSK\n"
VERSION = 1
_HEAD = struct.Struct("<8sB3xIIIQ")  # 32 bytes
_EXTENT = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
_COPY_BYTES = 4 << 20
_GAP_BYTES = 64 << 10
assert _HEAD.size == 32


def extents_of(size: int, records: Iterable[tuple[int, int, int | None]]) -> list[
        tuple[int, int]]:
    """The byte ranges a skeleton keeps of a segment of ``size`` bytes, given its records as
    (offset, length, payload offset within the record or None to keep it whole): all but
    the payloads named; adjacent ranges merged."""
    out: list[tuple[int, int]] = []
    pos = 0
    for off, length, payload_at in sorted(records):
        if off < pos or off + length > size:
            raise ValueError(f"record [{off}, {off + length}) overlaps or passes the segment")
        keep_end = off + length if payload_at is None else off + payload_at
        # whatever lies between records (the segment header) is kept too
        _add(out, pos, keep_end)
        pos = off + length
    _add(out, pos, size)
    return out


def _add(out: list[tuple[int, int]], start: int, end: int) -> None:
    if end <= start:
        return
    if out and out[-1][0] + out[-1][1] == start:
        out[-1] = (out[-1][0], out[-1][1] + end - start)
    else:
        out.append((start, end - start))


def write_skeleton(disk: Disk, path: str, number: int, generation: int, size: int,
                   source: DiskFile, extents: list[tuple[int, int]]) -> None:
    """Write the skeleton of the segment file at ``path`` (read through ``source``) and put
    it in the segment's place (temp, fsync, rename, fsync the directory)."""
    table = b"".join(_EXTENT.pack(o, n) for o, n in extents)
    head = _HEAD.pack(MAGIC, VERSION, number, generation, len(extents), size) + table
    tmp = path + ".skel.tmp"
    out = disk.open(tmp, create=True)
    try:
        out.truncate(0)
        out.pwrite(head + _U64.pack(xxhash.xxh3_64_intdigest(head)), 0)
        w = len(head) + 8
        buf = bytearray()
        for start, span, parts in _read_plan(extents):
            raw = source.pread(span, start)
            if len(raw) != span:
                raise StorageError(f"{path}: short read at {start} building its skeleton")
            for off, n in parts:
                buf += raw[off - start:off - start + n]
            if len(buf) >= _COPY_BYTES:
                out.pwrite(bytes(buf), w)
                w += len(buf)
                buf.clear()
        out.pwrite(bytes(buf), w)
        out.fdatasync()
        out.close()
        SkeletonFile(disk.open(tmp, readonly=True)).close()  # whole, as it will be read
    except BaseException:
        out.close()
        disk.remove(tmp)
        raise
    disk.rename(tmp, path)
    disk.fsync_dir(os.path.dirname(path) or ".")


def _read_plan(extents: list[tuple[int, int]]
               ) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Reads of the source that cover ``extents``: (start, length, the extents in it). Extents
    less than ``_GAP_BYTES`` apart share a read (a segment of small records is thousands of
    extents a few hundred bytes apart), no read passes ``_COPY_BYTES`` unless one extent
    does (then it is read in pieces)."""
    plan: list[tuple[int, int, list[tuple[int, int]]]] = []
    for off, n in extents:
        while n > _COPY_BYTES:  # one big extent (a segment header run of whole records)
            plan.append((off, _COPY_BYTES, [(off, _COPY_BYTES)]))
            off, n = off + _COPY_BYTES, n - _COPY_BYTES
        if plan:
            start, span, parts = plan[-1]
            if off - (start + span) < _GAP_BYTES and off + n - start <= _COPY_BYTES:
                parts.append((off, n))
                plan[-1] = (start, off + n - start, parts)
                continue
        plan.append((off, n, [(off, n)]))
    return plan


class SkeletonFile:
    """A skeleton read as the segment file it replaced (a ``DiskFile``; read-only)."""

    def __init__(self, f: DiskFile) -> None:
        self.f = f
        self.path = f.path
        raw = f.pread(_HEAD.size, 0)
        if len(raw) < _HEAD.size:
            raise DataCorrupt(f"{f.path}: skeleton header truncated")
        magic, version, self.number, self.generation, count, size = _HEAD.unpack(raw)
        self._size: int = size
        if magic != MAGIC or version != VERSION:
            raise DataCorrupt(f"{f.path}: not a version {VERSION} segment skeleton")
        rest = f.pread(count * _EXTENT.size + 8, _HEAD.size)
        if len(rest) != count * _EXTENT.size + 8 or _U64.unpack_from(rest, len(rest) - 8)[0] \
                != xxhash.xxh3_64_intdigest(raw + rest[:-8]):
            raise DataCorrupt(f"{f.path}: skeleton table fails its checksum")
        self.starts: list[int] = []
        self.lengths: list[int] = []
        self.at: list[int] = []  # where each extent's bytes are in the file
        w = _HEAD.size + len(rest)
        end = 0
        for o, n in _EXTENT.iter_unpack(rest[:-8]):
            if o < end or o + n > self._size:
                raise DataCorrupt(f"{f.path}: skeleton extents overlap or pass its length")
            self.starts.append(o)
            self.lengths.append(n)
            self.at.append(w)
            w += n
            end = o + n
        if f.size() != w:
            raise DataCorrupt(f"{f.path}: skeleton is {f.size()} bytes, {w} expected (torn)")

    @property
    def kept_bytes(self) -> int:
        return sum(self.lengths)

    def pread(self, length: int, offset: int) -> bytes:
        end = min(offset + length, self._size)
        if offset >= end:
            return b""
        out = bytearray(end - offset)
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        while i < len(self.starts) and self.starts[i] < end:
            s, n = self.starts[i], self.lengths[i]
            lo, hi = max(s, offset), min(s + n, end)
            if lo < hi:
                piece = self.f.pread(hi - lo, self.at[i] + lo - s)
                if len(piece) != hi - lo:
                    raise DataCorrupt(f"{self.path}: short read inside the skeleton")
                out[lo - offset:hi - offset] = piece
            i += 1
        return bytes(out)

    def preadinto(self, buf: bytearray | memoryview, offset: int) -> int:
        data = self.pread(len(buf), offset)
        memoryview(buf)[:len(data)] = data
        return len(data)

    def size(self) -> int:
        return self._size

    def fileno(self) -> int | None:
        return None  # not the segment's bytes: no sendfile from it

    def fdatasync(self) -> None:
        """Nothing to sync: the skeleton was synced before it took the segment's place."""

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        raise StorageError(f"{self.path}: a segment skeleton is read-only")

    def pwritev(self, parts: list[bytes | memoryview], offset: int) -> None:
        raise StorageError(f"{self.path}: a segment skeleton is read-only")

    def truncate(self, length: int) -> None:
        raise StorageError(f"{self.path}: a segment skeleton is read-only")

    def close(self) -> None:
        self.f.close()


def open_segment(disk: Disk, path: str, readonly: bool = False) -> DiskFile:
    """A segment file, or the skeleton that replaced it read as one."""
    f = disk.open(path, readonly=readonly)
    if f.pread(len(MAGIC), 0) == MAGIC:
        try:
            return SkeletonFile(f)
        except BaseException:
            f.close()
            raise
    return f
