"""The asyncio SDK: :class:`AsyncClient`, the one implementation behind both clients.

Owns the public operations (put, get, download, head, delete, named blobs, signed URLs) in
terms of ``_upload``, ``_fetch`` (whole-blob reads), ``_reader`` and ``_transport``, and
turning keyword arguments into Ambry headers. Does not own HTTP details or retry rules.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Self

from ambry.client._errors import IntegrityError, InvalidArgument
from ambry.client._fetch import BlobFetch
from ambry.client._progress import Progress, progress_bar
from ambry.client._reader import AsyncBlobReader
from ambry.client._resume import default_resume_dir
from ambry.client._retry import RetryPolicy
from ambry.client._source import Data, open_source
from ambry.client._transport import RequestEvent, Transport
from ambry.client._types import (
    UM_PREFIX,
    XXH3_METADATA_KEY,
    BlobInfo,
    NamedEntry,
    NamedPrefix,
    check_blob_id,
    info_from_headers,
    named_entry_from_json,
)
from ambry.client._upload import Uploader

__all__ = ["AsyncClient"]

KIB = 1024
MIB = 1024 * KIB
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", re.ASCII)
_INCLUDE_DELETED = {"x-ambry-get-option": "Include_Deleted_Blobs"}


class AsyncClient:
    """An asyncio client of an Ambry-py cluster's frontends.

    ``endpoints``: one frontend base URL or several in preference order (e.g. the local
    datacenter's first); a request that cannot reach one, or gets a 503, fails over to the
    next. Every other argument has a default that suits a cluster with default settings:

    * ``service_id``: sent as ``x-ambry-service-id`` on uploads (names the calling service).
    * ``account``, ``container``: defaults for uploads and named blobs.
    * ``part_size_bytes``: upload part (chunk) size; must not exceed the frontend's
      ``chunk_size_bytes`` (4 MiB by default; the client shrinks it if told to by a 413).
    * ``parallelism``: chunk uploads or range GETs in flight per call.
    * ``range_size_bytes``: range size of parallel downloads (default two parts: fewer,
      larger requests; memory per download is ``parallelism x range_size_bytes``).
    * ``read_ahead_bytes``, ``max_read_ahead_bytes``: readers' first and largest range.
    * ``retry``: a :class:`RetryPolicy`; ``connect_timeout_s``, ``read_timeout_s``: per
      attempt (the read timeout is the longest silence while waiting for reply bytes).
    * ``resume_dir``: where resume journals of file uploads live (default
      ``$XDG_CACHE_HOME/ambry/uploads``); ``resume_window_s``: how long unfinished uploads
      stay resumable (chunks not yet stitched expire after it).
    * ``progress``: default for the ``progress`` argument of transfers (None: show a bar
      only when stderr is a terminal).
    * ``on_request``: called with a :class:`RequestEvent` after every HTTP attempt (on the
      event loop: keep it quick and never call the client from it).

    Use it as ``async with AsyncClient(...) as c:`` or call :meth:`aclose`, from one event
    loop (its HTTP session belongs to the loop that first used it).

    Example::

        async with AsyncClient(["http://dc1:1174", "http://dc2:1184"]) as c:
            blob_id = await c.put(b"hello", content_type="text/plain")
            assert await c.get_bytes(blob_id) == b"hello"
    """

    def __init__(self, endpoints: str | Sequence[str], *, service_id: str = "ambry-python",
                 account: str = "default", container: str = "default",
                 part_size_bytes: int = 4 * MIB, parallelism: int = 4,
                 range_size_bytes: int | None = None, read_ahead_bytes: int = 256 * KIB,
                 max_read_ahead_bytes: int = 16 * MIB, retry: RetryPolicy | None = None,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 120.0,
                 resume_dir: str | os.PathLike[str] | None = None,
                 resume_window_s: int = 24 * 3600, progress: bool | None = None,
                 on_request: Callable[[RequestEvent], None] | None = None) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if parallelism < 1:
            raise ValueError("parallelism must be >= 1")
        self.retry = retry or RetryPolicy()
        self.service_id = service_id
        self.account = _path_segment(account, "account")
        self.container = _path_segment(container, "container")
        self.parallelism = parallelism
        self.range_size_bytes = range_size_bytes or 2 * part_size_bytes
        if self.range_size_bytes < 1:
            raise ValueError("range_size_bytes must be >= 1")
        self.read_ahead_bytes = read_ahead_bytes
        self.max_read_ahead_bytes = max_read_ahead_bytes
        self.progress = progress
        self._t = Transport(urls, retry=self.retry, connect_timeout_s=connect_timeout_s,
                            read_timeout_s=read_timeout_s,
                            max_connections=max(8, 4 * parallelism), on_request=on_request)
        # file reads/writes and sync iterators run here, never on the event loop
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ambry-client-io")
        self._uploader = Uploader(self._t, part_size=part_size_bytes, parallelism=parallelism,
                                  resume_dir=Path(resume_dir) if resume_dir is not None
                                  else default_resume_dir(), resume_window_s=resume_window_s)

    @property
    def endpoints(self) -> list[str]:
        return list(self._t.endpoints.urls)

    @property
    def part_size_bytes(self) -> int:
        """The upload part size in use (smaller than asked if a frontend refused it)."""
        return self._uploader.part_size

    async def aclose(self) -> None:
        await self._t.aclose()
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ uploads
    async def put(self, data: Data, *, content_type: str = "application/octet-stream",
                  ttl_s: int | None = None, user_metadata: Mapping[str, str] | None = None,
                  owner_id: str | None = None, filename: str | None = None,
                  account: str | None = None, container: str | None = None,
                  service_id: str | None = None, resume: bool = True,
                  progress: bool | None = None) -> str:
        """Upload a new blob and return its id.

        ``data``: ``bytes``/``bytearray``/``memoryview``; a file path (``str`` or
        ``os.PathLike``); a binary file object, read from its current position (a
        :class:`BlobReader` or :class:`AsyncBlobReader` too: that copies a blob with bounded
        memory); or an iterator / async iterator of ``bytes`` chunks of any size. ``ttl_s``: seconds until
        the blob expires (None: never). ``user_metadata``: str -> str, returned by
        :meth:`head`. ``filename`` defaults to the file's name for a path.

        Anything over one part is uploaded as parallel chunks and stitched; for a path, an
        interrupted upload resumes where it stopped when called again (``resume=False``
        starts over). Memory stays ``(parallelism + 2) x part_size_bytes``.
        """
        if filename is None and isinstance(data, str | os.PathLike):
            filename = Path(data).name
        headers = self._props(content_type=content_type, ttl_s=ttl_s,
                              user_metadata=user_metadata, owner_id=owner_id,
                              filename=filename, service_id=service_id)
        headers["x-ambry-target-account-name"] = _path_segment(account or self.account,
                                                               "account")
        headers["x-ambry-target-container-name"] = _path_segment(container or self.container,
                                                                 "container")
        src = open_source(data, self._executor)
        bar = self._bar(progress, src.size, f"put {filename or 'blob'}")
        try:
            return await self._uploader.put(src, headers, resume=resume, bar=bar)
        finally:
            bar.close()
            await src.aclose()

    async def put_named(self, name: str, data: Data, *, upsert: bool = False,
                        content_type: str = "application/octet-stream",
                        ttl_s: int | None = None, user_metadata: Mapping[str, str] | None = None,
                        owner_id: str | None = None, filename: str | None = None,
                        account: str | None = None, container: str | None = None,
                        service_id: str | None = None, resume: bool = True,
                        progress: bool | None = None) -> str:
        """Upload a blob under ``name`` (``runs/42/model.pt``; ``/`` allowed) in a container;
        its blob id. An existing name raises :class:`NameExists` unless ``upsert`` (checked
        before anything is sent, and decided again at the end). ``data`` and the properties
        are as for :meth:`put`: anything over one part is uploaded as parallel chunks and
        stitched into the name (``POST /named/...``), so a multi-GB checkpoint from a path
        resumes where it stopped when called again (``resume=False`` starts over), with
        memory ``(parallelism + 2) x part_size_bytes`` whatever its size."""
        headers = self._props(content_type=content_type, ttl_s=ttl_s,
                              user_metadata=user_metadata, owner_id=owner_id,
                              filename=filename, service_id=service_id)
        src = open_source(data, self._executor)
        bar = self._bar(progress, src.size, f"put {name}")
        try:
            return await self._uploader.put_named(self._named_path(name, account, container),
                                                  src, headers, upsert=upsert, resume=resume,
                                                  bar=bar)
        finally:
            bar.close()
            await src.aclose()

    # ------------------------------------------------------------------ reads by id
    async def open(self, blob_id: str, *, include_deleted: bool = False) -> AsyncBlobReader:
        """A seekable reader of the blob (range requests with read-ahead, nothing downloaded
        up front). Raises :class:`BlobNotFound` / :class:`BlobDeleted` / ... right away."""
        return await self._open(self._id_path(blob_id), _get_headers(include_deleted),
                                check_blob_id(blob_id))

    async def get(self, blob_id: str, *, include_deleted: bool = False) -> AsyncBlobReader:
        """Same as :meth:`open`: a streaming (and seekable) reader of the blob."""
        return await self.open(blob_id, include_deleted=include_deleted)

    async def get_bytes(self, blob_id: str, *, include_deleted: bool = False,
                        progress: bool | None = None) -> bytes:
        """The whole blob in memory (parallel range GETs for large blobs), verified."""
        return await self._fetch().get_bytes(self._id_path(blob_id), _get_headers(include_deleted),
                                     progress)

    async def download(self, blob_id: str, path: str | os.PathLike[str], *,
                       include_deleted: bool = False, progress: bool | None = None) -> BlobInfo:
        """Save the blob to ``path`` (parallel range GETs, written in order to a temporary
        file beside it, verified, then renamed into place); returns its info."""
        return await self._fetch().download(self._id_path(blob_id), Path(path),
                                    _get_headers(include_deleted), progress)

    async def head(self, blob_id: str, *, include_deleted: bool = False) -> BlobInfo:
        """Properties and user metadata of the blob (``HEAD /<id>``)."""
        reply = await self._t.call("HEAD", self._id_path(blob_id),
                                   headers=_get_headers(include_deleted), idempotent=True,
                                   what=f"head {blob_id}")
        return info_from_headers(reply.headers, check_blob_id(blob_id))

    async def info(self, blob_id: str, *, include_deleted: bool = False) -> BlobInfo:
        """Properties and user metadata of the blob (``GET /<id>/BlobInfo``)."""
        reply = await self._t.call("GET", self._id_path(blob_id) + "/BlobInfo",
                                   headers=_get_headers(include_deleted), idempotent=True,
                                   what=f"info {blob_id}")
        return info_from_headers(reply.headers, check_blob_id(blob_id))

    # ------------------------------------------------------------------ changes by id
    async def delete(self, blob_id: str) -> None:
        """Delete the blob (deleting a deleted blob is fine). Later reads raise
        :class:`BlobDeleted` unless ``include_deleted``."""
        await self._t.call("DELETE", self._id_path(blob_id), idempotent=True,
                           what=f"delete {blob_id}")

    async def undelete(self, blob_id: str) -> None:
        """Bring a deleted blob back (:class:`BlobNotDeleted` if it is live)."""
        await self._t.call("PUT", "/undelete", headers=self._id_headers(blob_id),
                           idempotent=True, what=f"undelete {blob_id}",
                           done_codes=frozenset({"BLOB_NOT_DELETED"}))

    async def update_ttl(self, blob_id: str) -> None:
        """Make the blob permanent (Ambry's TTL update); :class:`TtlUpdateTooLate` when it
        is about to expire."""
        await self._t.call("PUT", "/updateTtl", headers=self._id_headers(blob_id),
                           idempotent=True, what=f"update ttl {blob_id}")

    # ------------------------------------------------------------------ named blobs
    async def open_named(self, name: str, *, account: str | None = None,
                         container: str | None = None) -> AsyncBlobReader:
        """A seekable reader of the blob ``name`` points to now (later reads stay on that
        blob even if the name is overwritten meanwhile)."""
        return await self._open(self._named_path(name, account, container), {}, None)

    async def get_named(self, name: str, *, account: str | None = None,
                        container: str | None = None) -> AsyncBlobReader:
        """Same as :meth:`open_named`."""
        return await self.open_named(name, account=account, container=container)

    async def get_named_bytes(self, name: str, *, account: str | None = None,
                              container: str | None = None,
                              progress: bool | None = None) -> bytes:
        return await self._fetch().get_bytes(self._named_path(name, account, container), {}, progress)

    async def download_named(self, name: str, path: str | os.PathLike[str], *,
                             account: str | None = None, container: str | None = None,
                             progress: bool | None = None) -> BlobInfo:
        return await self._fetch().download(self._named_path(name, account, container), Path(path),
                                    {}, progress)

    async def head_named(self, name: str, *, account: str | None = None,
                         container: str | None = None) -> BlobInfo:
        """Info of the blob ``name`` points to (``blob_id`` included)."""
        path = self._named_path(name, account, container)
        reply = await self._t.call("HEAD", path, idempotent=True, what=f"head {path}")
        return info_from_headers(reply.headers)

    async def delete_named(self, name: str, *, account: str | None = None,
                           container: str | None = None) -> None:
        """Remove the name and delete the blob it pointed to."""
        path = self._named_path(name, account, container)
        await self._t.call("DELETE", path, idempotent=True, what=f"delete {path}")

    async def list_named(self, prefix: str = "", *, account: str | None = None,
                         container: str | None = None, page_size: int = 1000
                         ) -> AsyncGenerator[NamedEntry, None]:
        """Every live name under ``prefix``, sorted, fetching pages of ``page_size`` as the
        iteration goes."""
        a = _path_segment(account or self.account, "account")
        c = _path_segment(container or self.container, "container")
        page = ""
        while True:
            params = {"prefix": prefix, "maxResults": str(page_size)}
            if page:
                params["page"] = page
            reply = await self._t.call("GET", f"/named/{a}/{c}", params=params,
                                       idempotent=True, what=f"list /named/{a}/{c}")
            body = json.loads(reply.body)
            for e in body.get("entries", []):
                yield named_entry_from_json(e)
            page = body.get("nextPageToken") or ""
            if not page:
                return

    async def list_dir(self, prefix: str = "", *, delimiter: str = "/",
                       account: str | None = None, container: str | None = None,
                       page_size: int = 1000
                       ) -> AsyncGenerator[NamedEntry | NamedPrefix, None]:
        """One level under ``prefix``, sorted: a :class:`NamedEntry` per name with no
        ``delimiter`` after the prefix, a :class:`NamedPrefix` per "directory" (the prefix
        up to and including the next ``delimiter``), as S3's ListObjects with a delimiter.
        The frontend skips the names inside each directory, so this costs the number of
        children, not of every name below."""
        a = _path_segment(account or self.account, "account")
        c = _path_segment(container or self.container, "container")
        if not delimiter:
            raise ValueError("delimiter must be a non-empty string")
        page = ""
        while True:
            params = {"prefix": prefix, "delimiter": delimiter, "maxResults": str(page_size)}
            if page:
                params["page"] = page
            reply = await self._t.call("GET", f"/named/{a}/{c}", params=params,
                                       idempotent=True, what=f"list /named/{a}/{c}")
            body = json.loads(reply.body)
            rows: list[NamedEntry | NamedPrefix] = [
                named_entry_from_json(e) for e in body.get("entries", [])]
            rows += [NamedPrefix(str(p)) for p in body.get("commonPrefixes", [])]
            rows.sort(key=lambda r: r.name.encode())  # the store's order: UTF-8 bytes
            for r in rows:
                yield r
            page = body.get("nextPageToken") or ""
            if not page:
                return

    async def list_containers(self, account: str | None = None) -> list[str]:
        """Names of the containers of ``account`` (those of the cluster config and those
        created at run time, e.g. S3 buckets). An unknown account raises
        :class:`InvalidArgument`."""
        a = _path_segment(account or self.account, "account")
        reply = await self._t.call("GET", f"/named/{a}", idempotent=True,
                                   what=f"list containers of {a}")
        return [str(n) for n in json.loads(reply.body).get("containers", [])]

    # ------------------------------------------------------------------ signed URLs
    async def signed_url(self, method: Literal["GET", "POST"] = "GET",
                         blob_id: str | None = None, *, expires_in_s: int = 3600,
                         content_type: str = "application/octet-stream",
                         ttl_s: int | None = None,
                         user_metadata: Mapping[str, str] | None = None,
                         account: str | None = None, container: str | None = None,
                         service_id: str | None = None) -> str:
        """A URL that anyone can use without headers for ``expires_in_s`` seconds: ``GET``
        reads ``blob_id``; ``POST`` uploads one blob with the given properties (the body is
        the blob; the id comes back in ``Location``)."""
        if method not in ("GET", "POST"):
            raise ValueError("method must be 'GET' or 'POST'")
        h = {"x-ambry-url-type": method, "x-ambry-url-ttl-secs": str(int(expires_in_s))}
        if method == "GET":
            if blob_id is None:
                raise ValueError("a GET URL needs a blob_id")
            h["x-ambry-blob-id"] = check_blob_id(blob_id)
        else:
            h.update(self._props(content_type=content_type, ttl_s=ttl_s,
                                 user_metadata=user_metadata, owner_id=None, filename=None,
                                 service_id=service_id))
            h["x-ambry-target-account-name"] = _path_segment(account or self.account,
                                                             "account")
            h["x-ambry-target-container-name"] = _path_segment(container or self.container,
                                                               "container")
        reply = await self._t.call("GET", "/signedUrl", headers=h, idempotent=True,
                                   what="signed url")
        return reply.headers["x-ambry-signed-url"]

    # ------------------------------------------------------------------ internals
    def _bar(self, progress: bool | None, total: int | None, desc: str) -> Progress:
        return progress_bar(self.progress if progress is None else progress, total, desc)

    @staticmethod
    def _id_path(blob_id: str) -> str:
        return "/" + check_blob_id(blob_id)

    def _id_headers(self, blob_id: str) -> dict[str, str]:
        return {"x-ambry-blob-id": check_blob_id(blob_id),
                "x-ambry-service-id": self.service_id}

    def _named_path(self, name: str, account: str | None, container: str | None) -> str:
        if not isinstance(name, str) or not name:
            raise InvalidArgument("a blob name must be a non-empty string", status=0,
                                  code="INVALID_ARGUMENT")
        a = _path_segment(account or self.account, "account")
        c = _path_segment(container or self.container, "container")
        return f"/named/{a}/{c}/{name}"

    def _props(self, *, content_type: str, ttl_s: int | None,
               user_metadata: Mapping[str, str] | None, owner_id: str | None,
               filename: str | None, service_id: str | None) -> dict[str, str]:
        h = {"x-ambry-service-id": _header_value(service_id or self.service_id, "service_id"),
             "x-ambry-content-type": _header_value(content_type, "content_type")}
        if ttl_s is not None and ttl_s != -1:
            if not isinstance(ttl_s, int) or ttl_s < 0:
                raise ValueError(f"ttl_s must be None (forever) or an int >= 0, not {ttl_s!r}")
            h["x-ambry-ttl"] = str(ttl_s)
        if owner_id:
            h["x-ambry-owner-id"] = _header_value(owner_id, "owner_id")
        if filename:
            h["x-ambry-filename"] = _header_value(filename, "filename")
        for k, v in (user_metadata or {}).items():
            key = k.lower()
            if not isinstance(k, str) or _TOKEN.fullmatch(k) is None:
                raise ValueError(f"user metadata key {k!r} must be a non-empty HTTP token")
            if key == XXH3_METADATA_KEY:
                raise ValueError(f"user metadata key {k!r} is reserved by the SDK")
            if UM_PREFIX + key in h:
                raise ValueError(f"user metadata key {key!r} given twice (keys ignore case)")
            h[UM_PREFIX + key] = _header_value(v, f"user metadata {k!r}")
        return h

    async def _open(self, path: str, headers: dict[str, str], blob_id: str | None
                    ) -> AsyncBlobReader:
        reply = await self._t.call("HEAD", path, headers=headers, idempotent=True,
                                   what=f"open {path}")
        info = info_from_headers(reply.headers, blob_id)
        if not info.blob_id:
            raise IntegrityError(f"open {path}: the frontend did not name the blob (ETag)")
        return AsyncBlobReader(self._t, info, headers=headers,
                               read_ahead_bytes=self.read_ahead_bytes,
                               max_read_ahead_bytes=self.max_read_ahead_bytes)

    def _fetch(self) -> BlobFetch:
        return BlobFetch(self._t, self._executor, range_size_bytes=self.range_size_bytes,
                         parallelism=self.parallelism, attempts=self.retry.attempts,
                         bar=self._bar)


def _get_headers(include_deleted: bool) -> dict[str, str]:
    return dict(_INCLUDE_DELETED) if include_deleted else {}


def _path_segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"{what} must be a non-empty name without '/', not {value!r}")
    return value


def _header_value(value: str, what: str) -> str:
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise ValueError(f"{what} must be a str without CR, LF or NUL")
    return value
