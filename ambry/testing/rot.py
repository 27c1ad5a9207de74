"""Bit rot for tests: flip payload bytes of one blob in every replica's log, under live nodes.

Owns finding a blob's PUT record in the segment files of a node's replica directory (read
through :func:`ambry.storage.inspect.dump_segment`, which never writes) and overwriting a few
of its payload bytes in place, as a failing disk would. A running node reads the damaged bytes
on the next GET (it preads the file; nothing of a payload is cached in the process), and its
record checksum then fails. Does not own any assertion: tests decide what must follow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ambry.common.blobid import decode
from ambry.storage import filenames
from ambry.storage.disk import OsDisk
from ambry.storage.format import RECORD_HEADER_SIZE, decode_record_header
from ambry.storage.inspect import dump_segment

__all__ = ["flip_payload_bytes"]


def flip_payload_bytes(data_dirs: Iterable[str | os.PathLike[str]], blob_id: str,
                       at: int = 0, count: int = 16) -> int:
    """XOR 0xFF into ``count`` payload bytes from payload offset ``at`` of the PUT record of
    ``blob_id`` in every node data directory of ``data_dirs`` that holds it. Returns how many
    replicas were damaged."""
    bid = decode(blob_id)
    damaged = 0
    for data_dir in data_dirs:
        rdir = Path(data_dir) / filenames.replica_dir_name(bid.partition_id)
        if not rdir.is_dir():
            continue
        for name in sorted(os.listdir(rdir)):
            if filenames.parse_segment_name(name) is None:
                continue
            path = rdir / name
            offsets = [r["offset"] for r in dump_segment(str(path))
                       if r.get("type") == "PUT" and r.get("key") == blob_id]
            for off in offsets:
                _flip(path, off, at, count)
                damaged += 1
    return damaged


def _flip(path: Path, record_offset: int, at: int, count: int) -> None:
    f = OsDisk().open(str(path), readonly=True)
    try:
        h = decode_record_header(f.pread(RECORD_HEADER_SIZE, record_offset))
    finally:
        f.close()
    if not 0 <= at < h.payload_len:
        raise ValueError(f"payload offset {at} outside the {h.payload_len}-byte payload")
    n = min(count, h.payload_len - at)
    pos = record_offset + h.payload_offset + at
    with open(path, "r+b") as fh:
        fh.seek(pos)
        old = fh.read(n)
        fh.seek(pos)
        fh.write(bytes(b ^ 0xFF for b in old))
        fh.flush()
        os.fsync(fh.fileno())
