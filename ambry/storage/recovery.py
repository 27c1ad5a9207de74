"""Opening a replica's directory after whatever happened to it: the checks before replay.

Owns what a replica finds on open before it replays its log: half-written temp files (a crash
mid-publish) are removed, the incarnation (a UUID, new whenever the replica starts empty or
its incarnation file is damaged: peers then restart from sequence 0) is read or created, and
an index snapshot is accepted only when it belongs to these very segment files, this
incarnation and a position inside the log. The replay itself (``replica.Replica._recover``)
and rolling an interrupted compaction forward (``compaction.roll_forward``) are not here.
"""

from __future__ import annotations

import logging
import os
import uuid as uuidlib

import xxhash

from ambry.common.errors import DataCorrupt
from ambry.native import BlobIndex
from ambry.storage import filenames
from ambry.storage.disk import Disk
from ambry.storage.log import Log
from ambry.storage.snapshot import SnapshotMeta, read_snapshot

__all__ = ["clear_temp_files", "establish_incarnation", "load_snapshot", "read_incarnation"]

log = logging.getLogger(__name__)


def clear_temp_files(disk: Disk, directory: str) -> bool:
    """Remove the temp files a crash left; returns whether the directory holds segments."""
    for name in disk.listdir(directory):
        if name.endswith(".tmp"):
            disk.remove(os.path.join(directory, name))
    return any(filenames.parse_segment_name(n) for n in disk.listdir(directory))


def establish_incarnation(disk: Disk, directory: str, has_segments: bool) -> bytes:
    """The replica's incarnation: the one on disk, or a new one (written atomically)."""
    inc_path = os.path.join(directory, filenames.INCARNATION)
    incarnation = read_incarnation(disk, inc_path, directory)
    if not incarnation:
        if has_segments:
            log.warning("replica %s has data but no incarnation: starting a new one",
                        directory)
        incarnation = uuidlib.uuid4().bytes
        disk.write_file_atomic(inc_path, incarnation + xxhash.xxh3_64_digest(incarnation))
    return incarnation


def read_incarnation(disk: Disk, path: str, directory: str) -> bytes:
    if not disk.exists(path):
        return b""
    raw = disk.read_file(path)
    if len(raw) == 24 and xxhash.xxh3_64_digest(raw[:16]) == raw[16:]:
        return raw[:16]
    log.warning("replica %s: damaged incarnation file; starting a new incarnation", directory)
    return b""


def load_snapshot(disk: Disk, directory: str, replica_log: Log, incarnation: bytes
                  ) -> tuple[BlobIndex, SnapshotMeta]:
    """The index saved in the replica's snapshot and where it ends. FileNotFoundError when
    there is none; DataCorrupt when it is damaged or belongs to other segment files, another
    incarnation or a longer log."""
    idx = BlobIndex()
    meta = read_snapshot(disk, directory, idx.load)
    segs = tuple((s.number, s.generation) for s in replica_log.segments)
    if meta.segments != segs[:len(meta.segments)] or not meta.segments:
        raise DataCorrupt("snapshot belongs to other segment files (older compaction)")
    if meta.position > replica_log.end:
        raise DataCorrupt("snapshot points past the end of the log")
    if meta.incarnation != incarnation:
        raise DataCorrupt("snapshot belongs to another incarnation")
    return idx, meta
