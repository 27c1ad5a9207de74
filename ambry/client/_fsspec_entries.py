"""What fsspec callers of :class:`~ambry.client.fsspec.AmbryFileSystem` get back: the info
dicts of files and directories, the :class:`OSError` an SDK error becomes, and fsspec's byte
range arithmetic. Pure functions of values.

Owns the shape of an entry (``name``, ``size``, ``type``, ``blob_id``, ``created`` /
``mtime``, ...) and which SDK errors are which ``OSError``. Does not own asking the store
(``fsspec``).
"""

from __future__ import annotations

import errno
from datetime import datetime
from typing import Any

from ambry.client._errors import (
    ApiError,
    BlobNotFound,
    Forbidden,
    Gone,
    InvalidArgument,
    NameExists,
    Unauthorized,
)
from ambry.client._types import BlobInfo, NamedEntry

__all__ = ["clamp_range", "dir_entry", "entry_from_info", "entry_from_listing", "file_entry",
           "os_error"]


def os_error(e: ApiError, path: str) -> Exception:
    """The :class:`OSError` fsspec callers expect for an SDK error, or the error itself."""
    if isinstance(e, BlobNotFound | Gone) or _unknown_container(e):
        return FileNotFoundError(errno.ENOENT, f"no such name: {e.message}", path)
    if isinstance(e, NameExists):
        return FileExistsError(errno.EEXIST, "name exists", path)
    if isinstance(e, Forbidden | Unauthorized):
        return PermissionError(errno.EACCES, e.message, path)
    return e


def _unknown_container(e: ApiError) -> bool:
    # The frontend answers 400 INVALID_ARGUMENT for an account or container it does not know
    # (the same code as other bad input), so the message is the only place that says so.
    return isinstance(e, InvalidArgument) and ("unknown account" in e.message
                                               or "unknown container" in e.message)


def dir_entry(path: str) -> dict[str, Any]:
    return {"name": path, "size": 0, "type": "directory"}


def file_entry(path: str, *, blob_id: str, size: int, content_type: str,
                created: datetime, **extra: Any) -> dict[str, Any]:
    return {"name": path, "size": size, "type": "file", "blob_id": blob_id,
            "content_type": content_type, "created": created, "mtime": created, **extra}


def entry_from_info(path: str, info: BlobInfo) -> dict[str, Any]:
    return file_entry(path, blob_id=info.blob_id, size=info.size,
                       content_type=info.content_type, created=info.created,
                       ttl_s=info.ttl_s, user_metadata=dict(info.user_metadata),
                       content_xxh3=info.content_xxh3)


def entry_from_listing(path: str, e: NamedEntry) -> dict[str, Any]:
    return file_entry(path, blob_id=e.blob_id, size=e.size, content_type=e.content_type,
                       created=e.created)


def clamp_range(start: int | None, end: int | None, size: int) -> tuple[int, int]:
    """fsspec's ``[start, end)`` (negative counts from the end, None is an edge) clamped to
    ``[0, size]``."""
    lo = 0 if start is None else (size + start if start < 0 else start)
    hi = size if end is None else (size + end if end < 0 else end)
    lo = min(max(lo, 0), size)
    hi = min(max(hi, lo), size)
    return lo, hi
