"""The named-blob record: one value for a name's entry, on every side.

Owns what a name's entry is (account, container, name -> blob id, with the writer's timestamp
and datacenter, a deletion flag and the listing fields) and the order that resolves concurrent
writes (:attr:`NameRecord.version`, last writer wins). The frontend builds it, the node protocol
carries it (``to_wire`` / ``from_wire``: the field map of ``name_put`` and of name replies), and
a replica stores it (its log-record and name-view encodings are ``ambry.storage.names``'s). Does
not own any byte layout on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["NameRecord"]


@dataclass(frozen=True, slots=True)
class NameRecord:
    account_id: int
    container_id: int
    name: str
    blob_id: bytes  # 32 raw bytes; empty for a deletion
    ts_ms: int
    dc_id: int
    deleted: bool = False
    size: int = 0
    content_type: str = ""
    created_ms: int = 0

    @property
    def version(self) -> tuple[int, int, bytes]:
        """Last-writer-wins order: timestamp, then datacenter id, then the blob id (empty for
        a deletion), so two writes with the same timestamp from one datacenter (two frontends
        in the same millisecond) still resolve identically on every replica."""
        return (self.ts_ms, self.dc_id, self.blob_id)

    def to_wire(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "container_id": self.container_id,
                "name": self.name, "blob_id": self.blob_id, "ts_ms": self.ts_ms,
                "dc_id": self.dc_id, "deleted": self.deleted, "size": self.size,
                "content_type": self.content_type, "created_ms": self.created_ms}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> NameRecord:
        return cls(int(m["account_id"]), int(m["container_id"]), str(m["name"]),
                   bytes(m.get("blob_id") or b""), int(m["ts_ms"]), int(m["dc_id"]),
                   bool(m.get("deleted", False)), int(m.get("size", 0)),
                   str(m.get("content_type", "")), int(m.get("created_ms", 0)))
