"""Disk full and I/O errors: typed errors, the replica turns read-only, never corrupt."""

from __future__ import annotations

import os

import pytest

from ambry.common.config import StorageConfig
from ambry.common.errors import BlobNotFound, PartitionReadOnly
from ambry.testing.simdisk import SimDisk
from tests.unit.conftest import ReplicaHarness, make_id, props_for


def test_disk_full_makes_replica_read_only_for_puts(tmp_path: object,
                                                    small_config: StorageConfig) -> None:
    disk = SimDisk(capacity_bytes=50_000)
    h = ReplicaHarness(str(tmp_path), disk, small_config)
    r = h.open()
    acked = {}
    with pytest.raises(PartitionReadOnly) as exc:
        for _ in range(100):
            data = os.urandom(1000)
            acked[h.put(data)] = data
    assert "disk full" in str(exc.value)
    assert r.stats().read_only
    # reads still served, the failed put left nothing behind
    for bid, data in acked.items():
        assert r.get(bid).read_payload() == data
    with pytest.raises(PartitionReadOnly):  # further puts refused at once
        h.put(b"x")
    # a delete is small: it still goes in if the disk has room for it
    disk.capacity_bytes = None
    first = next(iter(acked))
    r.durable_future(r.delete(first).end).result(5)
    # after a restart (space freed) the replica takes puts again, and nothing is damaged
    h.kill()
    r = h.open()
    assert not r.damage
    h.put(b"after restart")
    assert len([b for b in acked if b != first and r.get(b)]) == len(acked) - 1
    h.close()


def test_io_error_on_write_turns_replica_read_only_but_readable(
        tmp_path: object, small_config: StorageConfig) -> None:
    disk = SimDisk()
    h = ReplicaHarness(str(tmp_path), disk, small_config)
    r = h.open()
    bid = h.put(b"before")
    disk.fail_writes = True
    with pytest.raises(PartitionReadOnly):
        h.put(b"during")
    with pytest.raises(PartitionReadOnly):  # everything that writes is refused now
        r.delete(bid)
    assert r.get(bid).read_payload() == b"before"
    assert r.stats().read_only
    disk.fail_writes = False
    h.kill()
    r = h.open()
    assert r.get(bid).read_payload() == b"before"
    assert not r.damage
    h.close()


def test_fsync_error_never_acks(tmp_path: object, small_config: StorageConfig) -> None:
    # fsyncgate: after a failed fdatasync the written data may be gone from the disk; the
    # put must fail, not be acknowledged, and the replica must stop taking writes.
    disk = SimDisk()
    h = ReplicaHarness(str(tmp_path), disk, small_config)
    r = h.open()
    disk.fail_syncs = True
    bid = make_id()
    res = r.put(bid, props_for(b"data", h.clock), b"", b"data")
    with pytest.raises(Exception) as exc:
        r.durable_future(res.end).result(timeout=5)
    assert "fdatasync" in str(exc.value)
    with pytest.raises(PartitionReadOnly):
        h.put(b"more")
    disk.fail_syncs = False
    h.power_loss()
    r = h.open()
    with pytest.raises(BlobNotFound):
        r.get(bid)
    h.close()


def test_page_cache_policy_acks_at_once_and_flushes_periodically(tmp_path: object) -> None:
    cfg = StorageConfig(segment_size_bytes=1 << 20, durability="page-cache",
                        page_cache_flush_interval_ms=50)
    disk = SimDisk()
    h = ReplicaHarness(str(tmp_path), disk, cfg)
    r = h.open()
    bid = make_id()
    res = r.put(bid, props_for(b"x", h.clock), b"", b"x")
    assert r.durable_future(res.end).done()  # no fdatasync waited for
    import time
    deadline = time.time() + 5
    while r.log.active.synced_size < res.end[1] and time.time() < deadline:
        time.sleep(0.02)
    assert r.log.active.synced_size >= res.end[1]  # the periodic flush made it durable
    h.power_loss()
    assert h.open().get(bid).read_payload() == b"x"
    h.close()


def test_disk_full_mid_pwritev_of_a_large_record_leaves_no_partial_record(
        tmp_path: object) -> None:
    # a record over 256 KiB is written with one pwritev; a disk that takes part of it and then
    # says ENOSPC must leave no partial record behind (cut off, nothing indexed, no damage)
    config = StorageConfig(segment_size_bytes=8 << 20, max_record_bytes=4 << 20)
    disk = SimDisk()
    h = ReplicaHarness(str(tmp_path), disk, config)
    r = h.open()
    small = h.put(os.urandom(1000))
    before = disk.used_bytes()
    disk.capacity_bytes = before + 600_000  # the header, key and half the payload fit
    big = make_id()
    data = os.urandom(1 << 20)
    with pytest.raises(PartitionReadOnly) as exc:
        r.put(big, props_for(data, h.clock, -1), b"um", memoryview(data))
    assert "disk full" in str(exc.value)
    assert disk.used_bytes() == before  # the written prefix was cut off again
    with pytest.raises(BlobNotFound):
        r.get(big)
    disk.capacity_bytes = None
    h.kill()
    r = h.open()
    assert not r.damage
    assert r.get(small)
    with pytest.raises(BlobNotFound):
        r.get(big)
    h.put(data, blob_id=big)  # once there is room the same put goes in whole
    assert r.get(big).read_payload() == data
    h.close()
