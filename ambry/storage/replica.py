"""One replica of one partition on one node: the store semantics over the log and index.

Owns what records mean: put (idempotent for identical content), get with include-deleted /
include-expired options, delete / TTL update / undelete with life versions and the conflict
rule of ``ambry.common.blobstate``, named-blob records, ``entries_since`` for replication,
recovery on open (snapshot + replay of the tail, torn tail truncated, damage quarantined),
index snapshots, capacity and read-only state, and statistics. Compaction lives in
``compaction`` and works through the hooks here.

Concurrency: all methods are synchronous and thread-safe; the node runs them on I/O threads.
``self.lock`` (the log's lock) is held across "check index, append, update index" so that log
order equals sequence order and an index entry never points at a record not yet written. The
payload is received and checksummed before the lock is taken, so a slow client never holds up
other writers. Mutations return the end position of their record; the caller waits for
``durable_future(end)`` before acknowledging.
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
from typing import Any

from ambry.common.blobid import BlobId
from ambry.common.blobstate import BlobState, merge
from ambry.common.clock import Clock, SystemClock
from ambry.common.config import StorageConfig
from ambry.common.errors import (
    AmbryError,
    BlobAlreadyExists,
    BlobDeleted,
    BlobExpired,
    BlobNotDeleted,
    BlobNotFound,
    DataCorrupt,
    DiskFull,
    InvalidArgument,
    LifeVersionConflict,
    NameBusy,
    PartitionReadOnly,
    ReplicaUnavailable,
    StorageError,
)
from ambry.common.namerecord import NameRecord
from ambry.common.properties import BlobProperties
from ambry.native import BlobIndex
from ambry.storage import filenames
from ambry.storage.api import Entry, MutationResult, ReplicaStats, Token
from ambry.storage.blobread import BlobRead
from ambry.storage.compaction import roll_forward
from ambry.storage.disk import Disk, OsDisk
from ambry.storage.feed import ReplicationFeed
from ambry.storage.format import (
    RECORD_HEADER_SIZE,
    STATE_DELETED,
    STATE_PERMANENT,
    RecordHeader,
    RecordType,
    body_checksum,
    encode_record_header,
    name_key,
)
from ambry.storage.indexentry import (
    ceil_s,
    fold_blob_record,
    put_location,
    state_of,
    store_entry,
)
from ambry.storage.log import Damage, Log, Position, ScannedRecord
from ambry.storage.namelocks import NameLocks
from ambry.storage.names import NameView, encode_record_props, name_from_record
from ambry.storage.recovery import clear_temp_files, establish_incarnation, load_snapshot
from ambry.storage.scrub import content_digest, scrub_sealed
from ambry.storage.snapshot import SnapshotMeta, write_snapshot
from ambry.storage.usage import UsageCounters, UsageTotals, count_usage

__all__ = ["Replica"]

log = logging.getLogger(__name__)

MAX_LIFE_VERSION = 0xFFFF
MAX_NAME_BYTES = 350


class Replica:
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

    # ================================================================ opening and recovery
    @classmethod
    def open(cls, directory: str, partition_id: int, config: StorageConfig,
             capacity_bytes: int, disk: Disk | None = None,
             clock: Clock | None = None, names_dir: str | None = None) -> Replica:
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
        self.names = NameView(self.names_dir)
        self.log.open_existing()
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
        for rec in self.log.scan(start, on_damage=self.damage.append, verify=True, repair=True):
            self._apply_record(rec.position, rec.header, rec.key, replay=True)
            last_seq = max(last_seq, rec.header.sequence)
            self.feed.sample_seq(rec.header.sequence, rec.position)
            replayed += 1
        self.next_seq = last_seq + 1
        self.records_since_snapshot = replayed
        self.log.sync_now()  # whatever survived in the page cache is durable from here on
        self.log.start()
        self.opened = True
        log.info("replica %s open: %d blobs, %d records replayed from %s, last seq %d",
                 self.dir, len(self.index), replayed, start, last_seq)

    # ================================================================ index state helpers
    def _apply_record(self, pos: Position, h: RecordHeader, key: bytes, replay: bool
                      ) -> concurrent.futures.Future[None] | None:
        """Fold one record (already in the log) into the index or the name view. For a live
        name record, returns the future that completes once the record is durable *and*
        visible in the view (the caller acknowledges on it)."""
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
        try:
            pos = self.log.append([encode_record_header(h), key, *parts], h.total_len)
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
                              body_checksum(key))
        return (pos[0], pos[1] + h.total_len)

    def durable_future(self, end: Position) -> concurrent.futures.Future[None]:
        return self.log.durable_future(end)

    def durable_async(self, end: Position) -> asyncio.Future[None]:
        """``durable_future`` for the running event loop (cheaper to wait on there)."""
        return self.log.durable_async(end)

    # ================================================================ blob operations
    def put(self, blob_id: BlobId, props: BlobProperties, user_metadata: bytes,
            payload: bytes | memoryview) -> MutationResult:
        """Append a PUT. Same id and same content again: 'duplicate' (success). Same id with
        other content: BlobAlreadyExists. A tombstone seen before keeps the blob deleted."""
        self._check_partition(blob_id)
        key = blob_id.to_bytes()
        pbytes = props.encode()
        total = RECORD_HEADER_SIZE + len(key) + len(pbytes) + len(user_metadata) + len(payload)
        if len(payload) > self.config.max_record_bytes:
            raise InvalidArgument(f"payload of {len(payload)} bytes is over the "
                                  f"{self.config.max_record_bytes}-byte record limit")
        body_xxh3 = body_checksum(key, pbytes, user_metadata, payload)  # outside the lock
        uuid = blob_id.uuid
        with self.lock:
            cur = self.index.get(uuid)
            loc = put_location(cur)
            if loc is not None:
                pos = (loc[0], loc[1])
                existing = self.log.read_header(pos)
                stored_key = self.log.read((pos[0], pos[1] + RECORD_HEADER_SIZE), 32)
                if existing.body_xxh3 == body_xxh3 and stored_key == key:
                    return MutationResult("duplicate", (pos[0], pos[1] + existing.total_len),
                                          cur[5] if cur else 0)
                raise BlobAlreadyExists(f"blob {blob_id} exists with different content")
            self._check_writable(total, is_put=True)
            state = BlobState(0, False, False)
            pos, h = self._append(RecordType.PUT, key, key[2], state, props.created_ms,
                                  props.expiry_ms, [pbytes, user_metadata, payload],
                                  (len(pbytes), len(user_metadata), len(payload)), body_xxh3)
            after = self.index.get(uuid)
            return MutationResult("created", (pos[0], pos[1] + h.total_len),
                                  after[5] if after else 0)

    def _not_found(self, message: str) -> AmbryError:
        if self.rebuilding:
            return ReplicaUnavailable(f"partition {self.partition_id} is rebuilding from its "
                                      f"peers; cannot tell: {message}")
        return BlobNotFound(message)

    def _check_partition(self, blob_id: BlobId) -> None:
        if blob_id.partition_id != self.partition_id:
            raise InvalidArgument(f"blob {blob_id} belongs to partition {blob_id.partition_id},"
                                  f" not {self.partition_id}")

    def get(self, blob_id: BlobId, include_deleted: bool = False,
            include_expired: bool = False) -> BlobRead:
        self._check_partition(blob_id)
        cur = self.index.get(blob_id.uuid)
        state = state_of(cur)
        loc = put_location(cur)
        if cur is None or state is None:
            raise self._not_found(f"blob {blob_id} not found")
        if loc is None:
            if state.deleted:
                raise BlobDeleted(f"blob {blob_id} is deleted")
            raise self._not_found(f"blob {blob_id} not found")
        if state.deleted and not include_deleted:
            raise BlobDeleted(f"blob {blob_id} is deleted")
        pos = (loc[0], loc[1])
        seg = self.log.segment(pos[0])
        try:
            h = self.log.read_header(pos)
        except DataCorrupt as e:
            self.report_corrupt(pos, None, f"header of an indexed record: {e.message}")
        head_len = h.key_len + h.props_len + h.usermeta_len
        meta = seg.file.pread(head_len, pos[1] + RECORD_HEADER_SIZE)
        if meta[:32] != blob_id.to_bytes():
            raise BlobNotFound(f"blob {blob_id} not found (id differs from the stored one)")
        props = BlobProperties.decode(meta[h.key_len:h.key_len + h.props_len])
        expiry = 0 if state.permanent else h.expiry_ms
        if expiry and expiry <= self.clock.now_ms() and not include_expired:
            raise BlobExpired(f"blob {blob_id} has expired")
        return BlobRead(self, blob_id, h, pos, state, props, bytes(meta[h.usermeta_offset -
                        RECORD_HEADER_SIZE:]), expiry, seg.file)

    def report_corrupt(self, pos: Position, h: RecordHeader | None, reason: str) -> None:
        seg = self.log.segment(pos[0])
        dmg = Damage("corrupt", pos[0], seg.generation, pos[1], h.total_len if h else 0, reason)
        self.damage.append(dmg)
        try:
            self.log.append_report(dmg)
        except OSError:
            log.exception("could not write the damage report")
        raise DataCorrupt(f"partition {self.partition_id} record at {pos}: {reason}")

    def delete(self, blob_id: BlobId, time_ms: int | None = None,
               life_version: int | None = None,
               tombstone_if_missing: bool = True) -> MutationResult:
        self._check_partition(blob_id)
        t = self.clock.now_ms() if time_ms is None else time_ms
        with self.lock:
            cur = self.index.get(blob_id.uuid)
            state = state_of(cur)
            if state is None:
                if not tombstone_if_missing:
                    raise self._not_found(f"blob {blob_id} not found")
                lv = life_version or 0
                end = self._append_state(RecordType.DELETE, blob_id,
                                         BlobState(lv, True, False, t), t)
                return MutationResult("tombstoned", end, lv)
            if life_version is not None and life_version < state.life_version:
                raise LifeVersionConflict(f"delete at life version {life_version} < "
                                          f"{state.life_version}")
            lv = state.life_version if life_version is None else life_version
            if state.deleted and lv == state.life_version:
                return MutationResult("already_deleted", self.log.end, lv)
            new = BlobState(lv, True, state.permanent if lv == state.life_version else False, t)
            end = self._append_state(RecordType.DELETE, blob_id, new, t)
            return MutationResult("deleted" if put_location(cur) else "tombstoned", end, lv)

    def ttl_update(self, blob_id: BlobId, time_ms: int | None = None,
                   life_version: int | None = None) -> MutationResult:
        """Make a blob permanent. Unknown id: a marker is stored (status 'marked')."""
        self._check_partition(blob_id)
        t = self.clock.now_ms() if time_ms is None else time_ms
        with self.lock:
            cur = self.index.get(blob_id.uuid)
            state = state_of(cur)
            if state is None:
                lv = life_version or 0
                end = self._append_state(RecordType.TTL_UPDATE, blob_id,
                                         BlobState(lv, False, True), t)
                return MutationResult("marked", end, lv)
            if state.deleted:
                raise BlobDeleted(f"blob {blob_id} is deleted")
            loc = put_location(cur)
            if loc is not None and not state.permanent:
                h = self.log.read_header((loc[0], loc[1]))
                if h.expiry_ms and h.expiry_ms <= t:
                    raise BlobExpired(f"blob {blob_id} has expired")
                if not h.expiry_ms:
                    return MutationResult("already_permanent", self.log.end,
                                          state.life_version)
            if state.permanent:
                return MutationResult("already_permanent", self.log.end, state.life_version)
            new = BlobState(state.life_version, False, True)
            end = self._append_state(RecordType.TTL_UPDATE, blob_id, new, t)
            return MutationResult("updated", end, new.life_version)

    def undelete(self, blob_id: BlobId, time_ms: int | None = None,
                 life_version: int | None = None) -> MutationResult:
        self._check_partition(blob_id)
        t = self.clock.now_ms() if time_ms is None else time_ms
        with self.lock:
            cur = self.index.get(blob_id.uuid)
            state = state_of(cur)
            if state is None:
                raise self._not_found(f"blob {blob_id} not found")
            if not state.deleted:
                if life_version is not None and life_version == state.life_version:
                    return MutationResult("undeleted", self.log.end, state.life_version)
                raise BlobNotDeleted(f"blob {blob_id} is not deleted")
            loc = put_location(cur)
            if loc is None:
                raise BlobNotFound(f"blob {blob_id} is gone (compacted away)")
            h = self.log.read_header((loc[0], loc[1]))
            if not state.permanent and h.expiry_ms and h.expiry_ms <= t:
                raise BlobExpired(f"blob {blob_id} has expired")
            lv = state.life_version + 1 if life_version is None else life_version
            if lv <= state.life_version or lv > MAX_LIFE_VERSION:
                raise LifeVersionConflict(f"undelete to life version {lv} from "
                                          f"{state.life_version}")
            new = BlobState(lv, False, state.permanent)
            end = self._append_state(RecordType.UNDELETE, blob_id, new, t)
            return MutationResult("undeleted", end, lv)

    def apply_state(self, blob_id: BlobId, rtype: RecordType, life_version: int,
                    state_flags: int, time_ms: int) -> MutationResult:
        """Replication: fold a peer's DELETE / TTL_UPDATE / UNDELETE record in. A record is
        appended only when it changes this replica's merged state (so re-applying a batch is
        a no-op); it carries the peer's life version, state and time unchanged."""
        if rtype not in (RecordType.DELETE, RecordType.TTL_UPDATE, RecordType.UNDELETE):
            raise InvalidArgument(f"apply_state of a {rtype.name} record")
        self._check_partition(blob_id)
        deleted = bool(state_flags & STATE_DELETED)
        incoming = BlobState(life_version, deleted, bool(state_flags & STATE_PERMANENT),
                             time_ms if deleted else 0)
        with self.lock:
            cur = state_of(self.index.get(blob_id.uuid))
            if merge(cur, incoming) == cur:
                return MutationResult("unchanged", self.log.end, cur.life_version
                                      if cur else life_version)
            end = self._append_state(rtype, blob_id, incoming, time_ms)
            return MutationResult("applied", end, life_version)

    def has_put(self, blob_key: bytes) -> bool:
        """Replication: whether this replica has the PUT of the blob with this 32-byte key."""
        return put_location(self.index.get(blob_key[16:32])) is not None

    def put_end(self, blob_key: bytes) -> Position | None:
        """Where the PUT record of this blob ends in the log, if the replica has it (no I/O)."""
        loc = put_location(self.index.get(blob_key[16:32]))
        return None if loc is None else (loc[0], loc[1] + loc[2])

    def name_apply(self, entry: NameRecord) -> concurrent.futures.Future[None] | None:
        """Replication: store a peer's name record unless this replica already has that
        version or a newer one (so replicas never bounce the same record back and forth).
        Returns the durability future, or None when nothing was appended."""
        assert self.names is not None
        cur = self.names.get(entry.account_id, entry.container_id, entry.name)
        if cur is not None and cur.version >= entry.version:
            return None
        return self.name_put(entry)

    def scrub_sealed(self, bytes_per_s: int = 0) -> list[tuple[bytes, int]]:
        """Re-read every sealed segment, verifying checksums (at most ``bytes_per_s``); the
        damaged PUT records a peer's copy can repair (``scrub.scrub_sealed``)."""
        return scrub_sealed(self.log, self.index, self.damage, bytes_per_s)

    def repair_put(self, blob_id: BlobId, props: BlobProperties, user_metadata: bytes,
                   payload: bytes | memoryview, body_xxh3: int) -> bool:
        """Append a good copy of a damaged PUT record (from a peer) and point the index at it.
        The copy must have the damaged record's content checksum; the damaged bytes stay
        where they are (reported, never silently dropped)."""
        key = blob_id.to_bytes()
        pbytes = props.encode()
        if body_checksum(key, pbytes, user_metadata, payload) != body_xxh3:
            return False
        with self.lock:
            cur = self.index.get(blob_id.uuid)
            loc = put_location(cur)
            state = state_of(cur)
            if loc is None or state is None:
                return False
            self._check_writable(0, is_put=False)
            seq = self.next_seq
            pos, h = self._append(RecordType.PUT, key, key[2], BlobState(state.life_version),
                                  props.created_ms, props.expiry_ms,
                                  [pbytes, user_metadata, payload],
                                  (len(pbytes), len(user_metadata), len(payload)), body_xxh3,
                                  sequence=seq)
            before = self.index.get(blob_id.uuid)
            store_entry(self.index, blob_id.uuid,
                        (pos[0], pos[1], h.total_len, ceil_s(h.expiry_ms)), state)
            self.usage.change(key, before, self.index.get(blob_id.uuid))
        self.durable_future((pos[0], pos[1] + h.total_len)).result()
        log.info("partition %d: repaired blob %s from a peer copy", self.partition_id, blob_id)
        return True

    def digest(self) -> dict[str, Any]:
        """A fingerprint of this replica's logical content (``scrub.content_digest``)."""
        assert self.names is not None
        return content_digest(self.index, self.lock, self.names)

    def state(self, blob_id: BlobId) -> tuple[BlobState | None, bool]:
        """(merged state, has the PUT) of a blob, without reading the log."""
        cur = self.index.get(blob_id.uuid)
        return state_of(cur), put_location(cur) is not None

    # ================================================================ named blobs
    def name_put(self, entry: NameRecord, token: bytes | None = None,
                 base: tuple[int, int, bytes] | None = None
                 ) -> concurrent.futures.Future[None]:
        """Append NAME_PUT / NAME_DELETE (entry.deleted) and return a future that completes once
        the record is durable and applied to the view.

        ``token``: a conditional write under a reservation (``name_reserve``): refused with
        NameBusy unless the token holds the name here or, when nobody does, the current entry's
        version is still ``base`` (None: the writer saw no entry). See ``namelocks``."""
        raw_name = entry.name.encode("utf-8")
        if not raw_name or len(raw_name) > MAX_NAME_BYTES:
            raise InvalidArgument(f"blob names are 1 to {MAX_NAME_BYTES} bytes")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in entry.name):
            raise InvalidArgument("blob names may not contain control characters")
        if not entry.deleted and len(entry.blob_id) != 32:
            raise InvalidArgument("a name must point to a 32-byte blob id")
        assert self.names is not None
        key = name_key(entry.account_id, entry.container_id, entry.name)
        props = encode_record_props(entry)
        rtype = RecordType.NAME_DELETE if entry.deleted else RecordType.NAME_PUT
        based = True
        if token is not None and self.name_locks.holder(key) is None:
            cur = self.names.get(entry.account_id, entry.container_id, entry.name)
            based = (cur.version if cur is not None else None) == base
        if not self.name_locks.begin_write(key, token, based):
            raise NameBusy(f"name {entry.name!r} is reserved by another writer or changed")
        try:
            with self.lock:
                self._check_writable(RECORD_HEADER_SIZE + len(key) + len(props), is_put=False)
                self._append(rtype, key, 0, BlobState(), entry.ts_ms, 0, [props],
                             (len(props), 0, 0), body_checksum(key, props))
                visible = self._last_ack
        except BaseException:
            self.name_locks.end_write(key)
            raise
        assert visible is not None
        visible.add_done_callback(lambda _f: self.name_locks.end_write(key))
        return visible

    def name_reserve(self, account_id: int, container_id: int, name: str, token: bytes,
                     lease_ms: int) -> tuple[bool, NameRecord | None]:
        """Reserve a name for a conditional write (see ``namelocks``): whether it was granted,
        and the name's current entry here (deletions included). A rebuilding replica cannot
        say what the current entry is: ReplicaUnavailable."""
        assert self.names is not None
        if self.rebuilding:
            raise self._not_found(f"name {name!r}: replica is rebuilding")
        key = name_key(account_id, container_id, name)
        granted = self.name_locks.reserve(key, token, lease_ms, self.clock.now_ms())
        # read after the grant: once granted, no frontend write of this name lands here
        # until the holder writes or the lease ends, and none was in flight
        return granted, self.names.get(account_id, container_id, name)

    def name_release(self, account_id: int, container_id: int, name: str,
                     token: bytes) -> None:
        self.name_locks.release(name_key(account_id, container_id, name), token)

    def name_get(self, account_id: int, container_id: int, name: str) -> NameRecord | None:
        """The current entry of a name (deletions included), None if never seen. A replica
        that is rebuilding cannot say a name does not exist: ReplicaUnavailable."""
        assert self.names is not None
        e = self.names.get(account_id, container_id, name)
        if e is None and self.rebuilding:
            raise self._not_found(f"name {name!r} not found")
        return e

    def name_list(self, account_id: int, container_id: int, prefix: str = "",
                  start_after: str = "", limit: int = 1000) -> list[NameRecord]:
        assert self.names is not None
        if self.rebuilding:  # a partial listing would hide names
            raise self._not_found("listing of a rebuilding replica")
        return self.names.list(account_id, container_id, prefix, start_after, limit)

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
