"""Replica placement of `ambry admin build-clustermap` (ambry/common/placement.py): property
tests of the pure placement function, and the documents it builds loaded by the config loader."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.common.config import config_from_dict
from ambry.common.errors import InvalidArgument
from ambry.common.placement import (
    NodeSpec,
    build_document,
    grow_document,
    parse_node_spec,
    place_replicas,
    replica_counts,
)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[dict[str, list[str]], int]:
    """(nodes by datacenter, replicas per datacenter) with enough nodes everywhere."""
    per_dc = draw(st.integers(1, 4))
    dcs = draw(st.integers(1, 3))
    nodes = {f"dc{d}": [f"dc{d}-n{i}" for i in range(draw(st.integers(per_dc, 9)))]
             for d in range(dcs)}
    return nodes, per_dc


def _check_valid(nodes_by_dc: Mapping[str, Sequence[str]],
                 placement: Mapping[int, Sequence[str]], per_dc: int) -> None:
    for pid, replicas in placement.items():
        assert len(set(replicas)) == len(replicas), f"partition {pid} repeats a node"
        for dc, members in nodes_by_dc.items():
            assert len([r for r in replicas if r in members]) == per_dc, (pid, dc)


def _spread(nodes: Sequence[str], placement: Mapping[int, Sequence[str]]) -> int:
    counts = replica_counts(nodes, placement)
    return max(counts.values()) - min(counts.values())


@given(clusters(), st.integers(0, 60))
def test_fresh_map_is_valid_and_balanced_within_one(cluster: tuple[dict[str, list[str]], int],
                                                    partitions: int) -> None:
    nodes_by_dc, per_dc = cluster
    placement = place_replicas(nodes_by_dc, {}, range(partitions), per_dc)
    assert sorted(placement) == list(range(partitions))
    _check_valid(nodes_by_dc, placement, per_dc)
    for members in nodes_by_dc.values():
        assert _spread(members, placement) <= 1


@given(clusters(), st.integers(0, 40))
def test_placement_is_deterministic(cluster: tuple[dict[str, list[str]], int],
                                    partitions: int) -> None:
    nodes_by_dc, per_dc = cluster
    ids = list(range(partitions))
    assert place_replicas(nodes_by_dc, {}, ids, per_dc) == \
        place_replicas(dict(nodes_by_dc), {}, list(reversed(ids)), per_dc)


@given(clusters(), st.integers(0, 30), st.integers(0, 30))
def test_growing_by_partitions_equals_building_them_at_once(
        cluster: tuple[dict[str, list[str]], int], first: int, more: int) -> None:
    nodes_by_dc, per_dc = cluster
    at_once = place_replicas(nodes_by_dc, {}, range(first + more), per_dc)
    grown = place_replicas(nodes_by_dc, place_replicas(nodes_by_dc, {}, range(first), per_dc),
                           range(first, first + more), per_dc)
    assert grown == at_once


@given(clusters(), st.integers(1, 30), st.lists(st.integers(0, 2), max_size=4),
       st.integers(0, 40))
def test_adding_nodes_and_partitions_never_moves_a_replica_and_fills_new_nodes_first(
        cluster: tuple[dict[str, list[str]], int], partitions: int, new_nodes: list[int],
        more: int) -> None:
    nodes_by_dc, per_dc = cluster
    before = place_replicas(nodes_by_dc, {}, range(partitions), per_dc)
    grown_nodes = {dc: list(m) for dc, m in nodes_by_dc.items()}
    dcs = sorted(grown_nodes)
    for i, d in enumerate(new_nodes):
        dc = dcs[d % len(dcs)]
        grown_nodes[dc].append(f"{dc}-new{i}")
    after = place_replicas(grown_nodes, before, range(partitions, partitions + more), per_dc)
    for pid, replicas in before.items():
        assert after[pid] == replicas, f"partition {pid} moved"
    _check_valid(grown_nodes, after, per_dc)
    for dc, members in grown_nodes.items():
        old = replica_counts(members, before)
        new = replica_counts(members, after)
        # balance never gets worse, and a node only gains replicas while no node of its
        # datacenter that was emptier before this round went without
        assert _spread(members, after) <= max(_spread(members, before), 1)
        gained = [n for n in members if new[n] > old[n]]
        skipped = [n for n in members if new[n] == old[n]]
        if gained and skipped:
            assert min(old[n] for n in skipped) >= min(old[n] for n in gained)


@given(clusters(), st.integers(1, 60))
def test_first_listed_replica_spreads_over_nodes(cluster: tuple[dict[str, list[str]], int],
                                                 partitions: int) -> None:
    """The first replica of a datacenter pulls cross-DC for it (docs/replication.md), so
    leaders spread like replicas do. Within 2, not 1: placement is online (a partition's
    nodes are fixed before later partitions are known), and balancing replicas comes first."""
    nodes_by_dc, per_dc = cluster
    placement = place_replicas(nodes_by_dc, {}, range(partitions), per_dc)
    for members in nodes_by_dc.values():
        leads = dict.fromkeys(members, 0)
        for reps in placement.values():
            leads[next(r for r in reps if r in members)] += 1
        assert max(leads.values()) - min(leads.values()) <= 2, leads


@pytest.mark.parametrize("nodes, per_dc, existing, new, message", [
    ({"dc1": ["a", "b"]}, 3, {}, [0], "needs at least 3"),
    ({"dc1": ["a", "a", "b"]}, 1, {}, [0], "lists a node twice"),
    ({"dc1": ["a"], "dc2": ["a"]}, 1, {}, [0], "two datacenters"),
    ({"dc1": ["a"]}, 1, {0: ["a"]}, [0], "already exist"),
    ({"dc1": ["a"]}, 1, {0: ["zz"]}, [1], "unknown node"),
    ({"dc1": ["a"]}, 0, {}, [0], ">= 1"),
])
def test_impossible_placements_are_refused(nodes: dict[str, list[str]], per_dc: int,
                                           existing: dict[int, list[str]], new: list[int],
                                           message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        place_replicas(nodes, existing, new, per_dc)


def test_node_specs() -> None:
    assert parse_node_spec("h1") == NodeSpec("h1")
    assert parse_node_spec("n7@h1:7000:7001") == NodeSpec("h1", "n7", 7000, 7001)
    assert parse_node_spec("h1:7000") == NodeSpec("h1", None, 7000, None)
    for bad in ("", "h:x", "h:1:2:3", "@h", "h:0", "h:70000"):
        with pytest.raises(InvalidArgument):
            parse_node_spec(bad)


def _docker_like() -> dict[str, object]:
    return build_document(
        [("dc1", [NodeSpec(f"dc1-n{i}") for i in (1, 2, 3)]),
         ("dc2", [NodeSpec(f"dc2-n{i}") for i in (1, 2, 3)])],
        partitions=16, replicas_per_dc=3, capacity_bytes=20 * 1024**3, name="docker",
        data_dir="/var/lib/ambry", frontends=[("dc1", "frontend-dc1:1174"),
                                              ("dc2", "frontend-dc2:1174")],
        settings={"storage": {"durability": "fsync"}, "nodes": ["ignored"],
                  "replication": {"long_poll_ms": 500}})


def test_built_document_loads_as_the_placement_says() -> None:
    doc = _docker_like()
    cfg = config_from_dict(doc)
    cm = cfg.cluster_map
    assert [d.name for d in cm.datacenters] == ["dc1", "dc2"]
    assert [(n.id, n.host, n.port, n.http_port) for n in cm.nodes][:2] == [
        ("dc1-n1", "dc1-n1", 6670, 6680), ("dc1-n2", "dc1-n2", 6670, 6680)]
    nodes = {dc.name: [n.id for n in cm.nodes if n.datacenter == dc.name]
             for dc in cm.datacenters}
    assert {p.id: p.replicas for p in cm.partitions} == place_replicas(nodes, {}, range(16), 3)
    assert all(p.capacity_bytes == 20 * 1024**3 for p in cm.partitions)
    assert cfg.frontend_of("dc2").host == "frontend-dc2"
    assert cfg.sections["replication"] == {"long_poll_ms": 500}
    assert str(cfg.data_root) == "/var/lib/ambry"


def test_several_nodes_on_one_host_get_distinct_ports() -> None:
    doc = build_document([("dc1", [NodeSpec("127.0.0.1")] * 3)], 3, 3, 1 << 30,
                         node_port=15101, http_port=15201)
    cm = config_from_dict(doc).cluster_map
    assert [(n.port, n.http_port) for n in cm.nodes] == [(15101, 15201), (15102, 15202),
                                                         (15103, 15203)]


def test_grow_keeps_every_existing_replica_and_section() -> None:
    doc = _docker_like()
    old = config_from_dict(doc).cluster_map
    grown = grow_document(doc, {p.id: p.replicas for p in old.partitions},
                          {p.id: p.capacity_bytes for p in old.partitions}, add_partitions=4,
                          add_nodes=[("dc1", NodeSpec("dc1-n4")), ("dc2", NodeSpec("dc2-n4"))])
    new = config_from_dict(grown).cluster_map
    assert [p.replicas for p in new.partitions][:16] == [p.replicas for p in old.partitions]
    assert [n.id for n in new.nodes][-2:] == ["dc1-n4", "dc2-n4"]
    # the empty new nodes take a replica of every new partition
    assert all({"dc1-n4", "dc2-n4"} <= set(p.replicas) for p in new.partitions[16:])
    assert [p.id for p in new.partitions[16:]] == [16, 17, 18, 19]
    assert grown["replication"] == {"long_poll_ms": 500}


def test_grow_from_a_counted_partition_section_keeps_the_loader_round_robin() -> None:
    raw = {"datacenters": [{"name": "dc1", "id": 1}],
           "nodes": [{"id": f"n{i}", "datacenter": "dc1", "host": "h", "port": 100 + i,
                      "http_port": 200 + i} for i in range(4)],
           "cluster": {"replicas_per_datacenter": 2},
           "partitions": {"count": 5, "capacity_bytes": "1GiB"}}
    old = config_from_dict(raw).cluster_map
    grown = grow_document(raw, {p.id: p.replicas for p in old.partitions},
                          {p.id: p.capacity_bytes for p in old.partitions}, add_partitions=3)
    new = config_from_dict(grown).cluster_map
    assert new.partitions[:5] == old.partitions
    assert len(new.partitions) == 8 and new.partitions[7].capacity_bytes == 1 << 30


def test_adding_a_datacenter_is_refused() -> None:
    doc = _docker_like()
    with pytest.raises(InvalidArgument, match="unknown datacenter"):
        grow_document(doc, {}, {}, add_nodes=[("dc3", NodeSpec("x"))])


@settings(max_examples=25)
@given(st.integers(1, 40))
def test_every_built_document_loads(partitions: int) -> None:
    doc = build_document([("a", [NodeSpec(f"h{i}") for i in range(4)]),
                          ("b", [NodeSpec("127.0.0.1")] * 3)], partitions, 3, 1 << 30)
    assert len(config_from_dict(doc).cluster_map.partitions) == partitions
