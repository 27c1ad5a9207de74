"""Skeletons of freed segments (ambry/storage/skeleton.py, issue 17): a wholly freed segment is
rewritten as every byte but its freed payloads, and reads back as the punched segment it
replaced, byte for byte; a torn or damaged skeleton is refused, never read as zeros; a
replica serves, restarts, dumps and verifies with skeletons in its log."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable

import pytest
from conftest import ReplicaHarness
from hypothesis import given
from hypothesis import strategies as st

from ambry.common.errors import DataCorrupt
from ambry.storage.disk import OsDisk
from ambry.storage.ecstate import EcRecord
from ambry.storage.format import SEGMENT_HEADER_SIZE, RecordType
from ambry.storage.inspect import dump_segment, verify_replica
from ambry.storage.skeleton import MAGIC, SkeletonFile, _read_plan, extents_of, open_segment

PAYLOAD = 4 * 1024  # small records: hole punching alone frees nothing of them


@st.composite
def _segments(draw: st.DrawFn) -> tuple[int, list[tuple[int, int, int | None]]]:
    """A segment's size and its records: (offset, length, payload offset or None)."""
    recs = []
    off = SEGMENT_HEADER_SIZE
    for _ in range(draw(st.integers(0, 12))):
        length = draw(st.integers(65, 5000))
        payload_at = draw(st.one_of(st.none(), st.integers(64, length)))
        recs.append((off, length, payload_at))
        off += length
    return off, recs


@given(_segments())
def test_extents_keep_exactly_what_is_not_a_freed_payload(seg) -> None:
    size, recs = seg
    keep = bytearray(size)
    for o, n in extents_of(size, recs):
        assert n > 0
        keep[o:o + n] = b"\x01" * n
    want = bytearray(b"\x01" * size)
    for off, length, payload_at in recs:
        if payload_at is not None:
            want[off + payload_at:off + length] = bytes(length - payload_at)
    assert keep == want
    ext = extents_of(size, recs)
    assert all(a[0] + a[1] < b[0] for a, b in itertools.pairwise(ext))  # merged


@given(st.lists(st.tuples(st.integers(1, 200_000), st.integers(1, 9 << 20)), max_size=40))
def test_read_plan_covers_every_extent_once_in_bounded_reads(gaps_and_lengths) -> None:
    extents, off = [], 0
    for gap, n in gaps_and_lengths:
        off += gap
        extents.append((off, n))
        off += n
    plan = _read_plan(extents)
    got = [p for _start, _span, parts in plan for p in parts]
    merged: list[tuple[int, int]] = []
    for o, n in got:  # a big extent is read in pieces: join them back
        if merged and merged[-1][0] + merged[-1][1] == o and (o, n) not in extents:
            merged[-1] = (merged[-1][0], merged[-1][1] + n)
        else:
            merged.append((o, n))
    assert merged == extents
    for start, span, parts in plan:
        assert 0 < span <= 4 << 20
        assert all(start <= o and o + n <= start + span for o, n in parts)


def _freed_replica(h: ReplicaHarness) -> tuple[dict, list[EcRecord], dict[int, bytes]]:
    """Blobs PUT, every sealed segment 'encoded' and freed; the segments' bytes as they were
    before (payloads of freed records zeroed: what the punched file reads)."""
    r = h.replica
    assert r is not None
    blobs = {}
    for _ in range(40):
        data = os.urandom(PAYLOAD)
        blobs[h.put(data)] = data
    before: dict[int, bytes] = {}
    recs = []
    copies: dict[bytes, bytes] = {}
    for number, gen, size, _at in r.ec_sealed():
        _s, directory, _f = r.ec_scan_segment(number, gen)
        raw = bytearray(r.log.segment(number).file.pread(size, 0))
        rec = EcRecord(r.incarnation, number, gen, "dc1", 2, 1, 1, 64 * 1024, size,
                       ("a", "b", "c"), 0, directory)
        copies[rec.key] = bytes(raw)
        for sr in r.log.scan((number, 0), verify=False, end=(number + 1, 0)):
            if sr.header.type == RecordType.PUT:
                a = sr.position[1] + sr.header.payload_offset
                raw[a:a + sr.header.payload_len] = bytes(sr.header.payload_len)
        before[number] = bytes(raw)
        r.durable_future(r.ec_apply(rec.key, rec.to_props())).result(timeout=10)
        recs.append(rec)

    class Reader:
        def read_encoded(self, partition_id: int, rec: EcRecord, offset: int, length: int,
                         rebuild: bool = False, verified: bool = False,
                         check: Callable[[bytes], bool] | None = None) -> bytes:
            return copies[rec.key][offset:offset + length]

    r.set_fragment_reader(Reader())
    r.ec_free_pass("dc1")
    return blobs, recs, before


def test_a_skeleton_reads_as_the_punched_segment_it_replaced(harness: ReplicaHarness) -> None:
    _blobs, _recs, before = _freed_replica(harness)
    r = harness.replica
    rng = random.Random(17)
    for number, raw in before.items():
        f = r.log.segment(number).file
        assert isinstance(f, SkeletonFile)
        # every extent edge, one byte either side, and random ranges
        edges = {e + d for s, n in zip(f.starts, f.lengths, strict=True) for e in (s, s + n)
                 for d in (-1, 0, 1)}
        ranges = [(o, n) for o in edges for n in (0, 1, 2, 100)] + \
            [(rng.randrange(len(raw) + 100), rng.randrange(70_000)) for _ in range(300)]
        for off, n in ranges:
            off = max(off, 0)
            assert f.pread(n, off) == raw[off:off + n], (number, off, n)
        buf = bytearray(len(raw))
        assert f.preadinto(buf, 0) == len(raw) and bytes(buf) == raw


def test_skeletons_give_back_small_records_and_survive_restart_dump_and_verify(
        harness: ReplicaHarness) -> None:
    blobs, recs, _before = _freed_replica(harness)
    r = harness.replica
    for rec in recs:
        path = os.path.join(r.log.dir, r.log.segment(rec.segment).name)
        with open(path, "rb") as f:
            assert f.read(len(MAGIC)) == MAGIC
        # ~200 bytes a record kept of ~4.3 KB: the punched file kept every page
        assert os.stat(path).st_size < rec.original_bytes // 8
    for bid, data in blobs.items():
        assert r.get(bid).read_payload() == data
    harness.kill()  # kill -9: no snapshot; recovery scans the skeletons' records
    r = harness.open()
    for rec in recs:
        assert isinstance(r.log.segment(rec.segment).file, SkeletonFile)
    rows = list(dump_segment(os.path.join(r.log.dir, r.log.segment(recs[0].segment).name)))
    assert {row["checksum"] for row in rows if row.get("type") == "PUT"} == {"freed"}
    rep = verify_replica(r.log.dir)
    assert rep.ok, (rep.error, rep.damage)
    assert rep.freed_records == sum(rec.blobs for rec in recs)


@pytest.mark.parametrize("damage", ["torn", "table"])
def test_a_torn_or_damaged_skeleton_is_refused(harness: ReplicaHarness, damage: str) -> None:
    _blobs, recs, _before = _freed_replica(harness)
    r = harness.replica
    path = os.path.join(r.log.dir, r.log.segment(recs[0].segment).name)
    harness.close()
    if damage == "torn":
        os.truncate(path, os.path.getsize(path) - 1)
    else:
        with open(path, "r+b") as f:
            f.seek(40)
            b = f.read(1)
            f.seek(40)
            f.write(bytes([b[0] ^ 1]))
    with pytest.raises(DataCorrupt):
        open_segment(OsDisk(), path)
