"""A replica's side of compaction of encoded segments (ambry/storage/ecstate.py ``remap``,
ambry/storage/ecreplica.py): when a record replacing an encoded segment arrives, the freed
segments move onto it, the blobs it left out leave the index as compaction drops a PUT, the
move survives a kill -9 before the next index snapshot, and a blob the new record left out
that is alive here keeps the old record (nothing is lost to an undelete race).

The fragments themselves are out of scope here (tests/integration/test_ec_compaction.py runs
the real warm tier): the reader below serves each record's encoded segment from a copy of
the bytes that were encoded, as k + m fragment nodes would."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from conftest import ReplicaHarness

from ambry.common.errors import BlobDeleted, BlobNotFound
from ambry.storage.ecstate import DIR_ENTRY, GONE, EcRecord, ec_key, successor_key
from ambry.storage.indexentry import F_HAS_PUT
from ambry.storage.inspect import dump_segment
from ambry.storage.replica import Replica

DC = "dc1"
PAYLOAD = 20 * 1024  # 3 records in a 64 KiB segment


class _EncodedCopies:
    """Bytes of each record's encoded segment (what its fragments decode to)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def read_encoded(self, partition_id: int, rec: EcRecord, offset: int, length: int,
                     rebuild: bool = False, verified: bool = False,
                     check: Callable[[bytes], bool] | None = None) -> bytes:
        return self.data[rec.key][offset:offset + length]


def _encode_sealed(r: Replica, copies: _EncodedCopies) -> list[EcRecord]:
    """As the coordinator would: one EC_SEGMENT record per sealed segment of ``r``."""
    recs = []
    for number, gen, size, _at in r.ec_sealed():
        _size, directory, _free = r.ec_scan_segment(number, gen)
        seg = r.log.segment(number)
        rec = EcRecord(r.incarnation, number, gen, DC, 2, 1, 1, 64 * 1024, size,
                       ("a", "b", "c"), 0, directory)
        copies.data[rec.key] = bytes(seg.file.pread(size, 0))
        r.durable_future(r.ec_apply(rec.key, rec.to_props())).result(timeout=10)
        recs.append(rec)
    return recs


def _recode(r: Replica, copies: _EncodedCopies, old: EcRecord, keep: set[bytes]) -> EcRecord:
    """As the coordinator's re-encoding would: the kept blobs' records end to end."""
    body = bytearray()
    directory = bytearray()
    for uuid, off, total, xxh in old.entries():
        if uuid in keep:
            directory += DIR_ENTRY.pack(uuid, len(body), total, xxh)
            body += copies.data[old.key][off:off + total]
    source, seg, gen = successor_key(old)
    new = EcRecord(source, seg, gen, DC, 2, 1, 1, 64 * 1024, len(body),
                   ("a", "b", "c") if body else (), 0, bytes(directory), old.key)
    copies.data[new.key] = bytes(body)
    r.durable_future(r.ec_apply(new.key, new.to_props())).result(timeout=10)
    return new


@pytest.fixture
def encoded(harness: ReplicaHarness) -> tuple[ReplicaHarness, _EncodedCopies, dict, list]:
    copies = _EncodedCopies()
    r = harness.replica
    assert r is not None
    r.set_fragment_reader(copies)
    blobs = {}
    for i in range(9):
        data = os.urandom(PAYLOAD)
        blobs[harness.put(data)] = data
    recs = _encode_sealed(r, copies)
    assert len(recs) >= 2
    assert r.ec_free_pass(DC) == [rec.segment for rec in recs]
    return harness, copies, blobs, recs


def _has_put(r: Replica, bid: object) -> bool:
    e = r.index.get(bid.uuid)  # type: ignore[attr-defined]
    return e is not None and bool(e[6] & F_HAS_PUT)


def test_freed_segment_moves_to_the_re_encoded_record_and_dead_blobs_leave(encoded) -> None:
    h, copies, blobs, recs = encoded
    r = h.replica
    old = recs[0]
    in_old = [bid for bid in blobs if any(e[0] == bid.uuid for e in old.entries())]
    dead, live = in_old[0], in_old[1:]
    r.delete(dead)
    h.clock.advance((h.config.compaction_retention_s + 1) * 1000)
    live_dir, dead_uuids = r.ec_recode_plan(old.key)
    assert dead_uuids == [dead.uuid]
    assert r.ec_live([dead.uuid] + [b.uuid for b in live]) == [b.uuid for b in live]
    new = _recode(r, copies, old, {e[0] for e in DIR_ENTRY.iter_unpack(live_dir)})
    assert new.key == ec_key(*successor_key(old)) and new.replaces == old.key
    r.ec_free_pass(DC)
    # the freed map reads through the new record only; the dead blob's PUT left the index
    assert old.key not in r.ec.references() and new.key in r.ec.references()
    assert not _has_put(r, dead)
    with pytest.raises(BlobDeleted):
        r.get(dead, include_deleted=True)
    for bid, data in blobs.items():
        if bid != dead:
            assert r.get(bid).read_payload() == data
    # ambry admin dump-log tells the payload that went with its blob from one in fragments
    seg = r.log.segment(old.segment)
    rows = {row["key"]: row["checksum"] for row in
            dump_segment(os.path.join(r.log.dir, seg.name)) if row.get("type") == "PUT"}
    assert rows[dead.to_str()] == "gone"
    assert {rows[b.to_str()] for b in live} == {"freed"}
    # kill -9 before any index snapshot: the log replays the dead blob's PUT; the map's GONE
    # record takes it out of the index again
    h.kill()
    r = h.open()
    r.set_fragment_reader(copies)
    assert not _has_put(r, dead)
    assert any(e[0] == GONE for fs in r.ec.freed.values() for e in fs.entries.values())
    for bid, data in blobs.items():
        if bid != dead:
            assert r.get(bid).read_payload() == data
    # the old record is replaced: nothing is freed against it again, status says so
    st = {(x["segment"], x["generation"]): x for x in r.ec_status()["records"]}
    assert st[(old.segment, old.generation)]["replaced"]


def test_every_blob_dead_gives_an_empty_record_and_the_payloads_go(encoded) -> None:
    h, copies, blobs, recs = encoded
    r = h.replica
    old = recs[0]
    in_old = [bid for bid in blobs if any(e[0] == bid.uuid for e in old.entries())]
    for bid in in_old:
        r.delete(bid)
    h.clock.advance((h.config.compaction_retention_s + 1) * 1000)
    new = _recode(r, copies, old, set())
    assert new.original_bytes == 0 and new.placement == ()
    r.ec_free_pass(DC)
    assert old.key not in r.ec.references()
    assert not any(_has_put(r, bid) for bid in in_old)


def test_a_left_out_blob_alive_here_keeps_the_old_record(encoded) -> None:
    # an undelete raced the coordinator's question: the new record left out a blob this
    # replica holds alive; the segment stays on the old record (its fragments stay), and
    # the blob stays readable
    h, copies, blobs, recs = encoded
    r = h.replica
    old = recs[0]
    in_old = [bid for bid in blobs if any(e[0] == bid.uuid for e in old.entries())]
    _recode(r, copies, old, {b.uuid for b in in_old[1:]})
    r.ec_free_pass(DC)
    assert old.key in r.ec.references()
    assert r.get(in_old[0]).read_payload() == blobs[in_old[0]]


def test_not_moved_while_the_new_fragments_are_not_all_there(encoded) -> None:
    h, copies, _blobs, recs = encoded
    r = h.replica
    old = recs[0]
    new = _recode(r, copies, old, {e[0] for e in old.entries()})
    usable = {rec.key for rec in recs}  # the survey has not seen the new record healthy
    r.ec_free_pass(DC, usable)
    assert old.key in r.ec.references()
    r.ec_free_pass(DC, usable | {new.key})
    assert old.key not in r.ec.references() and new.key in r.ec.references()


def test_chain_of_re_encodings_moves_to_the_newest(encoded) -> None:
    h, copies, blobs, recs = encoded
    r = h.replica
    old = recs[0]
    uuids = [e[0] for e in old.entries()]
    mid = _recode(r, copies, old, set(uuids))
    newest = _recode(r, copies, mid, set(uuids))
    assert newest.key == ec_key(mid.source, old.segment, old.generation + 2)
    r.ec_free_pass(DC)
    assert r.ec.references() & {old.key, mid.key} == set()
    for bid, data in blobs.items():
        assert r.get(bid).read_payload() == data


def test_dead_blob_encoded_nowhere_is_punched_with_the_rest(harness: ReplicaHarness) -> None:
    # a replica's copy of a blob that died before its coordinator encoded it (compaction
    # dropped it there) is in no record: it no longer keeps its segment from being freed
    copies = _EncodedCopies()
    r = harness.replica
    assert r is not None
    r.set_fragment_reader(copies)
    blobs = [harness.put(os.urandom(PAYLOAD)) for _ in range(9)]
    dead = blobs[0]
    number, gen, size, _at = r.ec_sealed()[0]
    _size, directory, _free = r.ec_scan_segment(number, gen)
    directory = b"".join(DIR_ENTRY.pack(*e) for e in DIR_ENTRY.iter_unpack(directory)
                         if e[0] != dead.uuid)
    rec = EcRecord(r.incarnation, number, gen, DC, 2, 1, 1, 64 * 1024, size,
                   ("a", "b", "c"), 0, directory)
    copies.data[rec.key] = bytes(r.log.segment(number).file.pread(size, 0))
    r.durable_future(r.ec_apply(rec.key, rec.to_props())).result(timeout=10)
    r.ec_free_pass(DC)
    assert not r.ec.freed[number].complete  # the dead-to-be blob is in no record yet
    r.delete(dead)
    harness.clock.advance((harness.config.compaction_retention_s + 1) * 1000)
    r.ec_free_pass(DC)
    assert r.ec.freed[number].complete and not _has_put(r, dead)
    with pytest.raises((BlobDeleted, BlobNotFound)):
        r.get(dead, include_deleted=True)
