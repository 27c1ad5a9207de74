"""A located, checked PUT record of a replica, and its payload read in pieces.

Owns reading a blob's payload back: whole and verified when the record is small enough
(``storage.verify_on_read_max_bytes``), or streamed in bounded pieces with the checksum
verified as it goes; a mismatch is reported to the replica that holds the record (its damage
report) and raised. Does not own locating the record (``replica.Replica.get``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import xxhash

from ambry.common.blobid import BlobId
from ambry.common.blobstate import BlobState
from ambry.common.config import StorageConfig
from ambry.common.errors import DataCorrupt, InvalidArgument
from ambry.common.properties import BlobProperties
from ambry.storage.format import RECORD_HEADER_SIZE, RecordHeader
from ambry.storage.log import Position

__all__ = ["BlobRead", "RecordOwner"]


class RecordOwner(Protocol):
    """The replica a read record belongs to, as the read needs it."""

    @property
    def config(self) -> StorageConfig: ...

    def report_corrupt(self, pos: Position, h: RecordHeader | None, reason: str) -> None:
        """Record the damage and raise DataCorrupt."""


@dataclass
class BlobRead:
    """A located, checked PUT record. Read the payload with ``read_payload``/``iter_payload``."""

    replica: RecordOwner
    blob_id: BlobId
    header: RecordHeader
    position: Position
    state: BlobState
    properties: BlobProperties
    user_metadata: bytes
    expiry_ms: int  # effective expiry (0 = never, after TTL updates)
    _file: Any = None
    #: the record's body bytes before the payload (key | props | usermeta) as read from disk:
    #: with ``header.body_xxh3`` it lets a reader verify a payload the node did not hash
    body_prefix: bytes = b""

    @property
    def payload_len(self) -> int:
        return self.header.payload_len

    @property
    def payload_file_offset(self) -> int:
        return self.position[1] + self.header.payload_offset

    def fileno(self) -> int | None:
        return self._file.fileno()  # type: ignore[no-any-return]

    def payload_fd(self) -> int | None:
        """A duplicate of the segment file's descriptor (the caller closes it), or None when
        the disk has no real files (a simulated disk). Taken at read time, so the bytes stay
        readable through it whatever happens to the segment's own descriptor later (closed by
        a compaction swap; its number reused for another file)."""
        fd = self._file.fileno()
        return os.dup(fd) if isinstance(fd, int) and fd >= 0 else None

    def read_payload(self, start: int = 0, length: int | None = None) -> bytes:
        """Read [start, start+length) of the payload. The whole record is verified first when
        it is small enough (``verify_on_read_max_bytes``); bigger ranges are read as they are
        (use :meth:`iter_payload` to stream a whole large payload with verification)."""
        total = self.header.payload_len
        length = total - start if length is None else length
        if start < 0 or length < 0 or start + length > total:
            raise InvalidArgument("range outside the payload")
        if self.header.total_len <= self.replica.config.verify_on_read_max_bytes:
            body: bytes = self._file.pread(self.header.body_len,
                                           self.position[1] + RECORD_HEADER_SIZE)
            if len(body) != self.header.body_len or \
                    xxhash.xxh3_64_intdigest(body) != self.header.body_xxh3:
                self.replica.report_corrupt(self.position, self.header, "payload checksum "
                                            "mismatch on read")
            po = self.header.payload_offset - RECORD_HEADER_SIZE + start
            return body[po:po + length]
        data = self._file.pread(length, self.payload_file_offset + start)
        if len(data) != length:
            raise DataCorrupt("short read of payload")
        return data  # type: ignore[no-any-return]

    def iter_payload(self, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """Stream the whole payload in bounded pieces, verifying the record checksum; raises
        DataCorrupt after the last piece if it does not match (the caller then aborts)."""
        h = xxhash.xxh3_64()
        base = self.position[1] + RECORD_HEADER_SIZE
        pre = self.header.payload_offset - RECORD_HEADER_SIZE
        h.update(self._file.pread(pre, base))
        off = 0
        total = self.header.payload_len
        while off < total:
            piece = self._file.pread(min(chunk_bytes, total - off), base + pre + off)
            if not piece:
                raise DataCorrupt("short read of payload")
            h.update(piece)
            off += len(piece)
            if off == total and h.intdigest() != self.header.body_xxh3:
                self.replica.report_corrupt(self.position, self.header,
                                            "payload checksum mismatch on read")
            yield piece
