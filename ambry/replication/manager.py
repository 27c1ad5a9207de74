"""The replication component of a storage node: pull records from peer replicas, apply them.

Owns, per peer *node*, one worker that asks the peer for the records after this node's tokens
of every partition the two share (one batched, long-polling request: an idle cluster costs a
request per ``long_poll_ms`` per peer, not a spin), fetches the blobs missing here (up to
``fetch_concurrency`` at once per peer, and each blob once per node even when several peers list
it at the same moment), folds deletes / TTL updates / undeletes / name records in by the
conflict rules, waits until every record the batch covers is durable here, and only then stores
the new tokens. A peer whose replica of one partition is unavailable still serves the others.
Re-applying a batch is harmless: puts of blobs already here are skipped, state records only
append when they change the merged state, name records only when newer. Also owns lag accounting (bytes and seconds behind per
partition and peer), the rebuild of a new or wiped replica (it answers "unavailable" instead of
"not found" until it has caught up), and the rate-limited scrubber that re-reads sealed
segments and repairs damaged records from a peer.

Does not own the wire (``ambry.protocol``), the storage semantics (it sees each replica only
as an ``ambry.storage.api.ReplicaStore``, handed over in a ``ReplicationHost``: never the node)
which peers to pull from (``planner``) nor its config (``config``).

One job in one file, a little over 600 lines: the pull loop, what it applies and the
bookkeeping that loop alone updates (peer and partition backoff, lag rows, rebuild state,
in-flight fetches) share their state; the scrubber is the one part apart, kept here because
it repairs through the same peers and I/O runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ambry.common.blobid import BlobId
from ambry.common.config import ClusterConfig
from ambry.common.errors import (
    AmbryError,
    BlobAlreadyExists,
    BlobDeleted,
    BlobExpired,
    BlobNotFound,
    DataCorrupt,
    PartitionReadOnly,
    ReplicaUnavailable,
)
from ambry.replication.config import ReplicationConfig
from ambry.replication.planner import PullPlan, fetch_wait_s, plan_pulls
from ambry.replication.tokens import TokenStore
from ambry.storage.api import (
    Entry,
    Position,
    RecordType,
    ReplicaStore,
    ReplicationHost,
    RunIO,
    Token,
    name_of,
)

__all__ = ["LagRow", "PeerLink", "ReplicationManager", "attach"]

log = logging.getLogger(__name__)



class PeerLink(Protocol):
    """What replication needs from a peer node (``NodeClient`` provides it)."""

    async def replicate(self, requests: list[tuple[int, Token | None]], *, max_entries: int,
                        max_bytes: int, wait_ms: int, rid: str | None = None,
                        confirmed_on: Mapping[int, bytes] | None = None, hold_ms: int = 0,
                        hold_dc: int | None = None
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
    reached: bool = False  # answered at least once since this node started


class ReplicationManager:
    def __init__(self, node_id: str, config: ClusterConfig, replicas: Mapping[int, ReplicaStore],
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
        # set (and replaced) each time a fetched PUT is stored: a standby waiting for a blob
        # to come from its own datacenter looks again
        self._put_stored = asyncio.Event()
        # (peer, partition) -> since when / until when the peer's replica of that partition
        # answered REPLICA_UNAVAILABLE (failed to open, ...). The peer node itself is up: its
        # other partitions are still pulled, and for this one it counts as down (so a standby
        # takes over its cross-DC pulls).
        self._part_down_since: dict[tuple[str, int], float] = {}
        self._part_retry_at: dict[tuple[str, int], float] = {}
        self._part_failures: dict[tuple[str, int], int] = {}
        # (peer, partition) -> until when applying from that peer is paused after a local
        # failure (read-only replica, a failed fetch), so the loop neither spins nor stalls
        # the peer's other partitions
        self._apply_hold_until: dict[tuple[str, int], float] = {}
        self._started = False
        self._track(replicas)

    def _track(self, replicas: Mapping[int, ReplicaStore]) -> list[str]:
        """Lag rows and peers for ``replicas``; a fresh replica rebuilds from its peers.
        Returns the peers not known before."""
        new_peers = []
        for pid, rep in replicas.items():
            members = self.cmap.partition(pid).replicas
            for peer in members:
                if peer == self.node_id:
                    continue
                if peer not in self.peers:
                    self.peers[peer] = _PeerState()
                    new_peers.append(peer)
                self.lag.setdefault((pid, peer), LagRow(
                    pid, peer, self.dc_of[peer] != self.dc_of[self.node_id]))
            if self.rcfg.enabled and rep.created_fresh and len(members) > 1:
                rep.rebuilding = True
                log.info("replica %d is new: rebuilding from its peers", pid)
        return new_peers

    def on_map_change(self, config: ClusterConfig, added: Mapping[int, ReplicaStore]) -> None:
        """The node adopted a grown cluster map (``ambry.common.mapchange``: nothing the old
        map said changed) and opened ``added``. Called before they appear in the node's
        replica mapping: their lag rows and peers must exist first. The loops of known peers
        pick the new partitions up on their next request; new peers get a loop."""
        self.config = config
        self.cmap = config.cluster_map
        self.dc_of = {n.id: n.datacenter for n in self.cmap.nodes}
        new_peers = self._track(added)
        if self._started and not self._stopping.is_set():
            for peer in sorted(new_peers):
                self._tasks.append(asyncio.ensure_future(self._peer_loop(peer)))
        if added:
            log.info("replicating new partitions %s (new peers: %s)", sorted(added),
                     sorted(new_peers) or "none")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if not self.rcfg.enabled:
            return
        self._started = True
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

    def _down_in(self, pid: int) -> Callable[[str], float]:
        """How long each node has been unable to serve partition ``pid`` (node down, or its
        replica of the partition unavailable)."""
        def down(node: str) -> float:
            since = self._part_down_since.get((node, pid))
            part = self.monotonic() - since if since else 0.0
            return max(self._down_for(node), part)
        return down

    def _plan(self, pid: int) -> PullPlan:
        return plan_pulls(self.node_id, self.cmap.partition(pid).replicas, self.dc_of,
                          self._down_in(pid), self.rcfg.standby_fetch_delay_ms / 1000)

    def partitions_to_pull(self, peer: str) -> list[int]:
        out = []
        now = self.monotonic()
        for pid in sorted(self.replicas):
            if peer not in self.cmap.partition(pid).replicas:
                continue
            if self._part_retry_at.get((peer, pid), 0.0) > now or \
                    self._apply_hold_until.get((peer, pid), 0.0) > now:
                continue  # the peer's replica is unavailable, or applying failed: later
            plan = self._plan(pid)
            if peer in plan.cross_dc and self.replicas[pid].rebuilding and \
                    any(not self._down_in(pid)(p) for p in plan.intra_dc):
                # A rebuilding replica copies everything: from its own datacenter first, so
                # the whole partition does not cross the DC link; cross-DC pulls resume as
                # soon as the rebuild is done.
                continue
            if peer in plan.intra_dc or peer in plan.cross_dc:
                out.append(pid)
        return out

    def _next_hold_s(self) -> float:
        """Seconds until the first paused (peer, partition) may be pulled again."""
        now = self.monotonic()
        waits = [t - now for t in (*self._part_retry_at.values(),
                                   *self._apply_hold_until.values()) if t > now]
        return max(0.05, min(waits, default=1.0))

    def _partition_unavailable(self, peer: str, pid: int, err: AmbryError) -> None:
        key = (peer, pid)
        now = self.monotonic()
        if key not in self._part_down_since:
            self._part_down_since[key] = now
            log.warning("replica of partition %d on %s is unavailable; pulling the other "
                        "partitions from it meanwhile: %s", pid, peer, err.message)
        n = self._part_failures[key] = self._part_failures.get(key, 0) + 1
        self._part_retry_at[key] = now + min(self.rcfg.backoff_max_s, 0.25 * 2 ** n)
        self.lag[(pid, peer)].errors += 1

    def _partition_ok(self, peer: str, pid: int) -> None:
        key = (peer, pid)
        if self._part_down_since.pop(key, None) is not None:
            log.info("replica of partition %d on %s is available again", pid, peer)
        self._part_retry_at.pop(key, None)
        self._part_failures.pop(key, None)

    def pull_filter(self, peer: str, pids: list[int]) -> dict[str, Any]:
        """The ``replicate`` arguments that spare this node the PUTs it already acked to a
        frontend (``ambry.storage.confirms``): for an intra-DC peer only, naming each local
        replica's incarnation (a wiped replica has a new one, and gets everything)."""
        mine = self.dc_of[self.node_id]
        # only fsync'd acks name an incarnation: under page-cache nothing is ever confirmed,
        # and asking would only have the peer hold young records back for nothing
        if not self.rcfg.skip_confirmed or self.dc_of.get(peer) != mine or \
                self.config.storage.durability != "fsync":
            return {}
        return {"confirmed_on": {pid: self.replicas[pid].incarnation for pid in pids},
                "hold_ms": self.rcfg.confirm_hold_ms,
                "hold_dc": self.cmap.datacenter(mine).id}

    async def _probe_each(self, peer: str, link: PeerLink,
                          reqs: list[tuple[int, Token | None]]
                          ) -> list[tuple[int, list[dict[str, Any]], Token, int]]:
        """A batched pull failed with REPLICA_UNAVAILABLE: one of the peer's replicas cannot
        serve, which fails the whole batch. Ask partition by partition (no long poll) to learn
        which, and keep the answers of the others."""
        out = []
        for pid, tok in reqs:
            try:
                out += await link.replicate([(pid, tok)], max_entries=self.rcfg.batch_max_entries,
                                            max_bytes=self.rcfg.batch_max_bytes, wait_ms=0,
                                            **self.pull_filter(peer, [pid]))
            except ReplicaUnavailable as e:
                self._partition_unavailable(peer, pid, e)
            else:
                self._partition_ok(peer, pid)
        return out

    # ------------------------------------------------------------------ the pull loop
    async def _peer_loop(self, peer: str) -> None:
        st = self.peers[peer]
        link = self.link_for(peer)
        slots = asyncio.Semaphore(max(1, self.rcfg.fetch_concurrency))  # blob fetches at once
        while not self._stopping.is_set():
            pids = self.partitions_to_pull(peer)
            if not pids:
                await self._sleep(min(1.0, self._next_hold_s()))
                continue
            reqs = [(pid, self.tokens.get(pid, peer, self.replicas[pid].incarnation))
                    for pid in pids]
            # a rebuilding replica that has not heard this peer out yet must not wait in its
            # long poll: with nothing to send (a fresh cluster) the peer held the request for
            # long_poll_ms, and the replica said "unavailable" (the frontends: not ready) that
            # much longer. Once caught up with the peer, the long poll is used again.
            first_pass = any(self.replicas[p].rebuilding and not self.lag[(p, peer)].caught_up_once
                             for p in pids)
            try:
                try:
                    results = await link.replicate(
                        reqs, max_entries=self.rcfg.batch_max_entries,
                        max_bytes=self.rcfg.batch_max_bytes,
                        wait_ms=0 if first_pass else self.rcfg.long_poll_ms,
                        **self.pull_filter(peer, pids))
                except ReplicaUnavailable:
                    # before: the whole peer counted as down, and every partition it shares
                    # with this node stopped replicating from it
                    results = await self._probe_each(peer, link, reqs)
                else:
                    for pid in pids:
                        self._partition_ok(peer, pid)
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
                # a peer never reached yet is most likely still starting (a fresh cluster):
                # retry it often, or fresh replicas stayed "rebuilding", and the frontends
                # unready, for up to 8 s after the last node had started
                cap_s = self.rcfg.backoff_max_s if st.reached else 0.5
                st.backoff_s = min(cap_s, self.rcfg.backoff_max_s,
                                   max(0.25, st.backoff_s * 2))
                await self._sleep(st.backoff_s * random.uniform(0.8, 1.2))
                continue
            if st.down_since:
                log.info("replication from %s resumed", peer)
            st.down_since, st.backoff_s, st.reached = 0.0, 0.0, True
            # the partitions of one answer are applied side by side (their missing blobs
            # share the peer's fetch slots), not one after the other
            await asyncio.gather(*(self._apply_guarded(peer, link, pid, entries, token,
                                                       remaining, slots)
                                   for pid, entries, token, remaining in results
                                   if pid in self.replicas))

    async def _apply_guarded(self, peer: str, link: PeerLink, pid: int,
                             entries: list[dict[str, Any]], token: Token, remaining: int,
                             slots: asyncio.Semaphore) -> None:
        """``_apply``; a failure pauses this (peer, partition) briefly and is counted."""
        try:
            await self._apply(peer, link, pid, entries, token, remaining, slots)
        except asyncio.CancelledError:
            raise
        except PartitionReadOnly as e:
            # before: no pause at all, so the peer answered the same batch at once, again
            # and again (a busy loop for as long as the replica was full)
            self.lag[(pid, peer)].errors += 1
            self._apply_hold_until[(peer, pid)] = self.monotonic() + self.rcfg.backoff_max_s
            log.warning("replica %d cannot take records from %s: %s", pid, peer, e)
        except Exception as e:  # retried from the same token, a little later
            self.lag[(pid, peer)].errors += 1
            self._apply_hold_until[(peer, pid)] = self.monotonic() + \
                min(0.5, self.rcfg.backoff_max_s)
            if isinstance(e, (AmbryError, OSError, TimeoutError)):
                log.warning("applying records of partition %d from %s failed: %r",
                            pid, peer, e)
            else:
                log.exception("applying records of partition %d from %s failed", pid, peer)
        else:
            self._apply_hold_until.pop((peer, pid), None)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _apply(self, peer: str, link: PeerLink, pid: int, raw_entries: list[dict[str, Any]],
                     token: Token, remaining: int, slots: asyncio.Semaphore | None = None
                     ) -> None:
        """Fold one batch of a peer's records into the local replica, then move the token.
        ``slots`` bounds the blob fetches running at once (shared by a peer's partitions)."""
        rep = self.replicas[pid]
        row = self.lag[(pid, peer)]
        # every record of the batch is durable here up to ``need`` (appended by this batch,
        # or already present: maybe appended a moment ago by another peer's loop and not yet
        # durable), and whether this batch appended anything (wakes the peers' long polls)
        need: Position | None = None
        changed = False
        waits: list[Any] = []
        fetches: list[asyncio.Future[tuple[Position | None, bool]]] = []
        if slots is None:
            slots = asyncio.Semaphore(max(1, self.rcfg.fetch_concurrency))
        last_time_ms = 0
        # a standby lets a remote blob come from its own datacenter first (planner.py)
        delay_s = self._plan(pid).fetch_delay_s if row.cross_dc else 0.0

        async def fetch(e: Entry) -> tuple[Position | None, bool]:
            if delay_s:
                age_s = (self.now_ms() - e.time_ms) / 1000
                await self._await_local_copy(rep, e.key, fetch_wait_s(delay_s, age_s))
            async with slots:
                return await self._fetch_put_once(link, rep, e, row)

        try:
            for raw in raw_entries:
                e = Entry.from_wire(raw)
                last_time_ms = e.time_ms
                if e.type == RecordType.PUT:
                    # missing blobs are fetched a few at a time while the batch goes on: the
                    # conflict rule makes the order of a blob's records irrelevant (a delete
                    # applied before its put leaves a tombstone the put then stays under)
                    end = rep.put_end(e.key)
                    if end is None:
                        fetches.append(asyncio.ensure_future(fetch(e)))
                    else:
                        need = max(need or end, end)
                elif e.type == RecordType.EC_SEGMENT:
                    # a segment encoded somewhere: the record replicates like any other
                    # (ambry/storage/ecstate.py); every replica learns where blobs went
                    end = await self.run_io(rep.ec_apply, e.key, e.props)
                    need = max(need or end, end)
                    changed = True
                elif e.type.is_blob:
                    res = await self.run_io(rep.apply_state, BlobId.from_bytes(e.key), e.type,
                                            e.life_version, e.state_flags, e.time_ms)
                    need = max(need or res.end, res.end)
                    if res.status == "applied":
                        changed = True
                        row.records_applied += 1
                else:
                    fut = await self.run_io(rep.name_apply, name_of(e))
                    if fut is not None:  # (a name already in the view is durable)
                        waits.append(asyncio.wrap_future(fut))
                        changed = True
                        row.records_applied += 1
            for end, fetched in await asyncio.gather(*fetches):
                changed = changed or fetched
                if end is not None:
                    need = max(need or end, end)
        except BaseException:
            for f in fetches:
                f.cancel()
            await asyncio.gather(*fetches, return_exceptions=True)
            raise
        if need is not None:
            await rep.durable_async(need)
        if waits:
            await asyncio.gather(*waits)
        if changed and self.on_change is not None:
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

    async def _fetch_put_once(self, link: PeerLink, rep: ReplicaStore, e: Entry, row: LagRow
                              ) -> tuple[Position | None, bool]:
        """Fetch a missing PUT from this peer unless it arrived meanwhile or another peer's
        loop is fetching it right now (then wait for that one, and fetch here only if it
        failed). Returns (end of the PUT record here if there is one, fetched by this call)."""
        key = (rep.partition_id, e.key)
        while True:
            running = self._inflight.get(key)
            if running is None:
                break
            await asyncio.shield(running)
        end = rep.put_end(e.key)
        if end is not None:  # stored by another loop since the batch was read
            return end, False
        fut: asyncio.Future[Position | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        end = None
        try:
            end = await self._fetch_put(link, rep, e, row)
        finally:
            del self._inflight[key]
            fut.set_result(end)  # waiters look again, and fetch themselves if it failed
        return end, end is not None

    async def _await_local_copy(self, rep: ReplicaStore, blob_key: bytes, wait_s: float) -> None:
        """Wait up to ``wait_s`` until the replica has this PUT or a fetch of it runs here
        (another peer's loop, usually from this datacenter, brings it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        key = (rep.partition_id, blob_key)
        while rep.put_end(blob_key) is None and key not in self._inflight:
            left = deadline - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._put_stored.wait(), left)

    async def _fetch_put(self, link: PeerLink, rep: ReplicaStore, e: Entry, row: LagRow
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
        self._put_stored.set()
        self._put_stored = asyncio.Event()
        return res.end  # type: ignore[no-any-return]

    def _maybe_end_rebuild(self, pid: int) -> None:
        rep = self.replicas[pid]
        if not rep.rebuilding:
            return
        mine = self.dc_of[self.node_id]
        peers = [p for p in self.cmap.partition(pid).replicas if p != self.node_id]
        local = [p for p in peers if self.dc_of[p] == mine] or peers
        down = self._down_in(pid)
        reachable = [p for p in local if not down(p)]
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
                 "peer_down_s": round(self._down_in(r.partition)(r.peer), 1)}
                for r in sorted(self.lag.values(), key=lambda r: (r.partition, r.peer))]

    def _pulling_from(self, pid: int) -> set[str]:
        plan = self._plan(pid)
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


def attach(host: ReplicationHost) -> ReplicationManager:
    """Build the replication component of a storage node from what the node hands it (the
    CLI plugs this in as the node's replication factory).

    Replication has its own clients to the peers, built with the ``replication:`` timeouts
    (the node's shared links had fixed ones: ``request_timeout_ms`` was ignored, so a peer
    behind a link that drops packets held a pull for 30 s whatever the config said)."""
    from ambry.protocol.client import NodeClient

    rcfg = ReplicationConfig.from_sections(host.config.sections)
    tokens = TokenStore(str(host.data_dir / "replication-tokens"))
    links: dict[str, NodeClient] = {}

    def link_for(peer: str) -> PeerLink:
        c = links.get(peer)
        if c is None:
            # the manager's map: a peer added by a map change is known there first
            addr, port = mgr.config.address_of(peer, host.datacenter)
            c = links[peer] = NodeClient(
                addr, port, pool_size=2,
                connect_timeout_ms=min(2000, rcfg.request_timeout_ms),
                request_timeout_ms=rcfg.request_timeout_ms)
        return c

    async def close() -> None:
        for c in list(links.values()):
            await c.close()
        tokens.close()

    mgr = ReplicationManager(host.node_id, host.config, host.stores, host.run_io, link_for,
                             tokens, rcfg=rcfg, now_ms=host.now_ms,
                             on_change=host.notify_change)
    mgr.on_stop = close
    return mgr
