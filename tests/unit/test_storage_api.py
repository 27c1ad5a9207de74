"""The declared storage API (``ambry.storage.api``) and the one named-blob record type.

Replication, the node's op handlers and compaction reach a replica only through the protocols
declared there; these tests hold ``Replica`` to them at run time (mypy holds it statically
where the node opens replicas), and pin the byte layouts of a name's entry, which is now one
type (``ambry.common.namerecord.NameRecord``) on the frontend, the wire and the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgpack
import pytest

from ambry.common.config import config_from_dict
from ambry.common.namerecord import NameRecord
from ambry.protocol import messages
from ambry.storage.api import (
    CompactionHooks,
    Entry,
    RecordType,
    ReplicaStore,
    ReplicationHost,
    name_of,
)
from ambry.storage.format import name_key
from ambry.storage.names import (
    decode_view_value,
    encode_record_props,
    encode_view_value,
    name_from_record,
)
from ambry.storage.replica import Replica
from tests.unit.conftest import ReplicaHarness

_LIVE = NameRecord(7, 9, "runs/42/model.pt", bytes(range(32)), 1_700_000_000_123, 2, False,
                   12345, "application/x-pt", 1_700_000_000_000)
_GONE = NameRecord(7, 9, "runs/42/model.pt", b"", 1_700_000_000_456, 1, True)

# the bytes the storage wrote before the two name types became one (NameEntry's
# encode_record_props / encode_value), so logs and name views on disk still read
_LIVE_PROPS = bytes.fromhex(
    "85a162c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa2646302a2737a"
    "cd3039a26374b06170706c69636174696f6e2f782d7074a26372cf0000018bcfe56800")
_LIVE_VIEW = bytes.fromhex(
    "97c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fcf0000018bcfe5687b"
    "02c2cd3039b06170706c69636174696f6e2f782d7074cf0000018bcfe56800")
_GONE_PROPS = bytes.fromhex("85a162c400a2646301a2737a00a26374a0a2637200")
_GONE_VIEW = bytes.fromhex("97c400cf0000018bcfe569c801c300a000")


def test_replica_implements_the_declared_store_and_compaction_hooks(
        harness: ReplicaHarness) -> None:
    # replication and compaction used Replica's internals (index, _read_props, _move_lock...)
    r = harness.replica
    assert isinstance(r, ReplicaStore)
    assert isinstance(r, CompactionHooks)
    bid = harness.put(b"payload")
    read = r.get(bid)
    assert r.put_end(bid.to_bytes()) == (read.position[0],
                                         read.position[1] + read.header.total_len)
    assert r.put_end(bytes(32)) is None


def test_one_name_record_type_on_every_side() -> None:
    # protocol.messages.NameRecord and storage.names.NameEntry were two types of one record
    assert messages.NameRecord is NameRecord


def test_name_record_bytes_on_disk_are_unchanged() -> None:
    assert encode_record_props(_LIVE) == _LIVE_PROPS
    assert encode_view_value(_LIVE) == _LIVE_VIEW
    assert encode_record_props(_GONE) == _GONE_PROPS
    assert encode_view_value(_GONE) == _GONE_VIEW


def test_name_record_round_trips_through_log_view_wire_and_replication() -> None:
    for e in (_LIVE, _GONE):
        key = name_key(e.account_id, e.container_id, e.name)
        assert name_from_record(key, e.ts_ms, e.deleted, encode_record_props(e)) == e
        assert decode_view_value(key, encode_view_value(e)) == e
        wire = msgpack.unpackb(msgpack.packb(e.to_wire(), use_bin_type=True), raw=False)
        assert NameRecord.from_wire(wire) == e
        rtype = RecordType.NAME_DELETE if e.deleted else RecordType.NAME_PUT
        entry = Entry(5, rtype, key, 0, 0, e.ts_ms, 0, 0, 0, 64, encode_record_props(e))
        assert name_of(Entry.from_wire(entry.to_wire())) == e
    assert _LIVE.to_wire() == {
        "account_id": 7, "container_id": 9, "name": "runs/42/model.pt",
        "blob_id": bytes(range(32)), "ts_ms": 1_700_000_000_123, "dc_id": 2,
        "deleted": False, "size": 12345, "content_type": "application/x-pt",
        "created_ms": 1_700_000_000_000}
    assert _GONE.version == (1_700_000_000_456, 1, b"")


async def test_replication_is_built_from_a_host_of_plain_values(tmp_path: Path) -> None:
    # replication.attach asserted it was handed a StorageNode and shared the node's mutable
    # replicas dict; it now gets a ReplicationHost, which nothing but values and callables fill
    from ambry.replication.manager import attach

    cfg = config_from_dict({
        "cluster": {"name": "t", "replicas_per_datacenter": 2},
        "datacenters": [{"name": "dc1", "id": 1}],
        "nodes": [{"id": f"dc1-n{j}", "datacenter": "dc1", "host": "127.0.0.1",
                   "port": 1, "http_port": 2} for j in (1, 2)],
        "partitions": {"count": 1, "capacity_bytes": "1GiB"},
    }, data_root=str(tmp_path))
    replica = Replica.open(str(tmp_path / "p0"), 0, cfg.storage, 1 << 30)
    stores: dict[int, Replica] = {0: replica}
    woken: list[int] = []

    async def run_io(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    host = ReplicationHost(node_id="dc1-n1", datacenter="dc1", config=cfg,
                           data_dir=tmp_path, stores=MappingProxyType(stores), run_io=run_io,
                           notify_change=lambda: woken.append(1), now_ms=lambda: 0)
    mgr = attach(host)
    try:
        assert mgr.replicas is host.stores
        assert replica.rebuilding  # a fresh replica with a peer rebuilds from it first
        assert [(r["partition"], r["peer"]) for r in mgr.status()] == [(0, "dc1-n2")]
        with pytest.raises(TypeError):
            mgr.replicas[1] = replica  # type: ignore[index]  # a view, not the node's dict
    finally:
        await mgr.stop()
        replica.close()
