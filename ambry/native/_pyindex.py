"""PyBlobIndex: the pure-Python twin of the C blob index (``ambry.native._cindex``).

Contract: ``ambry/native/SPEC.md``.  Both classes must behave identically; the C one is used
unless the extension is missing or ``AMBRY_NO_EXTENSIONS=1`` (see ``ambry.native``).

Layout: ``_recs`` is a bytearray of packed 40-byte records (``ENTRY_STRUCT``) in insertion
order and ``_pos`` maps each 16-byte key to its record's position.  Positions never change
(an overwrite rewrites the record in place) so ``dump`` is a slice and ``items`` iterates by
position, which is safe while the index is being modified.  Invariant:
``len(_recs) == ENTRY_SIZE * len(_pos)``.
"""

from __future__ import annotations

import operator
import struct
import sys
from collections.abc import Iterator
from typing import SupportsIndex, cast

__all__ = ["ENTRY_SIZE", "ENTRY_STRUCT", "MAX_ENTRIES", "EntryValues", "Key", "PyBlobIndex"]

ENTRY_SIZE = 40
ENTRY_STRUCT = struct.Struct("<16sIIIIIHBx")
assert ENTRY_STRUCT.size == ENTRY_SIZE

#: Same limit as the C index (slot values are u32 and 0 means empty).
MAX_ENTRIES = 0xFFFFFFFF - 1

#: (segment, offset, size, expiry_s, delete_s, life_version, flags)
EntryValues = tuple[int, int, int, int, int, int, int]
#: Any 16-byte buffer: bytes, bytearray, memoryview, ...
Key = bytes | bytearray | memoryview

_KEY_SIZE = 16
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_U8 = 0xFF
_VALUES = struct.Struct("<IIIIIHBx")
_FIELDS = (
    ("segment", _U32),
    ("offset", _U32),
    ("size", _U32),
    ("expiry_s", _U32),
    ("delete_s", _U32),
    ("life_version", _U16),
    ("flags", _U8),
)

# Per-object sizes used by memory_bytes() (CPython object headers included).
_KEY_OBJ_SIZE = sys.getsizeof(bytes(_KEY_SIZE))
_POS_OBJ_SIZE = sys.getsizeof(1 << 20)  # positions 0..256 are shared small-int singletons


def _key(key: object) -> bytes:
    """Normalize a key to 16 immutable bytes; TypeError / ValueError like the C index."""
    if type(key) is bytes:
        if len(key) != _KEY_SIZE:
            raise ValueError(f"key must be exactly {_KEY_SIZE} bytes, got {len(key)}")
        return key
    try:
        view = memoryview(key)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"key must be a bytes-like object, not '{type(key).__name__}'"
        ) from None
    with view:
        if view.nbytes != _KEY_SIZE:
            raise ValueError(f"key must be exactly {_KEY_SIZE} bytes, got {view.nbytes}")
        return view.tobytes()


def _values(values: tuple[object, ...]) -> tuple[int, ...]:
    """Validate the 7 value fields in order (TypeError for non-integers, else OverflowError)."""
    out = []
    for (name, limit), value in zip(_FIELDS, values):
        v = value if type(value) is int else operator.index(cast(SupportsIndex, value))
        if not 0 <= v <= limit:
            raise OverflowError(f"{name} out of range (0..{limit})")
        out.append(v)
    return tuple(out)


def _nonneg(value: object, name: str) -> int:
    v = operator.index(cast(SupportsIndex, value))
    if v < 0:
        raise ValueError(f"{name} must be >= 0")
    return v


class PyBlobIndex:
    """Blob index: 16-byte key -> 40-byte packed entry, kept in insertion order."""

    __slots__ = ("_pos", "_recs")

    def __init__(self, capacity_hint: int = 0) -> None:
        _nonneg(capacity_hint, "capacity_hint")  # validated like C; dicts cannot be pre-sized
        self._pos: dict[bytes, int] = {}
        self._recs = bytearray()

    def __len__(self) -> int:
        return len(self._pos)

    def __contains__(self, key: object) -> bool:
        return _key(key) in self._pos

    def get(self, key: Key) -> EntryValues | None:
        pos = self._pos.get(key if type(key) is bytes and len(key) == _KEY_SIZE else _key(key))
        if pos is None:
            return None
        values: EntryValues = _VALUES.unpack_from(self._recs, pos * ENTRY_SIZE + _KEY_SIZE)
        return values

    def put(
        self,
        key: Key,
        segment: int,
        offset: int,
        size: int,
        expiry_s: int,
        delete_s: int,
        life_version: int,
        flags: int,
    ) -> None:
        k = _key(key)
        if not (
            type(segment) is int
            and type(offset) is int
            and type(size) is int
            and type(expiry_s) is int
            and type(delete_s) is int
            and type(life_version) is int
            and type(flags) is int
            and 0 <= segment <= _U32
            and 0 <= offset <= _U32
            and 0 <= size <= _U32
            and 0 <= expiry_s <= _U32
            and 0 <= delete_s <= _U32
            and 0 <= life_version <= _U16
            and 0 <= flags <= _U8
        ):
            segment, offset, size, expiry_s, delete_s, life_version, flags = _values(
                (segment, offset, size, expiry_s, delete_s, life_version, flags)
            )
        pos = self._pos.get(k)
        if pos is not None:
            ENTRY_STRUCT.pack_into(
                self._recs, pos * ENTRY_SIZE,
                k, segment, offset, size, expiry_s, delete_s, life_version, flags,
            )
            return
        self._append(
            k, ENTRY_STRUCT.pack(k, segment, offset, size, expiry_s, delete_s, life_version, flags)
        )

    def _append(self, key: bytes, record: bytes) -> None:
        n = len(self._pos)
        if n >= MAX_ENTRIES:
            raise OverflowError(f"BlobIndex is full (at most {MAX_ENTRIES} entries)")
        self._recs += record
        try:
            self._pos[key] = n
        except BaseException:  # MemoryError: keep len(_recs) == 40 * len(_pos)
            del self._recs[n * ENTRY_SIZE:]
            raise

    def items(self) -> Iterator[tuple[bytes, EntryValues]]:
        return self._iter_items()

    def _iter_items(self) -> Iterator[tuple[bytes, EntryValues]]:
        pos = 0
        while pos < len(self._pos):  # re-read: entries appended meanwhile are yielded too
            rec = ENTRY_STRUCT.unpack_from(self._recs, pos * ENTRY_SIZE)
            pos += 1
            yield rec[0], rec[1:]

    def dump(self, start: int, count: int) -> bytes:
        start = _nonneg(start, "start")
        count = _nonneg(count, "count")
        n = len(self._pos)
        lo = min(start, n)
        hi = lo + min(count, n - lo)
        return bytes(self._recs[lo * ENTRY_SIZE:hi * ENTRY_SIZE])

    def load(self, buf: bytes | bytearray | memoryview) -> int:
        try:
            view = memoryview(buf)
        except TypeError:
            raise TypeError(
                f"load() argument must be a bytes-like object, not '{type(buf).__name__}'"
            ) from None
        with view:
            if view.nbytes % ENTRY_SIZE:
                raise ValueError(
                    f"buffer length {view.nbytes} is not a multiple of {ENTRY_SIZE}"
                )
            if not (view.ndim == 1 and view.itemsize == 1 and view.c_contiguous):
                view = memoryview(view.tobytes())
            positions = self._pos
            recs = self._recs
            pack = ENTRY_STRUCT.pack
            pack_into = ENTRY_STRUCT.pack_into
            count = 0
            for fields in ENTRY_STRUCT.iter_unpack(view):
                key = fields[0]
                pos = positions.get(key)
                if pos is None:
                    self._append(key, pack(*fields))  # repacking zeroes the reserved byte
                else:
                    pack_into(recs, pos * ENTRY_SIZE, *fields)
                count += 1
            return count

    def memory_bytes(self) -> int:
        """Estimate: the containers plus the key and position objects they hold."""
        n = len(self._pos)
        return (
            sys.getsizeof(self)
            + sys.getsizeof(self._pos)
            + sys.getsizeof(self._recs)
            + n * _KEY_OBJ_SIZE
            + max(0, n - 257) * _POS_OBJ_SIZE
        )
