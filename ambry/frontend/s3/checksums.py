"""The flexible checksums of S3 uploads (``x-amz-checksum-<algorithm>``), computed as a body
streams.

Owns one incremental hasher per algorithm S3 defines for objects: CRC32, CRC32C, CRC64NVME,
SHA1, SHA256; each gives the base64 of its big-endian digest, as the header carries it. CRC32C
and CRC64NVME come from ``awscrt`` (C, what botocore itself uses) when it is installed; the
pure-Python twins below compute the same values (slowly) without it, and the unit tests compare
both. Does not own when a checksum is checked (``payload``).
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable
from typing import Protocol

__all__ = ["ALGORITHMS", "Checksum", "crc32c_py", "crc64nvme_py", "new_checksum"]


class Checksum(Protocol):
    def update(self, data: bytes | bytearray | memoryview) -> None: ...

    def b64digest(self) -> str: ...


def _table(poly: int, width: int) -> list[int]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        out.append(c & ((1 << width) - 1))
    return out


_CRC32C_TABLE = _table(0x82F63B78, 32)
_CRC64NVME_TABLE = _table(0x9A6C9329AC4BC9B5, 64)


def crc32c_py(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), reflected; ``crc`` is the value of the bytes before."""
    c = crc ^ 0xFFFFFFFF
    t = _CRC32C_TABLE
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc64nvme_py(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-64/NVME, reflected; ``crc`` is the value of the bytes before."""
    c = crc ^ 0xFFFFFFFFFFFFFFFF
    t = _CRC64NVME_TABLE
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFFFFFFFFFF


def _native_crcs() -> tuple[Callable[..., int], Callable[..., int]]:
    try:
        from awscrt import checksums
    except ImportError:  # pragma: no cover - awscrt is a dependency; keep a slow path
        return crc32c_py, crc64nvme_py
    return checksums.crc32c, checksums.crc64nvme


_crc32c, _crc64nvme = _native_crcs()


class _Crc:
    def __init__(self, fn: Callable[..., int], nbytes: int) -> None:
        self._fn = fn
        self._nbytes = nbytes
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._value = self._fn(data, self._value)

    def b64digest(self) -> str:
        return base64.b64encode(self._value.to_bytes(self._nbytes, "big")).decode("ascii")


class _Hash:
    def __init__(self, name: str) -> None:
        self._h = hashlib.new(name)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)

    def b64digest(self) -> str:
        return base64.b64encode(self._h.digest()).decode("ascii")


def _zlib_crc32(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    return zlib.crc32(data, crc)


ALGORITHMS: dict[str, Callable[[], Checksum]] = {
    "crc32": lambda: _Crc(_zlib_crc32, 4),
    "crc32c": lambda: _Crc(_crc32c, 4),
    "crc64nvme": lambda: _Crc(_crc64nvme, 8),
    "sha1": lambda: _Hash("sha1"),
    "sha256": lambda: _Hash("sha256"),
}


def new_checksum(algorithm: str) -> Checksum | None:
    """A fresh hasher for ``algorithm`` (case-insensitive), None if S3 has no such one."""
    make = ALGORITHMS.get(algorithm.lower())
    return make() if make is not None else None
