"""The ordered named-blob view of one replica, kept in rocksdict.

Owns the mapping name -> latest entry for the NAME_PUT / NAME_DELETE records of one replica's
log, prefix listing, and the two byte encodings of a name's entry
(``ambry.common.namerecord.NameRecord``): in a log record's props section and in the view.
The log is the truth: this view is rebuilt from it by replay, and only records already durable
in the log are applied (so it never shows a name the log could lose).
Entries merge last-writer-wins by (timestamp, datacenter id), so applying records in any order,
or twice, gives the same view on every replica.

Writes go with sync off (a synced rocksdict write stalls the whole process under the GIL);
``flush()`` makes them durable from an I/O thread before an index snapshot is published.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
from rocksdict import Options, Rdict, WriteOptions

from ambry.common.namerecord import NameRecord
from ambry.storage.format import name_key, split_name_key

__all__ = [
    "NameView",
    "decode_view_value",
    "encode_record_props",
    "encode_view_value",
    "name_from_record",
]


def encode_view_value(e: NameRecord) -> bytes:
    """A name's value in the view (the key is ``format.name_key``)."""
    data: bytes = msgpack.packb([e.blob_id, e.ts_ms, e.dc_id, e.deleted, e.size,
                                 e.content_type, e.created_ms], use_bin_type=True)
    return data


def decode_view_value(key: bytes, raw: bytes) -> NameRecord:
    account, container, name = split_name_key(key)
    blob_id, ts, dc, deleted, size, ctype, created = msgpack.unpackb(raw, raw=False)
    return NameRecord(account, container, name, blob_id, ts, dc, deleted, size, ctype, created)


def encode_record_props(e: NameRecord) -> bytes:
    """The props section of a NAME_PUT / NAME_DELETE record."""
    data: bytes = msgpack.packb({"b": e.blob_id, "dc": e.dc_id, "sz": e.size,
                                 "ct": e.content_type, "cr": e.created_ms}, use_bin_type=True)
    return data


def name_from_record(key: bytes, ts_ms: int, deleted: bool, props: bytes) -> NameRecord:
    """The entry a NAME_PUT / NAME_DELETE record holds (its key, time and props section)."""
    account, container, name = split_name_key(key)
    m = msgpack.unpackb(props, raw=False)
    return NameRecord(account, container, name, bytes(m.get("b", b"")), ts_ms, int(m["dc"]),
                      deleted, int(m.get("sz", 0)), str(m.get("ct", "")), int(m.get("cr", 0)))


class NameView:
    def __init__(self, path: str) -> None:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(8 * 1024 * 1024)
        opts.set_max_background_jobs(1)
        self._db = Rdict(path, opts)
        wo = WriteOptions()
        wo.sync = False
        self._db.set_write_options(wo)

    def apply(self, entry: NameRecord) -> bool:
        """Merge one entry in; True if it became the current one."""
        key = name_key(entry.account_id, entry.container_id, entry.name)
        old_raw = self._db.get(key)
        if old_raw is not None:
            old = decode_view_value(key, old_raw)
            if old.version >= entry.version:
                return False
        self._db.put(key, encode_view_value(entry))
        return True

    def get(self, account_id: int, container_id: int, name: str) -> NameRecord | None:
        key = name_key(account_id, container_id, name)
        raw = self._db.get(key)
        return None if raw is None else decode_view_value(key, raw)

    def list(self, account_id: int, container_id: int, prefix: str = "",
             start_after: str = "", limit: int = 1000,
             include_deleted: bool = False) -> list[NameRecord]:
        lo = name_key(account_id, container_id, prefix)
        seek = lo
        if start_after:
            after = name_key(account_id, container_id, start_after) + b"\x00"
            seek = max(seek, after)
        out: list[NameRecord] = []
        for key, raw in self._iter_from(seek):
            if not key.startswith(lo):
                break
            e = decode_view_value(key, raw)
            if e.deleted and not include_deleted:
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return out

    def _iter_from(self, key: bytes) -> Iterator[tuple[bytes, bytes]]:
        yield from self._db.items(from_key=key)

    def iter_all(self) -> Iterator[NameRecord]:
        """Every entry (tombstones included) in key order."""
        for key, raw in self._db.items():
            yield decode_view_value(key, bytes(raw))  # type: ignore[arg-type]

    def estimated_count(self) -> int:
        """rocksdb's estimate of live keys (cheap; includes name tombstones)."""
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def flush(self) -> None:
        self._db.flush_wal(True)

    def close(self) -> None:
        self._db.close()
