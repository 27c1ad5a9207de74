"""What the SDK returns about blobs: :class:`BlobInfo` and :class:`NamedEntry`, and the header
names of the Ambry REST API (DESIGN.md section 4) that the SDK sends and reads.

Owns parsing reply headers and listing JSON into those values. Does not own sending requests.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ambry.client._errors import InvalidBlobId

__all__ = [
    "XXH3_METADATA_KEY",
    "BlobInfo",
    "NamedEntry",
    "check_blob_id",
    "info_from_headers",
    "named_entry_from_json",
]

UM_PREFIX = "x-ambry-um-"
#: The user-metadata key under which the SDK stores the xxh3-64 (hex) of the whole blob, so
#: any later download can verify the bytes end to end. Hidden from
#: :attr:`BlobInfo.user_metadata` and shown as :attr:`BlobInfo.content_xxh3` instead.
XXH3_METADATA_KEY = "ambry-content-xxh3"

_BLOB_ID = re.compile(r"[A-Za-z0-9_-]{1,256}", re.ASCII)


def check_blob_id(blob_id: str) -> str:
    """A blob id as the API returns it (``Location: /<id>`` or the bare id), without the
    slash. Anything that could not be an id (a ``/`` inside, spaces, empty) is rejected here
    as :class:`~ambry.client.InvalidBlobId`, since as a URL path it would hit another route."""
    if not isinstance(blob_id, str):
        raise TypeError(f"a blob id is a str, not {type(blob_id).__name__}")
    bare = blob_id.removeprefix("/")
    if _BLOB_ID.fullmatch(bare) is None:
        raise InvalidBlobId(f"{blob_id!r} is not a blob id", status=0, code="INVALID_BLOB_ID")
    return bare


@dataclass(frozen=True)
class BlobInfo:
    """Properties and user metadata of one blob.

    ``ttl_s`` is ``None`` for a blob that never expires; ``created`` is UTC (the API carries
    it to the second). ``content_xxh3`` is the hex xxh3-64 of the whole blob when the SDK
    uploaded it (``None`` for blobs uploaded otherwise).
    """

    blob_id: str
    size: int
    content_type: str
    service_id: str
    created: datetime
    ttl_s: int | None
    owner_id: str = ""
    filename: str = ""
    account: str = ""
    container: str = ""
    user_metadata: Mapping[str, str] = field(default_factory=dict)
    deleted: bool = False
    life_version: int = 0
    content_xxh3: str | None = None

    @property
    def expires(self) -> datetime | None:
        """When the blob expires (UTC), ``None`` if never."""
        return None if self.ttl_s is None else self.created + timedelta(seconds=self.ttl_s)


@dataclass(frozen=True)
class NamedEntry:
    """One row of :meth:`~ambry.client.Client.list_named`."""

    name: str
    blob_id: str
    size: int
    content_type: str
    created: datetime


@dataclass(frozen=True)
class NamedPrefix:
    """A directory in :meth:`~ambry.client.Client.list_dir`: a common prefix of the names
    below it, ending with the delimiter (``runs/42/``)."""

    name: str


def _blob_id_from_etag(etag: str | None) -> str:
    if not etag:
        return ""
    return etag.removeprefix("W/").strip('"')


def info_from_headers(headers: Mapping[str, str], blob_id: str | None = None) -> BlobInfo:
    """A :class:`BlobInfo` from the headers of ``HEAD``/``GET /<id>`` or ``/BlobInfo``."""
    um = {k[len(UM_PREFIX):].lower(): v for k, v in headers.items()
          if k.lower().startswith(UM_PREFIX)}
    xxh3 = um.pop(XXH3_METADATA_KEY, None)
    ttl = int(headers.get("x-ambry-ttl", "-1"))
    created_text = headers.get("x-ambry-creation-time") or headers.get("Last-Modified")
    created = (email.utils.parsedate_to_datetime(created_text) if created_text
               else datetime.fromtimestamp(0, UTC))
    size_text = headers.get("x-ambry-blob-size") or headers.get("Content-Length") or "0"
    return BlobInfo(
        blob_id=blob_id or _blob_id_from_etag(headers.get("ETag")),
        size=int(size_text),
        content_type=headers.get("x-ambry-content-type") or headers.get("Content-Type", ""),
        service_id=headers.get("x-ambry-service-id", ""),
        created=created,
        ttl_s=None if ttl < 0 else ttl,
        owner_id=headers.get("x-ambry-owner-id", ""),
        filename=headers.get("x-ambry-filename", ""),
        account=headers.get("x-ambry-target-account-name", ""),
        container=headers.get("x-ambry-target-container-name", ""),
        user_metadata=um,
        deleted=headers.get("x-ambry-deleted", "").lower() == "true",
        life_version=int(headers.get("x-ambry-life-version", "0")),
        content_xxh3=xxh3.lower() if xxh3 else None,
    )


def named_entry_from_json(e: Mapping[str, Any]) -> NamedEntry:
    return NamedEntry(name=str(e["name"]), blob_id=str(e["blobId"]), size=int(e["size"]),
                      content_type=str(e.get("contentType", "")),
                      created=datetime.fromtimestamp(int(e.get("createdMs", 0)) / 1000, UTC))
