"""S3 errors: the one table from Ambry's error codes to S3's, and the S3 error type.

Owns :class:`S3Error` (an S3 error code, its HTTP status and the resource it concerns) and
:func:`s3_error_for`, which maps every :class:`~ambry.common.errors.AmbryError` raised by the
router or the container registry to the S3 error a client expects. Does not own rendering the
XML body (``ambry.frontend.s3.xml``).

``S3Error`` is an ``AmbryError`` so that it crosses the router unchanged: a body that fails its
checksum raises it from inside an upload, the router cleans up, and the S3 layer answers with
the code the body reader chose.
"""

from __future__ import annotations

from ambry.common.errors import AmbryError

__all__ = ["S3Error", "s3_error_for"]


class S3Error(AmbryError):
    """An S3 error reply: ``s3_code`` (``NoSuchKey``, ...), HTTP ``status``, message."""

    code = "S3_ERROR"

    def __init__(self, s3_code: str, message: str, status: int = 400, *,
                 bucket: str | None = None, key: str | None = None,
                 extra: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.s3_code = s3_code
        self.status = status
        self.bucket = bucket
        self.key = key
        self.extra = dict(extra or {})


# Ambry error code -> (S3 code, HTTP status). Object context: "not found" means NoSuchKey.
_BY_AMBRY_CODE: dict[str, tuple[str, int]] = {
    "BAD_REQUEST": ("InvalidRequest", 400),
    "INVALID_BLOB_ID": ("InvalidArgument", 400),
    "INVALID_ARGUMENT": ("InvalidArgument", 400),
    "MISSING_HEADER": ("InvalidRequest", 400),
    "PAYLOAD_TOO_LARGE": ("EntityTooLarge", 400),
    "RANGE_NOT_SATISFIABLE": ("InvalidRange", 416),
    "ACCESS_DENIED": ("AccessDenied", 403),
    "BLOB_NOT_FOUND": ("NoSuchKey", 404),
    "BLOB_DELETED": ("NoSuchKey", 404),
    "BLOB_EXPIRED": ("NoSuchKey", 404),
    "NAME_ALREADY_EXISTS": ("OperationAborted", 409),
    "BLOB_ALREADY_EXISTS": ("OperationAborted", 409),
    "UNAVAILABLE": ("ServiceUnavailable", 503),
    "PARTITION_READ_ONLY": ("ServiceUnavailable", 503),
    "REPLICA_UNAVAILABLE": ("ServiceUnavailable", 503),
    "PROTOCOL_ERROR": ("ServiceUnavailable", 503),
    "STORAGE_ERROR": ("ServiceUnavailable", 503),
    "DISK_FULL": ("ServiceUnavailable", 503),
    "DATA_CORRUPT": ("ServiceUnavailable", 503),
}


def s3_error_for(e: AmbryError, *, bucket: str | None = None, key: str | None = None
                 ) -> S3Error:
    """The S3 error for an Ambry error; unknown codes are a 500 InternalError (a bug)."""
    if isinstance(e, S3Error):
        if e.bucket is None:
            e.bucket = bucket
        if e.key is None:
            e.key = key
        return e
    s3_code, status = _BY_AMBRY_CODE.get(e.code, ("InternalError", 500))
    return S3Error(s3_code, e.message if status < 500 or status == 503 else
                   "We encountered an internal error. Please try again.", status,
                   bucket=bucket, key=key)
