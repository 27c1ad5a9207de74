"""Where things are, as users write them: named blobs as ``ambry://<account>/<container>/<name>``
(or the same without the scheme), blob ids, and the frontends to talk to (``AMBRY_ENDPOINT``).

Owns parsing those strings, one rule shared by the fsspec filesystem
(:mod:`ambry.client.fsspec`) and the ``ambry`` command, and telling a blob id from a name.
Does not own any request. Lives in ``ambry.common`` (standard library only) so the ``ambry``
command can parse its arguments without importing the SDK, and every daemon started through
``ambry`` stays quick to start.
"""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENDPOINT_ENV",
    "SCHEME",
    "Location",
    "endpoints_from",
    "guess_content_type",
    "is_blob_id",
    "parse_location",
]

#: The environment variable with the frontend URL(s), comma-separated in preference order.
ENDPOINT_ENV = "AMBRY_ENDPOINT"
#: Used when neither an argument nor ``AMBRY_ENDPOINT`` names a frontend: ``make run``'s dc1.
DEFAULT_ENDPOINT = "http://127.0.0.1:1174"
SCHEME = "ambry://"

# DESIGN.md section 3: 32 bytes as URL-safe base64 without padding. A name always has a "/"
# (account/container/...), so the two cannot be confused.
_BLOB_ID = re.compile(r"/?[A-Za-z0-9_-]{43}", re.ASCII)


def is_blob_id(text: str) -> bool:
    """Whether ``text`` has the form of a blob id (``/`` in front allowed, as in
    ``Location``)."""
    return _BLOB_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class Location:
    """A named blob, or a prefix of names, in one container. ``name`` is ``""`` for the
    container itself and keeps a trailing ``/`` when one was written (``runs/42/``)."""

    account: str
    container: str
    name: str = ""

    def __str__(self) -> str:
        return f"{SCHEME}{self.account}/{self.container}/{self.name}"

    def with_name(self, name: str) -> Location:
        return Location(self.account, self.container, name)


def parse_location(text: str) -> Location:
    """``ambry://account/container/name``, ``account/container/name`` or
    ``account/container[/]`` as a :class:`Location`; :class:`ValueError` for anything else."""
    rest = text.removeprefix(SCHEME)
    parts = rest.split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{text!r} is not a blob name: expected "
                         f"[{SCHEME}]<account>/<container>[/<name>]")
    return Location(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def endpoints_from(given: str | Sequence[str] | None,
                   environ: Mapping[str, str] | None = None) -> list[str]:
    """Frontend base URLs in preference order: from ``given`` (one URL, a comma-separated
    list, or several of either), else ``$AMBRY_ENDPOINT``, else :data:`DEFAULT_ENDPOINT`.
    ``host:port`` without a scheme means ``http://host:port``."""
    env = os.environ if environ is None else environ
    items = [given] if isinstance(given, str) else list(given or [])
    if not any(i.strip() for i in items):
        items = [env.get(ENDPOINT_ENV, "")]
    urls: list[str] = []
    for item in items:
        for url in item.split(","):
            url = url.strip().rstrip("/")
            if url and "://" not in url:
                url = "http://" + url
            if url and url not in urls:
                urls.append(url)
    return urls or [DEFAULT_ENDPOINT]


# Python's own table only: the machine's /etc/mime.types would make the type depend on where
# the upload ran (and calls a PyTorch ".pt" file "application/vnd.snesdev-page-table").
_MIME = mimetypes.MimeTypes()
_MIME.add_type("application/vnd.apache.parquet", ".parquet")
_MIME.add_type("application/jsonl", ".jsonl")
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
               "xz": "application/x-xz", "br": "application/x-brotli",
               "compress": "application/x-compress"}


def guess_content_type(name: str) -> str:
    """The content type to store for a file called ``name`` (by its extension; a compressed
    file is its compression's type, ``data.csv.gz`` is ``application/gzip``)."""
    ctype, encoding = _MIME.guess_type(name)
    if encoding is not None:
        return _COMPRESSED.get(encoding, "application/octet-stream")
    return ctype or "application/octet-stream"
