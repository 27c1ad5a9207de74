"""What an upload reads from: bytes, a file path, a file object (sync, or with an async
``read`` such as another blob's reader), or an iterator of chunks.

Owns turning any of those into one sequential reader of parts (:class:`Source`), with the
size when it is known, and the file's identity (path, size, mtime) for resumable uploads.
Blocking reads (files, sync iterators that may compute their chunks) run on the client's
bounded executor, never on the event loop. Does not own part sizes or hashing (``_upload``).
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import IO, Any

__all__ = ["Data", "Source", "open_source"]

#: Anything :meth:`~ambry.client.Client.put` accepts. ``str`` and ``os.PathLike`` are paths
#: of files to upload (pass ``bytes`` for content).
Data = (bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | Iterable[bytes]
        | AsyncIterable[bytes])


class Source:
    """A sequential reader: :meth:`read` returns exactly ``n`` bytes until the last part."""

    #: Total bytes when known up front (bytes, files, seekable file objects).
    size: int | None = None
    #: The resolved path and its stat for a path source (resumable uploads), else None.
    path: Path | None = None
    stat: os.stat_result | None = None

    async def read(self, n: int) -> bytes:
        raise NotImplementedError

    def can_restart(self) -> bool:
        """Whether :meth:`restart` can read the same bytes again from the start."""
        return False

    async def restart(self) -> None:
        raise RuntimeError("this source cannot be read twice")

    async def aclose(self) -> None:
        pass


class _BytesSource(Source):
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._mv = memoryview(data).cast("B")
        self.size = self._mv.nbytes
        self._pos = 0

    async def read(self, n: int) -> bytes:
        out = bytes(self._mv[self._pos:self._pos + n])
        self._pos += len(out)
        return out

    def can_restart(self) -> bool:
        return True

    async def restart(self) -> None:
        self._pos = 0


def _read_exactly(f: IO[bytes], n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        piece = f.read(n - len(buf))
        if not piece:
            break
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError(f"file object returned {type(piece).__name__}, not bytes: "
                            f"open it in binary mode ('rb')")
        buf += piece
    return bytes(buf)


class _FileSource(Source):
    def __init__(self, f: IO[bytes], executor: Executor, owned: bool) -> None:
        self._f = f
        self._executor = executor
        self._owned = owned
        self._start: int | None = None
        try:
            if f.seekable():
                self._start = f.tell()
                end = f.seek(0, io.SEEK_END)
                f.seek(self._start)
                self.size = end - self._start
        except (OSError, ValueError, AttributeError):
            self._start = None

    async def read(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _read_exactly, self._f, n)

    def can_restart(self) -> bool:
        return self._start is not None

    async def restart(self) -> None:
        if self._start is None:
            raise RuntimeError("this file object is not seekable")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._f.seek, self._start)

    async def aclose(self) -> None:
        if self._owned:
            self._f.close()


class _PathSource(_FileSource):
    def __init__(self, path: Path, executor: Executor) -> None:
        f = open(path, "rb")  # noqa: SIM115 - closed by aclose()
        try:
            super().__init__(f, executor, owned=True)
            self.path = path.resolve()
            self.stat = os.fstat(f.fileno())
            self.size = self.stat.st_size
        except BaseException:
            f.close()
            raise


class _AsyncFileSource(Source):
    """An object whose ``read(n)`` is a coroutine (an :class:`AsyncBlobReader`, aiofiles)."""

    def __init__(self, f: Any) -> None:
        self._f = f

    async def read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            piece = await self._f.read(n - len(buf))
            if not piece:
                break
            buf += _as_bytes(piece)
        return bytes(buf)


class _IterSource(Source):
    def __init__(self, it: Iterator[Any], executor: Executor) -> None:
        self._it = it
        self._executor = executor
        self._left = b""
        self._done = False

    def _next(self) -> bytes | None:
        try:
            piece = next(self._it)
        except StopIteration:
            return None
        return _as_bytes(piece)

    async def _pull(self) -> bytes | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._next)

    async def read(self, n: int) -> bytes:
        parts = [self._left]
        have = len(self._left)
        while have < n and not self._done:
            piece = await self._pull()
            if piece is None:
                self._done = True
                break
            parts.append(piece)
            have += len(piece)
        data = b"".join(parts)
        self._left = data[n:]
        return data[:n]


class _AsyncIterSource(_IterSource):
    def __init__(self, it: AsyncIterator[Any], executor: Executor) -> None:
        super().__init__(iter(()), executor)
        self._ait = it

    async def _pull(self) -> bytes | None:
        try:
            piece = await self._ait.__anext__()
        except StopAsyncIteration:
            return None
        return _as_bytes(piece)


def _as_bytes(piece: Any) -> bytes:
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, bytearray | memoryview):
        return bytes(piece)
    raise TypeError(f"an upload iterator must yield bytes, not {type(piece).__name__}")


def open_source(data: Data, executor: Executor) -> Source:
    """The :class:`Source` for ``data`` (see :data:`Data`)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return _BytesSource(data)
    if isinstance(data, str | os.PathLike):
        return _PathSource(Path(data), executor)
    if hasattr(data, "read"):
        if inspect.iscoroutinefunction(data.read):
            return _AsyncFileSource(data)
        return _FileSource(data, executor, owned=False)  # type: ignore[arg-type]
    if isinstance(data, AsyncIterable):
        return _AsyncIterSource(aiter(data), executor)
    if isinstance(data, Iterable):
        return _IterSource(iter(data), executor)
    raise TypeError(f"cannot upload a {type(data).__name__}: pass bytes, a path, a binary "
                    f"file object, or an iterator of bytes")
