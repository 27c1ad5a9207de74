"""Recovery: power loss on the simulated disk, torn tails, flipped bits, damaged snapshots."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from ambry.common.blobid import BlobId
from ambry.common.errors import BlobNotFound, DataCorrupt
from ambry.common.namerecord import NameRecord
from ambry.storage import filenames
from ambry.storage.format import RECORD_HEADER_SIZE
from tests.unit.conftest import ReplicaHarness, make_id, props_for


def _segment_path(h: ReplicaHarness, number: int = 1) -> str:
    names = [n for n in os.listdir(h.dir) if filenames.parse_segment_name(n)]
    match = [n for n in names if filenames.parse_segment_name(n)[0] == number]  # type: ignore
    return os.path.join(h.dir, match[0])


def test_power_loss_keeps_every_acknowledged_put(sim_harness: ReplicaHarness) -> None:
    # Under the fsync policy an ack means fdatasync'd: the simulated disk drops everything
    # else at the crash, and all acked puts (and names) must still be there afterwards.
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rnd = random.Random(seed)
    h = sim_harness
    r = h.replica
    assert r is not None
    acked: dict[BlobId, bytes] = {}
    unacked: list[BlobId] = []
    for round_no in range(3):
        r = h.replica
        assert r is not None
        for _ in range(rnd.randrange(20, 60)):
            data = rnd.randbytes(rnd.randrange(1, 6000))
            acked[h.put(data)] = data
        # written but never waited for: may or may not survive, but never half
        for _ in range(5):
            data = rnd.randbytes(rnd.randrange(1, 6000))
            bid = make_id()
            r.put(bid, props_for(data, h.clock), b"", data)
            unacked.append(bid)
        h.power_loss()
        r = h.open()
        for bid, data in acked.items():
            assert r.get(bid).read_payload() == data, f"round {round_no} lost an acked put"
        for bid in unacked:
            try:
                r.get(bid).read_payload()
            except BlobNotFound:
                pass
        assert not [d for d in r.damage if d.kind == "corrupt"]


def test_power_loss_with_concurrent_writers(sim_harness: ReplicaHarness) -> None:
    h = sim_harness
    r = h.replica
    assert r is not None
    acked: dict[BlobId, bytes] = {}

    def writer(i: int) -> None:
        for j in range(20):
            data = os.urandom(100 + i * 10 + j)
            acked[h.put(data)] = data

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    h.power_loss()
    r = h.open()
    assert all(r.get(b).read_payload() == d for b, d in acked.items())


def test_names_view_never_shows_a_name_the_log_lost(sim_harness: ReplicaHarness) -> None:
    h = sim_harness
    r = h.replica
    assert r is not None
    bid = h.put(b"blob")
    r.name_put(NameRecord(1, 1, "acked", bid.to_bytes(), 10, 1, False)).result(timeout=5)
    h.power_loss()
    r = h.open()
    assert r.name_get(1, 1, "acked") is not None


def test_restart_after_torn_tail_keeps_acked_puts(harness: ReplicaHarness) -> None:
    # A crash in the middle of an append leaves a partial record at the end of the log:
    # recovery cuts it off (keeping a copy in quarantine) and everything before it is served.
    acked = {harness.put(os.urandom(1000)): None for _ in range(10)}
    harness.close()
    path = _segment_path(harness)
    with open(path, "ab") as f:  # half a record: a valid-looking header, missing body
        f.write(b"AMBR" + os.urandom(100))
    size_torn = os.path.getsize(path)
    r = harness.open()
    assert os.path.getsize(path) == size_torn - 104
    assert [d.kind for d in r.damage] == ["torn_tail"]
    assert os.listdir(os.path.join(harness.dir, "quarantine"))
    for bid in acked:
        r.get(bid).read_payload()
    bid = harness.put(b"after")  # and the log takes appends again at the cut
    harness.close()
    assert harness.open().get(bid).read_payload() == b"after"


def test_torn_tail_inside_last_record_body(harness: ReplicaHarness) -> None:
    first = harness.put(os.urandom(500))
    harness.close()
    path = _segment_path(harness)
    data = os.urandom(3000)
    r = harness.open()
    last = harness.put(data)
    harness.close()
    with open(path, "r+b") as f:  # lose the last 1000 bytes of the last record
        f.truncate(os.path.getsize(path) - 1000)
    r = harness.open()
    assert r.get(first).read_payload()
    with pytest.raises(BlobNotFound):
        r.get(last)
    assert [d.kind for d in r.damage] == ["torn_tail"]


def test_flipped_bit_mid_log_is_reported_and_the_rest_served(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    ids = [harness.put(os.urandom(2000)) for _ in range(5)]
    victim = ids[2]
    seg, off = r.index.get(victim.uuid)[:2]  # type: ignore[index]
    harness.kill()  # no snapshot: recovery scans (and verifies) the whole log
    path = _segment_path(harness, seg)
    with open(path, "r+b") as f:
        f.seek(off + RECORD_HEADER_SIZE + 200)
        b = f.read(1)
        f.seek(off + RECORD_HEADER_SIZE + 200)
        f.write(bytes([b[0] ^ 0x10]))
    r = harness.open()
    assert [d.kind for d in r.damage] == ["corrupt"]
    assert "checksum" in r.damage[0].reason
    with pytest.raises(BlobNotFound):  # not indexed; a peer will repair it
        r.get(victim)
    for bid in ids[:2] + ids[3:]:
        r.get(bid).read_payload()
    with open(os.path.join(harness.dir, "quarantine.log")) as f:
        report = f.read()
    assert '"corrupt"' in report


def test_flipped_bit_in_indexed_record_is_caught_on_read(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    ids = [harness.put(os.urandom(2000)) for _ in range(3)]
    harness.close()  # snapshot: recovery will not rescan these records
    r = harness.open()
    seg, off = r.index.get(ids[1].uuid)[:2]  # type: ignore[index]
    with open(_segment_path(harness, seg), "r+b") as f:
        f.seek(off + RECORD_HEADER_SIZE + 1000)
        b = f.read(1)
        f.seek(off + RECORD_HEADER_SIZE + 1000)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(DataCorrupt):
        r.get(ids[1]).read_payload()
    with pytest.raises(DataCorrupt):
        b"".join(r.get(ids[1]).iter_payload(512))
    assert r.get(ids[0]).read_payload() and r.get(ids[2]).read_payload()
    assert r.stats().damage_reports == 2


def test_flipped_bit_in_record_header_resyncs_to_next_record(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    ids = [harness.put(os.urandom(700)) for _ in range(5)]
    seg, off = r.index.get(ids[1].uuid)[:2]  # type: ignore[index]
    harness.kill()
    with open(_segment_path(harness, seg), "r+b") as f:
        f.seek(off + 12)  # inside the header's length fields
        f.write(b"\xff\xff")
    r = harness.open()
    assert [d.kind for d in r.damage] == ["corrupt"]
    for bid in [ids[0]] + ids[2:]:
        r.get(bid).read_payload()


@pytest.mark.parametrize("damage", ["garbage", "truncate", "stale-generation", "past-end"])
def test_bad_snapshot_only_costs_time(harness: ReplicaHarness, damage: str) -> None:
    ids = [harness.put(os.urandom(900)) for _ in range(100)]  # two segments
    harness.close()
    snap = os.path.join(harness.dir, "index.snap")
    if damage == "garbage":
        with open(snap, "r+b") as f:
            f.seek(100)
            f.write(b"\x00" * 40)
    elif damage == "truncate":
        with open(snap, "r+b") as f:
            f.truncate(os.path.getsize(snap) - 7)
    elif damage == "stale-generation":
        seg = _segment_path(harness, 1)
        num, gen = filenames.parse_segment_name(os.path.basename(seg))  # type: ignore[misc]
        os.rename(seg, os.path.join(harness.dir, filenames.segment_name(num, gen + 1)))
        with open(os.path.join(harness.dir, filenames.segment_name(num, gen + 1)), "r+b") as f:
            from ambry.storage.format import SegmentHeader
            f.write(SegmentHeader(num, gen + 1).encode())
    elif damage == "past-end":
        # cut the log back: the snapshot now points past its end
        last = max(n for n in os.listdir(harness.dir) if filenames.parse_segment_name(n))
        p = os.path.join(harness.dir, last)
        with open(p, "r+b") as f:
            f.truncate(32)
    r = harness.open()
    expect = ids if damage != "past-end" else None
    if expect is not None:
        for bid in expect:
            r.get(bid).read_payload()
    else:
        found = sum(1 for bid in ids if _readable(r, bid))
        assert 0 < found < len(ids)  # the truncated segment's blobs are gone, the rest rebuilt
        assert all(r.index.get(b.uuid) is None or _readable(r, b) for b in ids)


def _readable(r: object, bid: BlobId) -> bool:
    try:
        r.get(bid).read_payload()  # type: ignore[attr-defined]
        return True
    except BlobNotFound:
        return False


def test_snapshot_is_used_and_tail_replayed(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    before = [harness.put(os.urandom(100)) for _ in range(20)]
    r.write_snapshot()
    after = [harness.put(os.urandom(100)) for _ in range(5)]
    r.delete(before[0])
    harness.kill()
    r = harness.open()
    assert r.records_since_snapshot == 6  # only the tail was replayed
    for bid in before[1:] + after:
        r.get(bid).read_payload()
    assert r.state(before[0])[0].deleted  # type: ignore[union-attr]
