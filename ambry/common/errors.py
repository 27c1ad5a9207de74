"""The one exception tree of Ambry-py.

Every error that crosses a module boundary is an :class:`AmbryError` subclass with a stable
``code`` (a short UPPER_SNAKE string). The node protocol sends the code on the wire and the
frontend maps codes to HTTP statuses in one table. Programmer errors (broken invariants) are
*not* in this tree: they are plain ``AssertionError``/``RuntimeError`` and crash loudly.

    AmbryError
    ├── BadRequest                 client sent something invalid (-> 4xx)
    │   ├── InvalidBlobId          id does not decode / wrong length / version / partition
    │   ├── InvalidArgument        a header, TTL, name or option is malformed
    │   └── PayloadTooLarge
    ├── BlobNotFound               authoritative: the replica never had it
    ├── BlobDeleted
    ├── BlobExpired
    ├── BlobAlreadyExists          a put of an existing id with different content
    ├── BlobNotDeleted             undelete of a live blob
    ├── LifeVersionConflict        an operation carried a stale life_version
    ├── NameBusy                   another writer holds the name, or it changed (conditional
    │                              name write; retry after a fresh reservation)
    ├── PartitionReadOnly          replica full, or after ENOSPC / I/O error
    ├── StorageError               I/O error on the node's disk
    │   ├── DiskFull
    │   └── DataCorrupt            a record failed its checksum
    ├── ProtocolError              malformed frame or message on the node protocol
    ├── ReplicaUnavailable         unknown / stopped replica on this node
    └── Unavailable                too few replicas answered (retryable)
"""

from __future__ import annotations

__all__ = [
    "AmbryError",
    "BadRequest",
    "BlobAlreadyExists",
    "BlobDeleted",
    "BlobExpired",
    "BlobNotDeleted",
    "BlobNotFound",
    "DataCorrupt",
    "DiskFull",
    "InvalidArgument",
    "InvalidBlobId",
    "LifeVersionConflict",
    "NameBusy",
    "PartitionReadOnly",
    "PayloadTooLarge",
    "ProtocolError",
    "ReplicaUnavailable",
    "StorageError",
    "Unavailable",
    "error_from_code",
]


class AmbryError(Exception):
    """Base of every typed Ambry error. ``code`` travels on the wire."""

    code = "INTERNAL"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__


class BadRequest(AmbryError):
    code = "BAD_REQUEST"


class InvalidBlobId(BadRequest):
    code = "INVALID_BLOB_ID"


class InvalidArgument(BadRequest):
    code = "INVALID_ARGUMENT"


class PayloadTooLarge(BadRequest):
    code = "PAYLOAD_TOO_LARGE"


class BlobNotFound(AmbryError):
    code = "BLOB_NOT_FOUND"


class BlobDeleted(AmbryError):
    code = "BLOB_DELETED"


class BlobExpired(AmbryError):
    code = "BLOB_EXPIRED"


class BlobAlreadyExists(AmbryError):
    code = "BLOB_ALREADY_EXISTS"


class BlobNotDeleted(AmbryError):
    code = "BLOB_NOT_DELETED"


class LifeVersionConflict(AmbryError):
    code = "LIFE_VERSION_CONFLICT"


class NameBusy(AmbryError):
    code = "NAME_BUSY"


class PartitionReadOnly(AmbryError):
    code = "PARTITION_READ_ONLY"


class StorageError(AmbryError):
    code = "STORAGE_ERROR"


class DiskFull(StorageError):
    code = "DISK_FULL"


class DataCorrupt(StorageError):
    code = "DATA_CORRUPT"


class ProtocolError(AmbryError):
    code = "PROTOCOL_ERROR"


class ReplicaUnavailable(AmbryError):
    code = "REPLICA_UNAVAILABLE"


class Unavailable(AmbryError):
    code = "UNAVAILABLE"


def _all_subclasses(cls: type[AmbryError]) -> list[type[AmbryError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE: dict[str, type[AmbryError]] = {c.code: c for c in _all_subclasses(AmbryError)}


def error_from_code(code: str, message: str = "") -> AmbryError:
    """Rebuild a typed error from its wire code (unknown codes become a plain AmbryError)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = AmbryError(f"{code}: {message}")
        err.code = code
        return err
    return cls(message)
