"""Fixtures for storage unit tests: replicas on a real temp dir or on the simulated disk."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from ambry.common.blobid import BlobId, new_blob_id
from ambry.common.clock import ManualClock
from ambry.common.config import StorageConfig
from ambry.common.properties import BlobProperties
from ambry.storage.replica import Replica
from ambry.testing.simdisk import SimDisk

PARTITION = 7


def make_id(partition: int = PARTITION) -> BlobId:
    return new_blob_id(1, 2, 3, partition)


def props_for(payload: bytes, clock: ManualClock, ttl_s: int = -1) -> BlobProperties:
    return BlobProperties(size=len(payload), created_ms=clock.now_ms(), ttl_s=ttl_s,
                          content_type="application/octet-stream", service_id="test")


class ReplicaHarness:
    """Opens, crashes and reopens one replica; keeps the clock and disk across restarts."""

    def __init__(self, root: str, disk: SimDisk | None, config: StorageConfig,
                 capacity: int = 1 << 40) -> None:
        self.root = root
        self.dir = "/replica" if disk is not None else os.path.join(root, "replica")
        self.names_dir = os.path.join(root, "names")
        self.disk = disk
        self.config = config
        self.capacity = capacity
        self.clock = ManualClock()
        self.replica: Replica | None = None

    def open(self) -> Replica:
        self.replica = Replica.open(self.dir, PARTITION, self.config, self.capacity,
                                    disk=self.disk, clock=self.clock,
                                    names_dir=self.names_dir)
        return self.replica

    def put(self, payload: bytes, ttl_s: int = -1, blob_id: BlobId | None = None,
            user_metadata: bytes = b"um") -> BlobId:
        assert self.replica is not None
        bid = blob_id or make_id()
        res = self.replica.put(bid, props_for(payload, self.clock, ttl_s), user_metadata, payload)
        self.replica.durable_future(res.end).result(timeout=10)
        return bid

    def close(self) -> None:
        if self.replica is not None:
            self.replica.close()
            self.replica = None

    def kill(self) -> None:
        """Like kill -9: no snapshot, no final sync; threads stop; files stay as they are."""
        if self.replica is not None:
            r = self.replica
            r.opened = False
            r.log.failed = None
            r.close(snapshot=False)
            self.replica = None

    def power_loss(self) -> None:
        assert self.disk is not None
        r = self.replica
        if r is not None:
            # stop the replica without letting it sync anything more
            self.disk.crash()
            r.log.failed = r.log.failed or _Crashed()
            r.close(snapshot=False)
            self.replica = None
        self.disk.crash()


class _Crashed(Exception):
    message = "crashed"


@pytest.fixture
def small_config() -> StorageConfig:
    return StorageConfig(segment_size_bytes=64 * 1024, compaction_retention_s=60,
                         max_record_bytes=32 * 1024)


@pytest.fixture
def harness(tmp_path: object, small_config: StorageConfig) -> Iterator[ReplicaHarness]:
    h = ReplicaHarness(str(tmp_path), None, small_config)
    h.open()
    yield h
    h.close()


@pytest.fixture
def sim_harness(tmp_path: object, small_config: StorageConfig) -> Iterator[ReplicaHarness]:
    h = ReplicaHarness(str(tmp_path), SimDisk(), small_config)
    h.open()
    yield h
    h.close()


HarnessFactory = Callable[..., ReplicaHarness]
