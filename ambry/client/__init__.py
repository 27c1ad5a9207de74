"""The Python SDK of Ambry-py: :class:`Client` (sync, thread-safe) and :class:`AsyncClient`.

Imports only ``ambry.common`` and third-party packages (aiohttp, xxhash, tqdm), never the
frontend or storage code, so it installs and runs anywhere a client runs.

    from ambry.client import Client

    with Client("http://127.0.0.1:1174") as c:
        blob_id = c.put(b"hello", content_type="text/plain")
        assert c.get_bytes(blob_id) == b"hello"

See README.md ("Python SDK") for the tour: uploads of any size (parallel, resumable,
checksummed), seekable readers, named blobs, retries and failover, and typed errors.
"""

from __future__ import annotations

from ambry.client._async_client import AsyncClient
from ambry.client._client import Client
from ambry.client._errors import (
    AmbryError,
    ApiError,
    BadRequest,
    BlobAlreadyExists,
    BlobDeleted,
    BlobExpired,
    BlobNotDeleted,
    BlobNotFound,
    Conflict,
    ConnectionFailed,
    CorruptBlob,
    Forbidden,
    Gone,
    IntegrityError,
    InvalidArgument,
    InvalidBlobId,
    LifeVersionConflict,
    NameExists,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ServerError,
    TtlUpdateTooLate,
    Unauthorized,
    Unavailable,
)
from ambry.client._reader import AsyncBlobReader, BlobReader
from ambry.client._retry import RetryPolicy
from ambry.client._source import Data
from ambry.client._transport import RequestEvent
from ambry.client._types import XXH3_METADATA_KEY, BlobInfo, NamedEntry, NamedPrefix

__all__ = [
    "XXH3_METADATA_KEY",
    "AmbryError",
    "ApiError",
    "AsyncBlobReader",
    "AsyncClient",
    "BadRequest",
    "BlobAlreadyExists",
    "BlobDeleted",
    "BlobExpired",
    "BlobInfo",
    "BlobNotDeleted",
    "BlobNotFound",
    "BlobReader",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "CorruptBlob",
    "Data",
    "Forbidden",
    "Gone",
    "IntegrityError",
    "InvalidArgument",
    "InvalidBlobId",
    "LifeVersionConflict",
    "NameExists",
    "NamedEntry",
    "NamedPrefix",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "RequestEvent",
    "RetryPolicy",
    "ServerError",
    "TtlUpdateTooLate",
    "Unauthorized",
    "Unavailable",
]
