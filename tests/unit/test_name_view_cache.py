"""The name view's memory copy (``NameView.cached``): a node answers the ``name_get`` of a
name it read or wrote lately on its event loop, and the copy is never older than the view."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from ambry.common.clock import ManualClock
from ambry.common.namerecord import NameRecord
from ambry.protocol.messages import Request
from ambry.storage.names import NameView
from ambry.storage.ops import ChangeSignal, NodeOps
from tests.unit.conftest import PARTITION, ReplicaHarness

_OLD = NameRecord(7, 9, "runs/42/model.pt", bytes(range(32)), 1_700_000_000_000, 1, False,
                  4096, "application/x-pt", 1_700_000_000_000)
_NEW = replace(_OLD, blob_id=bytes(range(1, 33)), ts_ms=1_700_000_000_500)
_GONE = NameRecord(7, 9, "runs/42/model.pt", b"", 1_700_000_001_000, 1, True)


def _cached(v: NameView, e: NameRecord) -> NameRecord | None:
    return v.cached(e.account_id, e.container_id, e.name)


def test_node_answers_name_get_of_a_known_name_without_an_io_thread(
        harness: ReplicaHarness) -> None:
    # every name_get (two per named or S3 GET) cost the node a thread-pool hand-off
    r = harness.replica
    assert r is not None
    r.name_put(_OLD).result(timeout=10)
    hand_offs: list[Any] = []

    async def run_io(fn: Any, *args: Any) -> Any:
        hand_offs.append(fn)
        return fn(*args)

    async def main() -> tuple[dict[str, Any], Any]:
        ops = NodeOps("n1", {PARTITION: r}, {}, clock=ManualClock(),
                      storage_config=lambda: harness.config, run_io=run_io,
                      changes=ChangeSignal(), draining=lambda: False)
        req = Request("name_get", 1, "rid", {"partition": PARTITION, "account_id": 7,
                                              "container_id": 9, "name": _OLD.name}, 0)
        return await ops.dispatch(req, b"")

    fields, _ = asyncio.run(main())
    assert NameRecord.from_wire(fields["entry"]) == _OLD
    assert hand_offs == []


def test_name_view_memory_follows_every_apply(tmp_path: Path) -> None:
    # a cached entry older than the view would answer a name read with an overwritten blob
    v = NameView(str(tmp_path / "names"), cache_entries=16)
    try:
        assert _cached(v, _OLD) is None  # never seen
        v.apply(_OLD)
        assert _cached(v, _OLD) == _OLD
        v.apply(_NEW)
        assert _cached(v, _OLD) == _NEW
        assert not v.apply(_OLD)  # an older version arriving late changes nothing
        assert _cached(v, _OLD) == _NEW
        v.apply(_GONE)
        assert _cached(v, _OLD) == _GONE  # a deleted name reads as deleted from memory too
    finally:
        v.close()


def test_a_miss_read_while_an_apply_runs_is_not_kept(tmp_path: Path) -> None:
    # a get that read the old entry from rocksdb, then an apply of a newer one, then the
    # get filling the cache with what it read: the newer write would be hidden from memory
    path = str(tmp_path / "names")
    v = NameView(path, cache_entries=16)
    try:
        v.apply(_OLD)
        v.close()
        v = NameView(path, cache_entries=16)  # rocksdb has _OLD, memory nothing
        real_get = v._db.get

        class Racing:
            def get(self, key: bytes) -> Any:
                raw = real_get(key)
                v._db = db  # the apply below goes to rocksdb itself
                v.apply(_NEW)  # lands between the miss's read and its fill
                return raw

            def __getattr__(self, name: str) -> Any:
                return getattr(db, name)

        db = v._db
        v._db = Racing()  # type: ignore[assignment]
        assert v.get(_OLD.account_id, _OLD.container_id, _OLD.name) == _OLD  # what it read
        assert _cached(v, _OLD) == _NEW
        assert v.get(_OLD.account_id, _OLD.container_id, _OLD.name) == _NEW
    finally:
        v.close()


def test_name_view_memory_is_bounded(tmp_path: Path) -> None:
    v = NameView(str(tmp_path / "names"), cache_entries=2)
    try:
        names = [replace(_OLD, name=f"n{i}") for i in range(3)]
        for e in names:
            v.apply(e)
        assert _cached(v, names[0]) is None  # least recently used, out
        assert _cached(v, names[2]) == names[2]
        assert len(v._cache) == 2
        # still read from rocksdb, and kept again
        assert v.get(7, 9, "n0") == names[0]
        assert _cached(v, names[0]) == names[0]
        assert len(v._cache) == 2
    finally:
        v.close()


def test_no_name_cache_when_configured_off(tmp_path: Path) -> None:
    v = NameView(str(tmp_path / "names"), cache_entries=0)
    try:
        v.apply(_OLD)
        assert _cached(v, _OLD) is None
        assert v.get(7, 9, _OLD.name) == _OLD
    finally:
        v.close()
