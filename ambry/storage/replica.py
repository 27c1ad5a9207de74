"""One replica of one partition on one node: the store semantics over the log and index.

Owns what records mean: put (idempotent for identical content), get with include-deleted /
include-expired options, delete / TTL update / undelete with life versions and the conflict
rule of ``ambry.common.blobstate``, ``apply_state`` and ``name_apply`` for replication (append
only what changes the merged state), the repair of a damaged PUT from a peer's copy, and the
named-blob operations (conditional writes under reservations: ``namelocks``). Clients see it
as ``api.ReplicaStore``. The machinery under it (opening and recovery, appending, snapshots,
stats, usage, the replication feed, scrub) is ``replicacore.ReplicaCore``.

Concurrency: every method is synchronous and thread-safe; the node runs them on I/O threads.
The payload is received and checksummed before the lock is taken, so a slow client never
holds up other writers. Mutations return the end position of their record; the caller waits
for ``durable_future(end)`` before acknowledging.
"""

from __future__ import annotations

import concurrent.futures
import logging

from ambry.common.blobid import BlobId
from ambry.common.blobstate import BlobState, merge
from ambry.common.errors import (
    AmbryError,
    BlobAlreadyExists,
    BlobDeleted,
    BlobExpired,
    BlobNotDeleted,
    BlobNotFound,
    DataCorrupt,
    InvalidArgument,
    LifeVersionConflict,
    NameBusy,
    ReplicaUnavailable,
)
from ambry.common.namerecord import NameRecord
from ambry.common.properties import BlobProperties
from ambry.native import body_xxh3 as record_body_xxh3
from ambry.storage.api import MutationResult
from ambry.storage.blobread import BlobRead
from ambry.storage.ecreplica import EcReplicaMixin
from ambry.storage.ecstate import EncodedBlobRead
from ambry.storage.format import (
    RECORD_HEADER_SIZE,
    STATE_DELETED,
    STATE_PERMANENT,
    RecordType,
    body_checksum,
    name_key,
)
from ambry.storage.indexentry import ceil_s, put_location, state_of, store_entry
from ambry.storage.log import Position
from ambry.storage.names import encode_record_props
from ambry.storage.replicacore import ReplicaCore

__all__ = ["Replica"]

log = logging.getLogger(__name__)

MAX_LIFE_VERSION = 0xFFFF
MAX_NAME_BYTES = 350


class Replica(EcReplicaMixin, ReplicaCore):
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
        body_xxh3 = record_body_xxh3(key, pbytes, user_metadata, payload)  # outside the lock
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
        encoded = self.ec.locate(pos)
        if encoded is not None:  # payload freed here: read through the fragments
            return EncodedBlobRead(self, blob_id, h, pos, state, props,
                                   bytes(meta[h.usermeta_offset - RECORD_HEADER_SIZE:]),
                                   expiry, ec=encoded[0], ec_offset=encoded[1],
                                   reader=self.ec.reader)
        return BlobRead(self, blob_id, h, pos, state, props, bytes(meta[h.usermeta_offset -
                        RECORD_HEADER_SIZE:]), expiry, seg.file, body_prefix=bytes(meta))

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

    def state(self, blob_id: BlobId) -> tuple[BlobState | None, bool]:
        """(merged state, has the PUT) of a blob, without reading the log."""
        cur = self.index.get(blob_id.uuid)
        return state_of(cur), put_location(cur) is not None

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

    # ================================================================ named blobs
    def name_put(self, entry: NameRecord, token: bytes | None = None,
                 base: tuple[int, int, bytes] | None = None
                 ) -> concurrent.futures.Future[None]:
        """Append NAME_PUT / NAME_DELETE (entry.deleted) and return a future that completes once
        the record is durable and applied to the view.

        ``token``: a conditional write under a reservation (``name_reserve``): refused with
        NameBusy unless the token holds the name here or, when nobody does, the current entry's
        version is still ``base`` (None: the writer saw no entry). See ``namelocks``."""
        _check_name_entry(entry)
        assert self.names is not None
        key = name_key(entry.account_id, entry.container_id, entry.name)
        based = True
        if token is not None and self.name_locks.holder(key) is None:
            cur = self.names.get(entry.account_id, entry.container_id, entry.name)
            based = (cur.version if cur is not None else None) == base
        if not self.name_locks.begin_write(key, token, based):
            raise NameBusy(f"name {entry.name!r} is reserved by another writer or changed")
        return self._append_name(key, entry)

    def _append_name(self, key: bytes, entry: NameRecord) -> concurrent.futures.Future[None]:
        """Append the name record of a write marked in flight (``NameLocks``): the mark ends
        once it is durable, or now if it cannot be appended."""
        props = encode_record_props(entry)
        rtype = RecordType.NAME_DELETE if entry.deleted else RecordType.NAME_PUT
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

    def name_claim(self, entry: NameRecord
                   ) -> tuple[NameRecord | None, concurrent.futures.Future[None]]:
        """An unconditional name write decided here in one step, without a reservation
        round (an upsert: S3 PutObject): appended only if no writer holds the name here and
        no write of it is in flight (``NameLocks.claim``), and only if ``entry`` is newer
        than the current entry (else it would be invisible). NameBusy otherwise; the writer
        then takes the reservation path. Returns the entry it replaced here (the frontend
        frees that entry's blob once a majority took the write) and the durability future."""
        _check_name_entry(entry)
        assert self.names is not None
        if self.rebuilding:  # cannot say which entry it replaces
            raise self._not_found(f"name {entry.name!r}: replica is rebuilding")
        key = name_key(entry.account_id, entry.container_id, entry.name)
        if not self.name_locks.claim(key):
            raise NameBusy(f"name {entry.name!r} is reserved or being written")
        try:
            cur = self.names.get(entry.account_id, entry.container_id, entry.name)
            if cur is not None and cur.version >= entry.version:
                raise NameBusy(f"name {entry.name!r} has a newer entry here")
        except BaseException:
            self.name_locks.end_write(key)
            raise
        return cur, self._append_name(key, entry)

    def name_apply(self, entry: NameRecord) -> concurrent.futures.Future[None] | None:
        """Replication: store a peer's name record unless this replica already has that
        version or a newer one (so replicas never bounce the same record back and forth).
        Returns the durability future, or None when nothing was appended."""
        assert self.names is not None
        cur = self.names.get(entry.account_id, entry.container_id, entry.name)
        if cur is not None and cur.version >= entry.version:
            return None
        return self.name_put(entry)

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

    def name_get_cached(self, account_id: int, container_id: int, name: str
                        ) -> NameRecord | None:
        """:meth:`name_get` answered from the name view's memory (no I/O: safe on the event
        loop); None when the view does not hold the name in memory (ask :meth:`name_get`)."""
        names = self.names
        return names.cached(account_id, container_id, name) if names is not None else None

    def name_list(self, account_id: int, container_id: int, prefix: str = "",
                  start_after: str = "", limit: int = 1000,
                  include_deleted: bool = False) -> list[NameRecord]:
        assert self.names is not None
        if self.rebuilding:  # a partial listing would hide names
            raise self._not_found("listing of a rebuilding replica")
        return self.names.list(account_id, container_id, prefix, start_after, limit,
                               include_deleted)


def _check_name_entry(entry: NameRecord) -> None:
    raw_name = entry.name.encode("utf-8")
    if not raw_name or len(raw_name) > MAX_NAME_BYTES:
        raise InvalidArgument(f"blob names are 1 to {MAX_NAME_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in entry.name):
        raise InvalidArgument("blob names may not contain control characters")
    if not entry.deleted and len(entry.blob_id) != 32:
        raise InvalidArgument("a name must point to a 32-byte blob id")
