"""Store semantics of one replica: put/get/delete/ttl/undelete, names, replication feed."""

from __future__ import annotations

import os

import pytest

from ambry.common.blobid import BlobId, BlobType
from ambry.common.errors import (
    BlobAlreadyExists,
    BlobDeleted,
    BlobExpired,
    BlobNotDeleted,
    BlobNotFound,
    InvalidArgument,
    PartitionReadOnly,
)
from ambry.common.namerecord import NameRecord
from ambry.storage.format import RecordType
from tests.unit.conftest import PARTITION, ReplicaHarness, make_id, props_for


def test_put_get_roundtrip(harness: ReplicaHarness) -> None:
    payload = os.urandom(5000)
    bid = harness.put(payload, user_metadata=b"meta")
    r = harness.replica
    assert r is not None
    got = r.get(bid)
    assert got.read_payload() == payload
    assert b"".join(got.iter_payload(1000)) == payload
    assert got.read_payload(10, 20) == payload[10:30]
    assert got.user_metadata == b"meta"
    assert got.properties.size == 5000
    assert got.properties.service_id == "test"


def test_put_same_content_twice_is_idempotent(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    bid = make_id()
    p = props_for(b"x" * 10, harness.clock)
    assert r.put(bid, p, b"", b"x" * 10).status == "created"
    assert r.put(bid, p, b"", b"x" * 10).status == "duplicate"
    with pytest.raises(BlobAlreadyExists):
        r.put(bid, p, b"", b"y" * 10)


def test_unknown_blob_is_not_found(harness: ReplicaHarness) -> None:
    assert harness.replica is not None
    with pytest.raises(BlobNotFound):
        harness.replica.get(make_id())


def test_blob_of_other_partition_is_rejected(harness: ReplicaHarness) -> None:
    assert harness.replica is not None
    with pytest.raises(InvalidArgument):
        harness.replica.get(make_id(partition=PARTITION + 1))


def test_id_with_same_uuid_but_other_fields_is_not_found(harness: ReplicaHarness) -> None:
    bid = harness.put(b"abc")
    other = BlobId(bid.datacenter_id, bid.account_id + 1, bid.container_id, bid.partition_id,
                   bid.uuid, BlobType.SIMPLE)
    assert harness.replica is not None
    with pytest.raises(BlobNotFound):
        harness.replica.get(other)


def test_delete_then_get_is_deleted_unless_included(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    bid = harness.put(b"payload")
    assert r.delete(bid).status == "deleted"
    with pytest.raises(BlobDeleted):
        r.get(bid)
    assert r.get(bid, include_deleted=True).read_payload() == b"payload"
    assert r.delete(bid).status == "already_deleted"


def test_delete_of_unseen_id_leaves_tombstone_that_wins_over_late_put(
        harness: ReplicaHarness) -> None:
    # A delete can arrive (by replication) before its put; the put must stay deleted.
    r = harness.replica
    assert r is not None
    bid = make_id()
    assert r.delete(bid).status == "tombstoned"
    with pytest.raises(BlobDeleted):
        r.get(bid)
    harness.put(b"late", blob_id=bid)
    with pytest.raises(BlobDeleted):
        r.get(bid)
    assert r.get(bid, include_deleted=True).read_payload() == b"late"
    with pytest.raises(BlobNotFound):
        r.delete(make_id(), tombstone_if_missing=False)


def test_ttl_expiry_and_update(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    bid = harness.put(b"short", ttl_s=10)
    bid2 = harness.put(b"short2", ttl_s=10)
    assert r.ttl_update(bid).status == "updated"
    assert r.ttl_update(bid).status == "already_permanent"
    harness.clock.advance(11_000)
    assert r.get(bid).read_payload() == b"short"
    with pytest.raises(BlobExpired):
        r.get(bid2)
    assert r.get(bid2, include_expired=True).read_payload() == b"short2"
    with pytest.raises(BlobExpired):
        r.ttl_update(bid2)
    permanent = harness.put(b"forever")
    assert r.ttl_update(permanent).status == "already_permanent"


def test_ttl_update_of_unseen_id_is_applied_to_late_put(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    bid = make_id()
    assert r.ttl_update(bid).status == "marked"
    harness.put(b"x", ttl_s=1, blob_id=bid)
    harness.clock.advance(5000)
    assert r.get(bid).read_payload() == b"x"


def test_undelete_starts_new_life_version(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    bid = harness.put(b"v")
    with pytest.raises(BlobNotDeleted):
        r.undelete(bid)
    r.delete(bid)
    res = r.undelete(bid)
    assert res.status == "undeleted" and res.life_version == 1
    assert r.get(bid).read_payload() == b"v"
    # a delete of the old life (replicated late) does not kill the new one
    r.delete(bid, life_version=1)
    with pytest.raises(BlobDeleted):
        r.get(bid)
    with pytest.raises(BlobNotFound):
        r.undelete(make_id())


def test_state_survives_restart_with_and_without_snapshot(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    live = harness.put(b"live")
    dead = harness.put(b"dead")
    perm = harness.put(b"perm", ttl_s=5)
    r.delete(dead)
    r.ttl_update(perm)
    harness.close()  # writes a snapshot
    for drop_snapshot in (False, True):
        if drop_snapshot:
            os.remove(os.path.join(harness.dir, "index.snap"))
        r = harness.open()
        assert r.get(live).read_payload() == b"live"
        with pytest.raises(BlobDeleted):
            r.get(dead)
        harness.clock.advance(10_000)
        assert r.get(perm).read_payload() == b"perm"
        harness.close()


def test_names_put_get_list_and_lww(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    bid = harness.put(b"model")

    def entry(name: str, ts: int, dc: int = 1, deleted: bool = False) -> NameRecord:
        return NameRecord(2, 3, name, b"" if deleted else bid.to_bytes(), ts, dc, deleted,
                         5, "application/x", 1)

    for n in ["runs/1/a.pt", "runs/1/b.pt", "runs/2/a.pt", "other"]:
        r.name_put(entry(n, 100)).result(timeout=5)
    assert [e.name for e in r.name_list(2, 3, "runs/1/")] == ["runs/1/a.pt", "runs/1/b.pt"]
    assert [e.name for e in r.name_list(2, 3, "runs/", start_after="runs/1/b.pt")] == \
        ["runs/2/a.pt"]
    assert [e.name for e in r.name_list(2, 3, "", limit=2)] == ["other", "runs/1/a.pt"]
    assert r.name_list(2, 4, "") == []
    # an older write (or equal ts from a lower dc) loses; a newer delete wins
    r.name_put(entry("other", 99, dc=9, deleted=True)).result(timeout=5)
    got = r.name_get(2, 3, "other")
    assert got is not None and not got.deleted
    r.name_put(entry("other", 101, deleted=True)).result(timeout=5)
    got = r.name_get(2, 3, "other")
    assert got is not None and got.deleted
    assert "other" not in [e.name for e in r.name_list(2, 3)]
    with pytest.raises(InvalidArgument):
        r.name_put(entry("x" * 351, 1))
    with pytest.raises(InvalidArgument):
        r.name_put(entry("bad\nname", 1))
    # names are rebuilt from the log when the view is lost
    harness.close()
    import shutil
    shutil.rmtree(harness.names_dir)
    r = harness.open()
    assert [e.name for e in r.name_list(2, 3, "runs/")] == ["runs/1/a.pt", "runs/1/b.pt",
                                                             "runs/2/a.pt"]
    got = r.name_get(2, 3, "other")
    assert got is not None and got.deleted


def test_entries_since_returns_durable_records_in_order_and_resumes(
        harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    ids = [harness.put(os.urandom(3000)) for _ in range(40)]  # spans several segments
    pending = r.delete(ids[0])
    # only durable records are offered to peers
    assert max(e.sequence for e in r.entries_since(None, max_entries=100)[0]) == 40
    r.durable_future(pending.end).result(timeout=5)
    entries, token, remaining = r.entries_since(None, max_entries=10)
    assert [e.sequence for e in entries] == list(range(1, 11))
    assert remaining > 0
    seen = list(entries)
    while True:
        more, token, remaining = r.entries_since(token, max_entries=7)
        if not more:
            break
        seen += more
    assert [e.sequence for e in seen] == list(range(1, 42))
    assert seen[-1].type == RecordType.DELETE and seen[-1].key == ids[0].to_bytes()
    assert remaining == 0
    # a token from another incarnation starts over
    again, _, _ = r.entries_since((b"\0" * 16, 30), max_entries=5)
    assert again[0].sequence == 1
    # bounded by bytes too (but always at least one entry)
    few, _, _ = r.entries_since(None, max_bytes=1)
    assert len(few) == 1
    # sequence numbers continue across restarts
    harness.close()
    r = harness.open()
    bid = harness.put(b"after restart")
    tail, _, _ = r.entries_since(token)
    assert [(e.sequence, e.key) for e in tail] == [(42, bid.to_bytes())]


def test_incarnation_is_kept_across_restarts_and_new_after_wipe(
        harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    inc = r.incarnation
    harness.close()
    assert harness.open().incarnation == inc
    harness.close()
    import shutil
    shutil.rmtree(harness.dir)
    shutil.rmtree(harness.names_dir)
    assert harness.open().incarnation != inc


def test_replica_over_capacity_refuses_puts_but_serves_the_rest(
        tmp_path: object, small_config: object) -> None:
    from ambry.common.config import StorageConfig

    assert isinstance(small_config, StorageConfig)
    h = ReplicaHarness(str(tmp_path), None, small_config, capacity=40_000)
    r = h.open()
    ids = []
    with pytest.raises(PartitionReadOnly):
        for _ in range(100):
            ids.append(h.put(os.urandom(1000)))
    assert len(ids) > 20
    assert r.log.total_bytes() <= 40_000 * 0.95
    assert r.get(ids[0]).read_payload()
    assert r.delete(ids[0]).status == "deleted"
    assert r.stats().read_only == ""
    h.close()


def test_put_larger_than_record_limit_is_refused(harness: ReplicaHarness) -> None:
    with pytest.raises(InvalidArgument):
        harness.put(os.urandom(harness.config.max_record_bytes + 1))


def test_stats(harness: ReplicaHarness) -> None:
    harness.put(b"a")
    harness.put(b"b")
    assert harness.replica is not None
    s = harness.replica.stats()
    assert s.blobs == 2 and s.last_seq == 2 and s.partition_id == PARTITION
    assert s.log_bytes > 0


def test_concurrent_puts_from_threads_share_group_commits(tmp_path: object) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from ambry.common.config import StorageConfig

    h = ReplicaHarness(str(tmp_path), None, StorageConfig(segment_size_bytes=1 << 20))
    r = h.open()
    payloads = {}

    def one(i: int) -> None:
        data = os.urandom(2000 + i)
        bid = h.put(data)
        payloads[bid] = data

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(400)))
    assert len(payloads) == 400
    for bid, data in payloads.items():
        assert r.get(bid).read_payload() == data
    entries, _, _ = r.entries_since(None, max_entries=1000)
    assert [e.sequence for e in entries] == list(range(1, 401))
    h.close()



def test_a_name_claim_replaces_only_an_older_entry_and_says_which(
        harness: ReplicaHarness) -> None:
    # an upsert decided at the replica in one step (name_claim): it must answer with the
    # entry it replaced (whose blob the frontend frees), refuse an entry older than the
    # current one (it would be invisible, yet acknowledged), and never run beside a
    # reservation holder or another write of the name
    from ambry.common.errors import NameBusy
    r = harness.replica
    assert r is not None
    bid = harness.put(b"model").to_bytes()

    def entry(ts: int, blob: bytes = bid) -> NameRecord:
        return NameRecord(2, 3, "claimed", blob, ts, 1, False, 5, "application/x", 1)

    prev, fut = r.name_claim(entry(100))
    fut.result(timeout=5)
    assert prev is None
    prev, fut = r.name_claim(entry(200))
    fut.result(timeout=5)
    assert prev == entry(100)
    with pytest.raises(NameBusy):
        r.name_claim(entry(150))  # older than the current entry
    assert r.name_get(2, 3, "claimed") == entry(200)
    assert r.name_reserve(2, 3, "claimed", b"tok", 10_000)[0]
    with pytest.raises(NameBusy):
        r.name_claim(entry(300))  # a holder's decision must not be slipped under
    r.name_release(2, 3, "claimed", b"tok")
    with pytest.raises(InvalidArgument):
        r.name_claim(NameRecord(2, 3, "bad\nname", bid, 400, 1))
    prev, fut = r.name_claim(entry(400))
    fut.result(timeout=5)
    assert prev == entry(200) and r.name_get(2, 3, "claimed") == entry(400)
