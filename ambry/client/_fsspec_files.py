"""The file objects of :class:`~ambry.client.fsspec.AmbryFileSystem`: what ``open(path, "rb")``
and ``open(path, "wb")`` return, and the upload-progress wrapper of ``put_file``.

Owns the write side's spooling (bounded memory, upload once on ``close``, nothing uploaded on
an exception or a discard) and the read side's fsspec attributes. Does not own how bytes reach
the store: the filesystem runs the SDK calls (:class:`FileSystemCalls`).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Coroutine
from typing import IO, Any, Protocol

from ambry.client._fsspec_entries import entry_from_info
from ambry.client._reader import AsyncBlobReader, BlobReader

__all__ = ["AmbryReadFile", "AmbryWriteFile", "FileSystemCalls", "ProgressFile"]


class FileSystemCalls(Protocol):
    """What the files need of their filesystem (an :class:`AmbryFileSystem`)."""

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any: ...

    async def _upload(self, path: str, data: Any, *, create: bool) -> str: ...


class ProgressFile(io.RawIOBase):
    """A binary file that reports how far it was read to an fsspec callback (upload
    progress). The position, not a sum: the SDK reads a file twice (a hash pass first)."""

    def __init__(self, f: IO[bytes], on_position: Any) -> None:
        super().__init__()
        self._f = f
        self._on_position = on_position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._f.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b: Any) -> int:
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        self._on_position(self._f.tell())
        return n


class AmbryReadFile(BlobReader):
    """What ``open(path, "rb")`` returns: the SDK's seekable blob reader, plus ``fs`` and
    ``path`` as fsspec files have them."""

    def __init__(self, fs: FileSystemCalls, path: str, reader: AsyncBlobReader,
                 buffer_size: int) -> None:
        super().__init__(reader, fs._call, buffer_size)
        self.fs = fs
        self.path = path

    @property
    def details(self) -> dict[str, Any]:
        return entry_from_info(self.path, self.info)


class AmbryWriteFile(io.BufferedIOBase):
    """What ``open(path, "wb")`` returns: a seekable binary file whose bytes are uploaded
    under ``path`` when it is closed (nothing is visible before). Bytes wait in a spooled
    temporary file: memory up to ``spool_bytes``, then disk, so writing a checkpoint of any
    size takes bounded memory.

    Leaving a ``with`` block by an exception, :meth:`discard`, or dropping the file without
    closing it uploads nothing. Inside an fsspec transaction (``autocommit=False``) the upload
    waits for :meth:`commit`.
    """

    def __init__(self, fs: FileSystemCalls, path: str, *, create: bool, autocommit: bool,
                 spool_bytes: int) -> None:
        super().__init__()
        self.fs = fs
        self.path = path
        self.mode = "xb" if create else "wb"
        self.autocommit = autocommit
        self._create = create
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=spool_bytes)  # noqa: SIM115
        self._done = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed file")
        return self._spool.write(b)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("seek on a closed file")
        return self._spool.seek(offset, whence)

    def tell(self) -> int:
        if self.closed:
            raise ValueError("tell on a closed file")
        return self._spool.tell()

    def truncate(self, size: int | None = None) -> int:
        return self._spool.truncate(size)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.autocommit:
                self.commit()
        finally:
            super().close()

    def commit(self) -> None:
        """Upload the bytes written (once; called by ``close`` unless in a transaction)."""
        if self._done:
            return
        self._done = True
        try:
            self._spool.seek(0)
            self.fs._call(self.fs._upload(self.path, self._spool, create=self._create))
        finally:
            self._spool.close()

    def discard(self) -> None:
        """Drop the bytes written; nothing is uploaded."""
        self._done = True
        self._spool.close()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self.discard()  # a half-written file must not replace a good one
        self.close()

    def __del__(self) -> None:
        # io's default would close(), and so upload, whatever the garbage collector found
        if not self.closed:
            self.discard()
            super().close()
