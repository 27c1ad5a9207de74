"""An fsspec filesystem over named blobs: ``ambry://<account>/<container>/<name>``.

Registered with fsspec under the protocol ``ambry`` (an entry point in pyproject.toml), so
``fsspec.open("ambry://default/models/runs/42/model.pt")``, pandas, pyarrow, dask and
``fsspec.filesystem("ambry")`` find it. The frontends come from ``endpoint=`` /
``endpoints=`` (a URL, a comma-separated list or a list, in preference order: failover) or
the ``AMBRY_ENDPOINT`` environment variable (comma-separated), else ``http://127.0.0.1:1174``::

    import fsspec, pandas as pd

    fs = fsspec.filesystem("ambry", endpoint="http://127.0.0.1:1174")
    fs.put("checkpoint/", "default/models/run42/", recursive=True)   # parallel uploads
    fs.ls("default/models/run42")                                    # implied directories
    with fs.open("default/models/run42/model.pt") as f:              # seekable, range reads
        state = torch.load(f)
    df = pd.read_parquet("ambry://default/datasets/train.parquet",
                         storage_options={"endpoint": "http://127.0.0.1:1174"})

Paths are ``<account>/<container>/<name>``. Directories are implied by ``/`` in names, as in
s3fs: a directory exists while some name lies under it and an empty directory cannot exist.
Accounts and containers come from the cluster config (or S3 CreateBucket): the REST API
cannot create them, so ``mkdir`` / ``makedirs`` only check that they exist (an unknown one
is a :class:`PermissionError` saying how to create it), and an unknown account or container
reads as absent. ``ls`` of an account lists its containers (``GET /named/<account>``); the
root cannot be listed.

How operations map onto the SDK (:class:`~ambry.client.AsyncClient`, run on fsspec's event
loop thread, so bulk operations run concurrently, ``batch_size`` = 8 at a time by default):

* ``info``: ``HEAD`` of the name; if there is none, a one-entry listing of ``<name>/`` says
  whether it is a directory. ``ls`` is one delimiter listing (``delimiter=/``: the names
  inside subdirectories are skipped by the store, not read); ``find`` pages through the
  prefix listing once (not a listing per directory); ``ls`` results are cached (fsspec's ``dircache``) until a write through this instance or
  :meth:`~AmbryFileSystem.invalidate_cache`.
* ``open(..., "rb")``: the SDK's seekable :class:`~ambry.client.BlobReader` (range requests
  with adaptive read-ahead, checked against the stored xxh3 when read to the end), so
  ``zipfile``, pyarrow and ``torch.load`` fetch only what they read. ``cat_file`` with a
  range reads just that range.
* ``open(..., "wb")``: writes go to a spooled temporary file (memory up to ``spool_bytes``,
  then disk) and are uploaded once, on ``close``, by a named put with upsert; a ``with``
  block left by an exception uploads nothing. ``"xb"`` / ``pipe_file(mode="create")``
  refuse an existing name (:class:`FileExistsError`). Appending is impossible: blobs are
  immutable.
* ``cp_file``: the REST API has no server-side copy, so the bytes stream through this
  client (a reader feeding a named put, bounded memory); content type, owner, filename and
  user metadata are carried over, the TTL is not (the copy never expires).
* ``rm``: deletes the name and its blob; ``recursive=True`` every name under the directory.
* ``modified`` / ``created``: the creation time of the blob the name points to now (a named
  blob is never modified in place; an overwrite creates a new blob). ``ukey`` is that blob
  id; ``sign`` returns a signed GET URL of it.

Errors: a missing name (404, 410) or unknown container is :class:`FileNotFoundError`, a
taken name :class:`FileExistsError`, 401/403 :class:`PermissionError`; anything else is the
SDK's typed error (``Unavailable`` after retries and failover, ...).

Owns the mapping of fsspec's operations onto the SDK. Does not own HTTP, retries or the
byte-level read and upload logic (the SDK), the file objects ``open`` returns
(``_fsspec_files``), or the shape of info entries and which errors are which ``OSError``
(``_fsspec_entries``).

Over 600 lines as one cohesive job: :class:`AmbryFileSystem` is fsspec's
``AsyncFileSystem`` interface, one short method per operation fsspec defines (``_ls``,
``_info``, ``_find``, ``_cat_file``, ``_put_file``, ``_rm``, ...), each a translation to SDK
calls; fsspec dispatches to them by name on this one class, so splitting it would only
scatter one interface across files.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import weakref
from collections.abc import AsyncGenerator, Coroutine, Sequence
from datetime import datetime
from typing import Any

from fsspec.asyn import AsyncFileSystem, _run_coros_in_chunks, sync
from fsspec.callbacks import DEFAULT_CALLBACK
from fsspec.utils import isfilelike

from ambry.client._async_client import MIB, AsyncClient
from ambry.client._errors import ApiError, InvalidArgument
from ambry.client._fsspec_entries import (
    clamp_range,
    dir_entry,
    entry_from_info,
    entry_from_listing,
    os_error,
)
from ambry.client._fsspec_files import AmbryReadFile, AmbryWriteFile, ProgressFile
from ambry.client._types import NamedEntry, NamedPrefix
from ambry.common.location import endpoints_from, guess_content_type

__all__ = ["AmbryFileSystem", "AmbryReadFile", "AmbryWriteFile"]

_COPY_PIECE_BYTES = MIB
#: Constructor options that fsspec's base classes take (listings cache); anything else that
#: is not a parameter of :class:`AmbryFileSystem` is a TypeError.
_FSSPEC_OPTIONS = frozenset({"use_listings_cache", "listings_expiry_time", "max_paths"})
#: The keyword that carries a bulk operation's concurrency limit to each transfer (see
#: :meth:`AmbryFileSystem._put`).
_SLOTS = "_ambry_slots"


async def _await(coro: Coroutine[Any, Any, Any]) -> Any:
    return await coro


def _close_client(client: AsyncClient, loop: asyncio.AbstractEventLoop | None) -> None:
    """Close the client's connections when the filesystem goes away (best effort: at
    interpreter exit fsspec's loop may already be stopping)."""
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # collected on the loop thread itself: sync() would deadlock
        task = loop.create_task(client.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        return
    with contextlib.suppress(Exception):  # nothing useful to do about it at shutdown
        sync(loop, client.aclose, timeout=5)


_closing: set[asyncio.Task[None]] = set()



class AmbryFileSystem(AsyncFileSystem):  # type: ignore[misc]  # fsspec has no type hints
    """fsspec filesystem ``ambry://<account>/<container>/<name>`` over named blobs (see the
    module docstring for what each operation does).

    ``endpoint`` / ``endpoints``: frontend URL(s) in preference order (default:
    ``$AMBRY_ENDPOINT``, comma-separated, else ``http://127.0.0.1:1174``). ``service_id``:
    sent with uploads. ``client_kwargs``: more arguments of
    :class:`~ambry.client.AsyncClient` (``part_size_bytes``, ``retry``, ...). ``batch_size``:
    files transferred at once by bulk operations (each large file also moves in parallel
    parts). ``spool_bytes``: memory a file open for writing uses before it spills to disk.
    ``read_buffer_bytes``: the buffer of files open for reading.
    """

    protocol = "ambry"
    root_marker = ""

    def __init__(self, endpoint: str | Sequence[str] | None = None, *,
                 endpoints: str | Sequence[str] | None = None,
                 service_id: str = "ambry-fsspec", client_kwargs: dict[str, Any] | None = None,
                 batch_size: int = 8, spool_bytes: int = 8 * MIB,
                 read_buffer_bytes: int = 128 * 1024, asynchronous: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        # fsspec hands every storage option to the constructor: one this class does not know
        # (url= for endpoint=, a typo) used to be dropped silently, and the filesystem then
        # talked to the default endpoint
        unknown = sorted(set(kwargs) - _FSSPEC_OPTIONS)
        if unknown:
            raise TypeError(f"AmbryFileSystem got unexpected keyword argument(s) "
                            f"{', '.join(unknown)} (the frontend URL is endpoint= or "
                            f"endpoints=; SDK options go in client_kwargs=)")
        super().__init__(asynchronous=asynchronous, loop=loop, batch_size=batch_size, **kwargs)
        urls = endpoints_from(endpoints if endpoints is not None else endpoint)
        self.client = AsyncClient(urls, service_id=service_id,
                                  **{"progress": False, **(client_kwargs or {})})
        self.spool_bytes = spool_bytes
        self.read_buffer_bytes = read_buffer_bytes
        self._known_containers: set[tuple[str, str]] = set()
        self._finalizer = weakref.finalize(self, _close_client, self.client, self._loop)

    # ------------------------------------------------------------------ paths
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return str(super()._strip_protocol(path)).lstrip("/")

    def _split(self, path: str) -> tuple[str, str, str]:
        """(account, container, name) of a path; missing parts are ``""``."""
        parts = self._strip_protocol(path).split("/", 2)
        parts += [""] * (3 - len(parts))
        return parts[0], parts[1], parts[2]

    def _name_of(self, path: str) -> tuple[str, str, str]:
        """(account, container, name) of a path that must name a blob."""
        a, c, n = self._split(path)
        if not n:
            raise IsADirectoryError(errno.EISDIR, "an account or container is not a blob "
                                    "(paths are <account>/<container>/<name>)", path)
        return a, c, n

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine of the client on fsspec's loop thread (for the sync file objects)."""
        if self._loop is None:
            coro.close()
            raise NotImplementedError("files of an asynchronous AmbryFileSystem cannot be "
                                      "used synchronously")
        return sync(self._loop, _await, coro)

    # ------------------------------------------------------------------ listing
    async def _names(self, account: str, container: str, prefix: str, *,
                     page_size: int = 1000) -> AsyncGenerator[NamedEntry, None]:
        path = f"{account}/{container}"
        try:
            async for e in self.client.list_named(prefix, account=account, container=container,
                                                  page_size=page_size):
                yield e
        except ApiError as e:
            raise os_error(e, path) from e

    async def _has_names(self, account: str, container: str, prefix: str) -> bool:
        gen = self._names(account, container, prefix, page_size=1)
        try:
            async for _ in gen:
                return True
            return False
        finally:
            await gen.aclose()

    async def _ls(self, path: str, detail: bool = True, refresh: bool = False,
                  **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        a, c, name = self._split(path)
        if not a:
            raise NotImplementedError("the Ambry REST API cannot list accounts (they come "
                                      "from the cluster config): ls <account>[/<container>]")
        entries = None if refresh else self.dircache.get(path)
        if entries is None and not c:
            entries = [dir_entry(f"{a}/{name}") for name in await self._containers(a, path)]
            self.dircache[path] = entries
        if entries is None:
            entries = await self._list_dir(path, a, c, name)
            if entries is None:  # no names below: a file, or nothing
                entries = [await self._info(path, refresh=True)]
            else:
                self.dircache[path] = entries
        return list(entries) if detail else [e["name"] for e in entries]

    async def _list_dir(self, path: str, a: str, c: str, name: str
                        ) -> list[dict[str, Any]] | None:
        """The children of a directory (files, and subdirectories implied by deeper names);
        ``None`` when no name lies below ``name`` (an empty container is ``[]``). One
        delimiter listing: the names inside each subdirectory are not read."""
        prefix = name + "/" if name else ""
        out: list[dict[str, Any]] = []
        try:
            async for e in self.client.list_dir(prefix, account=a, container=c):
                head = e.name[len(prefix):]
                if isinstance(e, NamedPrefix):
                    head = head[:-1]
                    if head:
                        out.append(dir_entry(f"{path}/{head}"))
                elif head:  # "a/" itself: no fsspec path reaches it
                    out.append(entry_from_listing(f"{path}/{head}", e))
        except ApiError as err:
            raise os_error(err, path) from err
        if not out and name:
            return None
        return out

    async def _containers(self, account: str, path: str) -> list[str]:
        """The containers of an account; FileNotFoundError for an unknown account."""
        try:
            names: list[str] = await self.client.list_containers(account)
        except ApiError as e:
            raise os_error(e, path) from e
        return names

    async def _check_container(self, a: str, c: str, path: str) -> None:
        """FileNotFoundError unless account ``a`` has container ``c`` (remembered once
        seen: containers are not deleted through this filesystem)."""
        if (a, c) in self._known_containers:
            return
        if c not in await self._containers(a, path):
            raise FileNotFoundError(errno.ENOENT, f"no container {c!r} in account {a!r}",
                                    path)
        self._known_containers.add((a, c))

    async def _find(self, path: str, maxdepth: int | None = None, withdirs: bool = False,
                    detail: bool = False, prefix: str = "", **kwargs: Any) -> Any:
        """Every name below ``path`` from one paged prefix listing (not one listing per
        directory as fsspec's walk would make)."""
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        path = self._strip_protocol(path)
        a, c, name = self._split(path)
        if not c:
            raise NotImplementedError("the Ambry REST API cannot list accounts or "
                                      "containers: find <account>/<container>[/<dir>]")
        base = name + "/" if name else ""
        files: dict[str, dict[str, Any]] = {}
        dirs: dict[str, dict[str, Any]] = {}
        async for e in self._names(a, c, base + prefix):
            parts = e.name[len(base):].split("/")
            if "" in parts:
                continue  # an empty segment: no fsspec path reaches it
            depth = len(parts) if maxdepth is None else min(len(parts), maxdepth + 1)
            for i in range(1, depth):
                d = f"{path}/{'/'.join(parts[:i])}"
                dirs.setdefault(d, dir_entry(d))
            if maxdepth is None or len(parts) <= maxdepth:
                full = f"{path}/{'/'.join(parts)}"
                files[full] = entry_from_listing(full, e)
        out = dict(files)
        if withdirs:
            out.update(dirs)
            if out or not name:
                out[path] = dir_entry(path)
        if not out and name and not prefix:
            try:
                info = await self._info(path)
            except FileNotFoundError:
                info = None
            if info is not None and info["type"] == "file":
                out[path] = info
        names = sorted(out)
        return {n: out[n] for n in names} if detail else names

    async def _du(self, path: str, total: bool = True, maxdepth: int | None = None,
                  withdirs: bool = False, **kwargs: Any) -> Any:
        """Sizes from one listing (fsspec's default asks for every file's info)."""
        found = await self._find(path, maxdepth=maxdepth, withdirs=withdirs, detail=True)
        sizes = {name: int(info["size"]) for name, info in found.items()}
        return sum(sizes.values()) if total else sizes

    async def _info(self, path: str, refresh: bool = False, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        a, c, name = self._split(path)
        if not a:
            return dir_entry(path)  # the root
        if not c:
            # an unknown account is absent (it used to read as a directory, so tools skipped
            # creating their root and every write then failed with "unknown account")
            await self._containers(a, path)
            return dir_entry(path)
        if not name:
            await self._check_container(a, c, path)
            return dir_entry(path)
        if not refresh:
            parent = self._parent(path)
            listed = self.dircache.get(parent)
            if listed is not None:
                for e in listed:
                    if e["name"] == path:
                        return dict(e)
                raise FileNotFoundError(errno.ENOENT, "no such name", path)
        try:
            info = await self.client.head_named(name, account=a, container=c)
        except InvalidArgument as e:
            # a HEAD reply has no body to say "unknown container": the listing below does
            if not await self._has_names(a, c, name + "/"):
                raise
            return dir_entry(path)
        except ApiError as e:
            err = os_error(e, path)
            if not isinstance(err, FileNotFoundError):
                raise err from e
        else:
            return entry_from_info(path, info)
        if await self._has_names(a, c, name + "/"):
            return dir_entry(path)
        raise FileNotFoundError(errno.ENOENT, "no such name", path)

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Check that the account and container exist: directories below a container are
        implied by the names below them, so there is nothing to create. The REST API cannot
        create accounts or containers: for one that does not exist this raises
        :class:`PermissionError` naming what to do instead (a container: S3 CreateBucket, or
        the cluster config)."""
        await self._require_container(self._strip_protocol(path))

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        """As :meth:`_mkdir`; an existing account or container is a
        :class:`FileExistsError` unless ``exist_ok`` (a directory below a container never
        is: it exists only while names lie below it)."""
        path = self._strip_protocol(path)
        await self._require_container(path)
        a, _, name = self._split(path)
        if not exist_ok and a and not name:
            raise FileExistsError(errno.EEXIST, "account or container exists", path)

    async def _require_container(self, path: str) -> None:
        a, c, _ = self._split(path)
        if not a:
            return
        try:
            containers = await self._containers(a, path)
        except FileNotFoundError:
            raise PermissionError(
                errno.EPERM, f"account {a!r} does not exist; accounts come from the cluster "
                f"config (accounts: in the config file), the REST API cannot create them",
                path) from None
        if c and c not in containers:
            raise PermissionError(
                errno.EPERM, f"container {c!r} does not exist in account {a!r}, and the "
                f"Ambry REST API cannot create containers: create it as an S3 bucket "
                f"(e.g. `aws s3 mb s3://{c}` against the S3 port with the account's keys) "
                f"or add it to the account in the cluster config", path)
        if c:
            self._known_containers.add((a, c))

    async def _rmdir(self, path: str) -> None:
        """A directory exists only while names lie below it, so it is never empty."""
        if await self._isdir(path):
            raise OSError(errno.ENOTEMPTY, "directory not empty (use rm(recursive=True))",
                          path)
        raise FileNotFoundError(errno.ENOENT, "no such directory", path)

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget cached listings: all, or those of ``path``, below it, and its parents."""
        if path is None:
            self.dircache.clear()
            return
        path = self._strip_protocol(path)
        below = path + "/"
        for key in list(self.dircache):
            if key == path or key.startswith(below):
                self.dircache.pop(key, None)
        while path:
            path = self._parent(path)
            self.dircache.pop(path, None)

    # ------------------------------------------------------------------ reads
    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None,
                        **kwargs: Any) -> bytes:
        a, c, name = self._name_of(path)
        try:
            if not start and end is None:
                data: bytes = await self.client.get_named_bytes(name, account=a,
                                                                container=c)
                return data
            reader = await self.client.open_named(name, account=a, container=c)
            try:
                lo, hi = clamp_range(start, end, reader.size)
                reader.seek(lo)
                return await reader.read(hi - lo)
            finally:
                await reader.aclose()
        except ApiError as e:
            raise os_error(e, path) from e

    async def _get_file(self, rpath: str, lpath: Any, callback: Any = DEFAULT_CALLBACK,
                        **kwargs: Any) -> None:
        async with _slot(kwargs.pop(_SLOTS, None)):
            await self._get_one(rpath, lpath, callback)

    async def _get_one(self, rpath: str, lpath: Any, callback: Any) -> None:
        a, c, name = self._name_of(rpath)
        try:
            if isfilelike(lpath):
                await self._copy_to(name, a, c, lpath, callback)
                return
            info = await self.client.download_named(name, lpath, account=a, container=c)
        except ApiError as e:
            err = os_error(e, rpath)
            if isinstance(err, FileNotFoundError) and await self._isdir(rpath):
                os.makedirs(lpath, exist_ok=True)  # a directory: its names come separately
                return
            raise err from e
        callback.set_size(info.size)
        callback.relative_update(info.size)

    async def _copy_to(self, name: str, a: str, c: str, out: Any, callback: Any) -> None:
        reader = await self.client.open_named(name, account=a, container=c)
        try:
            callback.set_size(reader.size)
            while piece := await reader.read(_COPY_PIECE_BYTES):
                out.write(piece)
                callback.relative_update(len(piece))
        finally:
            await reader.aclose()

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: Any = None,
              **kwargs: Any) -> AmbryReadFile | AmbryWriteFile:
        path = self._strip_protocol(path)
        a, c, name = self._name_of(path)
        if mode == "rb":
            try:
                reader = self._call(self.client.open_named(name, account=a, container=c))
            except ApiError as e:
                raise os_error(e, path) from e
            return AmbryReadFile(self, path, reader, block_size or self.read_buffer_bytes)
        if mode in ("wb", "xb"):
            if mode == "xb" and self.exists(path):
                raise FileExistsError(errno.EEXIST, "name exists", path)
            return AmbryWriteFile(self, path, create=mode == "xb", autocommit=autocommit,
                                  spool_bytes=self.spool_bytes)
        raise ValueError(f"mode {mode!r} is not supported: blobs are immutable, so a file is "
                         f"read ('rb') or written whole ('wb', 'xb'); no append or update")

    # ------------------------------------------------------------------ writes
    async def _upload(self, path: str, data: Any, *, create: bool) -> str:
        a, c, name = self._name_of(path)
        try:
            blob_id: str = await self.client.put_named(
                name, data, upsert=not create, content_type=guess_content_type(name),
                account=a, container=c)
        except ApiError as e:
            raise os_error(e, path) from e
        finally:
            self.invalidate_cache(path)
        return blob_id

    async def _pipe_file(self, path: str, value: bytes, mode: str = "overwrite",
                         **kwargs: Any) -> None:
        async with _slot(kwargs.pop(_SLOTS, None)):
            await self._upload(path, value, create=mode == "create")

    async def _put_file(self, lpath: str, rpath: str, callback: Any = DEFAULT_CALLBACK,
                        mode: str = "overwrite", **kwargs: Any) -> None:
        async with _slot(kwargs.pop(_SLOTS, None)):
            await self._put_one(lpath, rpath, callback, mode)

    async def _put_one(self, lpath: str, rpath: str, callback: Any, mode: str) -> None:
        if os.path.isdir(lpath):
            return  # directories are implied by the names below them
        f = await asyncio.to_thread(open, lpath, "rb")
        try:
            callback.set_size(os.fstat(f.fileno()).st_size)
            await self._upload(rpath, ProgressFile(f, callback.absolute_update),
                               create=mode == "create")
        finally:
            f.close()

    # fsspec's bulk operations hand their coroutines to a runner that starts batch_size of
    # them at a time; when one fails it raises at once and the coroutines it had not started
    # are never awaited ("coroutine '_put_file' was never awaited" at exit). So every
    # transfer is started at once (batch_size=-1: each failure then cancels the rest) and a
    # semaphore passed down in the keywords lets batch_size of them work at a time.
    def _slots(self, batch_size: int | None) -> asyncio.Semaphore:
        return asyncio.Semaphore(batch_size or self.batch_size or 8)

    async def _put(self, lpath: Any, rpath: Any, recursive: bool = False,
                   callback: Any = DEFAULT_CALLBACK, batch_size: int | None = None,
                   maxdepth: int | None = None, **kwargs: Any) -> Any:
        kwargs[_SLOTS] = self._slots(batch_size)
        return await super()._put(lpath, rpath, recursive=recursive, callback=callback,
                                  batch_size=-1, maxdepth=maxdepth, **kwargs)

    async def _get(self, rpath: Any, lpath: Any, recursive: bool = False,
                   callback: Any = DEFAULT_CALLBACK, maxdepth: int | None = None,
                   **kwargs: Any) -> Any:
        kwargs[_SLOTS] = self._slots(kwargs.pop("batch_size", None))
        return await super()._get(rpath, lpath, recursive=recursive, callback=callback,
                                  maxdepth=maxdepth, batch_size=-1, **kwargs)

    async def _pipe(self, path: Any, value: Any = None, batch_size: int | None = None,
                    **kwargs: Any) -> Any:
        kwargs[_SLOTS] = self._slots(batch_size)
        return await super()._pipe(path, value, batch_size=-1, **kwargs)

    async def _sizes(self, paths: list[str], batch_size: int | None = None) -> list[Any]:
        slots = self._slots(batch_size)

        async def size(p: str) -> Any:
            async with slots:
                return await self._size(p)

        return list(await _run_coros_in_chunks([size(p) for p in paths], batch_size=-1))

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        a1, c1, n1 = self._name_of(path1)
        a2, c2, n2 = self._name_of(path2)
        try:
            reader = await self.client.open_named(n1, account=a1, container=c1)
        except ApiError as e:
            err = os_error(e, path1)
            if isinstance(err, FileNotFoundError) and await self._isdir(path1):
                return  # a directory: its names are copied one by one
            raise err from e
        try:
            # no server-side copy in the REST API: the reader feeds a streamed named put
            info = reader.info
            await self.client.put_named(
                n2, reader, upsert=True, content_type=info.content_type,
                user_metadata=dict(info.user_metadata), owner_id=info.owner_id or None,
                filename=info.filename or None, account=a2, container=c2)
        except ApiError as e:
            raise os_error(e, path2) from e
        finally:
            await reader.aclose()
            self.invalidate_cache(path2)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        a, c, name = self._name_of(path)
        try:
            await self.client.delete_named(name, account=a, container=c)
        except ApiError as e:
            raise os_error(e, path) from e
        finally:
            self.invalidate_cache(path)

    async def _rm(self, path: str | list[str], recursive: bool = False,
                  batch_size: int | None = None, maxdepth: int | None = None,
                  **kwargs: Any) -> None:
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        results = await _run_coros_in_chunks(
            [self._rm_one(p, recursive) for p in paths],
            batch_size=batch_size or self.batch_size, nofiles=True, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _rm_one(self, path: str, listed: bool) -> None:
        if not self._split(path)[2]:
            return  # a container: its names are in the list too
        try:
            await self._rm_file(path)
        except FileNotFoundError:
            # a directory of the expanded list (implied: it goes with its names), or a name
            # another client removed meanwhile
            if not listed and not await self._isdir(path):
                raise

    # ------------------------------------------------------------------ metadata
    def _file_info(self, path: str) -> dict[str, Any]:
        info: dict[str, Any] = self.info(path)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "a directory has no timestamps", path)
        return info

    def modified(self, path: str) -> datetime:
        """When the blob the name points to was created (UTC)."""
        created: datetime = self._file_info(path)["mtime"]
        return created

    def created(self, path: str) -> datetime:
        """When the blob the name points to was created (UTC); the same as :meth:`modified`
        since an overwrite stores a new blob."""
        created: datetime = self._file_info(path)["created"]
        return created

    def ukey(self, path: str) -> str:
        """The blob id the name points to: it changes whenever the content does."""
        blob_id: str = self._file_info(path)["blob_id"]
        return blob_id

    def sign(self, path: str, expiration: int = 3600, **kwargs: Any) -> str:
        """A URL that reads the blob the name points to now, without headers, for
        ``expiration`` seconds."""
        url: str = self._call(self.client.signed_url(
            "GET", self.ukey(path), expires_in_s=expiration))
        return url


def _slot(slots: asyncio.Semaphore | None) -> contextlib.AbstractAsyncContextManager[Any]:
    """One of a bulk operation's slots (see :meth:`AmbryFileSystem._put`), or none."""
    return slots if slots is not None else contextlib.nullcontext()
