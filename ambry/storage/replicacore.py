"""A replica's machinery: its log, index and name view, opened, appended to and kept.

Owns a replica's state and its upkeep, below the meaning of any operation: opening (roll
forward an interrupted compaction, then ``recovery``'s checks, then replay of the log tail
after the index snapshot: torn tail truncated, damage quarantined and reported), the append
path (``_append``: one record under the lock, sequence number, index or name view updated,
capacity and read-only state), durability futures, damage reports, index snapshots, stats,
usage counting (``usage``), the replication feed (``feed``), the scrub and digest
(``scrub``), and the hooks compaction works through (``api.CompactionHooks``).
``replica.Replica`` builds the store semantics on it; nothing else subclasses it.

Concurrency: all methods are synchronous and thread-safe; the node runs them on I/O threads.
``self.lock`` (the log's lock) is held across "check index, append, update index" so that log
order equals sequence order and an index entry never points at a record not yet written.
Lock order: ``_move_lock``, then ``_snapshot_lock``, then ``self.lock``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

from ambry.common.blobid import BlobId
from ambry.common.blobstate import BlobState
from ambry.common.clock import Clock, SystemClock
from ambry.common.config import StorageConfig
from ambry.common.errors import DataCorrupt, DiskFull, PartitionReadOnly, StorageError
from ambry.common.namerecord import NameRecord
from ambry.native import BlobIndex, body_xxh3, encode_record
from ambry.storage import filenames
from ambry.storage.api import Entry, ReplicaStats, Token
from ambry.storage.compaction import roll_forward
from ambry.storage.disk import Disk, OsDisk
from ambry.storage.ecstate import EcState
from ambry.storage.feed import ReplicationFeed
from ambry.storage.format import (
    RECORD_HEADER_SIZE,
    STATE_DELETED,
    STATE_PERMANENT,
    RecordHeader,
    RecordType,
    encode_record_header,
)
from ambry.storage.indexentry import fold_blob_record
from ambry.storage.log import Damage, Log, Position, ScannedRecord
from ambry.storage.namelocks import NameLocks
from ambry.storage.names import NameView, name_from_record
from ambry.storage.recovery import clear_temp_files, establish_incarnation, load_snapshot
from ambry.storage.scrub import content_digest, scrub_sealed
from ambry.storage.snapshot import SnapshotMeta, write_snapshot
from ambry.storage.usage import UsageCounters, UsageTotals, count_usage

__all__ = ["ReplicaCore"]

log = logging.getLogger(__name__)

#: a record up to this size is built in one buffer (``ambry.native.encode_record``) and
#: written with one pwrite; a larger one is written part by part (no copy of its payload)
_ONE_BUFFER_MAX_BYTES = 256 * 1024


class ReplicaCore:
    def __init__(self, directory: str, partition_id: int, config: StorageConfig,
                 capacity_bytes: int, disk: Disk | None = None,
                 clock: Clock | None = None, names_dir: str | None = None) -> None:
        self.dir = directory
        # rocksdict keeps its own files on the real file system; a test on a simulated disk
        # passes a real directory here.
        self.names_dir = names_dir or os.path.join(directory, filenames.NAMES_DB)
        self.partition_id = partition_id
        self.config = config
        self.capacity_bytes = capacity_bytes
        self.disk = disk if disk is not None else OsDisk()
        self.clock = clock if clock is not None else SystemClock()
        self.log = Log(directory, self.disk, config.segment_size_bytes, config.durability,
                       config.page_cache_flush_interval_ms)
        self.lock = self.log.lock
        self.index = BlobIndex()
        self.names: NameView | None = None
        self.name_locks = NameLocks()  # reservations for conditional name writes
        self.incarnation = b""
        self.next_seq = 1
        self.damage: list[Damage] = []
        self.readonly_reason = ""
        self.records_since_snapshot = 0
        self._snapshot_lock = threading.RLock()  # also held by compaction
        # held while records may move in the log (compaction) and by whoever must read the
        # log unmoved without stopping snapshots (the usage pass). Order: this, then
        # _snapshot_lock.
        self._move_lock = threading.RLock()
        # what peers pull: entries_since and its anchors
        self.feed = ReplicationFeed(self.log, lambda: self.incarnation, self.read_props)
        self.opened = False
        self._last_ack: concurrent.futures.Future[None] | None = None  # set by _append
        # True when this replica started with an empty log (first start or a wiped disk)
        self.created_fresh = False
        # Set by replication while a fresh replica catches up with its peers: its "not found"
        # is not authoritative then, so it answers ReplicaUnavailable instead.
        self.rebuilding = False
        # live bytes/blobs per account and container (ambry.storage.usage); under self.lock
        self.usage = UsageCounters()
        # the warm tier: EC_SEGMENT records known here, segments whose payloads were freed
        self.ec = EcState(directory, partition_id, self.disk)

    # ================================================================ opening and recovery
    @classmethod
    def open(cls, directory: str, partition_id: int, config: StorageConfig,
             capacity_bytes: int, disk: Disk | None = None,
             clock: Clock | None = None, names_dir: str | None = None) -> Self:
        r = cls(directory, partition_id, config, capacity_bytes, disk, clock, names_dir)
        r._recover()
        return r

    def _recover(self) -> None:
        d = self.disk
        d.makedirs(self.dir)
        roll_forward(self)
        has_segments = clear_temp_files(d, self.dir)
        self.created_fresh = not has_segments
        self.incarnation = establish_incarnation(d, self.dir, has_segments)
        names_fresh = not os.path.exists(self.names_dir)
        self.names = NameView(self.names_dir, self.config.name_cache_entries)
        self.log.open_existing()
        self.ec.load()
        start: Position = (0, 0)
        last_seq = 0
        try:
            self.index, meta = load_snapshot(d, self.dir, self.log, self.incarnation)
            start, last_seq = meta.position, meta.last_seq
        except FileNotFoundError:
            pass
        except DataCorrupt as e:
            log.warning("replica %s: ignoring index snapshot (%s); rebuilding from the log",
                        self.dir, e.message)
            self.index = BlobIndex()
        self.sample_segment_starts()
        if start > (0, 0):
            # the snapshot does not say whose the blobs are: usage_pass() counts them
            self.usage = UsageCounters(ready=False)
        if names_fresh and start > (0, 0):
            # the name view was lost (or never built) but the snapshot covers the log before
            # `start`: rebuild the view from the name records there.
            for rec in self.log.scan((0, 0), verify=False, end=start):
                if rec.header.type.is_name:
                    self._apply_record(rec.position, rec.header, rec.key, replay=True)
        replayed = 0
        # (freed segments of the warm tier: their punched-out payloads are not damage)
        for rec in self.ec.recovery_scan(self.log, start, self.damage.append):
            self._apply_record(rec.position, rec.header, rec.key, replay=True)
            last_seq = max(last_seq, rec.header.sequence)
            self.feed.sample_seq(rec.header.sequence, rec.position)
            replayed += 1
        self.next_seq = last_seq + 1
        self.records_since_snapshot = replayed
        self._after_replay()
        self.log.sync_now()  # whatever survived in the page cache is durable from here on
        self.log.start()
        self.opened = True
        log.info("replica %s open: %d blobs, %d records replayed from %s, last seq %d",
                 self.dir, len(self.index), replayed, start, last_seq)

    def _after_replay(self) -> None:
        """The index is whole again (snapshot + replay): a subclass settles what its own
        state says about it (the warm tier: payloads gone with their dead blobs)."""

    # ================================================================ index state helpers
    def _apply_record(self, pos: Position, h: RecordHeader, key: bytes, replay: bool
                      ) -> concurrent.futures.Future[None] | None:
        """Fold one record (already in the log) into the index or the name view. For a live
        name record, returns the future that completes once the record is durable *and*
        visible in the view (the caller acknowledges on it)."""
        if h.type == RecordType.EC_SEGMENT:
            self.ec.fold(key, self.read_props(pos, h))
            return None
        if h.type.is_name:
            entry = name_from_record(key, h.time_ms, h.type == RecordType.NAME_DELETE,
                                     self.read_props(pos, h))
            if replay:
                assert self.names is not None
                self.names.apply(entry)
                return None
            # only once durable: the view must never show what the log could lose
            visible: concurrent.futures.Future[None] = concurrent.futures.Future()

            def apply(f: concurrent.futures.Future[None], e: NameRecord = entry) -> None:
                exc = f.exception()
                if exc is not None:
                    visible.set_exception(exc)
                    return
                try:
                    if self.names is not None:
                        self.names.apply(e)
                except Exception as err:  # noqa: BLE001 - rocksdict failure: do not ack the name
                    visible.set_exception(err)
                    return
                visible.set_result(None)

            self.log.durable_future((pos[0], pos[1] + h.total_len)).add_done_callback(apply)
            return visible
        before = self.index.get(key[16:]) if len(key) == 32 else None
        fold_blob_record(self.index, pos, h, key)
        self.usage.change(key, before, self.index.get(key[16:]))
        return None

    @contextlib.contextmanager
    def records_moving(self) -> Iterator[None]:
        """Held by compaction while records move in the log: one compaction at a time, no
        usage pass reading the log meanwhile, and no snapshot during a swap."""
        with self._move_lock, self._snapshot_lock:
            yield

    def read_props(self, pos: Position, h: RecordHeader) -> bytes:
        return self.log.read((pos[0], pos[1] + h.props_offset), h.props_len) if h.props_len \
            else b""

    # ================================================================ appending
    def _check_writable(self, record_len: int, is_put: bool) -> None:
        if self.log.failed is not None:
            raise PartitionReadOnly(f"partition {self.partition_id} is read-only: "
                                    f"{self.log.failed.message}")
        if is_put:
            if self.readonly_reason:
                raise PartitionReadOnly(f"partition {self.partition_id} is read-only: "
                                        f"{self.readonly_reason}")
            used = self.log.total_bytes() + record_len
            if used > self.capacity_bytes * self.config.readonly_fill_ratio:
                raise PartitionReadOnly(f"partition {self.partition_id} is over "
                                        f"{self.config.readonly_fill_ratio:.0%} full")

    def _append(self, rtype: RecordType, key: bytes, blob_flags: int, state: BlobState,
                time_ms: int, expiry_ms: int, parts: list[bytes | memoryview],
                sizes: tuple[int, int, int], body_xxh3: int, sequence: int | None = None
                ) -> tuple[Position, RecordHeader]:
        """Append one record; caller holds self.lock and has checked writability."""
        sflags = (STATE_DELETED if state.deleted else 0) | \
            (STATE_PERMANENT if state.permanent else 0)
        seq = self.next_seq if sequence is None else sequence
        h = RecordHeader(rtype, blob_flags, sflags, state.life_version, len(key), sizes[0],
                         sizes[1], sizes[2], seq, time_ms, expiry_ms, body_xxh3)
        if h.total_len <= _ONE_BUFFER_MAX_BYTES:  # header and body in one buffer (C)
            p = (*parts, b"", b"", b"")
            data: list[bytes | memoryview] = [encode_record(
                rtype, blob_flags, sflags, state.life_version, seq, time_ms, expiry_ms,
                body_xxh3, key, p[0], p[1], p[2])]
        else:  # a large record: its parts are written as they are, never joined
            data = [encode_record_header(h), key, *parts]
        try:
            pos = self.log.append(data, h.total_len)
        except DiskFull as e:
            self.readonly_reason = e.message
            raise PartitionReadOnly(f"partition {self.partition_id}: {e.message}") from e
        except StorageError as e:
            raise PartitionReadOnly(f"partition {self.partition_id}: {e.message}") from e
        self.next_seq = seq + 1
        self.records_since_snapshot += 1
        self.feed.sample_seq(seq, pos)
        self._last_ack = self._apply_record(pos, h, key, replay=False)
        return pos, h

    def _append_state(self, rtype: RecordType, blob_id: BlobId, state: BlobState,
                      time_ms: int) -> Position:
        key = blob_id.to_bytes()
        self._check_writable(RECORD_HEADER_SIZE + len(key), is_put=False)
        pos, h = self._append(rtype, key, key[2], state, time_ms, 0, [], (0, 0, 0),
                              body_xxh3(key))
        return (pos[0], pos[1] + h.total_len)

    def durable_future(self, end: Position) -> concurrent.futures.Future[None]:
        return self.log.durable_future(end)

    def commit(self, end: Position) -> StorageError | None:
        """Make the log durable up to ``end`` now, on the calling thread (the node's batch
        writer, once per batch); the error that made the log read-only if that failed."""
        return self.log.commit(end)

    def durable_async(self, end: Position) -> asyncio.Future[None]:
        """``durable_future`` for the running event loop (cheaper to wait on there)."""
        return self.log.durable_async(end)

    def report_corrupt(self, pos: Position, h: RecordHeader | None, reason: str) -> None:
        seg = self.log.segment(pos[0])
        dmg = Damage("corrupt", pos[0], seg.generation, pos[1], h.total_len if h else 0, reason)
        self.damage.append(dmg)
        try:
            self.log.append_report(dmg)
        except OSError:
            log.exception("could not write the damage report")
        raise DataCorrupt(f"partition {self.partition_id} record at {pos}: {reason}")

    # ================================================================ replication feed
    def sample_segment_starts(self) -> None:
        """Positions moved (compaction) or were never known: re-anchor the feed."""
        self.feed.sample_segment_starts()

    def caught_up(self, token: Token | None) -> bool:
        """True when nothing durable follows ``token`` (cheap, no I/O, safe on the event
        loop): a peer's long poll for a quiet partition then needs no trip to a thread."""
        return self.feed.caught_up(token)

    def entries_since(self, token: Token | None, max_entries: int = 1000,
                      max_bytes: int = 4 * 1024 * 1024) -> tuple[list[Entry], Token, int]:
        """Durable records after ``token``, in sequence order, bounded by count and by the sum
        of their record sizes (``feed.ReplicationFeed.entries_since``)."""
        return self.feed.entries_since(token, max_entries, max_bytes)

    # ================================================================ checks
    def scrub_sealed(self, bytes_per_s: int = 0) -> list[tuple[bytes, int]]:
        """Re-read every sealed segment, verifying checksums (at most ``bytes_per_s``); the
        damaged PUT records a peer's copy can repair (``scrub.scrub_sealed``)."""
        return scrub_sealed(self.log, self.index, self.damage, bytes_per_s,
                            skip=self.ec.frozen_segments)

    def digest(self) -> dict[str, Any]:
        """A fingerprint of this replica's logical content (``scrub.content_digest``)."""
        assert self.names is not None
        return content_digest(self.index, self.lock, self.names)

    # ================================================================ snapshots and stats
    def write_snapshot(self) -> int:
        """Publish a snapshot of the index. Safe to call from any thread, any time."""
        with self._snapshot_lock:
            with self.lock:
                position = self.log.end
                last_seq = self.next_seq - 1
                count = len(self.index)
                segs = tuple((s.number, s.generation) for s in self.log.segments)
                self.records_since_snapshot = 0
            meta = SnapshotMeta(position, last_seq, segs, count, self.incarnation)

            def dump(start: int, n: int) -> bytes:
                with self.lock:
                    return self.index.dump(start, n)

            def make_log_durable() -> None:
                # entries dumped may reflect records after `position`: make them durable
                # before the snapshot can be used, and the names view with them.
                self.log.sync_now()
                assert self.names is not None
                self.names.flush()

            return write_snapshot(self.disk, self.dir, meta, dump, make_log_durable)

    def stats(self) -> ReplicaStats:
        assert self.names is not None
        return ReplicaStats(
            partition_id=self.partition_id,
            incarnation=self.incarnation.hex(),
            blobs=len(self.index),
            names=self.names.estimated_count(),
            log_bytes=self.log.total_bytes(),
            capacity_bytes=self.capacity_bytes,
            segments=len(self.log.segments),
            last_seq=self.next_seq - 1,
            read_only=(self.log.failed.message if self.log.failed else self.readonly_reason),
            damage_reports=len(self.damage),
            group_commit_syncs=self.log.syncs,
        )

    # ================================================================ usage
    def usage_totals(self, now_s: int | None = None) -> dict[tuple[int, int], UsageTotals]:
        """Live bytes and blobs per (account, container); meaningful once
        ``self.usage.ready``."""
        now = self.clock.now_ms() // 1000 if now_s is None else now_s
        with self.lock:
            return self.usage.totals(now)

    def usage_pass(self, should_stop: Callable[[], bool] = lambda: False,
                   batch_records: int = 1024) -> bool:
        """Count the usage of a replica opened from a snapshot (see ``ambry.storage.usage``):
        read every record header and key in log order, count each PUT the index points to.
        Blocking (run it on the maintenance thread); writes go on meanwhile, the lock is held
        one batch at a time. Compaction waits (it moves records). Returns True when the
        counters are ready, False if ``should_stop`` ended it first. Snapshots go on meanwhile
        (a pass over a large replica takes minutes; holding them off that long made a kill -9
        replay every record written since the restart)."""
        with self._move_lock:
            with self.lock:
                if self.usage.ready:
                    return True
                end = self.log.end
                self.usage.begin_pass(end)
            records = self.log.scan((0, 0), verify=False, end=end)
            t0 = time.monotonic()
            counted = count_usage(records, self.index, self.usage, self.lock, should_stop,
                                  batch_records)
            if counted is None:
                return False
        log.info("replica %s: usage counted (%d blobs) in %.2f s", self.dir, counted,
                 time.monotonic() - t0)
        return True

    def close(self, snapshot: bool = True) -> None:
        if snapshot and self.log.failed is None and self.opened:
            try:
                self.write_snapshot()
            except (OSError, StorageError):
                log.exception("snapshot on close of %s failed", self.dir)
        self.log.close()
        if self.names is not None:
            self.names.close()
            self.names = None

    def scan_records(self, verify: bool = True) -> Iterator[ScannedRecord]:
        """Every valid record of the log (for admin tools); damage is reported, not repaired."""
        yield from self.log.scan((0, 0), on_damage=self.damage.append, verify=verify)
