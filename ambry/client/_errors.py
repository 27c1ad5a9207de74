"""The SDK's exception tree: every failed request becomes one typed exception.

Owns the mapping from a frontend reply (HTTP status + ``x-ambry-error-code``) to an exception,
done once in :func:`error_from_reply`, and the client-side failures (endpoint unreachable,
integrity check failed). Does not own the decision to retry (``_retry``).

Each class that has a twin in :mod:`ambry.common.errors` also inherits from it, so code that
catches ``ambry.common.errors.BlobNotFound`` catches the SDK's too::

    AmbryError (ambry.common.errors)
    ├── ApiError                    the frontend answered with an error (status, code, request id)
    │   ├── BadRequest              400 (and 413, 416)
    │   │   ├── InvalidBlobId       400 INVALID_BLOB_ID: the id does not decode
    │   │   ├── InvalidArgument     400 INVALID_ARGUMENT / MISSING_HEADER
    │   │   ├── PayloadTooLarge     413
    │   │   └── RangeNotSatisfiable 416
    │   ├── Unauthorized            401: signed URL altered or expired
    │   ├── Forbidden               403: the blob belongs to another account/container
    │   ├── BlobNotFound            404: authoritative, the blob never existed
    │   ├── TtlUpdateTooLate        405: the blob is about to expire
    │   ├── Conflict                409
    │   │   ├── NameExists          a named put without upsert found the name taken
    │   │   ├── BlobNotDeleted      undelete of a live blob
    │   │   ├── BlobAlreadyExists
    │   │   └── LifeVersionConflict
    │   ├── Gone                    410
    │   │   ├── BlobDeleted
    │   │   └── BlobExpired
    │   ├── Unavailable             503 (too few replicas, read-only partitions): retryable
    │   │   ├── ConnectionFailed    no endpoint answered (connect error, timeout, cut reply)
    │   │   └── CorruptBlob         503 DATA_CORRUPT: stored bytes fail their checksum on
    │   │                           every replica the frontend reached
    │   └── ServerError             500 and anything unmapped: a frontend bug
    └── IntegrityError              the bytes received do not match the size or xxh3 stored
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ambry.common import errors as _common
from ambry.common.errors import AmbryError

__all__ = [
    "AmbryError",
    "ApiError",
    "BadRequest",
    "BlobAlreadyExists",
    "BlobDeleted",
    "BlobExpired",
    "BlobNotDeleted",
    "BlobNotFound",
    "Conflict",
    "ConnectionFailed",
    "CorruptBlob",
    "Forbidden",
    "Gone",
    "IntegrityError",
    "InvalidArgument",
    "InvalidBlobId",
    "LifeVersionConflict",
    "NameExists",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "ServerError",
    "TtlUpdateTooLate",
    "Unauthorized",
    "Unavailable",
    "error_from_reply",
]


class ApiError(AmbryError):
    """The frontend answered with an error status.

    ``status`` is the HTTP status (0 when no endpoint answered), ``code`` the
    ``x-ambry-error-code`` header, ``request_id`` the ``x-ambry-request-id`` to look up in
    the frontend's log, ``endpoint`` the base URL that answered last.
    """

    status_default = 0

    def __init__(self, message: str = "", *, status: int | None = None, code: str | None = None,
                 request_id: str = "", endpoint: str = "") -> None:
        super().__init__(message)
        self.status = self.status_default if status is None else status
        if code:
            self.code = code
        self.request_id = request_id
        self.endpoint = endpoint

    def __str__(self) -> str:
        where = f" [{self.status} {self.code}" + (f", rid={self.request_id}" if self.request_id
                                                  else "") + "]"
        return self.message + where


class BadRequest(ApiError, _common.BadRequest):
    status_default = 400


class InvalidBlobId(BadRequest, _common.InvalidBlobId):
    pass


class InvalidArgument(BadRequest, _common.InvalidArgument):
    pass


class PayloadTooLarge(BadRequest, _common.PayloadTooLarge):
    status_default = 413

    @property
    def limit_bytes(self) -> int | None:
        """The size limit the frontend named in its message, if any ("... (1048576 bytes)")."""
        m = re.search(r"\((\d+) bytes\)", self.message)
        return int(m.group(1)) if m else None


class RangeNotSatisfiable(BadRequest):
    code = "RANGE_NOT_SATISFIABLE"
    status_default = 416


class Unauthorized(ApiError):
    code = "SIGNATURE_INVALID"
    status_default = 401


class Forbidden(ApiError):
    code = "ACCESS_DENIED"
    status_default = 403


class BlobNotFound(ApiError, _common.BlobNotFound):
    status_default = 404


class TtlUpdateTooLate(ApiError):
    code = "TTL_UPDATE_TOO_LATE"
    status_default = 405


class Conflict(ApiError):
    code = "CONFLICT"
    status_default = 409


class NameExists(Conflict):
    code = "NAME_ALREADY_EXISTS"


class BlobNotDeleted(Conflict, _common.BlobNotDeleted):
    pass


class BlobAlreadyExists(Conflict, _common.BlobAlreadyExists):
    pass


class LifeVersionConflict(Conflict, _common.LifeVersionConflict):
    pass


class Gone(ApiError):
    code = "GONE"
    status_default = 410


class BlobDeleted(Gone, _common.BlobDeleted):
    pass


class BlobExpired(Gone, _common.BlobExpired):
    pass


class Unavailable(ApiError, _common.Unavailable):
    """Retryable: the client already retried (with backoff, on every endpoint) and gave up."""

    status_default = 503


class ConnectionFailed(Unavailable):
    """No endpoint gave a reply: connection refused, timed out, or cut mid-reply."""

    code = "CONNECTION_FAILED"
    status_default = 0


class CorruptBlob(Unavailable, _common.DataCorrupt):
    """The blob (or one of its chunks) is corrupt on every replica the frontend reached; the
    message names the chunk. Retried like any 503 (a scrubber may repair it from a peer, or
    another datacenter's frontend may hold a good copy) before it is raised. A reply cut
    mid-body by this is resumed from the cut, which then gets this error, not a short
    file."""

    code = "DATA_CORRUPT"


class ServerError(ApiError):
    code = "INTERNAL"
    status_default = 500


class IntegrityError(_common.DataCorrupt):
    """The bytes received (or a file being resumed) do not match the size or the xxh3 that
    was stored with the blob. Nothing was written to the destination path."""

    code = "INTEGRITY_ERROR"


_BY_CODE: dict[str, type[ApiError]] = {
    "BAD_REQUEST": BadRequest,
    "INVALID_BLOB_ID": InvalidBlobId,
    "INVALID_ARGUMENT": InvalidArgument,
    "MISSING_HEADER": InvalidArgument,
    "PAYLOAD_TOO_LARGE": PayloadTooLarge,
    "RANGE_NOT_SATISFIABLE": RangeNotSatisfiable,
    "SIGNATURE_INVALID": Unauthorized,
    "ACCESS_DENIED": Forbidden,
    "BLOB_NOT_FOUND": BlobNotFound,
    "TTL_UPDATE_TOO_LATE": TtlUpdateTooLate,
    "NAME_ALREADY_EXISTS": NameExists,
    "BLOB_NOT_DELETED": BlobNotDeleted,
    "BLOB_ALREADY_EXISTS": BlobAlreadyExists,
    "LIFE_VERSION_CONFLICT": LifeVersionConflict,
    "BLOB_DELETED": BlobDeleted,
    "BLOB_EXPIRED": BlobExpired,
}

_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: BlobNotFound,
    405: TtlUpdateTooLate, 409: Conflict, 410: Gone, 413: PayloadTooLarge,
    416: RangeNotSatisfiable, 502: Unavailable, 503: Unavailable, 504: Unavailable,
}


def error_from_reply(status: int, headers: Mapping[str, str], body: str = "", *,
                     endpoint: str = "", what: str = "") -> ApiError:
    """The typed exception for an error reply: by ``x-ambry-error-code`` when the frontend
    named the cause, else by status. The 503 family (any code) is always
    :class:`Unavailable`, so callers can catch one class for "try again later"."""
    code = headers.get("x-ambry-error-code", "")
    cls: type[ApiError] | None = None
    if status not in (502, 503, 504):
        cls = _BY_CODE.get(code)
    elif code == CorruptBlob.code:
        cls = CorruptBlob  # still an Unavailable
    if cls is None:
        # 405 without a code is aiohttp's "method not allowed", not a TTL verdict
        cls = _BY_STATUS.get(status) if (status != 405 or code) else BadRequest
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else ServerError
    text = " ".join(body.split())[:500]
    message = f"{what}: {text}" if what and text else (what or text or f"HTTP {status}")
    return cls(message, status=status, code=code or None,
               request_id=headers.get("x-ambry-request-id", ""), endpoint=endpoint)
