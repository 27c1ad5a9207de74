"""Which nodes of a datacenter hold the k + m fragments of an encoded partition, and which
node rebuilds a fragment whose node is lost.

Owns one pure decision, by rendezvous (highest-random-weight) hashing: every node of the
datacenter gets the score ``xxh3_64(b"<partition id>/<node id>")``; the k + m highest-scoring
nodes hold fragments 0 .. k+m-1 in score order. Hence:

* deterministic: a function of the partition id and the datacenter's node ids only (not of
  their order in the cluster map, nor of any randomness);
* one fragment per node, never two (a node's loss costs a stripe one block, which m covers);
* load spread: each node is equally likely to rank anywhere, so fragments and the data
  fragments that serve healthy reads spread evenly over partitions;
* stable: adding a node changes a partition's set only if the new node scores into its top
  k + m, and then replaces exactly one node; removing a node not in the set changes nothing.

An encoded partition's placement is recorded when it is encoded (the encode job, not built
yet) and then only changed through ``previous``: slots whose node is still there stay put,
and only the slots of unavailable nodes go to the next nodes by score, so a node joining
moves nothing and a node lost moves only its own fragment. That next node is the one that
rebuilds the lost fragment from k survivors (:func:`rebuild_targets`).

Does not own the cluster map (``ambry.common.config``) or talking to nodes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import xxhash

from ambry.common.config import ClusterMap
from ambry.common.errors import InvalidArgument

__all__ = ["FragmentPlacement", "node_score", "place_fragments", "place_in_datacenter",
           "rebuild_targets"]


def node_score(partition_id: int, node_id: str) -> int:
    return xxhash.xxh3_64_intdigest(f"{partition_id}/{node_id}".encode())


@dataclass(frozen=True)
class FragmentPlacement:
    partition_id: int
    nodes: tuple[str, ...]  # nodes[i] holds fragment i (0 .. k-1 data, k .. k+m-1 parity)

    def fragment_of(self, node_id: str) -> int | None:
        return self.nodes.index(node_id) if node_id in self.nodes else None


def _ranked(partition_id: int, node_ids: Iterable[str]) -> list[str]:
    # the id breaks a (64-bit) tie, so the order never depends on the input order
    return sorted(set(node_ids), key=lambda n: (node_score(partition_id, n), n), reverse=True)


def place_fragments(partition_id: int, node_ids: Collection[str], n: int, *,
                    previous: Sequence[str] | None = None,
                    unavailable: Collection[str] = ()) -> FragmentPlacement:
    """``n`` = k + m distinct nodes out of ``node_ids`` (one datacenter's) for the fragments.

    With ``previous`` (the recorded placement), every slot whose node is in ``node_ids`` and
    not ``unavailable`` keeps it; the other slots take the best-scoring free nodes in slot
    order. Raises :class:`InvalidArgument` when fewer than ``n`` nodes are usable."""
    usable = [x for x in _ranked(partition_id, node_ids) if x not in set(unavailable)]
    if previous is not None and len(previous) != n:
        raise ValueError(f"previous placement has {len(previous)} slots, not {n}")
    if len(usable) < n:
        raise InvalidArgument(f"partition {partition_id}: {n} fragments need {n} usable nodes "
                              f"in the datacenter, have {len(usable)}")
    if previous is None:
        return FragmentPlacement(partition_id, tuple(usable[:n]))
    keep = set(usable)
    slots: list[str | None] = [x if x in keep else None for x in previous]
    free = iter(x for x in usable if x not in set(slots))
    return FragmentPlacement(partition_id, tuple(x if x is not None else next(free)
                                                 for x in slots))


def place_in_datacenter(cmap: ClusterMap, partition_id: int, datacenter: str, n: int, *,
                        previous: Sequence[str] | None = None,
                        unavailable: Collection[str] = ()) -> FragmentPlacement:
    """:func:`place_fragments` over the nodes the cluster map lists in ``datacenter``."""
    cmap.datacenter(datacenter)  # an unknown datacenter is InvalidArgument, not "no nodes"
    return place_fragments(partition_id, [x.id for x in cmap.nodes if x.datacenter == datacenter],
                           n, previous=previous, unavailable=unavailable)


def rebuild_targets(placement: FragmentPlacement, node_ids: Collection[str],
                    lost: Collection[str], unavailable: Collection[str] = ()) -> dict[str, str]:
    """lost node -> the node that rebuilds its fragment from k survivors: the best-scoring
    available node of the datacenter holding no fragment of the partition, handed out in slot
    order (the same nodes :func:`place_fragments` with ``previous`` picks). When spares run
    out (a datacenter of exactly k + m nodes), a lost node rebuilds its own fragment once it
    is back (restarted wiped, or replaced under the same id)."""
    down = set(lost)
    if down - set(placement.nodes):
        raise ValueError(f"{sorted(down - set(placement.nodes))} hold no fragment of "
                         f"partition {placement.partition_id}")
    taken = set(placement.nodes) | set(unavailable)
    spares = iter(x for x in _ranked(placement.partition_id, node_ids) if x not in taken)
    return {x: next(spares, x) for x in placement.nodes if x in down}
