"""Replica placement and cluster-map documents for ``ambry admin build-clustermap``.

Owns two pure decisions, made offline like Swift's ring builder and only read at run time:

* :func:`place_replicas`: which nodes hold the replicas of each partition. Every partition
  gets ``replicas_per_dc`` distinct nodes in every datacenter; each new replica goes to the
  least loaded node of its datacenter (fewest replicas), ties broken by a rotation keyed on the
  partition id so partitions do not all pair the same nodes; the first-listed replica (the
  datacenter's cross-DC puller, see docs/replication.md) is the chosen node leading the
  fewest partitions. Existing replicas never move: growing a cluster
  only adds partitions, which land on the emptiest nodes first (as Ambry grows clusters).
  Placing N partitions and then K more gives the same map as placing N + K at once.
* :func:`build_document` / :func:`grow_document`: the YAML-ready mapping in exactly the shape
  :mod:`ambry.common.config` loads (explicit ``partitions: [{id, replicas, capacity_bytes}]``),
  carrying over every other section (storage, frontend, accounts, replication, ...) unchanged.

Does not own reading or writing files (the CLI does) nor validating the result beyond what
placement needs: the CLI loads every document it writes with ``config_from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ambry.common.errors import InvalidArgument

__all__ = [
    "DEFAULT_HTTP_PORT",
    "DEFAULT_NODE_PORT",
    "NodeSpec",
    "build_document",
    "format_size",
    "grow_document",
    "parse_node_spec",
    "place_replicas",
    "replica_counts",
]

DEFAULT_NODE_PORT = 6670
DEFAULT_HTTP_PORT = 6680

# The sections this module writes; everything else in a document is carried over as it is.
_TOPOLOGY_KEYS = ("cluster", "data_dir", "datacenters", "nodes", "partitions", "frontends")


def place_replicas(nodes_by_dc: Mapping[str, Sequence[str]],
                   existing: Mapping[int, Sequence[str]],
                   new_partition_ids: Sequence[int],
                   replicas_per_dc: int) -> dict[int, tuple[str, ...]]:
    """Replicas of every partition: ``existing`` unchanged plus one entry per new id.

    ``nodes_by_dc`` lists the node ids of each datacenter in cluster-map order (the order is
    part of the input: the same input always gives the same output). Replicas of a new
    partition are listed datacenter by datacenter, in ``nodes_by_dc`` order; within a
    datacenter the node that leads (is listed first in) the fewest partitions comes first,
    since the first replica is the datacenter's cross-DC puller.
    """
    if replicas_per_dc < 1:
        raise InvalidArgument("replicas per datacenter must be >= 1")
    for dc, members in nodes_by_dc.items():
        if len(set(members)) != len(members):
            raise InvalidArgument(f"datacenter {dc} lists a node twice")
        if len(members) < replicas_per_dc:
            raise InvalidArgument(f"datacenter {dc} has {len(members)} nodes, needs at least "
                                  f"{replicas_per_dc} for {replicas_per_dc} replicas per "
                                  f"datacenter")
    dc_of = {n: dc for dc, members in nodes_by_dc.items() for n in members}
    if len(dc_of) != sum(len(m) for m in nodes_by_dc.values()):
        raise InvalidArgument("a node is listed in two datacenters")
    if len(set(new_partition_ids)) != len(new_partition_ids):
        raise InvalidArgument("new partition ids must be distinct")
    clash = set(new_partition_ids) & set(existing)
    if clash:
        raise InvalidArgument(f"partitions {sorted(clash)} already exist")
    counts = {n: 0 for n in dc_of}
    for pid, replicas in existing.items():
        for n in replicas:
            if n not in counts:
                raise InvalidArgument(f"partition {pid} names unknown node {n!r}")
            counts[n] += 1
    # the first replica of a datacenter in a partition's list is its cross-DC puller
    leads = {n: 0 for n in dc_of}
    for replicas in existing.values():
        for members in nodes_by_dc.values():
            first = next((r for r in replicas if r in members), None)
            if first is not None:
                leads[first] += 1
    out = {pid: tuple(r) for pid, r in existing.items()}
    for pid in sorted(new_partition_ids):
        chosen: list[str] = []
        for members in nodes_by_dc.values():
            size = len(members)

            def rotation(i: int, size: int = size, pid: int = pid) -> int:
                return (i - pid) % size

            # least loaded first; among equals, start the scan at a position that moves with
            # the partition id, so partitions do not all pair the same nodes
            order = sorted(range(size), key=lambda i: (counts[members[i]], rotation(i)))
            picked = order[:replicas_per_dc]
            # list the one that leads fewest partitions first, the others in rotation order
            leader = min(picked, key=lambda i: (leads[members[i]], rotation(i)))
            picked = [leader] + sorted((i for i in picked if i != leader), key=rotation)
            leads[members[leader]] += 1
            for i in picked:
                chosen.append(members[i])
                counts[members[i]] += 1
        out[pid] = tuple(chosen)
    return out


def replica_counts(nodes: Sequence[str], placement: Mapping[int, Sequence[str]]
                   ) -> dict[str, int]:
    """Replicas held by each of ``nodes`` (0 for those that hold none)."""
    counts = {n: 0 for n in nodes}
    for replicas in placement.values():
        for n in replicas:
            if n in counts:
                counts[n] += 1
    return counts


@dataclass(frozen=True)
class NodeSpec:
    """One ``--dc``/``--add-node`` entry: ``[id@]host[:port[:http_port]]``."""

    host: str
    id: str | None = None
    port: int | None = None
    http_port: int | None = None


def parse_node_spec(text: str) -> NodeSpec:
    node_id, at, rest = text.strip().rpartition("@")
    if not at:
        node_id, rest = "", text.strip()
    parts = rest.split(":")
    if not parts[0] or len(parts) > 3 or (at and not node_id):
        raise InvalidArgument(f"bad node {text!r}: expected [id@]host[:port[:http_port]]")
    try:
        ports = [int(p) for p in parts[1:]]
    except ValueError:
        raise InvalidArgument(f"bad port in node {text!r}") from None
    if any(not 0 < p < 65536 for p in ports):
        raise InvalidArgument(f"port out of range in node {text!r}")
    return NodeSpec(host=parts[0], id=node_id or None,
                    port=ports[0] if ports else None,
                    http_port=ports[1] if len(ports) > 1 else None)


def format_size(n: int) -> int | str:
    """Bytes as the config writes them: ``20GiB`` when exact, else the plain number."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return n


def _new_nodes(dc: str, specs: Sequence[NodeSpec], taken_ids: set[str],
               used: dict[str, list[tuple[int, int]]], node_port: int, http_port: int
               ) -> list[dict[str, Any]]:
    """Node entries for ``specs`` in ``dc``: ids ``<dc>-n<k>`` (next free k) unless given.
    ``used`` maps each host to the (port, http_port) pairs of its nodes and is updated. A node
    given without ports gets the defaults on a host of its own, and the ports after the
    highest ones in use on a host that already has nodes (several nodes on one host, as in
    config/local.yaml)."""
    out = []
    k = 1
    for s in specs:
        if s.id is not None:
            nid = s.id
        else:
            while f"{dc}-n{k}" in taken_ids:
                k += 1
            nid = f"{dc}-n{k}"
        if nid in taken_ids:
            raise InvalidArgument(f"node id {nid!r} is already in the map")
        taken_ids.add(nid)
        pairs = used.setdefault(s.host, [])
        taken = {p for pair in pairs for p in pair}
        port, hport = s.port, s.http_port
        if port is None:
            port = max((a for a, _ in pairs), default=node_port - 1) + 1
            while port in taken or port == hport:
                port += 1
        if hport is None:
            hport = max((b for _, b in pairs), default=http_port - 1) + 1
            while hport in taken or hport == port:
                hport += 1
        if port == hport:
            raise InvalidArgument(f"node {nid}: port and http_port must differ")
        for p in (port, hport):
            if not 0 < p < 65536:
                raise InvalidArgument(f"node {nid}: port {p} out of range")
            if p in taken:
                raise InvalidArgument(f"node {nid}: {s.host}:{p} is already taken "
                                      f"(give host:port:http_port)")
        pairs.append((port, hport))
        out.append({"id": nid, "datacenter": dc, "host": s.host, "port": port,
                    "http_port": hport})
    return out


def _frontends(specs: Sequence[tuple[str, str]], dc_names: Sequence[str]
               ) -> list[dict[str, Any]]:
    out = []
    for dc, addr in specs:
        if dc not in dc_names:
            raise InvalidArgument(f"frontend names unknown datacenter {dc!r}")
        host, colon, port = addr.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"bad frontend {dc}={addr}: expected dc=host:port")
        out.append({"datacenter": dc, "host": host, "port": int(port)})
    return out


def _partition_entries(placement: Mapping[int, Sequence[str]],
                       capacity: Mapping[int, int]) -> list[dict[str, Any]]:
    return [{"id": pid, "capacity_bytes": format_size(capacity[pid]),
             "replicas": list(placement[pid])} for pid in sorted(placement)]


def build_document(datacenters: Sequence[tuple[str, Sequence[NodeSpec]]], partitions: int,
                   replicas_per_dc: int, capacity_bytes: int, *, name: str = "ambry",
                   data_dir: str = "data", frontends: Sequence[tuple[str, str]] = (),
                   node_port: int = DEFAULT_NODE_PORT, http_port: int = DEFAULT_HTTP_PORT,
                   settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A new cluster map: datacenters (ids 1, 2, ... in the order given), their nodes,
    ``partitions`` partitions (ids 0..N-1) placed by :func:`place_replicas`, the frontends,
    and every non-topology section of ``settings`` (another config's storage, frontend,
    accounts, ...)."""
    if partitions < 1:
        raise InvalidArgument("--partitions must be >= 1")
    names = [dc for dc, _ in datacenters]
    if not names:
        raise InvalidArgument("give at least one datacenter (--dc NAME=HOST,...)")
    if len(set(names)) != len(names):
        raise InvalidArgument("a datacenter is given twice")
    taken_ids: set[str] = set()
    used: dict[str, list[tuple[int, int]]] = {}
    nodes: list[dict[str, Any]] = []
    for dc, specs in datacenters:
        nodes += _new_nodes(dc, specs, taken_ids, used, node_port, http_port)
    by_dc = {dc: [n["id"] for n in nodes if n["datacenter"] == dc] for dc in names}
    placement = place_replicas(by_dc, {}, range(partitions), replicas_per_dc)
    doc: dict[str, Any] = {
        "cluster": {"name": name, "replicas_per_datacenter": replicas_per_dc},
        "data_dir": data_dir,
        "datacenters": [{"name": dc, "id": i + 1} for i, dc in enumerate(names)],
        "nodes": nodes,
        "partitions": _partition_entries(placement, dict.fromkeys(placement, capacity_bytes)),
    }
    fes = _frontends(frontends, names)
    if fes:
        doc["frontends"] = fes
    for key, value in (settings or {}).items():
        if key not in _TOPOLOGY_KEYS:
            doc[key] = value
    return doc


def grow_document(existing: Mapping[str, Any], expanded_partitions: Mapping[int, Sequence[str]],
                  existing_capacity: Mapping[int, int], *, add_partitions: int = 0,
                  add_nodes: Sequence[tuple[str, NodeSpec]] = (),
                  capacity_bytes: int | None = None,
                  frontends: Sequence[tuple[str, str]] = (),
                  node_port: int = DEFAULT_NODE_PORT, http_port: int = DEFAULT_HTTP_PORT
                  ) -> dict[str, Any]:
    """``existing`` (a loaded YAML document) with nodes and partitions added; no existing
    replica moves. ``expanded_partitions``/``existing_capacity`` are the existing partitions
    as the config loader sees them (a ``{count: N}`` section expanded). New partitions get ids
    after the highest existing one, ``capacity_bytes`` each (default: the largest existing).
    Adding partitions pins ``cluster.name_partitions`` to the existing ones (named blobs stay
    where they are)."""
    if add_partitions < 0:
        raise InvalidArgument("--add-partitions must be >= 0")
    doc = {k: v for k, v in existing.items()}
    cluster = dict(doc.get("cluster") or {})
    per_dc = int(cluster.get("replicas_per_datacenter", 3))
    dc_names = [str(d["name"]) for d in doc.get("datacenters") or []]
    nodes = [dict(n) for n in doc.get("nodes") or []]
    taken_ids = {str(n["id"]) for n in nodes}
    used: dict[str, list[tuple[int, int]]] = {}
    for n in nodes:
        used.setdefault(str(n["host"]), []).append((int(n["port"]), int(n["http_port"])))
    for dc, spec in add_nodes:
        if dc not in dc_names:
            raise InvalidArgument(f"--add-node names unknown datacenter {dc!r}; adding a "
                                  f"datacenter would give every existing partition new "
                                  f"replicas, which this tool does not do")
        nodes += _new_nodes(dc, [spec], taken_ids, used, node_port, http_port)
    by_dc = {dc: [str(n["id"]) for n in nodes if n["datacenter"] == dc] for dc in dc_names}
    start = max(expanded_partitions, default=-1) + 1
    new_ids = list(range(start, start + add_partitions))
    placement = place_replicas(by_dc, expanded_partitions, new_ids, per_dc)
    cap = dict(existing_capacity)
    new_cap = capacity_bytes if capacity_bytes is not None else \
        max(existing_capacity.values(), default=100 * 1024**3)
    for pid in new_ids:
        cap[pid] = new_cap
    if add_partitions and not cluster.get("name_partitions"):
        # named blobs live on a partition hashed over the partitions: pin that set, or every
        # existing name would move with the first partition added (ambry.common.mapchange)
        cluster["name_partitions"] = len(expanded_partitions)
    doc["cluster"] = cluster | {"replicas_per_datacenter": per_dc}
    doc["nodes"] = nodes
    doc["partitions"] = _partition_entries(placement, cap)
    fes = [dict(f) for f in doc.get("frontends") or []]
    for f in _frontends(frontends, dc_names):
        if f not in fes:
            fes.append(f)
    if fes:
        doc["frontends"] = fes
    return doc
