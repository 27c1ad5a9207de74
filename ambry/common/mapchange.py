"""Is a new cluster map a safe successor of the running one, and what does it add?

Owns one pure decision, :func:`plan_map_change`, that both daemons make before they swap in a
re-read config (SIGHUP or a changed file, see ``ambry.runtime.reload``): a running process can
*grow* its map (new partitions, new nodes, new accounts/containers, new cross-DC routes, more
capacity) while in-flight requests go on, because everything the old map said stays true in
the new one. Anything that would make the old map's facts false is refused, with one line per
reason, and the old map stays in force:

* a datacenter renamed, renumbered or removed (datacenter ids are inside every blob id);
* a node removed, or moved to another datacenter, host or port (processes hold connections
  and on-disk replicas under its identity; moving a node is a restart of every process);
* a partition removed, or its replica list changed (existing replicas never move: a replica
  moved away would be a silent data loss on one side and an empty replica on the other);
* the partitions holding named blobs changed (``cluster.name_partitions``): every existing
  name would become invisible;
* an account or container id changed, or one removed (ids are inside every blob id);
* an existing cross-DC route changed;
* for a storage node (``node_id`` given): its own entry or data directory changed.

Settings that the daemons read only at start (``storage``, ``frontend``, ``replication``,
``daemon``, ``frontends``) may differ: the change is accepted and they are listed in
``restart_needed``, so the operator is told they take effect at the next restart. Sections the
asking daemon re-reads on every reload (``live_sections``: the frontend's ``s3`` access keys)
are listed in ``reloaded`` instead.

Does not own reading the file nor applying the change (the node and the frontend do).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from ambry.common.config import ClusterConfig, ClusterMap
from ambry.common.errors import InvalidArgument

__all__ = ["MapChange", "UnsafeMapChange", "partitions_added_for", "plan_map_change"]


#: Sections only frontends read: a storage node (``node_id`` given) ignores their changes.
_FRONTEND_ONLY_SECTIONS = frozenset({"s3"})


class UnsafeMapChange(InvalidArgument):
    """The new map contradicts the running one; ``reasons`` has one line per problem."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class MapChange:
    """What a safe new map adds to the running one."""

    added_partitions: tuple[int, ...] = ()
    added_nodes: tuple[str, ...] = ()
    added_containers: tuple[str, ...] = ()       # "account/container"
    capacity_changed: tuple[int, ...] = ()       # partitions whose capacity_bytes changed
    restart_needed: tuple[str, ...] = ()         # config sections read only at start
    reloaded: tuple[str, ...] = ()               # changed sections the daemon re-reads now

    @property
    def empty(self) -> bool:
        return not (self.added_partitions or self.added_nodes or self.added_containers
                    or self.capacity_changed or self.reloaded)

    def describe(self) -> str:
        parts = []
        if self.added_partitions:
            parts.append(f"+{len(self.added_partitions)} partitions "
                         f"{list(self.added_partitions)}")
        if self.added_nodes:
            parts.append(f"+{len(self.added_nodes)} nodes {list(self.added_nodes)}")
        if self.added_containers:
            parts.append(f"+containers {list(self.added_containers)}")
        if self.capacity_changed:
            parts.append(f"capacity of partitions {list(self.capacity_changed)}")
        if self.reloaded:
            parts.append(f"sections {list(self.reloaded)} re-read")
        return ", ".join(parts) or "no change"


def _map_reasons(old: ClusterMap, new: ClusterMap) -> list[str]:
    reasons = []
    new_dcs = {d.name: d for d in new.datacenters}
    for d in old.datacenters:
        nd = new_dcs.get(d.name)
        if nd is None:
            reasons.append(f"datacenter {d.name} was removed")
        elif nd.id != d.id:
            reasons.append(f"datacenter {d.name} changed id {d.id} -> {nd.id}")
    new_nodes = {n.id: n for n in new.nodes}
    for n in old.nodes:
        nn = new_nodes.get(n.id)
        if nn is None:
            reasons.append(f"node {n.id} was removed")
        elif nn != n:
            reasons.append(f"node {n.id} changed ({n.datacenter} {n.host}:{n.port}/"
                           f"{n.http_port} -> {nn.datacenter} {nn.host}:{nn.port}/"
                           f"{nn.http_port}); moving a node needs a restart of every process")
    new_parts = {p.id: p for p in new.partitions}
    for p in old.partitions:
        np_ = new_parts.get(p.id)
        if np_ is None:
            reasons.append(f"partition {p.id} was removed")
        elif np_.replicas != p.replicas:
            reasons.append(f"partition {p.id} replicas changed {list(p.replicas)} -> "
                           f"{list(np_.replicas)} (existing replicas never move; add "
                           f"partitions instead)")
    if old.name_partition_ids != new.name_partition_ids:
        reasons.append(f"named blobs would move: they live on partitions "
                       f"{list(old.name_partition_ids)}; pin them with "
                       f"cluster.name_partitions: {len(old.name_partition_ids)}")
    return reasons


def plan_map_change(old: ClusterConfig, new: ClusterConfig,
                    node_id: str | None = None, *,
                    live_sections: Collection[str] = ()) -> MapChange:
    """What ``new`` adds to ``old``; raises :class:`UnsafeMapChange` if it is not a safe
    successor. ``node_id``: the storage node that asks (its own entry must not change).
    ``live_sections``: top-level sections the asking daemon re-reads on reload."""
    reasons = _map_reasons(old.cluster_map, new.cluster_map)
    if node_id is not None:
        try:
            new.cluster_map.node(node_id)
        except InvalidArgument:
            reasons.append(f"this node ({node_id}) is not in the new map")
        else:
            if new.node_data_dir(node_id) != old.node_data_dir(node_id):
                reasons.append(f"this node's data directory changed "
                               f"{old.node_data_dir(node_id)} -> {new.node_data_dir(node_id)}")
    added_containers = []
    for a in old.accounts:
        na = new.account(a.name)
        if na is None:
            reasons.append(f"account {a.name} was removed")
            continue
        if na.id != a.id:
            reasons.append(f"account {a.name} changed id {a.id} -> {na.id}")
        for c in a.containers:
            nc = na.container(c.name)
            if nc is None:
                reasons.append(f"container {a.name}/{c.name} was removed")
            elif nc.id != c.id:
                reasons.append(f"container {a.name}/{c.name} changed id {c.id} -> {nc.id}")
    for na in new.accounts:
        a_old = old.account(na.name)
        for c in na.containers:
            if a_old is None or a_old.container(c.name) is None:
                added_containers.append(f"{na.name}/{c.name}")
    for dc, routes in old.cross_dc_routes.items():
        for nid, addr in routes.items():
            now = new.cross_dc_routes.get(dc, {}).get(nid)
            if now != addr:
                reasons.append(f"cross_dc_routes {dc}/{nid} changed {addr} -> {now}")
    if reasons:
        raise UnsafeMapChange(reasons)
    om, nm = old.cluster_map, new.cluster_map
    old_pids = om.partition_ids
    old_nodes = {n.id for n in om.nodes}
    old_caps = {p.id: p.capacity_bytes for p in om.partitions}
    restart = []
    reloaded = []
    if new.storage != old.storage:
        restart.append("storage")
    if new.frontend != old.frontend:
        restart.append("frontend")
    if new.frontends != old.frontends:
        restart.append("frontends")
    for key in sorted(set(old.sections) | set(new.sections)):
        if old.sections.get(key) == new.sections.get(key):
            continue
        if key in live_sections:
            reloaded.append(key)
        elif not (node_id is not None and key in _FRONTEND_ONLY_SECTIONS):
            restart.append(key)
    return MapChange(
        added_partitions=tuple(sorted(p.id for p in nm.partitions if p.id not in old_pids)),
        added_nodes=tuple(n.id for n in nm.nodes if n.id not in old_nodes),
        added_containers=tuple(added_containers),
        capacity_changed=tuple(sorted(p.id for p in nm.partitions
                                      if p.id in old_caps
                                      and old_caps[p.id] != p.capacity_bytes)),
        restart_needed=tuple(restart), reloaded=tuple(reloaded))


def partitions_added_for(node_id: str, change: MapChange, new: ClusterMap) -> list[int]:
    """The new partitions of which ``node_id`` holds a replica (it must create them)."""
    return [pid for pid in change.added_partitions
            if node_id in new.partition(pid).replicas]
