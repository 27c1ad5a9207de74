"""The storage API: what a replica offers its clients, declared in one place.

Owns the seam between a replica's store (``replica.Replica`` and the modules it is built of)
and the components that use it:

* :class:`ReplicaStore`: what the node's op handlers (``ops``), its maintenance loops
  (``maintenance``) and replication (``ambry.replication``) call;
* :class:`CompactionHooks`: what compaction (``compaction``) needs besides: the log, the
  index and the locks that keep records still while it moves them (:class:`NodeReplica`:
  both, as the node holds its replicas);
* :class:`ReplicationHost` and :class:`Replicator`: what a node hands its replication
  component, and what it expects back (the CLI wires the two; storage never imports
  replication, and replication never sees a node);

and the values that cross the seam (:class:`Entry`, :class:`MutationResult`,
:class:`ReplicaStats`, ``Token``, ``Position``, ``BlobRead``, ``RecordType``, ``NameRecord``),
so that a client imports this module and no other of ``ambry.storage``
(``tests/unit/test_import_layers.py`` holds replication to that). ``Replica`` implements both
protocols: mypy checks it where the node opens replicas, a unit test checks it at run time.
Does not own any behaviour.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ambry.common.blobid import BlobId
from ambry.common.blobstate import BlobState
from ambry.common.clock import Clock
from ambry.common.config import ClusterConfig, StorageConfig
from ambry.common.errors import StorageError
from ambry.common.namerecord import NameRecord
from ambry.common.properties import BlobProperties
from ambry.storage.blobread import BlobRead
from ambry.storage.disk import Disk
from ambry.storage.ecreplica import SealedSegment
from ambry.storage.ecstate import EcRecord, EcState, FragmentReader
from ambry.storage.format import RecordHeader, RecordType
from ambry.storage.log import Damage, Log, Position
from ambry.storage.names import NameView, name_from_record
from ambry.storage.usage import UsageCounters, UsageTotals

__all__ = [
    "BlobRead",
    "CompactionHooks",
    "EcRecord",
    "EcStore",
    "Entry",
    "MutationResult",
    "NameRecord",
    "NodeReplica",
    "Position",
    "RecordType",
    "ReplicaStats",
    "ReplicaStore",
    "ReplicationFactory",
    "ReplicationHost",
    "Replicator",
    "RunIO",
    "Token",
    "WarmTier",
    "WarmTierFactory",
    "WarmTierHost",
    "name_of",
]

Token = tuple[bytes, int]  # (incarnation uuid, last sequence number seen)
#: runs a blocking replica call on the node's I/O threads
RunIO = Callable[..., Awaitable[Any]]


# ================================================================ values
@dataclass(frozen=True)
class MutationResult:
    """Outcome of a put/delete/ttl_update/undelete: ``status`` says what happened."""

    status: str  # created | duplicate | deleted | already_deleted | tombstoned | updated |
    #              already_permanent | marked | undeleted
    end: Position
    life_version: int = 0


@dataclass(frozen=True)
class Entry:
    """One log record as replication sees it (metadata only; payloads are fetched apart)."""

    sequence: int
    type: RecordType
    key: bytes
    life_version: int
    state_flags: int
    time_ms: int
    expiry_ms: int
    blob_flags: int
    payload_len: int
    record_len: int
    props: bytes = b""  # NAME_* records carry their entry here

    def to_wire(self) -> dict[str, Any]:
        return {"seq": self.sequence, "t": int(self.type), "k": self.key,
                "lv": self.life_version, "sf": self.state_flags, "tm": self.time_ms,
                "ex": self.expiry_ms, "bf": self.blob_flags, "pl": self.payload_len,
                "rl": self.record_len, "p": self.props}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Entry:
        return cls(m["seq"], RecordType(m["t"]), m["k"], m["lv"], m["sf"], m["tm"], m["ex"],
                   m["bf"], m["pl"], m["rl"], m.get("p", b""))


def name_of(e: Entry) -> NameRecord:
    """The name entry a NAME_PUT / NAME_DELETE ``Entry`` carries."""
    return name_from_record(e.key, e.time_ms, e.type == RecordType.NAME_DELETE, e.props)


@dataclass
class ReplicaStats:
    partition_id: int
    incarnation: str
    blobs: int
    names: int
    log_bytes: int
    capacity_bytes: int
    segments: int
    last_seq: int
    read_only: str
    damage_reports: int
    group_commit_syncs: int
    extra: dict[str, Any] = field(default_factory=dict)


# ================================================================ the store
@runtime_checkable
class ReplicaStore(Protocol):
    """One replica of one partition, as its clients use it. Every method blocks (run it on an
    I/O thread) unless it says otherwise; mutations return the end of their record, and the
    caller acknowledges only once ``durable_async(end)`` (or ``durable_future``) is done."""

    partition_id: int
    incarnation: bytes
    capacity_bytes: int
    #: True when the replica started with an empty log (first start or a wiped disk)
    created_fresh: bool
    #: set by replication while a fresh replica catches up: its "not found" is not
    #: authoritative then (ReplicaUnavailable instead)
    rebuilding: bool
    records_since_snapshot: int
    damage: list[Damage]
    usage: UsageCounters

    # ---------------------------------------------------------------- blobs
    def put(self, blob_id: BlobId, props: BlobProperties, user_metadata: bytes,
            payload: bytes | memoryview) -> MutationResult: ...

    def get(self, blob_id: BlobId, include_deleted: bool = False,
            include_expired: bool = False) -> BlobRead: ...

    def delete(self, blob_id: BlobId, time_ms: int | None = None,
               life_version: int | None = None,
               tombstone_if_missing: bool = True) -> MutationResult: ...

    def ttl_update(self, blob_id: BlobId, time_ms: int | None = None,
                   life_version: int | None = None) -> MutationResult: ...

    def undelete(self, blob_id: BlobId, time_ms: int | None = None,
                 life_version: int | None = None) -> MutationResult: ...

    def ec_apply(self, key: bytes, props: bytes) -> Position:
        """Append an EC_SEGMENT record a peer sent (replication), remember it; its end."""
        ...

    def apply_state(self, blob_id: BlobId, rtype: RecordType, life_version: int,
                    state_flags: int, time_ms: int) -> MutationResult: ...

    def state(self, blob_id: BlobId) -> tuple[BlobState | None, bool]: ...

    def has_put(self, blob_key: bytes) -> bool: ...

    def put_end(self, blob_key: bytes) -> Position | None:
        """Where the blob's PUT record ends in the log, if it is here (no I/O)."""

    def durable_future(self, end: Position) -> concurrent.futures.Future[None]: ...

    def durable_async(self, end: Position) -> asyncio.Future[None]: ...

    def commit(self, end: Position) -> StorageError | None:
        """Make the log durable up to ``end`` on the calling thread (one fdatasync; the
        node's batch writer calls it once per batch); the error that made it read-only."""

    # ---------------------------------------------------------------- names
    def name_put(self, entry: NameRecord, token: bytes | None = None,
                 base: tuple[int, int, bytes] | None = None
                 ) -> concurrent.futures.Future[None]: ...

    def name_claim(self, entry: NameRecord
                   ) -> tuple[NameRecord | None, concurrent.futures.Future[None]]: ...

    def name_apply(self, entry: NameRecord) -> concurrent.futures.Future[None] | None: ...

    def name_get(self, account_id: int, container_id: int, name: str) -> NameRecord | None: ...

    def name_get_cached(self, account_id: int, container_id: int, name: str
                        ) -> NameRecord | None:
        """``name_get`` from memory only (no I/O: safe on the event loop); None if not held."""

    def name_list(self, account_id: int, container_id: int, prefix: str = "",
                  start_after: str = "", limit: int = 1000,
                  include_deleted: bool = False) -> list[NameRecord]: ...

    def name_reserve(self, account_id: int, container_id: int, name: str, token: bytes,
                     lease_ms: int) -> tuple[bool, NameRecord | None]: ...

    def name_release(self, account_id: int, container_id: int, name: str,
                     token: bytes) -> None: ...

    # ---------------------------------------------------------------- replication feed
    def caught_up(self, token: Token | None) -> bool:
        """Nothing durable follows ``token`` (no I/O: safe on the event loop)."""

    def entries_since(self, token: Token | None, max_entries: int = 1000,
                      max_bytes: int = 4 * 1024 * 1024) -> tuple[list[Entry], Token, int]: ...

    # ---------------------------------------------------------------- scrub and repair
    def scrub_sealed(self, bytes_per_s: int = 0) -> list[tuple[bytes, int]]: ...

    def repair_put(self, blob_id: BlobId, props: BlobProperties, user_metadata: bytes,
                   payload: bytes | memoryview, body_xxh3: int) -> bool: ...

    def digest(self) -> dict[str, Any]: ...

    # ---------------------------------------------------------------- stats, usage, upkeep
    def stats(self) -> ReplicaStats: ...

    def usage_totals(self, now_s: int | None = None
                     ) -> dict[tuple[int, int], UsageTotals]: ...

    def usage_pass(self, should_stop: Callable[[], bool] = lambda: False,
                   batch_records: int = 1024) -> bool: ...

    def write_snapshot(self) -> int: ...

    def close(self, snapshot: bool = True) -> None: ...


@runtime_checkable
class CompactionHooks(Protocol):
    """What compaction (and its roll-forward on open) needs of a replica: its directory and
    disk, the log and index it rewrites, the name view it checks superseded names against,
    and the hooks that keep records still while they move."""

    dir: str
    disk: Disk
    config: StorageConfig
    clock: Clock
    log: Log
    index: Any  # ambry.native.BlobIndex (entries: ambry.storage.indexentry)
    names: NameView | None
    usage: UsageCounters
    lock: threading.RLock
    ec: EcState  # its frozen_segments (payloads freed) are never compacted

    def read_props(self, pos: Position, h: RecordHeader) -> bytes:
        """The props section of the record at ``pos``."""

    def records_moving(self) -> AbstractContextManager[None]:
        """Hold while records move in the log: no usage pass reads it meanwhile and no
        snapshot is published during a swap."""

    def sample_segment_starts(self) -> None:
        """Positions moved: re-anchor the replication feed on each segment's first record."""

    def write_snapshot(self) -> int: ...


# ================================================================ node <-> replication
class Replicator(Protocol):
    """A node's replication component (``ambry.replication.manager``), as the node sees it."""

    def start(self) -> None: ...
    async def stop(self) -> None: ...
    def status(self) -> list[dict[str, Any]]: ...
    def on_map_change(self, config: ClusterConfig,
                      added: Mapping[int, ReplicaStore]) -> None: ...


@dataclass(frozen=True)
class ReplicationHost:
    """What a storage node hands its replication component: never the node itself.

    ``stores`` is a live, read-only view of the node's open replicas (a map reload adds to
    it); ``run_io`` runs a blocking replica call on the node's I/O threads;
    ``notify_change`` wakes the peers' long-polling pulls after records were appended."""

    node_id: str
    datacenter: str
    config: ClusterConfig  # the map at start; map changes come by Replicator.on_map_change
    data_dir: Path
    stores: Mapping[int, ReplicaStore]
    run_io: RunIO
    notify_change: Callable[[], None]
    now_ms: Callable[[], int]


#: builds the replication component of a node (the CLI passes ``ambry.replication.attach``)
ReplicationFactory = Callable[[ReplicationHost], Replicator]


# ================================================================ node <-> warm tier
@runtime_checkable
class EcStore(Protocol):
    """What the warm tier (``ambry.warm``: the encoding coordinator and the freeing pass)
    calls on a replica (``ecreplica.EcReplicaMixin``). Every method blocks."""

    partition_id: int
    incarnation: bytes

    def ec_sealed(self) -> list[SealedSegment]: ...

    def ec_scan_segment(self, number: int, generation: int) -> tuple[int, bytes, int]: ...

    def ec_read(self, number: int, offset: int, length: int) -> bytes: ...

    def ec_missing(self, uuids: list[bytes]) -> list[bytes]: ...

    def ec_live(self, uuids: list[bytes]) -> list[bytes]: ...

    def ec_recode_plan(self, key: bytes) -> tuple[bytes, list[bytes]]: ...

    def ec_apply(self, key: bytes, props: bytes) -> Position: ...

    def ec_records(self) -> list[EcRecord]: ...

    def ec_free_pass(self, datacenter: str, usable: Collection[bytes] | None = None
                     ) -> list[int]: ...

    def ec_freed_segments(self) -> frozenset[int]: ...

    def ec_status(self) -> dict[str, Any]: ...

    def set_fragment_reader(self, reader: FragmentReader) -> None: ...

    def durable_async(self, end: Position) -> asyncio.Future[None]: ...


class NodeReplica(ReplicaStore, CompactionHooks, EcStore, Protocol):
    """A replica as the node that hosts it holds it: the store its op handlers and
    replication use, the hooks its maintenance loops hand compaction, and what its warm tier
    calls."""


class WarmTier(Protocol):
    """A node's warm-tier component, as the node sees it."""

    def start(self) -> None: ...
    async def stop(self) -> None: ...
    def status(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class WarmTierHost:
    """What a storage node hands its warm-tier component (as ``ReplicationHost``)."""

    node_id: str
    datacenter: str
    config: ClusterConfig
    stores: Mapping[int, EcStore]
    run_io: RunIO
    notify_change: Callable[[], None]


#: builds the warm tier of a node (the CLI passes ``ambry.warm.attach``)
WarmTierFactory = Callable[[WarmTierHost], WarmTier]
