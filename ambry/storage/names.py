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

Recently read or written entries are also kept in memory (``cache_entries`` of them, least
recently used out), so a node answers a ``name_get`` of a name it knows on its event loop,
without an I/O-thread hand-off (:meth:`NameView.cached`; a rocksdb get may touch the disk,
so a miss still goes to a thread). The cache is write-through and every write to the view
goes through :meth:`NameView.apply`, so it never holds an entry older than the view: a miss
filled from rocksdb while an apply ran is not kept (a generation count, checked under the
cache's lock).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
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
    def __init__(self, path: str, cache_entries: int = 0) -> None:
        self._cache: OrderedDict[bytes, NameRecord] = OrderedDict()
        self._cache_max = cache_entries
        self._cache_lock = threading.Lock()  # held for dict operations only, never for I/O
        self._gen = 0  # applies so far: a miss filled across one is not cached
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
        if self._cache_max:
            with self._cache_lock:
                self._gen += 1
                self._remember(key, entry)
        return True

    def _remember(self, key: bytes, entry: NameRecord) -> None:
        c = self._cache
        c[key] = entry
        c.move_to_end(key)
        if len(c) > self._cache_max:
            c.popitem(last=False)

    def cached(self, account_id: int, container_id: int, name: str) -> NameRecord | None:
        """The entry of a name if the cache holds it (no I/O: safe on the event loop); None
        when it does not (ask :meth:`get`)."""
        if not self._cache_max:
            return None
        key = name_key(account_id, container_id, name)
        with self._cache_lock:
            e = self._cache.get(key)
            if e is not None:
                self._cache.move_to_end(key)
            return e

    def get(self, account_id: int, container_id: int, name: str) -> NameRecord | None:
        key = name_key(account_id, container_id, name)
        with self._cache_lock:
            gen = self._gen
            e = self._cache.get(key)
        if e is not None:
            return e
        raw = self._db.get(key)
        if raw is None:
            return None
        e = decode_view_value(key, raw)
        if self._cache_max:
            with self._cache_lock:
                if self._gen == gen:  # no apply since the read began: e is still current
                    self._remember(key, e)
        return e

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
