"""The storage node daemon: wires a node's parts together and runs its life cycle.

Owns the node process's life: opening its replicas (in parallel, on I/O threads), building
the parts that serve them, starting them in order, handing replication what it needs
(``api.ReplicationHost``; the CLI chooses the component), adopting a grown cluster map
(:meth:`StorageNode.reload`: SIGHUP) and graceful shutdown (:meth:`StorageNode.stop`). The
parts, each a file a newcomer finds by its name:

  ``server``       connections, the frame loop, payload budgets, the frame watchdog
  ``ops``          the op handlers and their dispatch table (what each request does)
  ``maintenance``  index snapshots, compaction and usage passes in the background
  ``sideport``     the HTTP side port: ``/healthCheck``, ``/metrics``, ``/replication``
  ``mapreload``    what a map reload changes on the running node

Threads and the event loop: every replica call blocks, so it runs on a bounded
``ThreadPoolExecutor`` (``storage.io_threads``), except small mutations, which the node's one
batch writer thread appends and syncs a batch at a time (``batchwriter``); snapshots and
compaction run on executors of their own (``maintenance``) so that upkeep never takes an I/O
thread from requests. The loop
only parses frames, waits (for payload bytes, for durability futures) and writes replies.
Does not own what an operation means (``replica``, through ``api.ReplicaStore``) nor the wire
layout (``ambry.protocol.messages`` has the table).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ambry.common.clock import Clock, SystemClock
from ambry.common.config import ClusterConfig, EcConfig, PartitionConfig
from ambry.common.daemon import DaemonConfig
from ambry.common.mapchange import MapChange
from ambry.runtime.budget import ByteBudget
from ambry.runtime.reload import ConfigReloader, ReloadCollector
from ambry.storage import filenames
from ambry.storage.api import (
    NodeReplica,
    ReplicationFactory,
    ReplicationHost,
    Replicator,
    WarmTier,
    WarmTierFactory,
    WarmTierHost,
)
from ambry.storage.batchreader import BatchReader
from ambry.storage.batchwriter import BatchWriter
from ambry.storage.fragments import FragmentOps
from ambry.storage.maintenance import NodeMaintenance
from ambry.storage.mapreload import adopt_map
from ambry.storage.metrics import NodeMetrics
from ambry.storage.ops import ChangeSignal, NodeOps
from ambry.storage.replica import Replica
from ambry.storage.server import NodeServer
from ambry.storage.sideport import SidePort, replica_stats

__all__ = ["StorageNode", "run_node"]

log = logging.getLogger(__name__)


class StorageNode:
    def __init__(self, cfg: ClusterConfig, node_id: str, *, data_dir: str | Path | None = None,
                 clock: Clock | None = None, drain_timeout_s: float = 10.0,
                 max_inflight_per_connection: int = 64,
                 inflight_payload_budget_bytes: int | None = None,
                 replication_factory: ReplicationFactory | None = None,
                 warm_factory: WarmTierFactory | None = None) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.node = cfg.cluster_map.node(node_id)
        self.data_dir = Path(data_dir) if data_dir is not None else cfg.node_data_dir(node_id)
        self.clock = clock if clock is not None else SystemClock()
        self.drain_timeout_s = drain_timeout_s
        self.replicas: dict[int, NodeReplica] = {}
        self.failed_replicas: dict[int, str] = {}
        self.metrics = NodeMetrics(node_id, lambda: replica_stats(self.replicas))
        self.port = self.node.port
        self.http_port = self.node.http_port
        self._io = concurrent.futures.ThreadPoolExecutor(
            max(1, cfg.storage.io_threads), thread_name_prefix=f"io-{node_id}")
        self._periodic: list[asyncio.Task[None]] = []
        self._draining = False
        self._stop_requested: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._changes = ChangeSignal()  # set whenever a record was appended (long polls)
        # small mutations: appended and synced a batch at a time (ambry.storage.batchwriter)
        self.writer = BatchWriter(node_id, on_batch=self._changes.notify)
        # GETs: located and read a batch at a time (ambry.storage.batchreader)
        self.reader = BatchReader(node_id, min(4, max(1, cfg.storage.io_threads)),
                                  on_batch=self._read_batch_done)
        self.ops = NodeOps(node_id, self.replicas, self.failed_replicas, clock=self.clock,
                           storage_config=lambda: self.cfg.storage, run_io=self.run_io,
                           changes=self._changes, draining=lambda: self._draining,
                           writer=self.writer, reader=self.reader)
        # fragment files of erasure-coded segments (docs/erasure-coding.md): ops of their own
        self.fragments = FragmentOps(
            self.data_dir, replicas=self.replicas,
            warm_status=lambda: self.warm.status() if self.warm is not None else [])
        self.ops.table.update(self.fragments.table)
        self.server = NodeServer(
            node_id, self.ops.dispatch, submit=self.ops.submit, metrics=self.metrics,
            io=self._io,
            budget=ByteBudget(inflight_payload_budget_bytes or
                              cfg.storage.inflight_payload_budget_bytes),
            storage_config=lambda: self.cfg.storage,
            max_inflight_per_connection=max_inflight_per_connection,
            draining=lambda: self._draining)
        self.maintenance = NodeMaintenance(node_id, self.replicas, config=lambda: self.cfg,
                                           metrics=self.metrics,
                                           draining=lambda: self._draining)
        self.sideport = SidePort(node_id, self.node.datacenter, self.replicas,
                                 metrics=self.metrics, replication=lambda: self.replication,
                                 usage_rows=self.maintenance.usage_rows, run_io=self.run_io,
                                 draining=lambda: self._draining,
                                 warm_rows=self.fragments.metric_rows)
        # the replication component is plugged in by whoever composes the daemon (the CLI):
        # storage does not import replication (DESIGN.md section 2)
        self._replication_factory = replication_factory
        self.replication: Replicator | None = None
        # the warm tier (erasure coding, ambry.warm) is plugged in the same way
        self._warm_factory = warm_factory
        self.warm: WarmTier | None = None
        # set by whoever runs the daemon (run_node): SIGHUP / file watch -> self.reload
        self.reloader: ConfigReloader | None = None
        self.metrics.registry.register(ReloadCollector(lambda: self.reloader))
        self._map_lock = asyncio.Lock()

    # ================================================================ life cycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        t0 = time.monotonic()
        await loop.run_in_executor(self._io, functools.partial(
            self.data_dir.mkdir, parents=True, exist_ok=True))
        parts = self.cfg.cluster_map.partitions_of(self.node_id)
        opened = await self.open_replicas(parts)
        for p, res in zip(parts, opened):
            if not isinstance(res, BaseException):
                self.replicas[p.id] = res
            else:
                # a replica that cannot open (damaged disk...) is unavailable; the node serves
                # the others, as Ambry does with a failed disk
                self.failed_replicas[p.id] = repr(res)
                log.error("replica of partition %d failed to open: %r", p.id, res,
                          exc_info=res)
        if self._replication_factory is not None:
            # built before the node serves: it marks fresh replicas "rebuilding", so a wiped
            # node never answers an authoritative not-found, not even for a moment
            self.replication = self._replication_factory(ReplicationHost(
                node_id=self.node_id, datacenter=self.node.datacenter, config=self.cfg,
                data_dir=self.data_dir, stores=MappingProxyType(self.replicas),
                run_io=self.run_io, notify_change=self.notify_change,
                now_ms=self.clock.now_ms))
        self.writer.start(loop)
        self.reader.start(loop)
        try:
            self.port = await self.server.listen(self.node.host, self.node.port)
            await self.sideport.start(self.node.host, self.node.http_port)
        except BaseException:  # e.g. a port in use: leave the replicas closed and clean
            log.error("node %s could not listen on %s:%d / %d", self.node_id, self.node.host,
                      self.node.port, self.node.http_port)
            self.server.close_listener()
            await self.sideport.cleanup()
            await self.writer.close()
            self.reader.stop()
            await self.close_replicas(self.replicas.values())
            self._io.shutdown(wait=False)
            self.maintenance.shutdown_now()
            raise
        m = self.maintenance
        self._periodic = [loop.create_task(m.snapshot_loop(), name="snapshots"),
                          loop.create_task(self.server.frame_watchdog(), name="frame-watchdog"),
                          loop.create_task(m.compaction_loop(), name="compaction"),
                          loop.create_task(m.usage_passes(list(self.replicas.values())),
                                           name="usage"),
                          loop.create_task(self.fragments.scrub_loop(self._fragment_scrub),
                                           name="fragment-scrub")]
        self._start_replication()
        log.info("node %s serving %d replicas (%d failed) on %s:%d, http %d; started in "
                 "%.2f s", self.node_id, len(self.replicas), len(self.failed_replicas),
                 self.node.host, self.port, self.node.http_port, time.monotonic() - t0)

    def _fragment_scrub(self) -> tuple[float, int]:
        ec = EcConfig.from_sections(self.cfg.sections)
        return ec.scrub_interval_s, ec.scrub_bytes_per_s

    def _start_replication(self) -> None:
        if self.replication is not None:
            self.replication.start()
        if self._warm_factory is not None:
            self.warm = self._warm_factory(WarmTierHost(
                node_id=self.node_id, datacenter=self.node.datacenter, config=self.cfg,
                stores=MappingProxyType(self.replicas), run_io=self.run_io,
                notify_change=self.notify_change))
            self.warm.start()

    async def reload(self, new_cfg: ClusterConfig) -> MapChange:
        """Adopt a grown cluster map while serving (``mapreload.adopt_map``)."""
        async with self._map_lock:
            return await adopt_map(self, new_cfg)

    @property
    def draining(self) -> bool:
        return self._draining

    async def open_replicas(self, parts: list[PartitionConfig]
                            ) -> list[NodeReplica | BaseException]:
        """Open (or create) the replicas of ``parts`` in parallel on the I/O threads; a
        replica that failed to open is its exception."""
        loop = asyncio.get_running_loop()
        opened: list[NodeReplica | BaseException] = await asyncio.gather(
            *(loop.run_in_executor(self._io, self._open_replica, p) for p in parts),
            return_exceptions=True)
        return opened

    async def close_replicas(self, replicas: Iterable[NodeReplica]) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._io, r.close) for r in replicas),
                             return_exceptions=True)

    def start_usage_passes(self, replicas: list[NodeReplica], name: str) -> None:
        self._periodic.append(asyncio.get_running_loop().create_task(
            self.maintenance.usage_passes(replicas), name=name))

    async def run_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking replica call on the node's I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _read_batch_done(self, n: int) -> None:
        self.metrics.read_batches.inc()
        self.metrics.read_batch_requests.inc(n)

    def notify_change(self) -> None:
        """Something was appended: wake the peers' long-polling replication requests."""
        self._changes.notify()

    def _open_replica(self, p: PartitionConfig) -> NodeReplica:
        path = self.data_dir / filenames.replica_dir_name(p.id)
        return Replica.open(str(path), p.id, self.cfg.storage, p.capacity_bytes,
                            clock=self.clock)

    def request_stop(self) -> None:
        """Ask for a graceful shutdown (signal handlers call this)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def run_until_stopped(self) -> None:
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Drain and close: health goes BAD, no new requests are read, in-flight ones finish
        (bounded wait), replicas close (writing a snapshot)."""
        assert self._stopped is not None
        if self._draining:
            await self._stopped.wait()
            return
        self._draining = True
        t0 = time.monotonic()
        log.info("node %s draining: %d connections, %d requests in flight", self.node_id,
                 self.server.connections, self.server.requests_in_flight)
        if self.reloader is not None:
            await self.reloader.stop()
        async with self._map_lock:
            pass  # a reload in progress finishes (and closes what it opened: we are draining)
        if self.warm is not None:
            await self.warm.stop()
        if self.replication is not None:
            await self.replication.stop()
        self._changes.notify()  # wake long polls so they answer and finish
        self.server.stop_reading()
        await self.server.finish_requests(self.drain_timeout_s)
        await self.writer.close()  # what it holds is written before the replicas close
        self.reader.stop()
        self.server.close_connections()
        for t in self._periodic:
            t.cancel()
        await asyncio.gather(*self._periodic, return_exceptions=True)
        # a running snapshot/compaction finishes first (close takes the same locks)
        await self.maintenance.shutdown()
        await self.close_replicas(self.replicas.values())
        await self.sideport.cleanup()
        await self.server.wait_closed()
        self._io.shutdown(wait=False)
        self.fragments.shutdown()
        log.info("node %s stopped in %.2f s", self.node_id, time.monotonic() - t0)
        self._stopped.set()


def run_node(cfg: ClusterConfig, node_id: str, data_dir: str | Path | None = None,
             replication_factory: ReplicationFactory | None = None, *,
             warm_factory: WarmTierFactory | None = None,
             reload_config: Callable[[], ClusterConfig] | None = None,
             config_path: str | os.PathLike[str] | None = None) -> int:
    """Run a node until SIGTERM/SIGINT on uvloop (the stock loop if AMBRY_NO_UVLOOP=1).
    SIGTERM drains for ``daemon.shutdown_grace_s``. With ``reload_config`` (re-reads the config
    file), SIGHUP and, with ``daemon.config_watch_interval_s``, a changed ``config_path``
    reload the cluster map (:meth:`StorageNode.reload`)."""
    import signal

    daemon = DaemonConfig.from_sections(cfg.sections)

    async def main() -> int:
        node = StorageNode(cfg, node_id, data_dir=data_dir,
                           replication_factory=replication_factory,
                           warm_factory=warm_factory,
                           drain_timeout_s=daemon.shutdown_grace_s)
        loop = asyncio.get_running_loop()
        if loop.get_debug():  # PYTHONASYNCIODEBUG=1: report callbacks that hold the loop
            loop.slow_callback_duration = float(os.environ.get("AMBRY_SLOW_CALLBACK_MS",
                                                               "100")) / 1000
            log.info("asyncio debug mode, slow callback threshold %.0f ms",
                     loop.slow_callback_duration * 1000)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.request_stop)
        serving = False
        early_hup = False

        def on_hup() -> None:
            nonlocal early_hup
            if serving and node.reloader is not None:
                node.reloader.trigger()
            else:  # acted on once the node serves
                early_hup = True

        if reload_config is not None:
            node.reloader = ConfigReloader(reload_config, node.reload, path=config_path,
                                           watch_interval_s=daemon.config_watch_interval_s)
            # registered before start: SIGHUP's default action would end the process
            loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            await node.start()
        except OSError as e:
            log.error("node %s failed to start: %s", node_id, e)
            return 1
        serving = True
        if node.reloader is not None:
            node.reloader.start()
            if early_hup:
                node.reloader.trigger()
        await node.run_until_stopped()
        return 0

    debug = os.environ.get("PYTHONASYNCIODEBUG", "") not in ("", "0")
    if os.environ.get("AMBRY_NO_UVLOOP") == "1":
        return asyncio.run(main(), debug=debug)
    import uvloop

    return uvloop.run(main(), debug=debug)
