"""The warm tier of one storage node: a loop that, every ``ec.scan_interval_s``, runs the
encoding coordinator of each erasure-coded partition this node coordinates in its datacenter
(its first-listed replica there, the one that also pulls cross-DC) and the freeing pass of
every replica here; and the fragment reader replicas read encoded blobs through."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from ambry.common.config import EcConfig
from ambry.common.errors import AmbryError
from ambry.protocol.client import NodeClient
from ambry.storage.api import WarmTierHost
from ambry.warm.fetch import FragmentFetcher
from ambry.warm.job import EncodeJob
from ambry.warm.recode import Recoder
from ambry.warm.repair import FragmentRepair, Survey

__all__ = ["WarmTierComponent", "attach"]

log = logging.getLogger(__name__)


class WarmTierComponent:
    def __init__(self, host: WarmTierHost) -> None:
        self.host = host
        self.ec = EcConfig.from_sections(host.config.sections)
        self._clients: dict[str, NodeClient] = {}
        self._task: asyncio.Task[None] | None = None
        self.fetcher: FragmentFetcher | None = None
        self.jobs: dict[int, EncodeJob] = {}
        self.recoders: dict[int, Recoder] = {}  # per partition this node coordinates
        self.repairs: dict[int, FragmentRepair] = {}  # per ec partition with a replica here
        self.freed_segments = 0

    def client(self, node_id: str) -> NodeClient:
        c = self._clients.get(node_id)
        if c is None:
            n = self.host.config.cluster_map.node(node_id)
            c = self._clients[node_id] = NodeClient(n.host, n.port, pool_size=2)
        return c

    def coordinates(self, pid: int) -> bool:
        cmap = self.host.config.cluster_map
        here = cmap.replicas_in(pid, self.host.datacenter)
        return bool(here) and here[0].id == self.host.node_id

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.fetcher = FragmentFetcher(loop, self.client, self.ec.fragment_timeout_ms,
                                       self.ec.fragment_hedge_min_ms,
                                       self.ec.fragment_suspect_s)
        for store in self.host.stores.values():
            store.set_fragment_reader(self.fetcher)
        for p in self.host.config.cluster_map.partitions:
            ec_store = self.host.stores.get(p.id)
            if p.policy is None or ec_store is None:
                continue
            repair = self.repairs[p.id] = FragmentRepair(
                self.host.node_id, self.host.datacenter, self.host.config, ec_store, self.ec,
                self.host.run_io, self.client, self.fetcher)
            if self.coordinates(p.id):
                job = self.jobs[p.id] = EncodeJob(self.host.node_id, self.host.datacenter,
                                                  self.host.config, ec_store, p.policy,
                                                  self.ec, self.host.run_io, self.client,
                                                  self.fetcher)
                job.lost = functools.partial(_lost_keys, repair)
                self.recoders[p.id] = Recoder(
                    self.host.node_id, self.host.datacenter, self.host.config, ec_store,
                    self.ec, self.host.run_io, self.client, self.fetcher,
                    functools.partial(_last_survey, repair), job.records_caught_up)
        self._task = loop.create_task(self._loop(), name="warm-tier")

    async def _loop(self) -> None:
        while True:
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("warm tier pass failed")
            await asyncio.sleep(self.ec.scan_interval_s)

    async def pass_once(self) -> None:
        # fragments' health first: the encode job re-encodes what only lost records cover,
        # and replicas free bytes only against records whose fragments are all there
        for pid, repair in self.repairs.items():
            try:
                await repair.run_once()  # its survey stays in repair.last (job.lost)
            except (AmbryError, OSError) as e:
                log.warning("partition %d: fragment survey failed: %r", pid, e)
        for job in self.jobs.values():
            try:
                if await job.run_once():
                    self.host.notify_change()
            except ImportError as e:  # pyeclib absent: say so once a pass, keep serving
                log.error("partition %d not encoded: %s", job.pid, e)
        for pid, recoder in self.recoders.items():
            try:  # compaction of encoded segments: re-encode without dead blobs, drop old
                if await recoder.run_once():
                    self.host.notify_change()
            except ImportError as e:
                log.error("partition %d not re-encoded: %s", pid, e)
        for pid, store in list(self.host.stores.items()):
            usable: frozenset[bytes] | None = None
            if pid in self.repairs:
                try:  # again: records encoded or replicated here meanwhile are freed now
                    usable = (await self.repairs[pid].survey()).healthy_keys
                except (AmbryError, OSError) as e:
                    log.warning("partition %d: fragment survey failed: %r", pid, e)
                    continue  # health unknown: free nothing
            freed = await self.host.run_io(store.ec_free_pass, self.host.datacenter, usable)
            self.freed_segments += len(freed)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for c in self._clients.values():
            await c.close()

    def status(self) -> list[dict[str, Any]]:
        out = []
        f = self.fetcher
        for pid in sorted(self.host.stores):
            job = self.jobs.get(pid)
            rc = self.recoders.get(pid)
            out.append({"partition": pid, "coordinator": job is not None,
                        # compaction of encoded segments (ambry/warm/recode.py)
                        "recoding": rc.running if rc else None,
                        "recoded_segments": rc.recoded_segments if rc else 0,
                        "recode_reclaimed_bytes": rc.reclaimed_bytes if rc else 0,
                        "dropped_fragments": rc.dropped_fragments if rc else 0,
                        "recode_cpu_s": rc.recode_cpu_s if rc else 0.0,
                        "spare_rebuilds": rc.spare_rebuilds if rc else 0,
                        "encoding": job.running if job else None,
                        "backlog_bytes": job.backlog_bytes if job else 0,
                        "encoded_bytes": job.encoded_bytes if job else 0,
                        "encoded_segments": job.encoded_segments if job else 0,
                        # left replicated: small records (freeing would not pay)
                        "left_small_segments": len(job.left_small) if job else 0,
                        "left_small_bytes": sum(job.left_small.values()) if job else 0,
                        "encode_cpu_s": job.encode_cpu_s if job else 0.0,
                        "reconstruction_reads": f.reconstruction_reads[pid] if f else 0,
                        "fragment_reads": f.fragment_reads[pid] if f else 0,
                        "fragment_read_bytes": f.fragment_read_bytes[pid] if f else 0,
                        "hedged_reads": f.hedged_reads[pid] if f else 0,
                        "fragment_read_errors": {
                            reason: f.fragment_read_errors[(pid, reason)] if f else 0
                            for reason in ("unavailable", "corrupt")}})
        return out


def _lost_keys(repair: FragmentRepair) -> frozenset[bytes]:
    return repair.last.lost_keys


def _last_survey(repair: FragmentRepair) -> Survey:
    return repair.last


def attach(host: WarmTierHost) -> WarmTierComponent:
    return WarmTierComponent(host)
