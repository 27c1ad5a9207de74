"""The synchronous SDK: :class:`Client`, the :class:`AsyncClient` run on a private event loop
thread, so there is one implementation and any number of threads may share one client.

Owns the sync signatures (the same as the async ones), turning async readers and listings
into a :class:`BlobReader` and an iterator, and the loop thread's lifetime. Does not own any
behaviour of its own: every method is the async method, awaited on the loop thread.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Self

from ambry.client._async_client import KIB, MIB, AsyncClient
from ambry.client._loop import LoopThread
from ambry.client._reader import AsyncBlobReader, BlobReader
from ambry.client._retry import RetryPolicy
from ambry.client._source import Data
from ambry.client._transport import RequestEvent
from ambry.client._types import BlobInfo, NamedEntry, NamedPrefix

__all__ = ["Client"]


def _shutdown(loop: LoopThread, client: AsyncClient) -> None:
    try:
        loop.call(client.aclose())
    except RuntimeError:
        pass  # already closed
    loop.close()


class Client:
    """A client of an Ambry-py cluster's frontends, for ordinary (threaded) code.

    Takes the same arguments as :class:`AsyncClient` and has the same methods, blocking
    until done; readers are :class:`BlobReader` (a seekable binary file) and
    :meth:`list_named` is a plain iterator. Thread-safe: share one client between threads
    (requests from all of them run concurrently on the client's loop thread). Close it, or
    use ``with Client(...) as c:``; an unclosed client is closed at interpreter exit.

    Example::

        from ambry.client import Client, BlobNotFound

        with Client(["http://127.0.0.1:1174", "http://127.0.0.1:1184"]) as c:
            blob_id = c.put("model.pt", content_type="application/octet-stream",
                            user_metadata={"run": "42"})      # a path: resumable, parallel
            with c.open(blob_id) as f:                        # seekable, nothing downloaded yet
                state = torch.load(f)
            c.download(blob_id, "/tmp/model.pt")              # parallel range GETs, verified
            c.put_named("runs/42/model.pt", b"...", container="models", upsert=True)
            for e in c.list_named("runs/", container="models"):
                print(e.name, e.size)
    """

    def __init__(self, endpoints: str | Sequence[str], *, service_id: str = "ambry-python",
                 account: str = "default", container: str = "default",
                 part_size_bytes: int = 4 * MIB, parallelism: int = 4,
                 range_size_bytes: int | None = None, read_ahead_bytes: int = 256 * KIB,
                 max_read_ahead_bytes: int = 16 * MIB, retry: RetryPolicy | None = None,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 120.0,
                 resume_dir: str | os.PathLike[str] | None = None,
                 resume_window_s: int = 24 * 3600, progress: bool | None = None,
                 on_request: Callable[[RequestEvent], None] | None = None,
                 reader_buffer_bytes: int = 128 * KIB) -> None:
        self._async = AsyncClient(
            endpoints, service_id=service_id, account=account, container=container,
            part_size_bytes=part_size_bytes, parallelism=parallelism,
            range_size_bytes=range_size_bytes, read_ahead_bytes=read_ahead_bytes,
            max_read_ahead_bytes=max_read_ahead_bytes, retry=retry,
            connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
            resume_dir=resume_dir, resume_window_s=resume_window_s, progress=progress,
            on_request=on_request)
        self._loop = LoopThread()
        self._reader_buffer_bytes = reader_buffer_bytes
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._async)

    @property
    def aio(self) -> AsyncClient:
        """The async client underneath (for use on its loop thread only)."""
        return self._async

    @property
    def endpoints(self) -> list[str]:
        return self._async.endpoints

    @property
    def part_size_bytes(self) -> int:
        return self._async.part_size_bytes

    def close(self) -> None:
        """Close connections and stop the loop thread (idempotent)."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reader(self, reader: AsyncBlobReader) -> BlobReader:
        return BlobReader(reader, self._loop.call, self._reader_buffer_bytes)

    # ------------------------------------------------------------------ uploads
    def put(self, data: Data, *, content_type: str = "application/octet-stream",
            ttl_s: int | None = None, user_metadata: Mapping[str, str] | None = None,
            owner_id: str | None = None, filename: str | None = None,
            account: str | None = None, container: str | None = None,
            service_id: str | None = None, resume: bool = True,
            progress: bool | None = None) -> str:
        """Upload a new blob; its id. See :meth:`AsyncClient.put`."""
        return self._loop.call(self._async.put(
            data, content_type=content_type, ttl_s=ttl_s, user_metadata=user_metadata,
            owner_id=owner_id, filename=filename, account=account, container=container,
            service_id=service_id, resume=resume, progress=progress))

    def put_named(self, name: str, data: Data, *, upsert: bool = False,
                  content_type: str = "application/octet-stream", ttl_s: int | None = None,
                  user_metadata: Mapping[str, str] | None = None, owner_id: str | None = None,
                  filename: str | None = None, account: str | None = None,
                  container: str | None = None, service_id: str | None = None,
                  resume: bool = True, progress: bool | None = None) -> str:
        """Upload a blob under a name; its blob id. See :meth:`AsyncClient.put_named`."""
        return self._loop.call(self._async.put_named(
            name, data, upsert=upsert, content_type=content_type, ttl_s=ttl_s,
            user_metadata=user_metadata, owner_id=owner_id, filename=filename,
            account=account, container=container, service_id=service_id, resume=resume,
            progress=progress))

    # ------------------------------------------------------------------ reads by id
    def open(self, blob_id: str, *, include_deleted: bool = False) -> BlobReader:
        """A seekable binary file over the blob (range requests, read-ahead); works with
        ``zipfile``, ``tarfile``, ``numpy.load``, ``torch.load``."""
        return self._reader(self._loop.call(
            self._async.open(blob_id, include_deleted=include_deleted)))

    def get(self, blob_id: str, *, include_deleted: bool = False) -> BlobReader:
        """Same as :meth:`open`: a streaming (and seekable) reader."""
        return self.open(blob_id, include_deleted=include_deleted)

    def get_bytes(self, blob_id: str, *, include_deleted: bool = False,
                  progress: bool | None = None) -> bytes:
        """The whole blob, verified (parallel range GETs for large blobs)."""
        return self._loop.call(self._async.get_bytes(blob_id, include_deleted=include_deleted,
                                                     progress=progress))

    def download(self, blob_id: str, path: str | os.PathLike[str], *,
                 include_deleted: bool = False, progress: bool | None = None) -> BlobInfo:
        """Save the blob to ``path`` (atomically, verified); its info."""
        return self._loop.call(self._async.download(blob_id, path,
                                                    include_deleted=include_deleted,
                                                    progress=progress))

    def head(self, blob_id: str, *, include_deleted: bool = False) -> BlobInfo:
        return self._loop.call(self._async.head(blob_id, include_deleted=include_deleted))

    def info(self, blob_id: str, *, include_deleted: bool = False) -> BlobInfo:
        return self._loop.call(self._async.info(blob_id, include_deleted=include_deleted))

    # ------------------------------------------------------------------ changes by id
    def delete(self, blob_id: str) -> None:
        self._loop.call(self._async.delete(blob_id))

    def undelete(self, blob_id: str) -> None:
        self._loop.call(self._async.undelete(blob_id))

    def update_ttl(self, blob_id: str) -> None:
        """Make the blob permanent."""
        self._loop.call(self._async.update_ttl(blob_id))

    # ------------------------------------------------------------------ named blobs
    def open_named(self, name: str, *, account: str | None = None,
                   container: str | None = None) -> BlobReader:
        return self._reader(self._loop.call(
            self._async.open_named(name, account=account, container=container)))

    def get_named(self, name: str, *, account: str | None = None,
                  container: str | None = None) -> BlobReader:
        return self.open_named(name, account=account, container=container)

    def get_named_bytes(self, name: str, *, account: str | None = None,
                        container: str | None = None, progress: bool | None = None) -> bytes:
        return self._loop.call(self._async.get_named_bytes(
            name, account=account, container=container, progress=progress))

    def download_named(self, name: str, path: str | os.PathLike[str], *,
                       account: str | None = None, container: str | None = None,
                       progress: bool | None = None) -> BlobInfo:
        return self._loop.call(self._async.download_named(
            name, path, account=account, container=container, progress=progress))

    def head_named(self, name: str, *, account: str | None = None,
                   container: str | None = None) -> BlobInfo:
        return self._loop.call(self._async.head_named(name, account=account,
                                                      container=container))

    def delete_named(self, name: str, *, account: str | None = None,
                     container: str | None = None) -> None:
        self._loop.call(self._async.delete_named(name, account=account, container=container))

    def list_named(self, prefix: str = "", *, account: str | None = None,
                   container: str | None = None, page_size: int = 1000
                   ) -> Iterator[NamedEntry]:
        """Every live name under ``prefix``, sorted; pages are fetched as iteration goes."""
        pages = self._async.list_named(prefix, account=account, container=container,
                                       page_size=page_size)
        try:
            while True:
                try:
                    entry: NamedEntry = self._loop.call(_anext(pages))
                except StopAsyncIteration:
                    return
                yield entry
        finally:
            if not self._loop.closed:
                self._loop.call(pages.aclose())

    def list_dir(self, prefix: str = "", *, delimiter: str = "/",
                 account: str | None = None, container: str | None = None,
                 page_size: int = 1000) -> Iterator[NamedEntry | NamedPrefix]:
        """One level under ``prefix``: names, and :class:`NamedPrefix` directories (see
        :meth:`AsyncClient.list_dir`)."""
        pages = self._async.list_dir(prefix, delimiter=delimiter, account=account,
                                     container=container, page_size=page_size)
        try:
            while True:
                try:
                    row: NamedEntry | NamedPrefix = self._loop.call(_anext(pages))
                except StopAsyncIteration:
                    return
                yield row
        finally:
            if not self._loop.closed:
                self._loop.call(pages.aclose())

    def list_containers(self, account: str | None = None) -> list[str]:
        """Names of the containers of ``account`` (see :meth:`AsyncClient.list_containers`)."""
        names: list[str] = self._loop.call(self._async.list_containers(account))
        return names

    # ------------------------------------------------------------------ signed URLs
    def signed_url(self, method: Literal["GET", "POST"] = "GET", blob_id: str | None = None,
                   *, expires_in_s: int = 3600,
                   content_type: str = "application/octet-stream", ttl_s: int | None = None,
                   user_metadata: Mapping[str, str] | None = None,
                   account: str | None = None, container: str | None = None,
                   service_id: str | None = None) -> str:
        """See :meth:`AsyncClient.signed_url`."""
        return self._loop.call(self._async.signed_url(
            method, blob_id, expires_in_s=expires_in_s, content_type=content_type,
            ttl_s=ttl_s, user_metadata=user_metadata, account=account, container=container,
            service_id=service_id))


async def _anext(it: Any) -> Any:
    return await it.__anext__()
