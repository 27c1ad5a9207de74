"""Adopting a grown cluster map while a node serves (SIGHUP, or a watched config file).

Owns what a map reload changes on a running node: replicas of the partitions newly assigned
to it are opened (or created), replication hears of them and their peers before they appear,
capacity changes reach the open replicas, and the node's config becomes the new one. Whether
the new map is a safe successor at all is ``ambry.common.mapchange``'s pure decision; who
triggers a reload is ``ambry.runtime.reload``'s. Works on the node through
:class:`ReloadTarget`, so it never imports the node.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from ambry.common.config import ClusterConfig, PartitionConfig
from ambry.common.errors import ReplicaUnavailable
from ambry.common.mapchange import MapChange, partitions_added_for, plan_map_change
from ambry.storage.api import NodeReplica, Replicator

__all__ = ["ReloadTarget", "adopt_map"]

log = logging.getLogger(__name__)


class ReloadTarget(Protocol):
    """The running node, as a map reload changes it."""

    node_id: str
    cfg: ClusterConfig
    replicas: dict[int, NodeReplica]
    failed_replicas: dict[int, str]
    replication: Replicator | None

    @property
    def draining(self) -> bool: ...

    async def open_replicas(self, parts: list[PartitionConfig]
                            ) -> list[NodeReplica | BaseException]: ...

    async def close_replicas(self, replicas: Iterable[NodeReplica]) -> None: ...

    def start_usage_passes(self, replicas: list[NodeReplica], name: str) -> None: ...


async def adopt_map(node: ReloadTarget, new_cfg: ClusterConfig) -> MapChange:
    """Adopt a grown cluster map while serving: open (or create) replicas of the partitions
    newly assigned to this node, tell replication about them and their peers, reach nodes
    through the new map, apply capacity changes. Raises
    :class:`~ambry.common.mapchange.UnsafeMapChange` (nothing changes) when the new map is not
    a safe successor of the running one. The caller holds the node's map lock."""
    if node.draining:
        raise ReplicaUnavailable(f"node {node.node_id} is stopping")
    change = plan_map_change(node.cfg, new_cfg, node.node_id)
    cmap = new_cfg.cluster_map
    mine = [cmap.partition(pid)
            for pid in partitions_added_for(node.node_id, change, cmap)
            if pid not in node.replicas and pid not in node.failed_replicas]
    opened = await node.open_replicas(mine)
    added: dict[int, NodeReplica] = {}
    for p, res in zip(mine, opened):
        if not isinstance(res, BaseException):
            added[p.id] = res
        else:
            node.failed_replicas[p.id] = repr(res)
            log.error("replica of new partition %d failed to open: %r", p.id, res)
    if node.draining:  # stop() began meanwhile: it will not close what it never saw
        await node.close_replicas(added.values())
        raise ReplicaUnavailable(f"node {node.node_id} is stopping")
    for pid in change.capacity_changed:
        r = node.replicas.get(pid)
        if r is not None:
            r.capacity_bytes = cmap.partition(pid).capacity_bytes
    node.cfg = new_cfg
    if node.replication is not None:
        # before the replicas appear: replication must know their peers first
        node.replication.on_map_change(new_cfg, added)
    node.replicas.update(added)
    if added:
        log.info("node %s now hosts new partitions %s (%d replicas in all)",
                 node.node_id, sorted(added), len(node.replicas))
        node.start_usage_passes(list(added.values()), "usage-new")
    return change
