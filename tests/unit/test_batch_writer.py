"""The node's batch writer (ambry.storage.batchwriter): small mutations appended a batch at a
time, ONE fdatasync per replica log per batch, every reply only once durable, and exactly the
replica's semantics (duplicates, BlobAlreadyExists, read-only on a full disk or failed sync).
Run with the C record codec and its pure-Python twin."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from ambry.common.blobid import BlobId
from ambry.common.config import StorageConfig
from ambry.common.errors import BlobAlreadyExists, PartitionReadOnly, StorageError
from ambry.native import _pyrecord
from ambry.storage import replica as replica_mod
from ambry.storage import replicacore
from ambry.storage.api import MutationResult
from ambry.storage.batchwriter import BatchWriter, Outcome
from ambry.testing.simdisk import SimDisk
from tests.unit.conftest import ReplicaHarness, make_id, props_for

try:
    from ambry.native import _crecord
except ImportError:
    _crecord = None  # type: ignore[assignment]


@pytest.fixture(params=["c", "python"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The append path with the C record codec, then with its Python twin."""
    impl: Any = _crecord if request.param == "c" else _pyrecord
    if impl is None:
        pytest.skip("ambry.native._crecord is not built")
    monkeypatch.setattr(replicacore, "encode_record", impl.encode_record)
    monkeypatch.setattr(replica_mod, "record_body_xxh3", impl.body_xxh3)
    return str(request.param)


@pytest.fixture
def sim(tmp_path: object, small_config: StorageConfig,
        codec: str) -> Iterator[tuple[ReplicaHarness, SimDisk]]:
    disk = SimDisk()
    h = ReplicaHarness(str(tmp_path), disk, small_config)
    h.open()
    yield h, disk
    h.close()


async def _run(writer: BatchWriter, jobs: list[tuple[Any, Any, tuple[Any, ...]]]
               ) -> list[Outcome]:
    """Submit every job in one loop step (one batch) and wait for all the outcomes."""
    loop = asyncio.get_running_loop()
    futs: list[asyncio.Future[Outcome]] = [loop.create_future() for _ in jobs]
    for (r, fn, args), fut in zip(jobs, futs):
        writer.submit(r, fn, args, fut.set_result)
    return list(await asyncio.wait_for(asyncio.gather(*futs), 10))


def _put(h: ReplicaHarness, bid: BlobId, data: bytes) -> tuple[Any, Any, tuple[Any, ...]]:
    r = h.replica
    assert r is not None
    return r, r.put, (bid, props_for(data, h.clock), b"um", data)


async def test_puts_submitted_together_share_one_batch_and_one_fdatasync(
        sim: tuple[ReplicaHarness, SimDisk]) -> None:
    # what broke before: each put was a thread hand-off and a durability waiter of its own
    h, _disk = sim
    r = h.replica
    assert r is not None
    w = BatchWriter("t")
    w.start(asyncio.get_running_loop())
    blobs = {make_id(): os.urandom(4096) for _ in range(50)}
    syncs = r.log.syncs
    outs = await _run(w, [_put(h, bid, data) for bid, data in blobs.items()])
    await w.close()
    assert [o.status for o in outs if isinstance(o, MutationResult)] == ["created"] * 50
    assert (w.batches, w.jobs) == (1, 50)
    assert r.log.syncs == syncs + 1
    # acked means durable: a power loss right after the replies loses none of them
    h.power_loss()
    r = h.open()
    for bid, data in blobs.items():
        assert r.get(bid).read_payload() == data


async def test_batch_keeps_duplicate_conflict_and_state_semantics(
        sim: tuple[ReplicaHarness, SimDisk]) -> None:
    h, _disk = sim
    r = h.replica
    assert r is not None
    w = BatchWriter("t")
    w.start(asyncio.get_running_loop())
    a, b = make_id(), make_id()
    data = os.urandom(1000)
    outs = await _run(w, [
        _put(h, a, data),
        _put(h, a, data),  # same id, same content, in the same batch: a duplicate
        _put(h, a, b"other content"),  # same id, other content: a conflict
        (r, r.delete, (a, None, None)),
        (r, r.ttl_update, (b, None, None)),  # unknown id: a marker
    ])
    await w.close()
    assert isinstance(outs[0], MutationResult) and outs[0].status == "created"
    assert isinstance(outs[1], MutationResult) and outs[1].status == "duplicate"
    assert isinstance(outs[2], BlobAlreadyExists)
    assert isinstance(outs[3], MutationResult) and outs[3].status == "deleted"
    assert isinstance(outs[4], MutationResult) and outs[4].status == "marked"


async def test_failed_fdatasync_fails_the_whole_batch_and_turns_read_only(
        sim: tuple[ReplicaHarness, SimDisk]) -> None:
    # a sync error: the bytes may be gone, so no put of that batch may be acked
    h, disk = sim
    r = h.replica
    assert r is not None
    w = BatchWriter("t")
    w.start(asyncio.get_running_loop())
    disk.fail_syncs = True
    outs = await _run(w, [_put(h, make_id(), os.urandom(500)) for _ in range(5)])
    assert all(isinstance(o, StorageError) for o in outs), outs
    disk.fail_syncs = False
    outs = await _run(w, [_put(h, make_id(), b"after")])
    assert isinstance(outs[0], PartitionReadOnly)
    await w.close()


async def test_disk_full_mid_batch_refuses_that_put_and_keeps_the_others(
        tmp_path: object, small_config: StorageConfig, codec: str) -> None:
    disk = SimDisk(capacity_bytes=40_000)
    h = ReplicaHarness(str(tmp_path), disk, small_config)
    r = h.open()
    w = BatchWriter("t")
    w.start(asyncio.get_running_loop())
    blobs = [(make_id(), os.urandom(3000)) for _ in range(30)]
    outs = await _run(w, [_put(h, bid, data) for bid, data in blobs])
    await w.close()
    ok = [bid for (bid, _d), o in zip(blobs, outs) if isinstance(o, MutationResult)]
    refused = [o for o in outs if not isinstance(o, MutationResult)]
    assert ok and refused and all(isinstance(o, PartitionReadOnly) for o in refused)
    # the acked ones are durable and whole; the failed appends were cut off
    h.power_loss()
    r = h.open()
    assert not r.damage
    for bid, data in blobs:
        if bid in ok:
            assert r.get(bid).read_payload() == data
    h.close()


async def test_close_writes_what_is_queued_and_a_bug_in_a_job_fails_only_its_batch(
        sim: tuple[ReplicaHarness, SimDisk]) -> None:
    h, _disk = sim
    w = BatchWriter("t")
    w.start(asyncio.get_running_loop())
    loop = asyncio.get_running_loop()
    got: list[Outcome] = []
    bid = make_id()
    job = _put(h, bid, b"queued at close")
    w.submit(job[0], job[1], job[2], got.append)
    await w.close()  # flushes the pending list, the thread writes it, then stops
    await asyncio.sleep(0)  # the completion was scheduled with call_soon_threadsafe
    await asyncio.wait_for(_until(lambda: bool(got)), 5)
    assert isinstance(got[0], MutationResult) and got[0].status == "created"
    assert not w.running
    # a job that raises a non-Ambry exception is that job's error, not the batch's
    w2 = BatchWriter("t2")
    w2.start(loop)

    def boom(*_a: object) -> MutationResult:
        raise RuntimeError("bug")

    outs = await _run(w2, [(h.replica, boom, ()), _put(h, make_id(), b"fine")])
    await w2.close()
    assert isinstance(outs[0], RuntimeError)
    assert isinstance(outs[1], MutationResult) and outs[1].status == "created"


async def _until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.005)
