"""Compaction: dead blobs free disk, live ones survive, and a crash mid-swap rolls forward."""

from __future__ import annotations

import json
import os
import random

import pytest

from ambry.common.blobid import BlobId
from ambry.common.errors import BlobDeleted, BlobExpired, BlobNotFound
from ambry.common.namerecord import NameRecord
from ambry.storage import compaction, filenames
from tests.unit.conftest import ReplicaHarness


def _log_bytes(h: ReplicaHarness) -> int:
    return sum(os.path.getsize(os.path.join(h.dir, n)) for n in os.listdir(h.dir)
               if filenames.parse_segment_name(n))


def _fill(h: ReplicaHarness, n: int, size: int = 2000) -> dict[BlobId, bytes]:
    out = {}
    for _ in range(n):
        data = os.urandom(size)
        out[h.put(data)] = data
    return out


def test_compaction_of_half_deleted_replica_halves_its_disk(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    blobs = _fill(harness, 200)  # ~400 KB over ~7 segments of 64 KiB
    ids = list(blobs)
    rnd = random.Random(4)
    deleted = set(rnd.sample(ids, 100))
    for bid in deleted:
        r.delete(bid)
    before = _log_bytes(harness)
    # within the retention period nothing is reclaimed
    assert compaction.compact(r).segments_compacted == 0
    harness.clock.advance(61_000)
    rep = compaction.compact(r)
    after = _log_bytes(harness)
    assert rep.segments_compacted >= 5
    assert after < before * 0.62, (before, after)
    gone = 0
    for bid, data in blobs.items():
        if bid in deleted:
            with pytest.raises(BlobDeleted):
                r.get(bid)
            if r.state(bid)[1]:  # its PUT is in the active segment: not compacted yet
                continue
            gone += 1
            with pytest.raises(BlobDeleted):  # data gone; the tombstone still answers
                r.get(bid, include_deleted=True)
            with pytest.raises(BlobNotFound):  # and it can no longer be undeleted
                r.undelete(bid)
        else:
            assert r.get(bid).read_payload() == data
    assert gone >= 80
    # sequence numbers are kept: replication sees the same history minus dropped puts
    entries, _, _ = r.entries_since(None, max_entries=10_000)
    seqs = [e.sequence for e in entries]
    assert seqs == sorted(seqs) and seqs[-1] == 300
    # and the state survives restart (snapshot written by compaction, then without it)
    harness.close()
    for drop in (False, True):
        if drop:
            os.remove(os.path.join(harness.dir, "index.snap"))
        r = harness.open()
        for bid, data in blobs.items():
            if bid not in deleted:
                assert r.get(bid).read_payload() == data
            else:
                with pytest.raises(BlobDeleted):
                    r.get(bid)
        harness.close()


def test_expired_blobs_are_compacted_and_permanent_ones_kept(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    short = [harness.put(os.urandom(3000), ttl_s=5) for _ in range(40)]
    keep = short[:5]
    for bid in keep:
        r.ttl_update(bid)
    _fill(harness, 30)  # push the short ones into sealed segments
    harness.clock.advance(5_000 + 61_000)
    compaction.compact(r)
    for bid in keep:
        assert r.get(bid).read_payload()
    for bid in short[5:]:
        with pytest.raises((BlobExpired, BlobNotFound)):
            r.get(bid, include_expired=False)


def test_superseded_names_are_compacted(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    bid = harness.put(b"x")
    for ts in range(1, 400):
        r.name_put(NameRecord(1, 1, "model.pt", bid.to_bytes(), ts, 1, False, 1)).result(5)
    _fill(harness, 40)
    before = _log_bytes(harness)
    compaction.compact(r)
    assert _log_bytes(harness) < before
    e = r.name_get(1, 1, "model.pt")
    assert e is not None and e.ts_ms == 399
    harness.close()
    import shutil
    shutil.rmtree(harness.names_dir)
    r = harness.open()
    e = r.name_get(1, 1, "model.pt")
    assert e is not None and e.ts_ms == 399


def test_active_segment_is_never_compacted(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    bid = harness.put(b"only")
    r.delete(bid)
    harness.clock.advance(100_000)
    assert compaction.compact(r).segments_compacted == 0


@pytest.mark.parametrize("crash_at", ["before-marker", "after-marker", "after-rename"])
def test_crash_during_compaction_swap_rolls_forward(harness: ReplicaHarness,
                                                    crash_at: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    r = harness.replica
    assert r is not None
    blobs = _fill(harness, 80)
    ids = list(blobs)
    for bid in ids[::2]:
        r.delete(bid)
    harness.clock.advance(61_000)

    class Crash(Exception):
        pass

    disk = r.disk
    real_rename = disk.rename
    real_write = disk.write_file_atomic

    def write_file_atomic(path: str, data: bytes) -> None:
        if crash_at == "before-marker" and path.endswith(filenames.COMPACTION_MARKER):
            raise Crash()
        real_write(path, data)

    def rename(src: str, dst: str) -> None:
        real_rename(src, dst)
        if crash_at == "after-rename" and src.endswith(".log.tmp"):
            raise Crash()
        if crash_at == "after-marker" and src.endswith(".log.tmp"):
            pass

    monkeypatch.setattr(disk, "write_file_atomic", write_file_atomic)
    monkeypatch.setattr(disk, "rename", rename)
    if crash_at == "after-marker":
        def rename_crash(src: str, dst: str) -> None:
            if src.endswith(".log.tmp"):
                raise Crash()
            real_rename(src, dst)
        monkeypatch.setattr(disk, "rename", rename_crash)
    with pytest.raises(Crash):
        compaction.compact(r)
    monkeypatch.undo()
    harness.kill()
    marker = os.path.join(harness.dir, filenames.COMPACTION_MARKER)
    if crash_at != "before-marker":
        with open(marker) as f:
            assert json.loads(f.read())["segment"] >= 1
    r = harness.open()
    assert not os.path.exists(marker)
    assert not [n for n in os.listdir(harness.dir) if n.endswith(".tmp")]
    for i, (bid, data) in enumerate(blobs.items()):
        if i % 2:
            assert r.get(bid).read_payload() == data
        else:
            with pytest.raises(BlobDeleted):
                r.get(bid)
