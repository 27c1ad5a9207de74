"""Blob ids: the 32-byte identifier of DESIGN.md section 3, and its URL-safe text form.

Owns the byte layout, generation, encoding and validation of blob ids. Does not own which
partitions exist (the cluster map does): :func:`decode` takes an optional set of known
partition ids and rejects the rest.

```
 offset size field
 0      2    version        u16 big-endian, = 1
 2      1    flags          bits 0-1 blob type (0 simple, 1 metadata, 2 chunk), bit 2 encrypted
 3      1    datacenter id  u8, origin datacenter
 4      2    account id     u16
 6      2    container id   u16
 8      8    partition id   u64
 16     16   uuid           random
```
Text form: URL-safe base64 without padding, 43 characters.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import struct
from collections.abc import Callable, Container
from dataclasses import dataclass

from ambry.common.errors import InvalidBlobId

__all__ = ["BLOB_ID_BYTES", "BLOB_ID_TEXT_LEN", "BlobId", "BlobType", "decode", "new_blob_id"]

BLOB_ID_VERSION = 1
BLOB_ID_BYTES = 32
BLOB_ID_TEXT_LEN = 43
_STRUCT = struct.Struct(">HBBHHQ16s")
_FLAG_TYPE_MASK = 0x03
_FLAG_ENCRYPTED = 0x04
_FLAG_KNOWN = _FLAG_TYPE_MASK | _FLAG_ENCRYPTED


class BlobType(enum.IntEnum):
    SIMPLE = 0
    METADATA = 1
    CHUNK = 2


@dataclass(frozen=True, slots=True)
class BlobId:
    datacenter_id: int
    account_id: int
    container_id: int
    partition_id: int
    uuid: bytes
    blob_type: BlobType = BlobType.SIMPLE
    encrypted: bool = False

    def __post_init__(self) -> None:
        if len(self.uuid) != 16:
            raise InvalidBlobId("uuid must be 16 bytes")
        if not (0 <= self.datacenter_id <= 0xFF and 0 <= self.account_id <= 0xFFFF
                and 0 <= self.container_id <= 0xFFFF and 0 <= self.partition_id < 2**64):
            raise InvalidBlobId("blob id field out of range")

    def to_bytes(self) -> bytes:
        flags = int(self.blob_type) | (_FLAG_ENCRYPTED if self.encrypted else 0)
        return _STRUCT.pack(BLOB_ID_VERSION, flags, self.datacenter_id, self.account_id,
                            self.container_id, self.partition_id, self.uuid)

    def to_str(self) -> str:
        return base64.urlsafe_b64encode(self.to_bytes()).rstrip(b"=").decode("ascii")

    def __str__(self) -> str:
        return self.to_str()

    @classmethod
    def from_bytes(cls, raw: bytes) -> BlobId:
        if len(raw) != BLOB_ID_BYTES:
            raise InvalidBlobId(f"blob id must be {BLOB_ID_BYTES} bytes, got {len(raw)}")
        version, flags, dc, account, container, partition, uuid = _STRUCT.unpack(raw)
        if version != BLOB_ID_VERSION:
            raise InvalidBlobId(f"unsupported blob id version {version}")
        if flags & ~_FLAG_KNOWN:
            raise InvalidBlobId("unknown blob id flags")
        btype = flags & _FLAG_TYPE_MASK
        if btype not in (0, 1, 2):
            raise InvalidBlobId("unknown blob type")
        return cls(dc, account, container, partition, bytes(uuid), BlobType(btype),
                   bool(flags & _FLAG_ENCRYPTED))


def decode(text: str | bytes, known_partitions: Container[int] | None = None) -> BlobId:
    """Decode the 43-character text form; raise :class:`InvalidBlobId` on anything else."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidBlobId("blob id is not ASCII") from None
    if len(text) != BLOB_ID_TEXT_LEN:
        raise InvalidBlobId(f"blob id must be {BLOB_ID_TEXT_LEN} characters")
    try:
        raw = base64.b64decode(text + "=", altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBlobId("blob id is not URL-safe base64") from None
    bid = BlobId.from_bytes(raw)
    if bid.to_str() != text:  # non-canonical trailing bits
        raise InvalidBlobId("blob id is not canonical")
    if known_partitions is not None and bid.partition_id not in known_partitions:
        raise InvalidBlobId(f"blob id names unknown partition {bid.partition_id}")
    return bid


def new_blob_id(datacenter_id: int, account_id: int, container_id: int, partition_id: int,
                blob_type: BlobType = BlobType.SIMPLE, *,
                randbytes: Callable[[int], bytes] = os.urandom) -> BlobId:
    return BlobId(datacenter_id, account_id, container_id, partition_id, randbytes(16), blob_type)
