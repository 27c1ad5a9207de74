"""Index snapshot files: the blob index saved so a restart does not replay the whole log.

Owns the snapshot byte layout, writing it in bounded slices (so the event loop and other
writers are never held up for long) and loading it back in bulk (``BlobIndex.load`` in C). A
snapshot is a cache: a missing, damaged, or stale one (written for other segment files, i.e. an
older compaction generation, or pointing past the end of the log) is ignored and the index is
rebuilt from the log.

Layout (little-endian)::

  offset  size    field
  0       8       magic            b"AMBRYIDX"
  8       2       version          u16 = 1
  10      2       reserved         0
  12      4       meta length M    u32
  16      M       meta             msgpack map: position [segment, offset] where replay starts,
                                   last_seq, segments [[number, generation], ...], entries N,
                                   incarnation (16 bytes)
  16+M    40*N    entries          packed index entries (ambry.native.ENTRY_STRUCT)
  end-8   8       xxh3_64          of every byte before it
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import xxhash

from ambry.common.errors import DataCorrupt
from ambry.native import ENTRY_SIZE
from ambry.storage import filenames
from ambry.storage.disk import Disk

__all__ = ["SnapshotMeta", "read_snapshot", "write_snapshot"]

MAGIC = b"AMBRYIDX"
_HEAD = struct.Struct("<8sHHI")
_U64 = struct.Struct("<Q")
SLICE_ENTRIES = 64 * 1024


@dataclass(frozen=True)
class SnapshotMeta:
    position: tuple[int, int]
    last_seq: int
    segments: tuple[tuple[int, int], ...]
    entries: int
    incarnation: bytes


def write_snapshot(disk: Disk, directory: str, meta: SnapshotMeta,
                   dump: Callable[[int, int], bytes],
                   before_publish: Callable[[], None] | None = None) -> int:
    """Write ``meta.entries`` entries obtained by ``dump(start, count)`` slices, then publish.

    ``before_publish`` runs after the file is complete and fsynced but before the rename: the
    replica uses it to make the log (and the name view) durable past everything dumped.
    Returns the file size.
    """
    path = os.path.join(directory, filenames.SNAPSHOT)
    tmp = os.path.join(directory, filenames.SNAPSHOT_TMP)
    m = msgpack.packb({"position": list(meta.position), "last_seq": meta.last_seq,
                       "segments": [list(s) for s in meta.segments], "entries": meta.entries,
                       "incarnation": meta.incarnation}, use_bin_type=True)
    f = disk.open(tmp, create=True)
    try:
        f.truncate(0)
        h = xxhash.xxh3_64()
        head = _HEAD.pack(MAGIC, 1, 0, len(m)) + m
        h.update(head)
        f.pwrite(head, 0)
        off = len(head)
        written = 0
        while written < meta.entries:
            chunk = dump(written, min(SLICE_ENTRIES, meta.entries - written))
            if not chunk:
                raise AssertionError("index shrank while a snapshot was written")
            h.update(chunk)
            f.pwrite(chunk, off)
            off += len(chunk)
            written += len(chunk) // ENTRY_SIZE
        f.pwrite(_U64.pack(h.intdigest()), off)
        off += 8
        f.fdatasync()
    finally:
        f.close()
    if before_publish is not None:
        before_publish()
    disk.rename(tmp, path)
    disk.fsync_dir(directory)
    return off


def read_snapshot(disk: Disk, directory: str, load: Callable[[memoryview], int]
                  ) -> SnapshotMeta:
    """Verify and load a snapshot into the index through ``load``. Raises DataCorrupt or
    FileNotFoundError; the caller then rebuilds from the log (into a fresh index)."""
    path = os.path.join(directory, filenames.SNAPSHOT)
    f = disk.open(path)
    try:
        size = f.size()
        head = f.pread(_HEAD.size, 0)
        if len(head) < _HEAD.size:
            raise DataCorrupt("snapshot truncated")
        magic, version, _r, mlen = _HEAD.unpack(head)
        if magic != MAGIC or version != 1:
            raise DataCorrupt("not a version-1 index snapshot")
        raw_meta = f.pread(mlen, _HEAD.size)
        m = msgpack.unpackb(raw_meta, raw=False)
        meta = SnapshotMeta(tuple(m["position"]), int(m["last_seq"]),
                            tuple(tuple(s) for s in m["segments"]),
                            int(m["entries"]), bytes(m["incarnation"]))
        body_off = _HEAD.size + mlen
        if size != body_off + meta.entries * ENTRY_SIZE + 8:
            raise DataCorrupt("snapshot size does not match its entry count")
        # First pass: checksum in slices (a damaged file must not half-load the index).
        h = xxhash.xxh3_64()
        h.update(head)
        h.update(raw_meta)
        slice_bytes = SLICE_ENTRIES * ENTRY_SIZE * 16
        buf = bytearray(slice_bytes)
        view = memoryview(buf)
        off = body_off
        end = size - 8
        while off < end:
            n = f.preadinto(view[:min(slice_bytes, end - off)], off)
            h.update(view[:n])
            off += n
        (want,) = _U64.unpack(f.pread(8, end))
        if h.intdigest() != want:
            raise DataCorrupt("snapshot checksum mismatch")
        del view, buf
        # One bulk load: the C index builds its table in a single pass when it is loaded at
        # once (slices would take its slower per-entry path). A mapping keeps memory to the
        # page cache; a disk without file descriptors (the simulated one) reads it whole.
        fd = f.fileno()
        if fd is not None and end > body_off:
            with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm:
                mv = memoryview(mm)
                try:
                    load(mv[body_off:end])
                finally:
                    mv.release()
        elif end > body_off:
            load(memoryview(f.pread(end - body_off, body_off)))
        return meta
    finally:
        f.close()
