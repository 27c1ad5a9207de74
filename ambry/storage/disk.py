"""The disk as the storage engine sees it: a small file-system interface, injected.

Owns the real implementation (:class:`OsDisk`, thin wrappers over ``os``) and the interface
that the simulated disk of ``ambry.testing.simdisk`` implements too, so tests can lose every
byte that was not fsynced, fill the disk, or fail I/O. Everything here is synchronous and
blocking: callers run it on I/O threads, never on the event loop.

Errors: ``OSError`` with errno ENOSPC becomes :class:`DiskFull`; other ``OSError`` on data
files become :class:`StorageError` at the replica layer, not here.
"""

from __future__ import annotations

import os
from typing import Protocol

__all__ = ["Disk", "DiskFile", "OsDisk", "OsFile"]


class DiskFile(Protocol):
    path: str

    def pwrite(self, data: bytes | memoryview, offset: int) -> None: ...
    def pwritev(self, parts: list[bytes | memoryview], offset: int) -> None: ...
    def pread(self, length: int, offset: int) -> bytes: ...
    def preadinto(self, buf: bytearray | memoryview, offset: int) -> int: ...
    def size(self) -> int: ...
    def truncate(self, length: int) -> None: ...
    def fdatasync(self) -> None: ...
    def fileno(self) -> int | None: ...
    def close(self) -> None: ...


class Disk(Protocol):
    def open(self, path: str, create: bool = False, readonly: bool = False) -> DiskFile: ...
    def exists(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def makedirs(self, path: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def fsync_dir(self, path: str) -> None: ...
    def read_file(self, path: str) -> bytes: ...
    def write_file_atomic(self, path: str, data: bytes) -> None: ...


class OsFile:
    __slots__ = ("fd", "path")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def pwritev(self, parts: list[bytes | memoryview], offset: int) -> None:
        """Write ``parts`` back to back at ``offset`` with one ``os.pwritev`` (no join, no
        copy); a short write goes on from where it stopped. An error raises after a prefix may
        have been written: the caller cuts it off (``Log._fail_write``)."""
        views = [memoryview(p) for p in parts if len(p)]
        while views:
            n = os.pwritev(self.fd, views, offset)
            offset += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if n:
                views[0] = views[0][n:]

    def pread(self, length: int, offset: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def preadinto(self, buf: bytearray | memoryview, offset: int) -> int:
        view = memoryview(buf)
        total = 0
        while total < len(view):
            n = os.preadv(self.fd, [view[total:]], offset + total)
            if n == 0:
                break
            total += n
        return total

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncate(self, length: int) -> None:
        os.ftruncate(self.fd, length)

    def fdatasync(self) -> None:
        os.fdatasync(self.fd)

    def fileno(self) -> int | None:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # open segments are shared by readers; close on last reference
        try:
            self.close()
        except OSError:
            pass


class OsDisk:
    """The real disk."""

    def open(self, path: str, create: bool = False, readonly: bool = False) -> OsFile:
        mode = os.O_RDONLY if readonly else os.O_RDWR
        flags = mode | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        return OsFile(path, os.open(path, flags, 0o644))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def write_file_atomic(self, path: str, data: bytes) -> None:
        """temp -> fsync -> rename -> fsync dir (leveldb's way of publishing a file)."""
        tmp = path + ".tmp"
        f = self.open(tmp, create=True)
        try:
            f.truncate(0)
            f.pwrite(data, 0)
            f.fdatasync()
        finally:
            f.close()
        os.rename(tmp, path)
        self.fsync_dir(os.path.dirname(path) or ".")
