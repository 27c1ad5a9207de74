"""The node's upkeep: index snapshots, compaction and usage passes, in the background.

Owns when each replica's index is snapshotted (:func:`replicas_to_snapshot`, a pure policy:
a regular round plus a node-wide bound on the records a kill -9 would make a restart replay),
the compaction rounds, the usage passes of replicas opened from a snapshot, and the usage rows
``/metrics`` shows. Work runs off the I/O threads: compaction and usage passes on one
maintenance thread, snapshots on a thread of their own (behind compaction and usage passes,
minutes on a large replica, they waited, and the tail a kill -9 replays grew without bound).
Does not own what a snapshot or a compaction does (``replica``, ``compaction``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import Callable, Mapping

from ambry.common.config import ClusterConfig
from ambry.storage.api import NodeReplica
from ambry.storage.compaction import compact
from ambry.storage.metrics import NodeMetrics

__all__ = ["NodeMaintenance", "replicas_to_snapshot"]

log = logging.getLogger(__name__)

_IDLE_SNAPSHOT_FACTOR = 10  # snapshot a replica with few new records every 10 intervals
_SNAPSHOT_TICK_S = 2.0  # how often the node-wide bound on unsnapshotted records is checked


class NodeMaintenance:
    """The periodic work of one node over its replicas (a live mapping the node keeps)."""

    def __init__(self, node_id: str, replicas: Mapping[int, NodeReplica], *,
                 config: Callable[[], ClusterConfig], metrics: NodeMetrics,
                 draining: Callable[[], bool]) -> None:
        self.replicas = replicas
        self._cfg = config  # the node's current config (a map reload)
        self.metrics = metrics
        self._is_draining = draining
        self._maint = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"maint-{node_id}")
        self._snap = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"snap-{node_id}")

    @property
    def _draining(self) -> bool:
        return self._is_draining()

    async def shutdown(self) -> None:
        """Wait for a running snapshot / compaction / usage pass (closing a replica takes the
        same locks), then stop the threads."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, functools.partial(self._maint.shutdown, wait=True))
        await loop.run_in_executor(None, functools.partial(self._snap.shutdown, wait=True))

    def shutdown_now(self) -> None:
        self._maint.shutdown(wait=False)
        self._snap.shutdown(wait=False)

    async def snapshot_loop(self) -> None:
        loop = asyncio.get_running_loop()
        st = self._cfg().storage
        interval = max(0.05, float(st.snapshot_interval_s))
        tick = min(interval, _SNAPSHOT_TICK_S)
        last = {pid: time.monotonic() for pid in self.replicas}
        next_regular = time.monotonic() + interval
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            regular = now >= next_regular
            if regular:
                next_regular = now + interval
            replicas = dict(self.replicas)
            tails = {pid: r.records_since_snapshot for pid, r in replicas.items()}
            idle = {pid: now - last.get(pid, 0) for pid in replicas}
            for pid in replicas_to_snapshot(tails, idle, regular=regular,
                                            min_records=st.snapshot_min_records,
                                            idle_after_s=interval * _IDLE_SNAPSHOT_FACTOR,
                                            node_tail_records=st.snapshot_node_tail_records):
                r = replicas[pid]
                try:
                    t0 = time.monotonic()
                    await loop.run_in_executor(self._snap, r.write_snapshot)
                    self.metrics.snapshots.inc()
                    log.info("snapshot of partition %d after %d records in %.3f s", pid,
                             tails[pid], time.monotonic() - t0)
                except Exception:
                    log.exception("snapshot of partition %d failed", pid)
                last[pid] = time.monotonic()

    async def usage_passes(self, replicas: list[NodeReplica]) -> None:
        """Count the usage of replicas opened from a snapshot, one at a time on the
        maintenance thread (it is I/O and CPU bound; requests keep the I/O threads)."""
        loop = asyncio.get_running_loop()

        def stopping() -> bool:
            return self._draining

        for r in replicas:
            if r.usage.ready or self._draining:
                continue
            try:
                await loop.run_in_executor(self._maint, r.usage_pass, stopping)
            except Exception:
                log.exception("usage pass of partition %d failed", r.partition_id)

    def usage_rows(self) -> tuple[list[tuple[str, str, int, int]], list[tuple[int, bool]]]:
        """(account, container, bytes, blobs) over this node's replicas whose counters are
        complete, and each replica's readiness. Blocking (takes each replica's lock)."""
        sums: dict[tuple[int, int], list[int]] = {}
        ready = []
        for pid, r in sorted(self.replicas.items()):
            ready.append((pid, r.usage.ready))
            if not r.usage.ready:
                continue
            try:
                totals = r.usage_totals()
            except Exception:  # noqa: BLE001,S112 -- a replica closing at shutdown
                continue
            for key, t in totals.items():
                cur = sums.setdefault(key, [0, 0])
                cur[0] += t.bytes
                cur[1] += t.blobs
        rows = []
        for (aid, cid), (b, n) in sorted(sums.items()):
            account = self._cfg().account_by_id(aid)
            container = account.container_by_id(cid) if account is not None else None
            rows.append((account.name if account is not None else str(aid),
                         container.name if container is not None else str(cid), b, n))
        return rows, ready

    async def compaction_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(0.05, float(self._cfg().storage.compaction_interval_s))
        while True:
            await asyncio.sleep(interval)
            for pid, r in list(self.replicas.items()):
                try:
                    rep = await loop.run_in_executor(self._maint, compact, r)
                except Exception:
                    log.exception("compaction of partition %d failed", pid)
                    continue
                self.metrics.compactions.inc()
                if rep.segments_compacted:
                    freed = max(0, rep.bytes_before - rep.bytes_after)
                    self.metrics.compaction_reclaimed.inc(freed)
                    log.info("compaction of partition %d: %d segments, %d records dropped, "
                             "%d bytes freed", pid, rep.segments_compacted, rep.records_dropped,
                             freed)


def replicas_to_snapshot(tails: Mapping[int, int], idle_s: Mapping[int, float], *,
                         regular: bool, min_records: int, idle_after_s: float,
                         node_tail_records: int) -> list[int]:
    """Which replicas to snapshot now (pure). ``tails``: records since each replica's last
    snapshot; ``idle_s``: seconds since it. On a regular round: every replica with
    ``min_records`` new records, or with any after ``idle_after_s``. On every round: the
    largest remaining tails until the node's total is within ``node_tail_records`` (what
    a kill -9 makes the restart replay)."""
    chosen = [pid for pid, n in tails.items() if regular and n > 0 and
              (n >= min_records or idle_s.get(pid, 0.0) >= idle_after_s)]
    rest = {pid: n for pid, n in tails.items() if pid not in chosen and n > 0}
    total = sum(rest.values())
    for pid in sorted(rest, key=lambda p: (-rest[p], p)):
        if total <= node_tail_records:
            break
        chosen.append(pid)
        total -= rest[pid]
    return chosen
