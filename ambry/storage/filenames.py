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
  <number:08d>_<gen>.ecfree   the encoded ranges of that segment whose bytes were freed
                              (ambry/storage/ecstate.py): written before the bytes are freed
  ec/<source>_<number:08d>_<gen>.ecseg
                              an EC_SEGMENT record's content, kept beside the log so a restart
                              that replays only the tail after a snapshot still knows it

A node's fragment files (erasure-coded segments, docs/erasure-coding.md) live apart from its
replicas (a fragment node need not host a replica of the partition)::

  <node data dir>/fragments/p<partition>/<source>_<number:08d>_<gen>.frag<i>
                              fragment i of segment <number> generation <gen> of the replica
                              whose incarnation is <source> (32 hex digits); .tmp while written
"""

from __future__ import annotations

import re

__all__ = [
    "COMPACTION_MARKER",
    "EC_RECORDS_DIR",
    "FRAGMENTS_DIR",
    "INCARNATION",
    "NAMES_DB",
    "QUARANTINE_DIR",
    "QUARANTINE_LOG",
    "SNAPSHOT",
    "SNAPSHOT_TMP",
    "ec_freed_name",
    "ec_record_name",
    "fragment_name",
    "parse_ec_freed_name",
    "parse_fragment_name",
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
EC_RECORDS_DIR = "ec"
FRAGMENTS_DIR = "fragments"

_SEGMENT_RE = re.compile(r"^(\d{8})_(\d+)\.log$")
_REPLICA_RE = re.compile(r"^p(\d+)$")
_FRAGMENT_RE = re.compile(r"^([0-9a-f]{32})_(\d{8})_(\d+)\.frag(\d+)$")
_EC_FREED_RE = re.compile(r"^(\d{8})_(\d+)\.ecfree$")
_SOURCE_RE = re.compile(r"^[0-9a-f]{32}$")


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


def _check_source(source: str) -> str:
    if not _SOURCE_RE.match(source):
        raise ValueError(f"fragment source must be 32 hex digits (an incarnation): {source!r}")
    return source


def fragment_name(source: str, number: int, generation: int, fragment: int) -> str:
    return f"{_check_source(source)}_{number:08d}_{generation}.frag{fragment}"


def parse_fragment_name(name: str) -> tuple[str, int, int, int] | None:
    """(source, segment number, generation, fragment index) of a fragment file's name."""
    m = _FRAGMENT_RE.match(name)
    return (m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))) if m else None


def ec_record_name(source: str, number: int, generation: int) -> str:
    return f"{_check_source(source)}_{number:08d}_{generation}.ecseg"


def ec_freed_name(number: int, generation: int) -> str:
    return f"{number:08d}_{generation}.ecfree"


def parse_ec_freed_name(name: str) -> tuple[int, int] | None:
    m = _EC_FREED_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None
