"""Per-account/container usage of a replica: incremental counters always equal a recount.

The counters change on every record folded into the index, on compaction, and are rebuilt by
a usage pass after a restart from a snapshot while writes go on. The property: whatever the
operations and wherever the pass is interrupted by writes, ``usage_totals`` equals a recount
of the index (each blob with its PUT here and not deleted, by its id's account/container).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.common.blobid import BlobId, BlobType, new_blob_id
from ambry.common.config import StorageConfig
from ambry.common.errors import AmbryError
from ambry.storage import compaction
from ambry.storage.format import RECORD_HEADER_SIZE
from ambry.storage.indexentry import F_DELETED, F_HAS_PUT, F_PERMANENT, put_location
from ambry.storage.replica import Replica
from ambry.storage.usage import (
    UsageCounters,
    UsageTotals,
    aggregate_usage,
    contribution,
)
from tests.unit.conftest import PARTITION, ReplicaHarness, props_for

CONTAINERS = [(1, 1), (1, 2), (7, 1)]


def recount(r: Replica, now_s: int) -> dict[tuple[int, int], UsageTotals]:
    """The usage by definition, from the index and the keys in the log: live bytes and
    blobs, live chunk bytes with a TTL, and bytes of blobs expired but not compacted."""
    out: dict[tuple[int, int], list[int]] = {}
    for _uuid, entry in r.index.items():  # noqa: PERF102 - a BlobIndex has no values()
        loc = put_location(entry)
        if loc is None:
            continue
        key = r.log.read((loc[0], loc[1] + RECORD_HEADER_SIZE), 32)
        c = contribution(bytes(key), entry)
        if c is None:
            continue
        cur = out.setdefault((c[0], c[1]), [0, 0, 0, 0])
        if c[2] and -(-c[2] // 60) * 60 <= now_s:
            cur[3] += c[3]  # its expiry minute has passed: expired, still on disk
            continue
        cur[0] += c[3]
        cur[1] += c[4]
        if c[2] and bytes(key)[2] & 0x03 == BlobType.CHUNK:
            cur[2] += c[3]
    return {k: UsageTotals(*v) for k, v in out.items() if v != [0, 0, 0, 0]}


def test_contribution_of_chunks_counts_bytes_but_no_blob() -> None:
    simple = new_blob_id(1, 5, 6, PARTITION, BlobType.SIMPLE).to_bytes()
    chunk = new_blob_id(1, 5, 6, PARTITION, BlobType.CHUNK).to_bytes()
    live = (0, 0, 100, 0, 0, 0, F_HAS_PUT)
    assert contribution(simple, live) == (5, 6, 0, 100, 1)
    assert contribution(chunk, live) == (5, 6, 0, 100, 0)
    assert contribution(simple, (0, 0, 100, 0, 9, 0, F_HAS_PUT | F_DELETED)) is None
    assert contribution(simple, (0, 0, 0, 0, 0, 0, F_DELETED)) is None  # a tombstone
    assert contribution(simple, (0, 0, 100, 500, 0, 0, F_HAS_PUT | F_PERMANENT))[2] == 0


def test_expired_blobs_leave_the_totals_once_their_minute_passed() -> None:
    u = UsageCounters()
    key = new_blob_id(1, 5, 6, PARTITION).to_bytes()
    u.change(key, None, (0, 0, 100, 1_000_010, 0, 0, F_HAS_PUT))  # expires 1_000_010
    assert u.totals(1_000_000) == {(5, 6): UsageTotals(100, 1)}
    assert u.totals(1_000_015) == {(5, 6): UsageTotals(100, 1)}  # within its minute
    # out of the live totals, still on disk until compaction drops it
    assert u.totals(1_000_080) == {(5, 6): UsageTotals(0, 0, 0, 100)}
    # a delete of the expired blob afterwards keeps the counters consistent
    u.change(key, (0, 0, 100, 1_000_010, 0, 0, F_HAS_PUT),
             (0, 0, 100, 1_000_010, 9, 0, F_HAS_PUT | F_DELETED))
    assert u.counts == {}


def test_orphaned_chunk_shows_as_expiring_then_expired_until_compaction_drops_it(
        harness: ReplicaHarness) -> None:
    # issue 13 item 9: the chunks an upload left behind were counted like any live blob,
    # and nothing told them apart nor showed the expired bytes still on disk.
    pending = new_blob_id(1, 2, 3, PARTITION, BlobType.CHUNK)
    lifted = new_blob_id(1, 2, 3, PARTITION, BlobType.CHUNK)
    harness.put(b"o" * 5000, ttl_s=120, blob_id=pending)
    harness.put(b"l" * 3000, ttl_s=120, blob_id=lifted)
    harness.put(b"s" * 1000, ttl_s=120)   # a simple blob with a TTL: not a chunk
    r = harness.replica
    assert r is not None
    r.ttl_update(lifted)                  # its upload completed: made permanent
    now = harness.clock.now_ms() // 1000
    t = r.usage_totals(now)[(2, 3)]
    assert t.blobs == 1 and 9000 < t.bytes < 9000 + 3 * 1024
    assert 5000 <= t.expiring_chunk_bytes < 5000 + 1024 and t.expired_bytes == 0
    harness.clock.advance(200_000)        # past the TTL: out of the live totals, on disk
    now = harness.clock.now_ms() // 1000
    t = r.usage_totals(now)[(2, 3)]
    assert t.blobs == 0 and t.expiring_chunk_bytes == 0
    assert 3000 <= t.bytes < 3000 + 1024 and 6000 <= t.expired_bytes < 6000 + 2 * 1024
    assert r.usage_totals(now) == recount(r, now)
    for i in range(40):                   # seal the segment so compaction may rewrite it
        harness.put(os.urandom(2000))
    harness.clock.advance(3600_000)       # ...and pass the retention
    assert compaction.compact(r, min_reclaim_ratio=0.0).segments_compacted
    now = harness.clock.now_ms() // 1000
    assert r.usage_totals(now)[(2, 3)].expired_bytes == 0  # the orphan is gone
    assert r.usage_totals(now) == recount(r, now)
    with contextlib.suppress(AmbryError):
        r.get(pending, include_expired=True)
        raise AssertionError("the expired chunk survived compaction")


def test_aggregate_counts_each_partition_once() -> None:
    reports: list[dict[str, Any]] = [
        {"partition": 0, "ready": True, "usage": [[1, 1, 100, 2], [1, 2, 50, 1]]},
        {"partition": 0, "ready": True, "usage": [[1, 1, 100, 2], [1, 2, 50, 1]]},
        {"partition": 0, "ready": True, "usage": [[1, 1, 60, 1]]},     # lagging replica
        {"partition": 1, "ready": True, "usage": [[1, 1, 10, 1]]},
        {"partition": 1, "ready": False, "usage": []},                 # not counted yet
        {"partition": 2, "ready": False, "usage": [[1, 1, 999, 9]]},   # ignored
    ]
    assert aggregate_usage(reports) == {(1, 1): UsageTotals(110, 3),
                                        (1, 2): UsageTotals(50, 1)}


@given(st.lists(st.fixed_dictionaries({
    "partition": st.integers(0, 3), "ready": st.booleans(),
    "usage": st.lists(st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(0, 10**6),
                                st.integers(0, 100)), max_size=3)}), max_size=12))
def test_aggregate_is_order_independent_and_bounded(reports: list[dict[str, Any]]) -> None:
    agg = aggregate_usage(reports)
    assert aggregate_usage(list(reversed(reports))) == agg
    ready = [r for r in reports if r["ready"]]
    # never more than adding every replica, never less than any single replica of each
    for (a, c), tot in agg.items():
        assert tot.bytes <= sum(b for r in ready for (a2, c2, b, _n) in r["usage"]
                                if (a2, c2) == (a, c))
    for r in ready:
        for a, c, b, _n in r["usage"]:
            if b:
                assert agg[(a, c)].bytes >= b


class _Scenario:
    def __init__(self, rnd: random.Random, root: str) -> None:
        self.rnd = rnd
        self.h = ReplicaHarness(root, None, StorageConfig(
            segment_size_bytes=16 * 1024, compaction_retention_s=60,
            max_record_bytes=32 * 1024))
        self.h.open()
        self.ids: list[BlobId] = []

    @property
    def r(self) -> Replica:
        assert self.h.replica is not None
        return self.h.replica

    def check(self) -> None:
        if self.r.usage.ready:
            now = self.h.clock.now_ms() // 1000
            assert self.r.usage_totals(now) == recount(self.r, now)

    def mutate(self, kind: str, with_ttl: bool = True) -> None:
        rnd, r, clock = self.rnd, self.r, self.h.clock
        if kind == "put" or not self.ids:
            a, c = rnd.choice(CONTAINERS)
            btype = rnd.choice([BlobType.SIMPLE, BlobType.CHUNK, BlobType.METADATA])
            bid = new_blob_id(1, a, c, PARTITION, btype)
            data = os.urandom(rnd.randint(0, 3000))
            ttl = rnd.choice([-1, -1, 30, 200]) if with_ttl else -1
            res = r.put(bid, props_for(data, clock, ttl), b"um", data)
            r.durable_future(res.end).result(timeout=10)
            self.ids.append(bid)
            return
        bid = rnd.choice(self.ids)
        with contextlib.suppress(AmbryError):  # deleted, expired...: not the subject here
            if kind == "delete":
                r.delete(bid)
            elif kind == "ttl":
                r.ttl_update(bid)
            else:
                r.undelete(bid)

    def op(self) -> None:
        kind = self.rnd.choice(["put", "put", "put", "delete", "ttl", "undelete", "time",
                                "compact", "restart", "kill"])
        if kind in ("put", "delete", "ttl", "undelete"):
            self.mutate(kind)
        elif kind == "time":
            self.h.clock.advance(self.rnd.choice([1_000, 45_000, 120_000]))
        elif kind == "compact":
            compaction.compact(self.r, min_reclaim_ratio=0.0)
        else:
            if kind == "restart":
                self.h.close()       # writes a snapshot: the reopened replica needs a pass
            else:
                self.h.kill()        # no new snapshot: an older one, or a full replay
            self.h.open()
            self.interleaved_pass()

    def interleaved_pass(self) -> None:
        """Run the usage pass with writes between its batches."""

        def between_batches() -> bool:
            for _ in range(self.rnd.randint(0, 2)):
                self.mutate(self.rnd.choice(["put", "delete", "ttl", "undelete"]))
            return False

        assert self.r.usage_pass(between_batches, batch_records=self.rnd.randint(1, 8))
        assert self.r.usage.ready


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_usage_counters_equal_a_recount_after_any_history(seed: int) -> None:
    print(f"seed {seed}")
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as root:
        s = _Scenario(rnd, root)
        try:
            for _ in range(60):
                s.op()
                s.check()
        finally:
            s.h.close()


def test_pass_interrupted_by_shutdown_counts_nothing_and_can_run_again(
        harness: ReplicaHarness) -> None:
    for i in range(20):
        harness.put(os.urandom(100 + i))
    harness.close()
    r = harness.open()
    assert not r.usage.ready
    assert not r.usage_pass(lambda: True, batch_records=3)
    assert not r.usage.ready and not r.usage.counts
    assert r.usage_pass()
    now = harness.clock.now_ms() // 1000
    assert r.usage_totals(now) == recount(r, now)
    assert r.usage_totals(now)[(2, 3)].blobs == 20


def test_snapshot_is_not_held_off_by_a_usage_pass(harness: ReplicaHarness) -> None:
    """A usage pass over a big replica takes minutes; snapshots must go on meanwhile (they
    waited for the whole pass, and a kill -9 then replayed everything written since the
    restart). Compaction, which moves records, still waits for the pass."""
    import threading

    for i in range(40):
        harness.put(os.urandom(100 + i))
    harness.close()
    r = harness.open()
    in_pass = threading.Event()
    release = threading.Event()

    def between_batches() -> bool:
        in_pass.set()
        assert release.wait(30)
        return False

    t = threading.Thread(target=r.usage_pass, args=(between_batches, 4))
    t.start()
    try:
        assert in_pass.wait(10)
        harness.put(b"written during the pass")
        done = threading.Event()
        snap = threading.Thread(target=lambda: (r.write_snapshot(), done.set()))
        snap.start()
        assert done.wait(10), "the snapshot waited for the usage pass"
        assert r.records_since_snapshot == 0
        compacted = threading.Event()
        comp = threading.Thread(target=lambda: (compaction.compact(r), compacted.set()))
        comp.start()
        assert not compacted.wait(0.3), "compaction ran while the pass was reading the log"
    finally:
        release.set()
        t.join(30)
    comp.join(30)
    assert compacted.is_set() and r.usage.ready
    now = harness.clock.now_ms() // 1000
    assert r.usage_totals(now) == recount(r, now)
