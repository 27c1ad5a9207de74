"""The cluster as one frontend routes by: its datacenter, the map's partitions and replicas.

Owns the parts of the cluster config a request reads while it runs, swapped whole when the map
grows (:meth:`ClusterView.reload`): which partitions exist (valid in blob ids) and which are
writable here, the replicas of a partition in this datacenter, node addresses, and blob id
parsing and minting (:meth:`~ClusterView.new_id`). Does not own any I/O, nor the ``frontend:``
settings (those stay as they were at start).
"""

from __future__ import annotations

from collections.abc import Callable

from ambry.common.blobid import BlobId, BlobType, decode, new_blob_id
from ambry.common.config import ClusterConfig, ClusterMap, NodeConfig
from ambry.common.errors import AmbryError, BadRequest

__all__ = ["ClusterView"]


def _writable(cmap: ClusterMap, dc_name: str) -> list[int]:
    return sorted(p.id for p in cmap.partitions if len(cmap.replicas_in(p.id, dc_name)) >= 1)


class ClusterView:
    """This datacenter's view of the cluster map; every operation reads it at call time."""

    def __init__(self, config: ClusterConfig, datacenter: str,
                 id_bytes: Callable[[int], bytes]) -> None:
        self.config = config
        self.cmap = config.cluster_map
        self.dc = self.cmap.datacenter(datacenter)
        # Blob ids come from ``id_bytes``, the OS's CSPRNG unless a test injects another (see
        # ``Router``): an id is the read capability of a blob.
        self.id_bytes = id_bytes
        self.partition_ids = self.cmap.partition_ids
        self.writable = _writable(self.cmap, self.dc.name)

    def reload(self, config: ClusterConfig) -> None:
        """Adopt a grown cluster map (checked first with ``ambry.common.mapchange``): new
        partitions become writable and valid in blob ids, new nodes are reached through the
        new map. Requests in flight keep working: every partition and node they know of is in
        the new map, unchanged (no await here, so no request sees half of each map)."""
        cmap = config.cluster_map
        cmap.datacenter(self.dc.name)
        writable = _writable(cmap, self.dc.name)
        self.config = config
        self.cmap = cmap
        self.partition_ids = cmap.partition_ids
        self.writable = writable

    def local_replicas(self, pid: int) -> list[NodeConfig]:
        return self.cmap.replicas_in(pid, self.dc.name)

    def address_of(self, node_id: str) -> tuple[str, int]:
        return self.config.address_of(node_id, self.dc.name)

    def address_text(self, node_id: str) -> str:
        """``host:port`` of a node, for log lines ("?" for a node that left the map)."""
        try:
            host, port = self.address_of(node_id)
        except AmbryError:  # a node that left the map: its id says enough
            return "?"
        return f"{host}:{port}"

    def check_id(self, blob_id: BlobId) -> None:
        if blob_id.partition_id not in self.partition_ids:
            raise BadRequest(f"blob id names unknown partition {blob_id.partition_id}")

    def parse_id(self, text: str) -> BlobId:
        return decode(text, self.partition_ids)

    def new_id(self, account_id: int, container_id: int, partition_id: int,
               blob_type: BlobType = BlobType.SIMPLE) -> BlobId:
        """A fresh blob id of this datacenter: its UUID is 16 bytes of ``id_bytes``."""
        return new_blob_id(self.dc.id, account_id, container_id, partition_id, blob_type,
                           randbytes=self.id_bytes)

    def origin_dc_name(self, blob_id: BlobId) -> str | None:
        """The name of the datacenter that minted ``blob_id`` (None if not in the map)."""
        dc = next((d for d in self.cmap.datacenters if d.id == blob_id.datacenter_id), None)
        return dc.name if dc is not None else None
