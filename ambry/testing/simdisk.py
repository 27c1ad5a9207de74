"""A simulated disk that forgets everything not yet made durable, for power-loss tests.

``kill -9`` keeps the page cache, so it cannot test the fsync policy; this can. Each file has
the bytes a reader sees now and the bytes that would survive a power cut (updated by
``fdatasync``). Directory entries (create, rename, remove) survive only after ``fsync_dir`` of
their directory, as on ext4 without ``dirsync``. ``crash()`` drops everything volatile; the
:class:`SimDisk` object then models the disk after reboot.

It can also fail on purpose: ``capacity_bytes`` makes writes past it raise ENOSPC, and
``fail_writes`` makes every write raise EIO.
"""

from __future__ import annotations

import errno
import os
import posixpath
import threading

__all__ = ["SimDisk", "SimFile"]


class _Inode:
    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = bytearray()
        self.lock = threading.Lock()


class SimFile:
    def __init__(self, disk: SimDisk, path: str, inode: _Inode) -> None:
        self.disk = disk
        self.path = path
        self.inode = inode
        self.closed = False

    def _check(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "closed", self.path)

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        self._check()
        if self.disk.fail_writes:
            raise OSError(errno.EIO, "simulated I/O error", self.path)
        data = bytes(data)
        with self.inode.lock:
            end = offset + len(data)
            grow = max(0, end - len(self.inode.data))
            if self.disk.capacity_bytes is not None and grow and \
                    self.disk.used_bytes() + grow > self.disk.capacity_bytes:
                raise OSError(errno.ENOSPC, "simulated disk full", self.path)
            if len(self.inode.data) < offset:
                self.inode.data.extend(b"\0" * (offset - len(self.inode.data)))
            self.inode.data[offset:end] = data

    def pwritev(self, parts: list[bytes | memoryview], offset: int) -> None:
        """As ``pwrite`` of the parts joined, except that a write past ``capacity_bytes``
        first writes what fits, then raises ENOSPC (a real disk's short write, then the
        error), so a caller must cut the partial record off."""
        data = b"".join(bytes(p) for p in parts)
        if self.disk.capacity_bytes is not None and not self.disk.fail_writes:
            with self.inode.lock:
                grow = max(0, offset + len(data) - len(self.inode.data))
                room = self.disk.capacity_bytes - self.disk.used_bytes()
            if grow > room:
                fits = max(0, len(data) - (grow - max(room, 0)))
                if fits:
                    self.pwrite(data[:fits], offset)
                raise OSError(errno.ENOSPC, "simulated disk full", self.path)
        self.pwrite(data, offset)

    def pread(self, length: int, offset: int) -> bytes:
        self._check()
        with self.inode.lock:
            return bytes(self.inode.data[offset:offset + length])

    def preadinto(self, buf: bytearray | memoryview, offset: int) -> int:
        chunk = self.pread(len(buf), offset)
        memoryview(buf)[:len(chunk)] = chunk
        return len(chunk)

    def size(self) -> int:
        return len(self.inode.data)

    def truncate(self, length: int) -> None:
        self._check()
        with self.inode.lock:
            del self.inode.data[length:]
            if len(self.inode.data) < length:
                self.inode.data.extend(b"\0" * (length - len(self.inode.data)))

    def fdatasync(self) -> None:
        self._check()
        if self.disk.fail_syncs:
            raise OSError(errno.EIO, "simulated fsync error", self.path)
        with self.inode.lock:
            self.inode.durable = bytearray(self.inode.data)

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        self.closed = True


class SimDisk:
    def __init__(self, capacity_bytes: int | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        self.fail_writes = False
        self.fail_syncs = False
        self._lock = threading.Lock()
        # path -> inode, as seen now; and as it would be after a power cut
        self._live: dict[str, _Inode] = {}
        self._durable: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/"}

    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath("/" + path)

    def used_bytes(self) -> int:
        return sum(len(i.data) for i in self._live.values())

    def open(self, path: str, create: bool = False, readonly: bool = False) -> SimFile:
        p = self._norm(path)
        with self._lock:
            inode = self._live.get(p)
            if inode is None:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "no such file", path)
                if posixpath.dirname(p) not in self._dirs:
                    raise FileNotFoundError(errno.ENOENT, "no such directory", path)
                inode = self._live[p] = _Inode()
            return SimFile(self, p, inode)

    def exists(self, path: str) -> bool:
        p = self._norm(path)
        return p in self._live or p in self._dirs

    def listdir(self, path: str) -> list[str]:
        p = self._norm(path)
        if p not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)
        names = {posixpath.basename(f) for f in self._live if posixpath.dirname(f) == p}
        names |= {posixpath.basename(d) for d in self._dirs
                  if d != "/" and posixpath.dirname(d) == p}
        return sorted(names)

    def makedirs(self, path: str) -> None:
        p = self._norm(path)
        while p not in self._dirs:
            self._dirs.add(p)  # directories are treated as durable at once (simplification)
            p = posixpath.dirname(p)

    def rename(self, src: str, dst: str) -> None:
        s, d = self._norm(src), self._norm(dst)
        with self._lock:
            if s not in self._live:
                raise FileNotFoundError(errno.ENOENT, "no such file", src)
            self._live[d] = self._live.pop(s)

    def remove(self, path: str) -> None:
        p = self._norm(path)
        with self._lock:
            if p not in self._live:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            del self._live[p]

    def fsync_dir(self, path: str) -> None:
        d = self._norm(path)
        with self._lock:
            for p in [p for p in self._durable if posixpath.dirname(p) == d]:
                if p not in self._live:
                    del self._durable[p]
            for p, inode in self._live.items():
                if posixpath.dirname(p) == d:
                    self._durable[p] = inode

    def read_file(self, path: str) -> bytes:
        f = self.open(path)
        return f.pread(f.size(), 0)

    def write_file_atomic(self, path: str, data: bytes) -> None:
        tmp = path + ".tmp"
        f = self.open(tmp, create=True)
        f.truncate(0)
        f.pwrite(data, 0)
        f.fdatasync()
        self.rename(tmp, path)
        self.fsync_dir(os.path.dirname(self._norm(path)))

    def crash(self) -> None:
        """Power loss: only durable names with their durable bytes remain."""
        with self._lock:
            survivors: dict[str, _Inode] = {}
            for p, inode in self._durable.items():
                fresh = _Inode()
                fresh.data = bytearray(inode.durable)
                fresh.durable = bytearray(inode.durable)
                survivors[p] = fresh
            self._live = dict(survivors)
            self._durable = dict(survivors)
