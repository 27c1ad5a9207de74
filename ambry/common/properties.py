"""Blob properties: the immutable facts a PUT records about a blob.

Shared by the frontend (which sets them) and the storage node (which stores them inside the
PUT record). Encoded with msgpack as a map of short keys; unknown keys are kept on decode so a
newer writer's extra fields survive an older reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from ambry.common.errors import InvalidArgument

__all__ = ["MAX_EXPIRY_MS", "TTL_INFINITE", "BlobProperties"]

TTL_INFINITE = -1
#: the latest expiry a blob may have: the index keeps expiry as u32 unix seconds (year 2106)
MAX_EXPIRY_MS = 0xFFFF_FFFF * 1000


@dataclass(frozen=True, slots=True)
class BlobProperties:
    size: int
    created_ms: int
    ttl_s: int = TTL_INFINITE
    content_type: str = "application/octet-stream"
    service_id: str = ""
    owner_id: str = ""
    filename: str = ""
    account_id: int = 0
    container_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size < 0:
            raise InvalidArgument("blob size must be >= 0")
        if self.ttl_s < TTL_INFINITE:
            raise InvalidArgument("ttl must be -1 (forever) or >= 0 seconds")
        if self.expiry_ms > MAX_EXPIRY_MS:
            # a TTL past 2106: a 400 here, not an overflow on every replica (a 503)
            raise InvalidArgument(f"ttl {self.ttl_s} s would expire the blob after "
                                  f"{MAX_EXPIRY_MS // 1000} (unix seconds); use -1 (forever)")

    @property
    def expiry_ms(self) -> int:
        """Absolute expiry in unix ms, 0 when the blob never expires."""
        return 0 if self.ttl_s == TTL_INFINITE else self.created_ms + self.ttl_s * 1000

    def encode(self) -> bytes:
        m: dict[str, Any] = dict(self.extra)
        m.update({"sz": self.size, "ct": self.created_ms, "ttl": self.ttl_s,
                  "typ": self.content_type, "svc": self.service_id, "own": self.owner_id,
                  "fn": self.filename, "acc": self.account_id, "con": self.container_id})
        data: bytes = msgpack.packb(m, use_bin_type=True)
        return data

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> BlobProperties:
        try:
            m = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            return cls(size=int(m.pop("sz")), created_ms=int(m.pop("ct")),
                       ttl_s=int(m.pop("ttl")), content_type=str(m.pop("typ")),
                       service_id=str(m.pop("svc")), owner_id=str(m.pop("own")),
                       filename=str(m.pop("fn")), account_id=int(m.pop("acc")),
                       container_id=int(m.pop("con")), extra=m)
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
            raise InvalidArgument(f"bad blob properties: {e}") from None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = msgpack.unpackb(self.encode(), raw=False)
        return wire

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> BlobProperties:
        return cls.decode(msgpack.packb(m, use_bin_type=True))
