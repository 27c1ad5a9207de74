"""Per-account/container usage of one replica (live bytes and blobs), kept incrementally.

Owns the usage counters of a replica and the rules that keep them equal to a pure function
of its index: a blob counts while its PUT is here and it is not deleted, for the record
bytes of its PUT (payload + properties + user metadata + record header: what it occupies in
this replica's log) and, unless it is a chunk of a composite blob, as one blob. Expiry
happens without any record, so counters are kept per (account, container, expiry minute):
a report at time t leaves out the minutes that have passed (a blob counts for up to a minute
after it expired). Also owns :func:`aggregate_usage`, which adds up the replicas of a cluster
(each partition counted once).

Beside the live totals, two figures show disk that is held but on its way out (the space an
upload that never completed leaves, docs/security.md "Orphaned chunks"):
``expiring_chunk_bytes``, live chunk bytes that carry a TTL (chunks of uploads not complete
yet, chunk uploads not stitched yet, S3 multipart parts, chunks of blobs with a TTL); and
``expired_bytes``, bytes of blobs whose expiry minute has passed and which compaction has not
dropped yet (they left the live totals, not the disk).

Why incremental, and why a pass after some restarts: the counters change on every record
folded into the index (live appends, replication, replay on open), on a repaired PUT and on
compaction, through :meth:`UsageCounters.change` (before/after index entries of one blob; no
I/O, so it is cheap enough to run under the replica's lock on every write). Rebuilding them by
scanning per scrape would cost a read per blob. But the index does not hold a blob's account
and container (its key is the id's 16-byte UUID, 40 bytes per entry), and index snapshots are
written in slices while writes go on, so counters saved beside a snapshot could not be made
consistent with it. So a replica opened from a snapshot starts "not ready" and runs one
background **usage pass** over its log (headers and keys, in log order, off the event loop),
and meanwhile still counts every change: a change is applied when the pass has already
visited the blob's PUT (it lies before the pass cursor, or after where the log ended when the
pass began) and left to the pass otherwise. A replica whose whole log is replayed on open is
exact from the start and needs no pass.

The pass's counting loop is :func:`count_usage`. Not thread-safe: the replica calls every
method of the counters under its lock (``count_usage`` takes it one batch at a time).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ambry.common.blobid import BlobType
from ambry.storage.format import RecordType
from ambry.storage.indexentry import F_DELETED, F_HAS_PUT, F_PERMANENT, put_location
from ambry.storage.log import ScannedRecord

__all__ = [
    "EXPIRED",
    "UsageCounters",
    "UsageTotals",
    "aggregate_usage",
    "contribution",
    "count_usage",
]

EXPIRED = -1          # bucket of blobs whose expiry minute has passed
_BUCKET_S = 60

Position = tuple[int, int]
Bucket = tuple[int, int, int]          # (account id, container id, expiry minute or 0 / -1)
Entry = tuple[int, ...]                 # (segment, offset, size, expiry_s, delete_s, lv, flags)


@dataclass(frozen=True)
class UsageTotals:
    bytes: int
    blobs: int
    expiring_chunk_bytes: int = 0   # part of ``bytes``: chunks with a TTL, not expired yet
    expired_bytes: int = 0          # not part of ``bytes``: expired, not compacted yet


def contribution(key: bytes, entry: Entry | None) -> tuple[int, int, int, int, int] | None:
    """(account, container, expiry_s or 0, bytes, blobs) that one blob adds to the usage of
    its replica, None if it adds nothing (no PUT here, or deleted). ``key`` is the 32-byte
    blob id, ``entry`` its index entry."""
    if entry is None:
        return None
    flags = entry[6]
    if not flags & F_HAS_PUT or flags & F_DELETED:
        return None
    expiry_s = 0 if flags & F_PERMANENT else entry[3]
    is_chunk = key[2] & 0x03 == BlobType.CHUNK
    return (int.from_bytes(key[4:6], "big"), int.from_bytes(key[6:8], "big"), expiry_s,
            entry[2], 0 if is_chunk else 1)


class UsageCounters:
    def __init__(self, ready: bool = True) -> None:
        self.counts: dict[Bucket, list[int]] = {}   # -> [bytes, blobs, chunk bytes]
        self.ready = ready
        self._cursor: Position | None = None        # a pass runs: PUTs before it are counted
        self._pass_end: Position = (0, 0)           # ... and those at or after this
        self._expired_through_s = 0                 # minutes up to here live in EXPIRED

    @property
    def pass_running(self) -> bool:
        return self._cursor is not None

    # ------------------------------------------------------------------ counting
    def _bucket(self, account: int, container: int, expiry_s: int) -> Bucket:
        if expiry_s == 0:
            return account, container, 0
        minute = -(-expiry_s // _BUCKET_S) * _BUCKET_S
        return account, container, EXPIRED if minute <= self._expired_through_s else minute

    def _add(self, c: tuple[int, int, int, int, int], sign: int) -> None:
        chunk_bytes = c[3] if c[4] == 0 else 0  # a chunk is the only blob counted as 0 blobs
        self._add_to(self._bucket(c[0], c[1], c[2]), sign * c[3], sign * c[4],
                     sign * chunk_bytes)

    def _add_to(self, b: Bucket, bytes_: int, blobs: int, chunk_bytes: int) -> None:
        cur = self.counts.get(b)
        if cur is None:
            cur = self.counts[b] = [0, 0, 0]
        cur[0] += bytes_
        cur[1] += blobs
        cur[2] += chunk_bytes
        if cur == [0, 0, 0]:
            del self.counts[b]

    def _counted(self, entry: Entry | None) -> bool:
        """Whether the blob of this entry is already in the counters (see the module doc)."""
        if self.ready:
            return True
        if self._cursor is None or entry is None:
            return False
        loc = (entry[0], entry[1])
        return loc < self._cursor or loc >= self._pass_end

    def change(self, key: bytes, before: Entry | None, after: Entry | None) -> None:
        """One blob's index entry went from ``before`` to ``after``."""
        if before == after:
            return
        cb, ca = contribution(key, before), contribution(key, after)
        if cb is not None and self._counted(before):
            self._add(cb, -1)
        if ca is not None and self._counted(after):
            self._add(ca, +1)

    # ------------------------------------------------------------------ the usage pass
    def begin_pass(self, log_end: Position) -> None:
        """Start counting from scratch; records at or after ``log_end`` count at once."""
        self.counts.clear()
        self.ready = False
        self._cursor = (0, 0)
        self._pass_end = log_end

    def visit(self, key: bytes, entry: Entry | None) -> None:
        """The pass found the PUT the index points to: count the blob as it is now."""
        c = contribution(key, entry)
        if c is not None:
            self._add(c, +1)

    def advance(self, cursor: Position) -> None:
        """Every PUT before ``cursor`` has been visited."""
        assert self._cursor is not None
        self._cursor = cursor

    def finish_pass(self) -> None:
        self._cursor = None
        self.ready = True

    def abort_pass(self) -> None:
        self._cursor = None
        self.counts.clear()

    # ------------------------------------------------------------------ reporting
    def totals(self, now_s: int) -> dict[tuple[int, int], UsageTotals]:
        """Usage per (account, container) at unix time ``now_s``: live bytes and blobs, the
        live chunk bytes with a TTL, and the expired bytes not compacted yet."""
        if now_s > self._expired_through_s:
            self._expired_through_s = now_s
            for b in [b for b in self.counts if 0 < b[2] <= now_s]:
                bytes_, blobs, chunk_bytes = self.counts.pop(b)
                self._add_to((b[0], b[1], EXPIRED), bytes_, blobs, chunk_bytes)
        out: dict[tuple[int, int], list[int]] = {}
        for (a, c, minute), (bytes_, blobs, chunk_bytes) in self.counts.items():
            cur = out.setdefault((a, c), [0, 0, 0, 0])
            if minute == EXPIRED:
                cur[3] += bytes_
                continue
            cur[0] += bytes_
            cur[1] += blobs
            if minute:
                cur[2] += chunk_bytes
        return {k: UsageTotals(*v) for k, v in out.items() if v != [0, 0, 0, 0]}


def count_usage(records: Iterator[ScannedRecord], index: Any, usage: UsageCounters,
                lock: threading.RLock, should_stop: Callable[[], bool],
                batch_records: int) -> int | None:
    """The body of a usage pass begun with ``usage.begin_pass``: visit every PUT of
    ``records`` (the log in order, up to where it ended then) that the index points to,
    taking ``lock`` one batch at a time. Returns the blobs counted (the counters are ready),
    or None when ``should_stop`` ended it first (the pass is aborted). The caller keeps
    compaction off meanwhile: the records must not move."""
    counted = 0
    while True:
        # read outside the lock: the log before `end` does not change while
        # compaction is held off
        recs = list(itertools.islice(records, batch_records))
        if not recs:
            break
        with lock:
            for rec in recs:
                h = rec.header
                if h.type == RecordType.PUT and len(rec.key) == 32:
                    entry = index.get(rec.key[16:])
                    loc = put_location(entry)
                    if loc is not None and (loc[0], loc[1]) == rec.position:
                        usage.visit(rec.key, entry)
                        counted += 1
            last = recs[-1]
            usage.advance((last.position[0],
                           last.position[1] + last.header.total_len))
        if should_stop():
            with lock:
                usage.abort_pass()
            return None
    with lock:
        usage.finish_pass()
    return counted


def aggregate_usage(replicas: Iterable[Mapping[str, Any]]
                    ) -> dict[tuple[int, int], UsageTotals]:
    """Usage per (account, container) of a set of replica reports, each partition counted
    once. A report: ``{"partition": id, "ready": bool, "usage": [[account, container, bytes,
    blobs], ...]}``. Replicas of one partition hold the same blobs once replication has
    caught up; until then the fullest one is the best estimate, so each (partition, account,
    container) takes the largest of each figure among its ready replicas. A row may carry
    ``expiring_chunk_bytes`` and ``expired_bytes`` after ``blobs`` (nodes of older versions
    send 4 fields: those two count as 0). Reports that are not ready are ignored."""
    best: dict[tuple[int, int, int], list[int]] = {}
    for r in replicas:
        if not r.get("ready", False):
            continue
        pid = int(r["partition"])
        for row in r.get("usage", ()):
            account, container, *figures = row
            cur = best.setdefault((pid, int(account), int(container)), [0, 0, 0, 0])
            for i, v in enumerate(figures[:4]):
                cur[i] = max(cur[i], int(v))
    out: dict[tuple[int, int], list[int]] = {}
    for (_pid, account, container), figures in best.items():
        cur = out.setdefault((account, container), [0, 0, 0, 0])
        for i, v in enumerate(figures):
            cur[i] += v
    return {k: UsageTotals(*v) for k, v in sorted(out.items())}
