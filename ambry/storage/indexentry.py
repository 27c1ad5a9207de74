"""One blob's entry in a replica's index: its flag bits and what they mean.

Owns the layout of the tuple ``ambry.native.BlobIndex`` stores per blob, ``(segment, offset,
record size, expiry_s, delete_s, life_version, flags)``, and the conversions between it and a
blob's merged state (``ambry.common.blobstate``): :func:`state_of`, :func:`put_location`,
:func:`store_entry` and :func:`fold_blob_record`, the one function that folds a record into
the index (live appends, replay on restart, compaction's checks and the verify tool all use
it). Does not own the index itself (``ambry.native``) nor what a replica does with it
(``replica``).
"""

from __future__ import annotations

from typing import Any

from ambry.common.blobstate import BlobState, merge
from ambry.common.errors import DataCorrupt
from ambry.storage.format import RecordHeader, RecordType
from ambry.storage.log import Position

__all__ = [
    "F_DELETED",
    "F_HAS_PUT",
    "F_PERMANENT",
    "ceil_s",
    "fold_blob_record",
    "is_dead",
    "put_location",
    "state_of",
    "store_entry",
]

# index entry flag bits (ambry.native stores them opaquely)
F_HAS_PUT = 0x01
F_DELETED = 0x02
F_PERMANENT = 0x04


def ceil_s(ms: int) -> int:
    return -(-ms // 1000)


def state_of(entry: tuple[int, ...] | None) -> BlobState | None:
    """The merged lifecycle state held in an index entry."""
    if entry is None:
        return None
    _seg, _off, _size, _exp, delete_s, lv, flags = entry
    return BlobState(lv, bool(flags & F_DELETED), bool(flags & F_PERMANENT), delete_s * 1000)


def put_location(entry: tuple[int, ...] | None) -> tuple[int, int, int, int] | None:
    """(segment, offset, record size, expiry_s) of the blob's PUT record, if this replica has
    it."""
    if entry is None or not entry[6] & F_HAS_PUT:
        return None
    return (entry[0], entry[1], entry[2], entry[3])


def store_entry(index: Any, uuid: bytes, loc: tuple[int, int, int, int] | None,
                state: BlobState) -> None:
    flags = (F_HAS_PUT if loc else 0) | (F_DELETED if state.deleted else 0) | \
        (F_PERMANENT if state.permanent else 0)
    seg, off, size, exp = loc if loc else (0, 0, 0, 0)
    index.put(uuid, seg, off, size, exp, ceil_s(state.delete_time_ms), state.life_version,
              flags)


def fold_blob_record(index: Any, pos: Position, h: RecordHeader, key: bytes) -> None:
    """Fold one blob record found at ``pos`` into ``index`` by the conflict rule. The same
    function serves live appends, replay on restart and the verify tool."""
    if len(key) != 32:
        raise DataCorrupt("blob record with a key that is not a blob id")
    uuid = key[16:]
    cur = index.get(uuid)
    rec_state = BlobState(h.life_version, h.deleted, h.permanent, h.time_ms if h.deleted else 0)
    state = merge(state_of(cur), rec_state)
    assert state is not None
    loc = put_location(cur)
    if h.type == RecordType.PUT and loc is None:
        loc = (pos[0], pos[1], h.total_len, ceil_s(h.expiry_ms))
    store_entry(index, uuid, loc, state)


def is_dead(retention_s: float, entry: tuple[int, ...], expiry_ms: int, now_ms: int) -> bool:
    """Whether a blob's PUT may go: deleted, or expired and not made permanent, longer than
    ``retention_s`` ago (the rule compaction and the warm tier's re-encoding share)."""
    retention_ms = retention_s * 1000
    flags, delete_s = entry[6], entry[4]
    if flags & F_DELETED:
        return delete_s * 1000 + retention_ms <= now_ms
    if not flags & F_PERMANENT and expiry_ms:
        return expiry_ms + retention_ms <= now_ms
    return False
