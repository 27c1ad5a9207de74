"""Configuration and the cluster map, loaded from one YAML file (``config/*.yaml``).

Owns the schema (frozen dataclasses with defaults), validation with clear errors, and the
cluster map queries (which replicas a node hosts, which nodes hold a partition). Does not own
any I/O beyond reading the file. Sections that later components add (``frontend``,
``replication``) are kept as plain mappings until those components define their schema.

Partitions can be listed explicitly (``partitions: [{id, replicas: [node ids]}]``) or given as
``partitions: {count: N}`` and assigned round-robin: each partition gets
``replicas_per_datacenter`` distinct nodes in every datacenter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ambry.common.errors import InvalidArgument
from ambry.common.urlsecret import check_secret

__all__ = [
    "DEFAULT_S3_PORT",
    "MAX_FRONTEND_WORKERS",
    "Account",
    "ClusterConfig",
    "ClusterMap",
    "Container",
    "Datacenter",
    "EcConfig",
    "EcPolicy",
    "FrontendConfig",
    "FrontendEndpoint",
    "NodeConfig",
    "PartitionConfig",
    "StorageConfig",
    "load_config",
    "parse_size",
]

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4,
          "tb": 1000**4, "tib": 1024**4}


def parse_size(value: int | str) -> int:
    """``4194304``, ``"4MiB"``, ``"1 GiB"`` -> bytes."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().replace(" ", "")
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits):]
    if unit not in _UNITS or not digits:
        raise InvalidArgument(f"bad size {value!r}")
    return int(float(digits) * _UNITS[unit])


@dataclass(frozen=True)
class StorageConfig:
    segment_size_bytes: int = 1024**3
    durability: str = "fsync"  # "fsync" (group commit) or "page-cache"
    page_cache_flush_interval_ms: int = 1000
    max_record_bytes: int = 64 * 1024**2
    compaction_retention_s: int = 24 * 3600
    compaction_interval_s: int = 600
    snapshot_interval_s: int = 60
    snapshot_min_records: int = 10000
    # records not covered by any snapshot, all replicas of a node together: a kill -9 replays
    # them at restart (~20 us each), so this bounds the restart time after a crash
    snapshot_node_tail_records: int = 25000
    readonly_fill_ratio: float = 0.95
    # Name entries each name view keeps in memory (least recently used out), so a name_get of
    # a name read or written lately is answered on the node's loop, without a thread hand-off
    # (ambry.storage.names). ~0.5 KiB each; per replica of a name partition. 0 = no cache.
    name_cache_entries: int = 8192
    io_threads: int = 8
    verify_on_read_max_bytes: int = 8 * 1024**2
    # A GET of a whole payload of at least this many bytes, from a reader that verifies the
    # record's checksum itself (the frontend), goes out from the page cache with sendfile:
    # the node neither copies nor hashes it (docs/storage.md, "Serving reads"). 0 = never.
    sendfile_min_bytes: int = 256 * 1024
    # GETs parsed in one loop step are located and read on ONE trip to a reader thread and
    # answered with one wake of the loop (ambry.storage.batchreader); false: a task and a
    # thread hand-off per GET, as before (docs/storage.md, "Serving reads")
    batch_reads: bool = True
    # Node port limits (docs/security.md, "Gray failures and node port limits"): put payload
    # bytes one node holds in memory, all connections together; what one connection may hold
    # of them (its pipelined puts); and how long a connection may stall inside a frame (a
    # header or payload begun and not finished) before it is closed and what it held freed.
    inflight_payload_budget_bytes: int = 512 * 1024**2
    connection_payload_budget_bytes: int = 64 * 1024**2
    frame_idle_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.durability not in ("fsync", "page-cache"):
            raise InvalidArgument(f"storage.durability must be fsync or page-cache, "
                                  f"not {self.durability!r}")
        if self.segment_size_bytes < 4096 or self.segment_size_bytes > 2**32 - 1:
            raise InvalidArgument("storage.segment_size_bytes must be in [4096, 4GiB)")
        if not 0 < self.readonly_fill_ratio <= 1:
            raise InvalidArgument("storage.readonly_fill_ratio must be in (0, 1]")
        # a payload is reserved piece by piece as it arrives: one of max_record_bytes must fit
        # in both budgets, or it could never be read whole
        if not self.max_record_bytes <= self.connection_payload_budget_bytes <= \
                self.inflight_payload_budget_bytes:
            raise InvalidArgument("storage: need max_record_bytes <= "
                                  "connection_payload_budget_bytes <= "
                                  "inflight_payload_budget_bytes")
        if self.name_cache_entries < 0:
            raise InvalidArgument("storage.name_cache_entries must be >= 0 (0 = no cache)")
        if self.sendfile_min_bytes < 0:
            raise InvalidArgument("storage.sendfile_min_bytes must be >= 0 (0 = never)")
        if self.frame_idle_timeout_s <= 0:
            raise InvalidArgument("storage.frame_idle_timeout_s must be > 0")


#: The most frontend worker processes one ``ambry frontend`` runs (``frontend.workers``).
MAX_FRONTEND_WORKERS = 64


@dataclass(frozen=True)
class FrontendConfig:
    """The ``frontend:`` section (one for every frontend of the cluster)."""

    chunk_size_bytes: int = 4 * 1024**2
    upload_window_chunks: int = 4          # chunks of one upload in flight at once
    download_prefetch_chunks: int = 2      # chunks fetched ahead of the one being sent
    # A GET asks one local replica, and the next one too if the first has not answered
    # within this many ms (a hedged request): -1 = the p95 of recent replica GET times
    # (at least 5 ms); 0 = ask two replicas at once (doubles node work and bytes read).
    get_hedge_ms: int = -1
    inflight_budget_bytes: int = 128 * 1024**2  # all uploads of one frontend together
    max_blob_size_bytes: int = 64 * 1024**3
    node_timeout_ms: int = 10_000
    node_connect_timeout_ms: int = 2_000
    node_pool_size: int = 8
    failure_threshold_errors: int = 3      # consecutive errors before a node is skipped
    failure_backoff_s: float = 10.0
    # A replica call still running when its quorum is decided (a straggler) gets this long
    # more; then its node counts one failure and the call is cancelled, freeing the payload
    # it held (intra-DC replication brings the copy it missed). Stragglers hold no budget:
    # up to a quarter of inflight_budget_bytes of them is counted apart from it.
    straggler_grace_ms: int = 1000
    # A replica's put reply names its incarnation when the ack is durable; the frontend
    # tells the PUT's other replicas (on its next request to each, or alone after this many
    # ms when it sends them nothing), so their peers skip those records instead of pulling
    # and checking them (docs/replication.md, "Skipping what a peer already has"). -1: never.
    replica_confirm_flush_ms: int = 5
    read_only_cooldown_s: float = 60.0
    put_attempts: int = 3                  # partitions tried before a PUT gives up (503)
    # Slow and idle clients, on the REST and the S3 port alike (docs/security.md, "Slow and
    # idle clients"): the time a client has to send a request's headers (from connecting,
    # or from the first byte of a later request on a kept-alive connection); how long a
    # request body may send nothing while the frontend waits for it (then 408 and closed);
    # how long an idle kept-alive connection stays open; and the connections one port
    # keeps open at once (one more gets 503 and is closed; also capped at startup by the
    # process's file descriptor limit).
    header_timeout_s: float = 20.0
    body_idle_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    max_connections_per_port: int = 4096
    # Conditional name writes (docs/security.md, "Conditional writes and names"): how long a
    # frontend may hold a name's reservation on its replicas (a frontend that dies holding
    # one delays other writers of that name by at most this), and how long a writer retries
    # while others hold the name before it answers 503.
    name_lease_ms: int = 10_000
    name_busy_wait_ms: int = 10_000
    ttl_update_buffer_s: int = 60
    # HMAC key of signed URLs (docs/security.md, "Blob ids and secrets"): at least 32
    # characters and never a placeholder. Inline, or a file holding it (relative to the
    # data dir); $AMBRY_SIGNED_URL_SECRET overrides both. A frontend refuses to start
    # without one. ``signed_url_secret_generate`` (development only) creates the file with
    # a random secret when it is missing.
    signed_url_secret: str = ""
    signed_url_secret_file: str = ""
    signed_url_secret_generate: bool = False
    signed_url_max_ttl_s: int = 7 * 24 * 3600
    # Chunks of an upload that has not completed yet (a chunked PUT in progress, an
    # x-ambry-chunk-upload without x-ambry-ttl) are written with this TTL; it is lifted
    # only once the blob that lists them is complete, so a frontend killed mid-upload
    # leaves chunks that expire (docs/security.md, "Orphaned chunks"). An upload must
    # complete, and a chunk upload be stitched, within it.
    pending_chunk_ttl_s: int = 24 * 3600
    # One log line per request on the REST and S3 ports (logger ``ambry.access``, level
    # INFO): client address, request line, status, body bytes, duration in seconds, request
    # id and user agent (docs/operations.md, "Logs"). Off by default: the daemons' own logs
    # already name every failure.
    access_log: bool = False
    # Frontend processes serving the same REST and S3 ports (SO_REUSEPORT; the kernel
    # spreads connections over them), under one supervisor that restarts a worker that dies
    # and passes SIGHUP / SIGTERM on (docs/operations.md, "Frontend workers"). 1: one
    # process, no supervisor; 0 or "auto": one per core this process may run on, at most
    # MAX_FRONTEND_WORKERS.
    workers: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.access_log, bool):
            raise InvalidArgument("frontend.access_log must be true or false")
        workers: object = self.workers  # YAML may say "auto"
        if workers == "auto":
            object.__setattr__(self, "workers", workers := 0)
        if isinstance(workers, bool) or not isinstance(workers, int) or \
                not 0 <= workers <= MAX_FRONTEND_WORKERS:
            raise InvalidArgument(f"frontend.workers must be 0 or \"auto\" (one per core) "
                                  f"or in [1, {MAX_FRONTEND_WORKERS}], not {workers!r}")
        if self.chunk_size_bytes < 1024:
            raise InvalidArgument("frontend.chunk_size_bytes must be >= 1024")
        if self.upload_window_chunks < 1 or self.download_prefetch_chunks < 0:
            raise InvalidArgument("frontend windows must be >= 1 (prefetch >= 0)")
        if self.get_hedge_ms < -1:
            raise InvalidArgument("frontend.get_hedge_ms must be -1 (adaptive), 0 or > 0")
        if self.inflight_budget_bytes < self.chunk_size_bytes:
            raise InvalidArgument("frontend.inflight_budget_bytes must hold at least a chunk")
        if self.pending_chunk_ttl_s <= self.ttl_update_buffer_s:
            raise InvalidArgument("frontend.pending_chunk_ttl_s must be above "
                                  "frontend.ttl_update_buffer_s")
        for name in ("header_timeout_s", "body_idle_timeout_s", "keepalive_timeout_s"):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"frontend.{name} must be > 0")
        if self.max_connections_per_port < 1:
            raise InvalidArgument("frontend.max_connections_per_port must be >= 1")
        if self.straggler_grace_ms < 0:
            raise InvalidArgument("frontend.straggler_grace_ms must be >= 0")
        if not -1 <= self.replica_confirm_flush_ms <= 10_000:
            raise InvalidArgument("frontend.replica_confirm_flush_ms must be -1 (never) or "
                                  "in [0, 10000]")
        if self.signed_url_secret:
            check_secret(self.signed_url_secret, "frontend.signed_url_secret")
            if self.signed_url_secret_file:
                raise InvalidArgument("frontend: set signed_url_secret or "
                                      "signed_url_secret_file, not both")
        if self.signed_url_secret_generate and not self.signed_url_secret_file:
            raise InvalidArgument("frontend.signed_url_secret_generate needs "
                                  "frontend.signed_url_secret_file (where to keep it)")
        if not 100 <= self.name_lease_ms <= 30_000:
            raise InvalidArgument("frontend.name_lease_ms must be in [100, 30000]")
        if self.name_busy_wait_ms < 0:
            raise InvalidArgument("frontend.name_busy_wait_ms must be >= 0")


#: The S3 API's port when a frontend endpoint does not set ``s3_port``.
DEFAULT_S3_PORT = 1175


@dataclass(frozen=True)
class FrontendEndpoint:
    datacenter: str
    host: str
    port: int
    # S3 API (ambry.frontend.s3). None: DEFAULT_S3_PORT if it is free (a frontend that
    # cannot bind the default serves without S3, with a warning); a set port must bind.
    s3_port: int | None = None


@dataclass(frozen=True)
class Container:
    name: str
    id: int


@dataclass(frozen=True)
class Account:
    name: str
    id: int
    containers: tuple[Container, ...]

    def container(self, name: str) -> Container | None:
        for c in self.containers:
            if c.name == name:
                return c
        return None

    def container_by_id(self, cid: int) -> Container | None:
        for c in self.containers:
            if c.id == cid:
                return c
        return None


DEFAULT_ACCOUNTS = (Account("default", 1, (Container("default", 1),)),)


@dataclass(frozen=True)
class Datacenter:
    name: str
    id: int


@dataclass(frozen=True)
class NodeConfig:
    id: str
    datacenter: str
    host: str
    port: int
    http_port: int
    data_dir: str = ""  # relative to the data root; defaults to the node id


@dataclass(frozen=True)
class EcPolicy:
    """A partition's ``ec: {k, m}`` storage policy (docs/erasure-coding.md): its sealed
    segments are coded into k data + m parity fragments on k + m nodes of each datacenter."""

    k: int
    m: int

    def __post_init__(self) -> None:
        if not (1 <= self.k and 1 <= self.m and self.k + self.m <= 32):
            raise InvalidArgument(f"ec policy needs k >= 1, m >= 1, k + m <= 32: "
                                  f"k={self.k} m={self.m}")


def _parse_policy(raw: Any, where: str) -> EcPolicy | None:
    """``policy: replicated`` (the default) or ``policy: {ec: {k: 4, m: 2}}``."""
    if raw is None or raw == "replicated":
        return None
    if isinstance(raw, Mapping) and set(raw) == {"ec"} and isinstance(raw["ec"], Mapping):
        ec = raw["ec"]
        if set(ec) != {"k", "m"}:
            raise InvalidArgument(f"{where}: policy ec needs exactly k and m")
        return EcPolicy(int(ec["k"]), int(ec["m"]))
    raise InvalidArgument(f"{where}: policy must be 'replicated' or {{ec: {{k, m}}}}, "
                          f"not {raw!r}")


@dataclass(frozen=True)
class EcConfig:
    """The ``ec`` section: how the warm tier encodes (the policy itself is per partition)."""

    stripe_bytes: int = 4 * 1024**2        # target stripe (k blocks, each a multiple of 64 B)
    min_age_s: float = 7 * 24 * 3600.0     # a sealed segment is encoded once this old
    encode_rate_bytes_per_s: int = 100 * 1024**2  # segment bytes read per second, per node
    scan_interval_s: float = 60.0          # how often a coordinator looks for work
    fragment_timeout_ms: int = 5000        # one fragment read or write (then: rebuild / retry)
    # hedged fragment reads (ambry/warm/fetch.py): a window not answered within the p95 of
    # recent fragment reads (at least fragment_hedge_min_ms) is also rebuilt from k other
    # fragments, the first answer wins; a node whose read timed out is skipped (read around)
    # for fragment_suspect_s
    fragment_hedge_min_ms: int = 20
    fragment_suspect_s: float = 30.0
    # the encode job encodes a sealed segment only when the bytes its replicas would free
    # (whole 4 KiB pages inside payloads) exceed the fragment bytes it adds by this factor;
    # below it (small records) the segment stays replicated (ambry/warm/job.py worth_encoding)
    encode_min_gain_ratio: float = 1.2
    # repair (ambry/warm/repair.py): how often the first answering replica of a partition in a
    # datacenter checks the fragments of its encoded segments there and rebuilds what is
    # missing or damaged; scrub (ambry/storage/fraghealth.py): how often a node re-reads its
    # fragment files, and at most how fast
    repair_interval_s: float = 60.0
    scrub_interval_s: float = 24 * 3600.0
    scrub_bytes_per_s: int = 32 * 1024**2
    # compaction of encoded segments (ambry/warm/recode.py): the coordinator re-encodes an
    # encoded segment without its dead blobs (storage.compaction_retention_s applies) once
    # they hold at least this share of its bytes; the old fragments go when no replica
    # reads through them
    recode_min_reclaim_ratio: float = 0.25
    # a fragment node silent this long (no answer to the survey) has the encoded segments
    # with a fragment on it re-encoded onto a placement without it, when the datacenter has
    # a spare node (more than k + m); a node that comes back wiped, or is replaced under the
    # same id, is repaired in place instead (ambry/warm/repair.py)
    spare_rebuild_after_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.repair_interval_s <= 0 or self.scrub_interval_s <= 0 or \
                self.scrub_bytes_per_s <= 0:
            raise InvalidArgument("ec.repair_interval_s, ec.scrub_interval_s and "
                                  "ec.scrub_bytes_per_s must be > 0")
        if not 64 <= self.stripe_bytes <= 64 * 1024**2:
            raise InvalidArgument("ec.stripe_bytes must be in [64, 64MiB]")
        if self.min_age_s < 0 or self.scan_interval_s <= 0:
            raise InvalidArgument("ec.min_age_s must be >= 0 and ec.scan_interval_s > 0")
        if self.fragment_hedge_min_ms < 0 or self.fragment_suspect_s < 0 or \
                self.encode_min_gain_ratio < 1.0:
            raise InvalidArgument("ec.fragment_hedge_min_ms and ec.fragment_suspect_s must "
                                  "be >= 0, ec.encode_min_gain_ratio >= 1")
        if not 0 < self.recode_min_reclaim_ratio <= 1 or self.spare_rebuild_after_s < 0:
            raise InvalidArgument("ec.recode_min_reclaim_ratio must be in (0, 1], "
                                  "ec.spare_rebuild_after_s >= 0")
        if self.encode_rate_bytes_per_s <= 0 or self.fragment_timeout_ms <= 0:
            raise InvalidArgument("ec.encode_rate_bytes_per_s and ec.fragment_timeout_ms "
                                  "must be > 0")

    @classmethod
    def from_sections(cls, sections: Mapping[str, Any]) -> EcConfig:
        raw = dict(sections.get("ec") or {})
        for key in ("encode_rate_bytes_per_s", "scrub_bytes_per_s"):
            if key in raw:
                raw[key] = parse_size(raw[key])
        ec: EcConfig = _dataclass_from(cls, raw, "ec")
        return ec


@dataclass(frozen=True)
class PartitionConfig:
    id: int
    replicas: tuple[str, ...]
    capacity_bytes: int
    policy: EcPolicy | None = None  # None: replicated (the default)


@dataclass(frozen=True)
class ClusterMap:
    datacenters: tuple[Datacenter, ...]
    nodes: tuple[NodeConfig, ...]
    partitions: tuple[PartitionConfig, ...]
    # ``cluster.name_partitions``: the named blobs of a container live on one of the N lowest
    # partition ids (0 = all partitions). Pinned when partitions are added to a running
    # cluster: otherwise the hash would pick another partition and hide every existing name.
    name_partitions: int = 0

    def node(self, node_id: str) -> NodeConfig:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise InvalidArgument(f"unknown node {node_id!r}")

    def datacenter(self, name: str) -> Datacenter:
        for dc in self.datacenters:
            if dc.name == name:
                return dc
        raise InvalidArgument(f"unknown datacenter {name!r}")

    def datacenter_by_id(self, dc_id: int) -> Datacenter:
        for dc in self.datacenters:
            if dc.id == dc_id:
                return dc
        raise InvalidArgument(f"unknown datacenter id {dc_id}")

    def partition(self, partition_id: int) -> PartitionConfig:
        for p in self.partitions:
            if p.id == partition_id:
                return p
        raise InvalidArgument(f"unknown partition {partition_id}")

    def partitions_of(self, node_id: str) -> list[PartitionConfig]:
        return [p for p in self.partitions if node_id in p.replicas]

    def replicas_in(self, partition_id: int, datacenter: str) -> list[NodeConfig]:
        return [self.node(n) for n in self.partition(partition_id).replicas
                if self.node(n).datacenter == datacenter]

    @property
    def partition_ids(self) -> frozenset[int]:
        return frozenset(p.id for p in self.partitions)

    @property
    def name_partition_ids(self) -> tuple[int, ...]:
        """The partitions that hold named-blob records, ascending (see ``name_partitions``)."""
        ids = sorted(p.id for p in self.partitions)
        return tuple(ids[:self.name_partitions] if self.name_partitions else ids)


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    cluster_map: ClusterMap
    storage: StorageConfig = field(default_factory=StorageConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    frontends: tuple[FrontendEndpoint, ...] = ()
    accounts: tuple[Account, ...] = DEFAULT_ACCOUNTS
    data_root: Path = Path("data")
    sections: Mapping[str, Any] = field(default_factory=dict)  # replication, ...
    # how processes of one datacenter reach a node of another when not at its own address
    # (a gateway, NAT, or a test's fault-injecting proxy): {from_dc: {node_id: "host:port"}}
    cross_dc_routes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def address_of(self, node_id: str, from_datacenter: str) -> tuple[str, int]:
        """Where a process in ``from_datacenter`` connects to reach ``node_id``."""
        route = self.cross_dc_routes.get(from_datacenter, {}).get(node_id)
        if route is not None:
            host, _, port = route.rpartition(":")
            return host, int(port)
        n = self.cluster_map.node(node_id)
        return n.host, n.port

    def account(self, name: str) -> Account | None:
        for a in self.accounts:
            if a.name == name:
                return a
        return None

    def account_by_id(self, aid: int) -> Account | None:
        for a in self.accounts:
            if a.id == aid:
                return a
        return None

    def frontend_of(self, datacenter: str) -> FrontendEndpoint:
        for f in self.frontends:
            if f.datacenter == datacenter:
                return f
        raise InvalidArgument(f"no frontend configured for datacenter {datacenter!r}")

    def node_data_dir(self, node_id: str) -> Path:
        node = self.cluster_map.node(node_id)
        return self.data_root / (node.data_dir or node.id)


def _dataclass_from(cls: Any, raw: Mapping[str, Any] | None, where: str) -> Any:
    raw = dict(raw or {})
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise InvalidArgument(f"{where}: unknown keys {sorted(unknown)}")
    for f in fields(cls):
        if f.name in raw and f.name.endswith("_bytes"):
            raw[f.name] = parse_size(raw[f.name])
    try:
        return cls(**raw)
    except TypeError as e:
        raise InvalidArgument(f"{where}: {e}") from None


def _build_partitions(raw: Any, nodes: tuple[NodeConfig, ...], dcs: tuple[Datacenter, ...],
                      per_dc: int) -> tuple[PartitionConfig, ...]:
    node_ids = {n.id for n in nodes}
    if isinstance(raw, Mapping):
        count = int(raw.get("count", 0))
        capacity = parse_size(raw.get("capacity_bytes", "100GiB"))
        policy = _parse_policy(raw.get("policy"), "partitions")
        if count <= 0:
            raise InvalidArgument("partitions.count must be > 0")
        by_dc = {dc.name: [n.id for n in nodes if n.datacenter == dc.name] for dc in dcs}
        for name, members in by_dc.items():
            if len(members) < per_dc:
                raise InvalidArgument(f"datacenter {name} has {len(members)} nodes, "
                                      f"needs {per_dc} for replicas_per_datacenter")
        out = []
        for pid in range(count):
            replicas: list[str] = []
            for dc in dcs:
                members = by_dc[dc.name]
                replicas += [members[(pid + k) % len(members)] for k in range(per_dc)]
            out.append(PartitionConfig(pid, tuple(replicas), capacity, policy))
        return tuple(out)
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument("partitions must be a list or {count: N}")
    out = []
    seen = set()
    for p in raw:
        pid = int(p["id"])
        if pid in seen:
            raise InvalidArgument(f"partition {pid} listed twice")
        seen.add(pid)
        listed = tuple(str(r) for r in p["replicas"])
        missing = set(listed) - node_ids
        if missing:
            raise InvalidArgument(f"partition {pid} names unknown nodes {sorted(missing)}")
        if len(set(listed)) != len(listed):
            raise InvalidArgument(f"partition {pid} lists a node twice")
        out.append(PartitionConfig(pid, listed, parse_size(p.get("capacity_bytes", "100GiB")),
                                   _parse_policy(p.get("policy"), f"partition {pid}")))
    return tuple(out)


def _check_policies(partitions: tuple[PartitionConfig, ...], nodes: tuple[NodeConfig, ...],
                    dcs: tuple[Datacenter, ...]) -> None:
    for p in partitions:
        if p.policy is None:
            continue
        for dc in dcs:
            have = sum(1 for n in nodes if n.datacenter == dc.name)
            if have < p.policy.k + p.policy.m:
                raise InvalidArgument(f"partition {p.id}: policy ec k={p.policy.k} "
                                      f"m={p.policy.m} needs {p.policy.k + p.policy.m} nodes "
                                      f"in datacenter {dc.name}, it has {have}")


def _parse_accounts(raw: Any) -> tuple[Account, ...]:
    if not raw:
        return DEFAULT_ACCOUNTS
    out = []
    for a in raw:
        containers = tuple(Container(str(c["name"]), int(c["id"]))
                           for c in a.get("containers", []) or [])
        if len({c.id for c in containers}) != len(containers) or \
                len({c.name for c in containers}) != len(containers):
            raise InvalidArgument(f"account {a.get('name')}: container names and ids must be "
                                  f"unique")
        acc = Account(str(a["name"]), int(a["id"]), containers)
        if not (0 <= acc.id <= 0xFFFF) or any(not 0 <= c.id <= 0xFFFF for c in containers):
            raise InvalidArgument("account and container ids are u16")
        out.append(acc)
    if len({a.id for a in out}) != len(out) or len({a.name for a in out}) != len(out):
        raise InvalidArgument("account names and ids must be unique")
    return tuple(out)


def load_config(path: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None
                ) -> ClusterConfig:
    """Load and validate a cluster config file. ``data_root`` overrides ``data_dir``."""
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    return config_from_dict(raw, base_dir=Path(path).resolve().parent, data_root=data_root)


def config_from_dict(raw: Mapping[str, Any], base_dir: Path | None = None,
                     data_root: str | os.PathLike[str] | None = None) -> ClusterConfig:
    cluster = raw.get("cluster", {}) or {}
    dcs = tuple(Datacenter(str(d["name"]), int(d["id"])) for d in raw.get("datacenters", []))
    if not dcs:
        raise InvalidArgument("config needs at least one datacenter")
    if len({d.id for d in dcs}) != len(dcs) or len({d.name for d in dcs}) != len(dcs):
        raise InvalidArgument("datacenter names and ids must be unique")
    nodes = tuple(_dataclass_from(NodeConfig, n, "nodes[]") for n in raw.get("nodes", []))
    if len({n.id for n in nodes}) != len(nodes):
        raise InvalidArgument("node ids must be unique")
    dc_names = {d.name for d in dcs}
    for n in nodes:
        if n.datacenter not in dc_names:
            raise InvalidArgument(f"node {n.id} names unknown datacenter {n.datacenter}")
    per_dc = int(cluster.get("replicas_per_datacenter", 3))
    partitions = _build_partitions(raw.get("partitions"), nodes, dcs, per_dc)
    _check_policies(partitions, nodes, dcs)
    EcConfig.from_sections(raw)  # a bad ec section fails at load, not when a job starts
    name_partitions = int(cluster.get("name_partitions", 0) or 0)
    if not 0 <= name_partitions <= len(partitions):
        raise InvalidArgument(f"cluster.name_partitions must be in [0, {len(partitions)}] "
                              f"(the number of partitions)")
    storage = _dataclass_from(StorageConfig, raw.get("storage"), "storage")
    frontend = _dataclass_from(FrontendConfig, raw.get("frontend"), "frontend")
    frontends = tuple(_dataclass_from(FrontendEndpoint, f, "frontends[]")
                      for f in raw.get("frontends", []) or [])
    for f in frontends:
        if f.datacenter not in dc_names:
            raise InvalidArgument(f"frontend names unknown datacenter {f.datacenter}")
    accounts = _parse_accounts(raw.get("accounts"))
    root = Path(data_root) if data_root is not None else Path(raw.get("data_dir", "data"))
    if not root.is_absolute() and data_root is None:
        root = Path.cwd() / root
    sections = {k: v for k, v in raw.items()
                if k not in ("cluster", "datacenters", "nodes", "partitions", "storage",
                             "data_dir", "frontend", "frontends", "accounts",
                             "cross_dc_routes")}
    routes = {str(dc): {str(n): str(a) for n, a in (m or {}).items()}
              for dc, m in (raw.get("cross_dc_routes") or {}).items()}
    for dc, m in routes.items():
        if dc not in dc_names:
            raise InvalidArgument(f"cross_dc_routes names unknown datacenter {dc}")
        for nid, addr in m.items():
            if nid not in {n.id for n in nodes} or not addr.rpartition(":")[2].isdigit():
                raise InvalidArgument(f"cross_dc_routes: bad route {nid}: {addr}")
    return ClusterConfig(
        name=str(cluster.get("name", "ambry")),
        cluster_map=ClusterMap(dcs, nodes, partitions, name_partitions),
        storage=storage,
        frontend=frontend,
        frontends=frontends,
        accounts=accounts,
        data_root=root,
        cross_dc_routes=routes,
        sections=sections,
    )
