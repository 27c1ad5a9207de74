"""ambry/ec/placement.py: k + m distinct nodes of a datacenter per partition, deterministic,
spread, stable when nodes come and go; who rebuilds a lost fragment."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.common.config import ClusterMap, Datacenter, NodeConfig, PartitionConfig
from ambry.common.errors import InvalidArgument
from ambry.ec.placement import place_fragments, place_in_datacenter, rebuild_targets

NO_DEADLINE = settings(deadline=None, max_examples=100)


@st.composite
def dc_case(draw: st.DrawFn) -> tuple[int, list[str], int]:
    """(partition id, node ids of one datacenter, k + m <= nodes)."""
    nodes = draw(st.lists(st.text("abcdefgh0123456789-", min_size=1, max_size=8),
                          unique=True, min_size=2, max_size=20))
    n = draw(st.integers(2, len(nodes)))
    return draw(st.integers(0, 2**64 - 1)), nodes, n


@NO_DEADLINE
@given(dc_case(), st.randoms(use_true_random=False))
def test_placement_never_repeats_a_node_and_ignores_map_order(
        case: tuple[int, list[str], int], rnd: random.Random) -> None:
    pid, nodes, n = case
    p = place_fragments(pid, nodes, n)
    assert len(p.nodes) == n == len(set(p.nodes)) and set(p.nodes) <= set(nodes)
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    assert place_fragments(pid, shuffled, n) == p  # same map, other listing order


@NO_DEADLINE
@given(dc_case(), st.text("xyz", min_size=9, max_size=9))
def test_adding_a_node_replaces_at_most_one_node_of_a_partition(
        case: tuple[int, list[str], int], new: str) -> None:
    pid, nodes, n = case
    before = place_fragments(pid, nodes, n).nodes
    after = place_fragments(pid, [*nodes, new], n).nodes
    assert len(set(before) - set(after)) <= 1
    assert set(after) - set(before) <= {new}
    # with the recorded placement, a node joining moves nothing at all
    assert place_fragments(pid, [*nodes, new], n, previous=before).nodes == before


@NO_DEADLINE
@given(dc_case(), st.data())
def test_losing_nodes_moves_only_their_fragments_to_the_rebuilders(
        case: tuple[int, list[str], int], data: st.DataObject) -> None:
    pid, nodes, n = case
    p = place_fragments(pid, nodes, n)
    lost = data.draw(st.lists(st.sampled_from(p.nodes), unique=True, min_size=1))
    targets = rebuild_targets(p, nodes, lost)
    assert set(targets) == set(lost)
    spares = [x for x in nodes if x not in p.nodes]
    moved = [t for t in targets.values() if t not in lost]
    assert len(moved) == len(set(moved)) == min(len(lost), len(spares))  # never doubled up
    assert not set(moved) & set(p.nodes)  # never onto a node that holds a fragment already
    if len(spares) >= len(lost):
        # the same answer as re-placing with the lost nodes unavailable
        again = place_fragments(pid, nodes, n, previous=p.nodes, unavailable=lost)
        assert again.nodes == tuple(targets.get(x, x) for x in p.nodes)


def test_fragments_spread_evenly_over_the_nodes() -> None:
    # 600 partitions, 10 nodes, k=4 m=2: 360 fragments per node expected, and the data
    # fragment 0 (what a small healthy read hits first) 60 per node
    nodes = [f"node-{i}" for i in range(10)]
    per_node: collections.Counter[str] = collections.Counter()
    first: collections.Counter[str] = collections.Counter()
    for pid in range(600):
        p = place_fragments(pid, nodes, 6)
        per_node.update(p.nodes)
        first[p.nodes[0]] += 1
    assert min(per_node.values()) > 0.85 * 360 and max(per_node.values()) < 1.15 * 360
    assert min(first.values()) > 30 and max(first.values()) < 90


def test_a_datacenter_of_exactly_k_plus_m_nodes_rebuilds_on_the_lost_node() -> None:
    # the local cluster: 3 nodes per DC at k=2, m=1; no spare, so the node comes back wiped
    # and rebuilds its own fragment
    nodes = ["a", "b", "c"]
    p = place_fragments(7, nodes, 3)
    assert sorted(p.nodes) == nodes
    assert rebuild_targets(p, nodes, [p.nodes[1]]) == {p.nodes[1]: p.nodes[1]}


def _cmap() -> ClusterMap:
    dcs = (Datacenter("east", 1), Datacenter("west", 2))
    nodes = tuple(NodeConfig(f"{dc.name}-{i}", dc.name, "127.0.0.1", 7000 + 10 * dc.id + i,
                             8000 + 10 * dc.id + i) for dc in dcs for i in range(6))
    parts = (PartitionConfig(1, tuple(x.id for x in nodes[:3] + nodes[6:9]), 1 << 30),)
    return ClusterMap(dcs, nodes, parts)


def test_placement_in_a_datacenter_uses_only_its_nodes() -> None:
    cmap = _cmap()
    east = place_in_datacenter(cmap, 1, "east", 6)
    west = place_in_datacenter(cmap, 1, "west", 6)
    assert all(x.startswith("east-") for x in east.nodes)
    assert all(x.startswith("west-") for x in west.nodes)
    with pytest.raises(InvalidArgument, match="7 usable nodes"):
        place_in_datacenter(cmap, 1, "east", 7)
    with pytest.raises(InvalidArgument, match="unknown datacenter"):
        place_in_datacenter(cmap, 1, "north", 3)
