"""Every file name inside a replica directory is built and parsed here, nowhere else.

A replica directory (``<node data dir>/p<partition>``) holds::

  incarnation                 16-byte incarnation UUID + xxh3, written once when the replica starts empty
  <number:08d>_<gen>.log      log segment files (see format.py for the layout)
  <number:08d>_<gen>.log.tmp  a segment being written by compaction (deleted on start if no marker)
  index.snap                  the latest index snapshot (see snapshot.py); index.snap.tmp while written
  compaction.marker           present while a compaction swap is in progress (roll forward on start)
  quarantine/                 bytes cut out of the log by recovery (torn tails, damaged ranges)
  quarantine.log              one JSON line per damage report
  names/                      rocksdict database: the ordered named-blob view
"""

from __future__ import annotations

import re

__all__ = [
    "COMPACTION_MARKER",
    "INCARNATION",
    "NAMES_DB",
    "QUARANTINE_DIR",
    "QUARANTINE_LOG",
    "SNAPSHOT",
    "SNAPSHOT_TMP",
    "parse_replica_dir_name",
    "parse_segment_name",
    "quarantine_name",
    "replica_dir_name",
    "segment_name",
    "segment_tmp_name",
]

INCARNATION = "incarnation"
SNAPSHOT = "index.snap"
SNAPSHOT_TMP = "index.snap.tmp"
COMPACTION_MARKER = "compaction.marker"
QUARANTINE_DIR = "quarantine"
QUARANTINE_LOG = "quarantine.log"
NAMES_DB = "names"

_SEGMENT_RE = re.compile(r"^(\d{8})_(\d+)\.log$")
_REPLICA_RE = re.compile(r"^p(\d+)$")


def replica_dir_name(partition_id: int) -> str:
    return f"p{partition_id}"


def parse_replica_dir_name(name: str) -> int | None:
    m = _REPLICA_RE.match(name)
    return int(m.group(1)) if m else None


def segment_name(number: int, generation: int) -> str:
    return f"{number:08d}_{generation}.log"


def segment_tmp_name(number: int, generation: int) -> str:
    return segment_name(number, generation) + ".tmp"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    m = _SEGMENT_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def quarantine_name(segment: int, generation: int, offset: int, length: int) -> str:
    return f"{segment:08d}_{generation}_{offset}_{length}.bin"
