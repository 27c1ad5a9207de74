"""Type stub for the C extension ambry.native._cindex (source: _cindex.c, contract: SPEC.md)."""

import mmap
from collections.abc import Iterator
from typing import TypeAlias, final

ENTRY_SIZE: int
PAGE_ENTRIES: int
MIGRATE_BATCH: int

_Key: TypeAlias = bytes | bytearray | memoryview
_Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap
_Values: TypeAlias = tuple[int, int, int, int, int, int, int]

class CBlobIndex:
    def __init__(self, capacity_hint: int = 0) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def __sizeof__(self) -> int: ...
    def get(self, key: _Key) -> _Values | None: ...
    def put(
        self,
        key: _Key,
        segment: int,
        offset: int,
        size: int,
        expiry_s: int,
        delete_s: int,
        life_version: int,
        flags: int,
    ) -> None: ...
    def items(self) -> CBlobIndexItems: ...
    def dump(self, start: int, count: int) -> bytes: ...
    def load(self, buf: _Buffer) -> int: ...
    def memory_bytes(self) -> int: ...

@final
class CBlobIndexItems(Iterator[tuple[bytes, _Values]]):
    def __iter__(self) -> CBlobIndexItems: ...
    def __next__(self) -> tuple[bytes, _Values]: ...
