"""Which cluster-map changes a running daemon accepts on reload (ambry.common.mapchange)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.common.config import ClusterConfig, config_from_dict
from ambry.common.mapchange import UnsafeMapChange, partitions_added_for, plan_map_change
from ambry.common.placement import NodeSpec, build_document, grow_document


def _doc(nodes_per_dc: int = 3, partitions: int = 4, dcs: int = 1) -> dict[str, Any]:
    doc = build_document([(f"dc{d}", [NodeSpec("127.0.0.1") for _ in range(nodes_per_dc)])
                          for d in range(1, dcs + 1)], partitions, min(3, nodes_per_dc),
                         1 << 30, data_dir="/data")
    doc["accounts"] = [{"name": "default", "id": 1,
                        "containers": [{"name": "default", "id": 1}]}]
    return doc


def _cfg(doc: dict[str, Any]) -> ClusterConfig:
    return config_from_dict(doc)


def _grow(doc: dict[str, Any], add_partitions: int, add_nodes: list[tuple[str, str]]
          ) -> dict[str, Any]:
    old = _cfg(doc).cluster_map
    return grow_document(doc, {p.id: p.replicas for p in old.partitions},
                         {p.id: p.capacity_bytes for p in old.partitions},
                         add_partitions=add_partitions,
                         add_nodes=[(dc, NodeSpec(host)) for dc, host in add_nodes])


def test_the_same_map_is_no_change() -> None:
    cfg = _cfg(_doc())
    change = plan_map_change(cfg, _cfg(_doc()), "dc1-n1")
    assert change.empty and not change.restart_needed


@settings(max_examples=40, deadline=None)
@given(nodes=st.integers(3, 5), partitions=st.integers(1, 8), dcs=st.integers(1, 2),
       add_partitions=st.integers(0, 6), add_nodes=st.integers(0, 2))
def test_growing_with_the_map_builder_is_always_accepted(
        nodes: int, partitions: int, dcs: int, add_partitions: int, add_nodes: int) -> None:
    doc = _doc(nodes, partitions, dcs)
    grown = _grow(doc, add_partitions, [("dc1", f"10.0.0.{i}") for i in range(add_nodes)])
    old, new = _cfg(doc), _cfg(grown)
    for n in old.cluster_map.nodes:
        change = plan_map_change(old, new, n.id)
        assert change.added_partitions == tuple(range(partitions, partitions + add_partitions))
        assert len(change.added_nodes) == add_nodes
        # exactly the new partitions that name the node are the ones it must create
        mine = partitions_added_for(n.id, change, new.cluster_map)
        assert set(mine) == {p.id for p in new.cluster_map.partitions
                             if p.id >= partitions and n.id in p.replicas}
    # the named-blob partitions did not move
    assert new.cluster_map.name_partition_ids == old.cluster_map.name_partition_ids
    # applying it again changes nothing
    assert plan_map_change(new, new, None).empty


def _refused(old_doc: dict[str, Any], new_doc: dict[str, Any], node: str | None = None,
             match: str = "") -> str:
    with pytest.raises(UnsafeMapChange, match=match) as e:
        plan_map_change(_cfg(old_doc), _cfg(new_doc), node)
    return str(e.value)


def test_moving_an_existing_replica_is_refused() -> None:
    doc = _doc(nodes_per_dc=4, partitions=4)
    bad = copy.deepcopy(doc)
    p0 = bad["partitions"][0]
    spare = next(n["id"] for n in bad["nodes"] if n["id"] not in p0["replicas"])
    p0["replicas"][0] = spare
    _refused(doc, bad, match="partition 0 replicas changed")


def test_removing_a_partition_or_node_is_refused() -> None:
    doc = _doc(nodes_per_dc=4, partitions=4)
    fewer = copy.deepcopy(doc)
    fewer["partitions"].pop()
    _refused(doc, fewer, match="partition 3 was removed")
    grown = _grow(doc, 0, [("dc1", "10.1.1.1")])
    _refused(grown, doc, match="node dc1-n5 was removed")


def test_a_nodes_own_port_change_is_refused_and_named_in_the_reason() -> None:
    doc = _doc()
    moved = copy.deepcopy(doc)
    moved["nodes"][0]["port"] += 1000
    reason = _refused(doc, moved, "dc1-n1", match="node dc1-n1 changed")
    assert "restart" in reason


def test_a_node_that_is_not_in_the_new_map_refuses_it() -> None:
    doc = _doc()
    _refused(doc, doc, "dc1-n9", match="not in the new map")


def test_adding_partitions_without_pinning_named_blobs_is_refused() -> None:
    doc = _doc(partitions=4)
    grown = _grow(doc, 2, [])
    del grown["cluster"]["name_partitions"]
    _refused(doc, grown, match="name_partitions: 4")


def test_datacenter_account_and_container_ids_may_not_change() -> None:
    doc = _doc()
    for mutate, match in [
            (lambda d: d["datacenters"][0].__setitem__("id", 9), "datacenter dc1 changed id"),
            (lambda d: d["accounts"][0].__setitem__("id", 2), "account default changed id"),
            (lambda d: d["accounts"][0]["containers"][0].__setitem__("id", 5),
             "container default/default changed id")]:
        bad = copy.deepcopy(doc)
        mutate(bad)
        _refused(doc, bad, match=match)


def test_new_containers_and_capacity_are_applied_settings_need_a_restart() -> None:
    doc = _doc()
    new = copy.deepcopy(doc)
    new["accounts"][0]["containers"].append({"name": "models", "id": 2})
    new["partitions"][1]["capacity_bytes"] = "2GiB"
    new["storage"] = {"segment_size_bytes": "8MiB"}
    new["replication"] = {"long_poll_ms": 100}
    change = plan_map_change(_cfg(doc), _cfg(new), "dc1-n1")
    assert change.added_containers == ("default/models",)
    assert change.capacity_changed == (1,)
    assert change.restart_needed == ("storage", "replication")
    assert "capacity" in change.describe()


def test_name_partitions_pin_keeps_the_lowest_ids() -> None:
    doc = _doc(partitions=6)
    doc["cluster"]["name_partitions"] = 4
    assert _cfg(doc).cluster_map.name_partition_ids == (0, 1, 2, 3)
    doc["cluster"]["name_partitions"] = 7
    with pytest.raises(Exception, match="name_partitions"):
        _cfg(doc)
