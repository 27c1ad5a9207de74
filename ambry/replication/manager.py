"""The replication component of a storage node: pull records from peer replicas, apply them.

Owns, per peer *node*, one worker that asks the peer for the records after this node's tokens
of every partition the two share (one batched, long-polling request: an idle cluster costs a
request per ``long_poll_ms`` per peer, not a spin), fetches the blobs missing here, folds
deletes / TTL updates / undeletes / name records in by the conflict rules, waits until what it
appended is durable, and only then stores the new tokens. Re-applying a batch is harmless:
puts of blobs already here are skipped, state records only append when they change the merged
state, name records only when newer. Also owns lag accounting (bytes and seconds behind per
partition and peer), the rebuild of a new or wiped replica (it answers "unavailable" instead of
"not found" until it has caught up), and the rate-limited scrubber that re-reads sealed
segments and repairs damaged records from a peer.

Does not own the wire (``ambry.protocol``), the storage semantics (``ambry.storage.replica``)
or which peers to pull from (``planner``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ambry.common.blobid import BlobId
from ambry.common.config import ClusterConfig, parse_size
from ambry.common.errors import (
    AmbryError,
    BlobAlreadyExists,
    BlobDeleted,
    BlobExpired,
    BlobNotFound,
    DataCorrupt,
    InvalidArgument,
    PartitionReadOnly,
)
from ambry.replication.planner import plan_pulls
from ambry.replication.tokens import TokenStore
from ambry.storage.format import RecordType
from ambry.storage.names import NameEntry
from ambry.storage.replica import Entry, Replica

__all__ = ["LagRow", "PeerLink", "ReplicationConfig", "ReplicationManager", "attach"]

log = logging.getLogger(__name__)

Token = tuple[bytes, int]
Position = tuple[int, int]
RunIO = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ReplicationConfig:
    """The ``replication:`` section of the cluster config."""

    enabled: bool = True
    batch_max_entries: int = 1000
    batch_max_bytes: int = 4 * 1024 * 1024
    long_poll_ms: int = 2000          # a peer holds an empty request this long
    standby_wait_s: float = 30.0      # before another replica takes over cross-DC pulls
    backoff_max_s: float = 10.0       # retry interval for an unreachable peer, at most
    request_timeout_ms: int = 30_000
    scrub_interval_s: float = 3600.0  # one pass over the sealed segments per interval
    scrub_bytes_per_s: int = 32 * 1024 * 1024

    @classmethod
    def from_sections(cls, sections: Mapping[str, Any]) -> ReplicationConfig:
        raw = dict(sections.get("replication") or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise InvalidArgument(f"replication: unknown keys {sorted(unknown)}")
        for k in list(raw):
            if k.endswith(("_bytes", "_bytes_per_s")):
                raw[k] = parse_size(raw[k])
        return cls(**raw)


class PeerLink(Protocol):
    """What replication needs from a peer node (``NodeClient`` provides it)."""

    async def replicate(self, requests: list[tuple[int, Token | None]], *, max_entries: int,
                        max_bytes: int, wait_ms: int, rid: str | None = None
                        ) -> list[tuple[int, list[dict[str, Any]], Token, int]]: ...

    async def get(self, blob_id: BlobId | bytes, *, include_deleted: bool = False,
                  include_expired: bool = False) -> Any: ...


@dataclass
class LagRow:
    partition: int
    peer: str
    cross_dc: bool
    lag_bytes: int = -1        # -1: not known yet (never reached the peer)
    lag_seconds: float = -1.0
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    records_applied: int = 0
    errors: int = 0
    last_success_s: float = 0.0
    caught_up_once: bool = False


@dataclass
class _PeerState:
    down_since: float = 0.0  # monotonic time of the first failure in a row; 0 = up
    backoff_s: float = 0.0


class ReplicationManager:
    def __init__(self, node_id: str, config: ClusterConfig, replicas: Mapping[int, Replica],
                 run_io: RunIO, link_for: Callable[[str], PeerLink], tokens: TokenStore,
                 rcfg: ReplicationConfig | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 now_ms: Callable[[], int] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.node_id = node_id
        self.config = config
        self.cmap = config.cluster_map
        self.replicas = replicas
        self.run_io = run_io
        self.link_for = link_for
        self.tokens = tokens
        self.rcfg = rcfg or ReplicationConfig.from_sections(config.sections)
        self.monotonic = monotonic
        self.now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.on_change = on_change  # called when records were appended (wakes long-polls)
        self.dc_of = {n.id: n.datacenter for n in self.cmap.nodes}
        self.peers: dict[str, _PeerState] = {}
        self.lag: dict[tuple[int, str], LagRow] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.on_stop: Callable[[], Any] | None = None  # may return an awaitable
        # (partition, blob key) -> the fetch of that missing PUT now running, resolving to the
        # end of the record it appended (None if it failed). Every peer that has a blob lists
        # its PUT; without this, the loops of 2-3 peers that list it at the same moment
        # each fetched it (the bytes crossed the DC link 2-3 times).
        self._inflight: dict[tuple[int, bytes], asyncio.Future[Position | None]] = {}
        for pid in replicas:
            for peer in self.cmap.partition(pid).replicas:
                if peer != node_id:
                    self.peers.setdefault(peer, _PeerState())
                    self.lag[(pid, peer)] = LagRow(pid, peer,
                                                   self.dc_of[peer] != self.dc_of[node_id])
        for pid, rep in replicas.items():
            if self.rcfg.enabled and rep.created_fresh and \
                    len(self.cmap.partition(pid).replicas) > 1:
                rep.rebuilding = True
                log.info("replica %d is new: rebuilding from its peers", pid)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if not self.rcfg.enabled:
            return
        for peer in sorted(self.peers):
            self._tasks.append(asyncio.ensure_future(self._peer_loop(peer)))
        if self.rcfg.scrub_interval_s > 0:
            self._tasks.append(asyncio.ensure_future(self._scrub_loop()))

    async def stop(self) -> None:
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.on_stop is not None:
            res = self.on_stop()
            if inspect.isawaitable(res):
                await res

    # ------------------------------------------------------------------ planning
    def _down_for(self, node: str) -> float:
        st = self.peers.get(node)
        if st is None or not st.down_since:
            return 0.0
        return self.monotonic() - st.down_since

    def partitions_to_pull(self, peer: str) -> list[int]:
        out = []
        for pid in sorted(self.replicas):
            part = self.cmap.partition(pid)
            if peer not in part.replicas:
                continue
            plan = plan_pulls(self.node_id, part.replicas, self.dc_of, self._down_for,
                              self.rcfg.standby_wait_s)
            if peer in plan.cross_dc and self.replicas[pid].rebuilding and \
                    any(not self._down_for(p) for p in plan.intra_dc):
                # A rebuilding replica copies everything: from its own datacenter first, so
                # the whole partition does not cross the DC link; cross-DC pulls resume as
                # soon as the rebuild is done.
                continue
            if peer in plan.intra_dc or peer in plan.cross_dc:
                out.append(pid)
        return out

    # ------------------------------------------------------------------ the pull loop
    async def _peer_loop(self, peer: str) -> None:
        st = self.peers[peer]
        link = self.link_for(peer)
        while not self._stopping.is_set():
            pids = self.partitions_to_pull(peer)
            if not pids:
                await self._sleep(1.0)
                continue
            reqs = [(pid, self.tokens.get(pid, peer, self.replicas[pid].incarnation))
                    for pid in pids]
            try:
                results = await link.replicate(
                    reqs, max_entries=self.rcfg.batch_max_entries,
                    max_bytes=self.rcfg.batch_max_bytes, wait_ms=self.rcfg.long_poll_ms)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure: the peer is down for us
                # (AmbryError/OSError/TimeoutError are the expected ones; anything else, e.g.
                # a malformed reply, must not end this loop for good either)
                if not isinstance(e, (AmbryError, OSError, TimeoutError)):
                    log.exception("replicate request to %s failed unexpectedly", peer)
                if not st.down_since:
                    st.down_since = self.monotonic()
                    log.info("replication from %s paused: %s", peer, e)
                for pid in pids:
                    self.lag[(pid, peer)].errors += 1
                st.backoff_s = min(self.rcfg.backoff_max_s, max(0.25, st.backoff_s * 2))
                await self._sleep(st.backoff_s * random.uniform(0.8, 1.2))
                continue
            if st.down_since:
                log.info("replication from %s resumed", peer)
            st.down_since, st.backoff_s = 0.0, 0.0
            for pid, entries, token, remaining in results:
                if pid not in self.replicas:
                    continue
                try:
                    await self._apply(peer, link, pid, entries, token, remaining)
                except asyncio.CancelledError:
                    raise
                except PartitionReadOnly as e:
                    self.lag[(pid, peer)].errors += 1
                    log.warning("replica %d cannot take records from %s: %s", pid, peer, e)
                except Exception as e:  # retried from the same token
                    self.lag[(pid, peer)].errors += 1
                    if isinstance(e, (AmbryError, OSError, TimeoutError)):
                        log.warning("applying records of partition %d from %s failed: %r",
                                    pid, peer, e)
                    else:
                        log.exception("applying records of partition %d from %s failed",
                                      pid, peer)
                    await self._sleep(0.5)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _apply(self, peer: str, link: PeerLink, pid: int, raw_entries: list[dict[str, Any]],
                     token: Token, remaining: int) -> None:
        rep = self.replicas[pid]
        row = self.lag[(pid, peer)]
        appended: Any = None
        waits: list[Any] = []
        last_time_ms = 0
        for raw in raw_entries:
            e = Entry.from_wire(raw)
            last_time_ms = e.time_ms
            if e.type == RecordType.PUT:
                if rep.has_put(e.key):
                    continue
                end = await self._fetch_put_once(link, rep, e, row)
                if end is not None and (appended is None or end > appended):
                    appended = end
            elif e.type.is_blob:
                res = await self.run_io(rep.apply_state, BlobId.from_bytes(e.key), e.type,
                                        e.life_version, e.state_flags, e.time_ms)
                if res.status == "applied":
                    if appended is None or res.end > appended:
                        appended = res.end
                    row.records_applied += 1
            else:
                entry = NameEntry.from_record(e.key, e.time_ms,
                                              e.type == RecordType.NAME_DELETE, e.props)
                fut = await self.run_io(rep.name_apply, entry)
                if fut is not None:
                    waits.append(asyncio.wrap_future(fut))
                    row.records_applied += 1
        if appended is not None:
            await asyncio.wrap_future(rep.durable_future(appended))
        if waits:
            await asyncio.gather(*waits)
        if (appended is not None or waits) and self.on_change is not None:
            self.on_change()
        # the records this token covers are durable here: now the token may move
        self.tokens.put(pid, peer, rep.incarnation, token)
        row.lag_bytes = remaining
        row.last_success_s = time.time()
        if remaining == 0:
            row.lag_seconds = 0.0
            row.caught_up_once = True
            self._maybe_end_rebuild(pid)
        elif last_time_ms:
            row.lag_seconds = max(0.0, (self.now_ms() - last_time_ms) / 1000)

    async def _fetch_put_once(self, link: PeerLink, rep: Replica, e: Entry, row: LagRow
                              ) -> Position | None:
        """Fetch a missing PUT from this peer unless another peer's loop is fetching it right
        now; then wait for that one, and fetch here only if it failed."""
        key = (rep.partition_id, e.key)
        while True:
            running = self._inflight.get(key)
            if running is None:
                break
            end = await asyncio.shield(running)
            if rep.has_put(e.key):
                return end
        fut: asyncio.Future[Position | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        end = None
        try:
            end = await self._fetch_put(link, rep, e, row)
        finally:
            del self._inflight[key]
            fut.set_result(end)  # waiters check has_put and fetch themselves when it failed
        return end

    async def _fetch_put(self, link: PeerLink, rep: Replica, e: Entry, row: LagRow
                         ) -> Position | None:
        bid = BlobId.from_bytes(e.key)
        try:
            reply = await link.get(bid, include_deleted=True, include_expired=True)
            async with reply:
                data = await reply.read()
        except (BlobNotFound, BlobDeleted, BlobExpired):
            return None  # compacted away at the peer; its state records still come
        except DataCorrupt as err:
            # The peer's copy is damaged (its scrubber repairs it; a repaired copy is a new
            # record that comes later). Skip it: retrying here forever stalled replication of
            # the whole partition from this peer; the other replicas still have good copies.
            row.errors += 1
            log.warning("partition %d: peer copy of blob %s is damaged, skipped: %s",
                        rep.partition_id, bid, err.message)
            return None
        try:
            res = await self.run_io(rep.put, bid, reply.properties, reply.user_metadata, data)
        except BlobAlreadyExists:
            row.errors += 1
            log.error("partition %d: blob %s differs between this replica and its peer",
                      rep.partition_id, bid)
            return None
        row.blobs_fetched += 1
        row.bytes_fetched += len(data)
        row.records_applied += 1
        return res.end  # type: ignore[no-any-return]

    def _maybe_end_rebuild(self, pid: int) -> None:
        rep = self.replicas[pid]
        if not rep.rebuilding:
            return
        mine = self.dc_of[self.node_id]
        peers = [p for p in self.cmap.partition(pid).replicas if p != self.node_id]
        local = [p for p in peers if self.dc_of[p] == mine] or peers
        reachable = [p for p in local if not self.peers[p].down_since]
        if reachable and all(self.lag[(pid, p)].caught_up_once for p in reachable):
            rep.rebuilding = False
            log.info("replica %d caught up with its peers: rebuild complete", pid)

    # ------------------------------------------------------------------ status
    def status(self) -> list[dict[str, Any]]:
        return [{"partition": r.partition, "peer": r.peer, "cross_dc": r.cross_dc,
                 "lag_bytes": r.lag_bytes, "lag_seconds": round(r.lag_seconds, 3),
                 "blobs_fetched": r.blobs_fetched, "bytes_fetched": r.bytes_fetched,
                 "records_applied": r.records_applied, "errors": r.errors,
                 "pulling": r.peer in self._pulling_from(r.partition),
                 "peer_down_s": round(self._down_for(r.peer), 1)}
                for r in sorted(self.lag.values(), key=lambda r: (r.partition, r.peer))]

    def _pulling_from(self, pid: int) -> set[str]:
        part = self.cmap.partition(pid)
        plan = plan_pulls(self.node_id, part.replicas, self.dc_of, self._down_for,
                          self.rcfg.standby_wait_s)
        return set(plan.intra_dc) | set(plan.cross_dc)

    # ------------------------------------------------------------------ scrubber
    async def _scrub_loop(self) -> None:
        await self._sleep(self.rcfg.scrub_interval_s * random.uniform(0.1, 0.3))
        while not self._stopping.is_set():
            for pid in sorted(self.replicas):
                try:
                    await self.scrub(pid)
                except asyncio.CancelledError:
                    raise
                except (AmbryError, OSError) as e:
                    log.warning("scrub of partition %d failed: %r", pid, e)
            await self._sleep(self.rcfg.scrub_interval_s)

    async def scrub(self, pid: int) -> int:
        """Re-read the sealed segments of one replica (rate-limited) and repair every damaged
        PUT record from a peer. Returns the number of records repaired."""
        rep = self.replicas[pid]
        damaged = await self.run_io(rep.scrub_sealed, self.rcfg.scrub_bytes_per_s)
        repaired = 0
        peers = [p for p in self.cmap.partition(pid).replicas if p != self.node_id]
        peers.sort(key=lambda p: (self.dc_of[p] != self.dc_of[self.node_id], p))
        for blob_key, body_xxh3 in damaged:
            bid = BlobId.from_bytes(blob_key)
            for peer in peers:
                try:
                    reply = await self.link_for(peer).get(bid, include_deleted=True,
                                                          include_expired=True)
                    async with reply:
                        data = await reply.read()
                    ok = await self.run_io(rep.repair_put, bid, reply.properties,
                                           reply.user_metadata, data, body_xxh3)
                except (AmbryError, OSError, TimeoutError):
                    continue
                if ok:
                    repaired += 1
                    break
        return repaired



def attach(node: Any) -> ReplicationManager:
    """Build the replication component of a ``StorageNode`` (the CLI plugs this in).

    Replication has its own clients to the peers, built with the ``replication:`` timeouts
    (the node's shared links have fixed ones: ``request_timeout_ms`` was ignored, so a peer
    behind a link that drops packets held a pull for 30 s whatever the config said)."""
    from ambry.protocol.client import NodeClient
    from ambry.storage.node import StorageNode

    assert isinstance(node, StorageNode)
    rcfg = ReplicationConfig.from_sections(node.cfg.sections)
    tokens = TokenStore(str(node.data_dir / "replication-tokens"))
    links: dict[str, NodeClient] = {}

    def link_for(peer: str) -> PeerLink:
        c = links.get(peer)
        if c is None:
            host, port = node.cfg.address_of(peer, node.node.datacenter)
            c = links[peer] = NodeClient(
                host, port, pool_size=2,
                connect_timeout_ms=min(2000, rcfg.request_timeout_ms),
                request_timeout_ms=rcfg.request_timeout_ms)
        return c

    async def close() -> None:
        for c in list(links.values()):
            await c.close()
        tokens.close()

    mgr = ReplicationManager(node.node_id, node.cfg, node.replicas, node.run_io, link_for,
                             tokens, rcfg=rcfg, now_ms=node.clock.now_ms,
                             on_change=node.notify_change)
    mgr.on_stop = close
    return mgr
