"""The storage node daemon: serves the node protocol over the replicas the cluster map gives it.

Owns the node process's life: opening its replicas (in parallel, on I/O threads), the protocol
server (``ambry.protocol``: frames, pipelined requests served concurrently, replies matched by
``corr``), the HTTP side port (``/healthCheck``, ``/metrics``), periodic index snapshots and
compaction, usage counting (a background pass for replicas opened from a snapshot,
``ambry.storage.usage``), adopting a grown cluster map without a restart (:meth:`StorageNode.reload`:
SIGHUP), and graceful shutdown. Does not own what an operation means (``replica``) nor the
wire layout (``ambry.protocol.messages`` has the table).

Threads and the event loop: every ``Replica`` call blocks, so it runs on a bounded
``ThreadPoolExecutor`` (``storage.io_threads``); snapshots and compaction run on a separate
one-thread executor so that maintenance never takes an I/O thread from requests. The loop only
parses frames, waits (for payload bytes, for durability futures) and writes replies.

Bounds: at most ``max_inflight_per_connection`` requests per connection (the node stops reading
that socket meanwhile: TCP backpressure), a node-wide budget of put payload bytes held in memory
(``storage.inflight_payload_budget_bytes``) of which one connection holds at most
``storage.connection_payload_budget_bytes``, and a put payload is never over
``storage.max_record_bytes``. A payload is reserved piece by piece (``_PAYLOAD_PIECE_BYTES``)
just before each piece is read, so a connection that announces 64 MiB and sends 100 bytes
holds one piece, not 64 MiB; a peer that stalls inside a frame for
``storage.frame_idle_timeout_s`` is disconnected and what it held is freed (docs/security.md,
"Gray failures and node port limits"). A put's payload is read whole before the replica is
called, so the append position is taken only once the bytes are in: a slow client never
blocks other writers.

Large GET payloads (records over ``storage.verify_on_read_max_bytes``) are streamed with
``BlobRead.iter_payload`` (pread in 1 MiB pieces, checksum verified as it goes); a checksum
mismatch at the end aborts the connection, so the client sees a truncated reply, never a
silently wrong body. (``os.sendfile`` is not used: the bytes must pass through the checksum
anyway, and uvloop's ``loop.sendfile`` is not implemented.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aiohttp import web

from ambry.common.blobid import BlobId
from ambry.common.budget import ByteBudget
from ambry.common.clock import Clock, SystemClock
from ambry.common.config import ClusterConfig, PartitionConfig
from ambry.common.daemon import DaemonConfig
from ambry.common.errors import (
    AmbryError,
    DataCorrupt,
    InvalidArgument,
    PayloadTooLarge,
    ReplicaUnavailable,
)
from ambry.common.mapchange import MapChange, partitions_added_for, plan_map_change
from ambry.common.namerecord import NameRecord
from ambry.common.properties import BlobProperties
from ambry.common.reload import ConfigReloader, ReloadCollector
from ambry.protocol import stream
from ambry.protocol.framing import discard_exactly, pack_header, read_header, write_message
from ambry.protocol.messages import (
    MAX_ENTRIES_BATCH,
    MAX_ENTRIES_BYTES,
    MAX_HEADER_BYTES,
    MAX_LIST_LIMIT,
    STATUS_OK,
    BadRequestFrame,
    Request,
    parse_request,
    payload_len_of,
    state_to_wire,
)
from ambry.storage import filenames
from ambry.storage.api import (
    BlobRead,
    ReplicaStats,
    ReplicationFactory,
    ReplicationHost,
    Replicator,
)
from ambry.storage.compaction import compact
from ambry.storage.metrics import CONTENT_TYPE, NodeMetrics
from ambry.storage.replica import Replica

__all__ = ["StorageNode"]

log = logging.getLogger(__name__)

_STREAM_CHUNK_BYTES = 1 << 20
#: A put payload is reserved and read in pieces of this size (the frontend's default chunk,
#: so a chunk is still one buffer the socket fills, with no copy).
_PAYLOAD_PIECE_BYTES = 4 << 20
_LINGER_S = 2.0  # how long a connection closed for a bad request keeps draining the client
_IDLE_SNAPSHOT_FACTOR = 10  # snapshot a replica with few new records every 10 intervals
_SNAPSHOT_TICK_S = 2.0  # how often the node-wide bound on unsnapshotted records is checked
# replies must stay under the header bound: batches of entries/names are cut at this size
_REPLY_LIST_BUDGET_BYTES = MAX_HEADER_BYTES - 64 * 1024
_REPLICATE_COALESCE_S = 0.02  # a woken long poll waits this long for more writes
_U16 = 0xFFFF
_U64 = 2**64 - 1
#: A request's payload as the node read it: a large one is the bytearray the socket wrote it
#: into (``ambry.protocol.stream``), not a copy of it.
_Payload = bytes | bytearray | None


class _Conn:
    """One client connection: its reader task, write lock and in-flight requests."""

    def __init__(self, reader: stream.Reader, writer: stream.Writer, max_inflight: int,
                 payload_budget_bytes: int) -> None:
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.write_lock = asyncio.Lock()
        self.slots = asyncio.Semaphore(max_inflight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.reader_task: asyncio.Task[Any] | None = None
        self.budget = ByteBudget(payload_budget_bytes)  # this connection's share of the node's
        # the frame watchdog: a frame begun and not finished, and how long it made no progress
        self.frame_open = False
        self.seen_bytes = 0
        self.idle_s = 0.0

    def open_frame(self) -> None:
        self.frame_open = True

    @property
    def closing(self) -> bool:
        return self.writer.is_closing()

    async def send(self, header: dict[str, Any], payload: bytes | None = None) -> int:
        """Write one reply (header and payload contiguously). Returns payload bytes sent."""
        frame = pack_header(header)
        async with self.write_lock:
            if self.closing:
                return 0
            write_message(self.writer, frame, payload)
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                self.abort()
        return len(payload) if payload else 0

    def abort(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()


class StorageNode:
    def __init__(self, cfg: ClusterConfig, node_id: str, *, data_dir: str | Path | None = None,
                 clock: Clock | None = None, drain_timeout_s: float = 10.0,
                 max_inflight_per_connection: int = 64,
                 inflight_payload_budget_bytes: int | None = None,
                 replication_factory: ReplicationFactory | None = None) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.node = cfg.cluster_map.node(node_id)
        self.data_dir = Path(data_dir) if data_dir is not None else cfg.node_data_dir(node_id)
        self.clock = clock if clock is not None else SystemClock()
        self.drain_timeout_s = drain_timeout_s
        self.max_inflight_per_connection = max_inflight_per_connection
        self.replicas: dict[int, Replica] = {}
        self.failed_replicas: dict[int, str] = {}
        self.metrics = NodeMetrics(node_id, self._replica_stats)
        self.port = self.node.port
        self.http_port = self.node.http_port
        self._io = concurrent.futures.ThreadPoolExecutor(
            max(1, cfg.storage.io_threads), thread_name_prefix=f"io-{node_id}")
        self._maint = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"maint-{node_id}")
        # snapshots have their own thread: behind compaction and usage passes (minutes on a
        # large replica) they waited, and the tail a kill -9 replays grew without bound
        self._snap = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"snap-{node_id}")
        self._budget = ByteBudget(inflight_payload_budget_bytes or
                                  cfg.storage.inflight_payload_budget_bytes)
        self._server: asyncio.AbstractServer | None = None
        self._http: web.AppRunner | None = None
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._periodic: list[asyncio.Task[None]] = []
        self._draining = False
        self._stop_requested: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._ops: dict[str, Callable[[Request, _Payload], Any]] = {
            "ping": self._op_ping, "put": self._op_put, "get": self._op_get,
            "delete": self._op_delete, "ttl_update": self._op_ttl_update,
            "undelete": self._op_undelete, "name_put": self._op_name_put,
            "name_get": self._op_name_get, "name_list": self._op_name_list,
            "name_reserve": self._op_name_reserve, "name_release": self._op_name_release,
            "entries_since": self._op_entries_since, "stats": self._op_stats,
            "blob_state": self._op_blob_state, "replicate": self._op_replicate,
            "digest": self._op_digest,
        }
        # the replication component is plugged in by whoever composes the daemon (the CLI):
        # storage does not import replication (DESIGN.md section 2)
        self._replication_factory = replication_factory
        self.replication: Replicator | None = None
        self._changed = asyncio.Event()  # set whenever a record was appended (long polls)
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
        opened = await asyncio.gather(
            *(loop.run_in_executor(self._io, self._open_replica, p) for p in parts),
            return_exceptions=True)
        for p, res in zip(parts, opened):
            if isinstance(res, Replica):
                self.replicas[p.id] = res
            else:
                # a replica that cannot open (damaged disk...) is unavailable; the node serves
                # the others, as Ambry does with a failed disk
                self.failed_replicas[p.id] = repr(res)
                log.error("replica of partition %d failed to open: %r", p.id, res,
                          exc_info=res if isinstance(res, BaseException) else None)
        if self._replication_factory is not None:
            # built before the node serves: it marks fresh replicas "rebuilding", so a wiped
            # node never answers an authoritative not-found, not even for a moment
            self.replication = self._replication_factory(ReplicationHost(
                node_id=self.node_id, datacenter=self.node.datacenter, config=self.cfg,
                data_dir=self.data_dir, stores=MappingProxyType(self.replicas),
                run_io=self.run_io, notify_change=self.notify_change,
                now_ms=self.clock.now_ms))
        try:
            await self._listen()
        except BaseException:  # e.g. a port in use: leave the replicas closed and clean
            log.error("node %s could not listen on %s:%d / %d", self.node_id, self.node.host,
                      self.node.port, self.node.http_port)
            if self._server is not None:
                self._server.close()
            if self._http is not None:
                await self._http.cleanup()
            await asyncio.gather(*(loop.run_in_executor(self._io, r.close)
                                   for r in self.replicas.values()), return_exceptions=True)
            self._io.shutdown(wait=False)
            self._maint.shutdown(wait=False)
            self._snap.shutdown(wait=False)
            raise
        self._periodic = [loop.create_task(self._snapshot_loop(), name="snapshots"),
                          loop.create_task(self._frame_watchdog(), name="frame-watchdog"),
                          loop.create_task(self._compaction_loop(), name="compaction"),
                          loop.create_task(self._usage_passes(list(self.replicas.values())),
                                           name="usage")]
        self._start_replication()
        log.info("node %s serving %d replicas (%d failed) on %s:%d, http %d; started in "
                 "%.2f s", self.node_id, len(self.replicas), len(self.failed_replicas),
                 self.node.host, self.port, self.node.http_port, time.monotonic() - t0)

    def _start_replication(self) -> None:
        if self.replication is not None:
            self.replication.start()

    async def reload(self, new_cfg: ClusterConfig) -> MapChange:
        """Adopt a grown cluster map while serving: open (or create) replicas of the
        partitions newly assigned to this node, tell replication about them and their peers,
        reach nodes through the new map, apply capacity changes. Raises
        :class:`~ambry.common.mapchange.UnsafeMapChange` (nothing changes) when the new map is
        not a safe successor of the running one."""
        async with self._map_lock:
            if self._draining:
                raise ReplicaUnavailable(f"node {self.node_id} is stopping")
            change = plan_map_change(self.cfg, new_cfg, self.node_id)
            cmap = new_cfg.cluster_map
            mine = [cmap.partition(pid)
                    for pid in partitions_added_for(self.node_id, change, cmap)
                    if pid not in self.replicas and pid not in self.failed_replicas]
            loop = asyncio.get_running_loop()
            opened = await asyncio.gather(
                *(loop.run_in_executor(self._io, self._open_replica, p) for p in mine),
                return_exceptions=True)
            added: dict[int, Replica] = {}
            for p, res in zip(mine, opened):
                if isinstance(res, Replica):
                    added[p.id] = res
                else:
                    self.failed_replicas[p.id] = repr(res)
                    log.error("replica of new partition %d failed to open: %r", p.id, res)
            if self._draining:  # stop() began meanwhile: it will not close what it never saw
                await asyncio.gather(*(loop.run_in_executor(self._io, r.close)
                                       for r in added.values()), return_exceptions=True)
                raise ReplicaUnavailable(f"node {self.node_id} is stopping")
            for pid in change.capacity_changed:
                r = self.replicas.get(pid)
                if r is not None:
                    r.capacity_bytes = cmap.partition(pid).capacity_bytes
            self.cfg = new_cfg
            if self.replication is not None:
                # before the replicas appear: replication must know their peers first
                self.replication.on_map_change(new_cfg, added)
            self.replicas.update(added)
            if added:
                log.info("node %s now hosts new partitions %s (%d replicas in all)",
                         self.node_id, sorted(added), len(self.replicas))
                self._periodic.append(loop.create_task(
                    self._usage_passes(list(added.values())), name="usage-new"))
            return change

    async def run_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._run(fn, *args)

    def notify_change(self) -> None:
        """Something was appended: wake the peers' long-polling replication requests."""
        self._notify_change()

    def _notify_change(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _listen(self) -> None:
        self._server = await stream.start_server(
            self._on_connect, self.node.host, self.node.port, reuse_address=True, backlog=1024)
        sock = self._server.sockets[0] if self._server.sockets else None
        if sock is not None:
            self.port = sock.getsockname()[1]
        app = web.Application()
        app.router.add_get("/healthCheck", self._http_health)
        app.router.add_get("/metrics", self._http_metrics)
        app.router.add_get("/replication", self._http_replication)
        self._http = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._http.setup()
        site = web.TCPSite(self._http, self.node.host, self.node.http_port, reuse_address=True)
        await site.start()

    def _open_replica(self, p: PartitionConfig) -> Replica:
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
                 len(self._conns), len(self._handlers))
        if self.reloader is not None:
            await self.reloader.stop()
        async with self._map_lock:
            pass  # a reload in progress finishes (and closes what it opened: we are draining)
        if self.replication is not None:
            await self.replication.stop()
        self._notify_change()  # wake long polls so they answer and finish
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            if conn.reader_task is not None:
                conn.reader_task.cancel()
        if self._handlers:
            _done, pending = await asyncio.wait(set(self._handlers),
                                                timeout=self.drain_timeout_s)
            if pending:
                log.warning("node %s: %d requests still running after %.1f s; cancelling",
                            self.node_id, len(pending), self.drain_timeout_s)
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending, timeout=5)
        for conn in list(self._conns):
            conn.writer.close()
        self._conns.clear()
        for t in self._periodic:
            t.cancel()
        await asyncio.gather(*self._periodic, return_exceptions=True)
        loop = asyncio.get_running_loop()
        # a running snapshot/compaction finishes first (close takes the same locks)
        await loop.run_in_executor(None, functools.partial(self._maint.shutdown, wait=True))
        await loop.run_in_executor(None, functools.partial(self._snap.shutdown, wait=True))
        await asyncio.gather(*(loop.run_in_executor(self._io, r.close)
                               for r in self.replicas.values()), return_exceptions=True)
        if self._http is not None:
            await self._http.cleanup()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except TimeoutError:
                pass
        self._io.shutdown(wait=False)
        log.info("node %s stopped in %.2f s", self.node_id, time.monotonic() - t0)
        self._stopped.set()

    # ================================================================ HTTP side port
    async def _http_health(self, _request: web.Request) -> web.Response:
        if self._draining:
            return web.Response(status=503, text="BAD")
        return web.Response(status=200, text="GOOD")

    async def _http_replication(self, _request: web.Request) -> web.Response:
        rows = self.replication.status() if self.replication is not None else []
        rebuilding = sorted(pid for pid, r in self.replicas.items() if r.rebuilding)
        return web.json_response({"node": self.node_id, "datacenter": self.node.datacenter,
                                  "rebuilding": rebuilding, "peers": rows})

    async def _http_metrics(self, _request: web.Request) -> web.Response:
        if self.replication is not None:
            self.metrics.set_replication(self.replication.status())
        self.metrics.set_usage(*await self._run(self._usage_rows))
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE})

    def _replica_stats(self) -> list[ReplicaStats]:
        out = []
        for r in list(self.replicas.values()):
            try:
                out.append(r.stats())
            except Exception:  # noqa: BLE001,S112 -- a replica closing at shutdown: best effort
                continue
        return out

    # ================================================================ periodic work
    async def _snapshot_loop(self) -> None:
        loop = asyncio.get_running_loop()
        st = self.cfg.storage
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

    async def _usage_passes(self, replicas: list[Replica]) -> None:
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

    def _usage_rows(self) -> tuple[list[tuple[str, str, int, int]], list[tuple[int, bool]]]:
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
            account = self.cfg.account_by_id(aid)
            container = account.container_by_id(cid) if account is not None else None
            rows.append((account.name if account is not None else str(aid),
                         container.name if container is not None else str(cid), b, n))
        return rows, ready

    async def _compaction_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(0.05, float(self.cfg.storage.compaction_interval_s))
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

    # ================================================================ connections
    async def _on_connect(self, reader: stream.Reader, writer: stream.Writer) -> None:
        conn = _Conn(reader, writer, self.max_inflight_per_connection,
                     self.cfg.storage.connection_payload_budget_bytes)
        conn.reader_task = asyncio.current_task()
        if self._draining:
            writer.close()
            return
        self._conns.add(conn)
        self.metrics.connections.inc()
        drained = False
        try:
            await self._read_requests(conn)
        except asyncio.CancelledError:
            drained = True  # stop() owns the rest: wait for handlers, close the socket
        except Exception:
            log.exception("connection %s: reader failed", conn.peer)
        finally:
            self.metrics.connections.dec()
            if not drained and not self._draining:
                try:
                    if conn.tasks:  # replies still owed (a client may half-close and wait)
                        await asyncio.wait(set(conn.tasks))
                except asyncio.CancelledError:
                    drained = True
            if not drained and not self._draining:
                writer.close()
                self._conns.discard(conn)
            # else stop() waits for this connection's requests, then closes it

    async def _read_requests(self, conn: _Conn) -> None:
        reader = conn.reader
        max_payload = self.cfg.storage.max_record_bytes
        while True:
            await conn.slots.acquire()
            slot_taken = True
            try:
                try:
                    header = await read_header(reader, conn.open_frame)
                except BadRequestFrame as e:
                    self._protocol_error(conn, e, None)
                    await self._close_after(conn, self._error_reply(e.corr, e.code, e.message),
                                            max_payload)
                    return
                except (asyncio.IncompleteReadError, ConnectionError, OSError):
                    return  # the peer went away mid-frame
                if header is None:
                    return
                try:
                    req = parse_request(header)
                except BadRequestFrame as e:
                    self._protocol_error(conn, e, header)
                    reply = self._error_reply(e.corr, e.code, e.message)
                    if e.fatal:
                        await self._close_after(conn, reply, max_payload)
                        return
                    n = payload_len_of(header)
                    if n > max_payload:
                        await self._close_after(conn, reply, n)
                        return
                    await conn.send(reply)
                    if n:
                        try:
                            await discard_exactly(reader, n)
                        except (asyncio.IncompleteReadError, ConnectionError, OSError):
                            return
                    conn.frame_open = False
                    continue
                payload: _Payload = None
                budget = 0
                if req.payload_len:
                    if req.payload_len > max_payload:
                        e2 = PayloadTooLarge(f"payload of {req.payload_len} bytes is over the "
                                             f"{max_payload}-byte limit")
                        self.metrics.requests.labels(req.op, e2.code).inc()
                        # megabytes we will not store follow: answer, then close
                        await self._close_after(
                            conn, self._error_reply(req.corr, e2.code, e2.message),
                            req.payload_len)
                        return
                    held = [0]
                    try:
                        payload = await self._read_payload(conn, req.payload_len, held)
                    except (asyncio.IncompleteReadError, ConnectionError, OSError):
                        # a put cut off mid-payload: nothing reached the replica
                        log.info("rid=%s op=%s from %s: connection lost mid-payload", req.rid,
                                 req.op, conn.peer)
                        self._release_budget(conn, held[0])
                        return
                    except BaseException:
                        self._release_budget(conn, held[0])
                        raise
                    budget = held[0]
                    self.metrics.bytes_in.inc(len(payload))
                conn.frame_open = False
                task = asyncio.create_task(self._serve(conn, req, payload, budget))
                slot_taken = False
                conn.tasks.add(task)
                self._handlers.add(task)
                task.add_done_callback(functools.partial(self._request_done, conn))
            finally:
                if slot_taken:
                    conn.slots.release()

    async def _close_after(self, conn: _Conn, reply: dict[str, Any], unread_bytes: int) -> None:
        """Answer a request after which the stream cannot go on, then end the connection with a
        lingering close: the replies still owed go out, the write side is shut (the client reads
        the error and then EOF), and what the client is still sending is read and dropped for a
        bounded time, so that closing with unread bytes does not reset the connection and
        destroy the error reply before the client has read it."""
        await conn.send({**reply, "closing": True})
        try:
            if conn.tasks:
                await asyncio.wait(set(conn.tasks))
            async with conn.write_lock:
                if conn.writer.can_write_eof() and not conn.closing:
                    conn.writer.write_eof()
            async with asyncio.timeout(_LINGER_S):
                await discard_exactly(conn.reader, unread_bytes)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass

    def _request_done(self, conn: _Conn, task: asyncio.Task[None]) -> None:
        conn.tasks.discard(task)
        self._handlers.discard(task)
        conn.slots.release()

    async def _read_payload(self, conn: _Conn, n: int, held: list[int]) -> bytes | bytearray:
        """Read a put payload of ``n`` bytes, reserving each piece in the connection's and the
        node's budget just before reading it; ``held[0]`` is what is reserved so far (the
        caller releases it). A later piece waits saying what its payload holds already
        (``ByteBudget.acquire(held=)``): payloads nearest to complete go first, and partial
        payloads holding the whole budget between them do not wait for each other forever."""
        reader = conn.reader
        payload: bytes | bytearray = b""
        while len(payload) < n:
            k = min(n - len(payload), _PAYLOAD_PIECE_BYTES)
            await self._reserve(conn, k, held[0])
            held[0] += k
            piece = await reader.readexactly(k)
            if not payload:
                payload = piece
            else:  # over one piece (rare: the frontend sends chunks of one piece)
                if not isinstance(payload, bytearray):
                    payload = bytearray(payload)
                payload += piece  # grows in place: what it holds plus one piece at most
        return payload

    async def _reserve(self, conn: _Conn, n: int, held: int) -> None:
        await conn.budget.acquire(n, held=held)
        try:
            await self._budget.acquire(n, held=held)
        except BaseException:
            conn.budget.release(n)
            raise
        self.metrics.inflight_payload_bytes.inc(n)

    def _release_budget(self, conn: _Conn, n: int) -> None:
        if n:
            conn.budget.release(n)
            self._budget.release(n)
            self.metrics.inflight_payload_bytes.dec(n)

    async def _frame_watchdog(self) -> None:
        """Close connections that stall inside a frame for ``storage.frame_idle_timeout_s``:
        waiting for their bytes, with none arriving. (A peer that announced a 64 MiB put and
        sent 100 bytes held its reservation until it chose to hang up.) A connection the node
        itself is not reading (waiting for budget, TCP backpressure) is not idle."""
        idle_s = self.cfg.storage.frame_idle_timeout_s
        tick = min(1.0, max(0.01, idle_s / 4))
        while True:
            await asyncio.sleep(tick)
            for conn in list(self._conns):
                got = conn.reader.received_bytes
                if not conn.frame_open or not conn.reader.waiting or got != conn.seen_bytes:
                    conn.seen_bytes = got
                    conn.idle_s = 0.0
                    continue
                conn.idle_s += tick
                if conn.idle_s >= idle_s and not conn.closing:
                    self.metrics.idle_frames_closed.inc()
                    log.warning("connection %s stalled inside a frame for %.1f s: closing it",
                                conn.peer, conn.idle_s)
                    conn.abort()

    def _protocol_error(self, conn: _Conn, e: BadRequestFrame,
                        header: dict[str, Any] | None) -> None:
        self.metrics.protocol_errors.inc()
        rid = header.get("rid", "") if isinstance(header, dict) else ""
        log.warning("rid=%s bad request from %s: %s (%s)", rid, conn.peer, e.message,
                    "closing" if e.fatal else "continuing")

    @staticmethod
    def _error_reply(corr: int, code: str, message: str) -> dict[str, Any]:
        return {"corr": corr, "status": code, "msg": message}

    # ================================================================ serving one request
    async def _serve(self, conn: _Conn, req: Request, payload: _Payload,
                     budget: int) -> None:
        t0 = time.perf_counter()
        status = STATUS_OK
        self.metrics.inflight.inc()
        try:
            try:
                fields, body = await self._ops[req.op](req, payload)
            finally:
                payload = None
                self._release_budget(conn, budget)
            reply = {"corr": req.corr, "status": STATUS_OK, "msg": "", **fields}
            if isinstance(body, _Stream):
                reply["payload_len"] = body.length
                status = await self._send_stream(conn, req, reply, body)
            else:
                if body:
                    reply["payload_len"] = len(body)
                self.metrics.bytes_out.inc(await conn.send(reply, body))
        except AmbryError as e:
            status = e.code
            log.debug("rid=%s op=%s: %s %s", req.rid, req.op, e.code, e.message)
            await conn.send(self._error_reply(req.corr, e.code, e.message))
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except Exception as e:
            status = "INTERNAL"
            self.metrics.internal_errors.inc()
            log.exception("rid=%s op=%s from %s failed", req.rid, req.op, conn.peer)
            try:
                await conn.send(self._error_reply(req.corr, "INTERNAL",
                                                  f"internal error: {type(e).__name__}"))
            except Exception:  # noqa: BLE001 -- the reply to a failed request failed too
                conn.abort()
        finally:
            self.metrics.inflight.dec()
            elapsed = time.perf_counter() - t0
            self.metrics.requests.labels(req.op, status).inc()
            self.metrics.latency.labels(req.op).observe(elapsed)
            log.debug("rid=%s op=%s status=%s %.2f ms", req.rid, req.op, status,
                      elapsed * 1000)

    async def _send_stream(self, conn: _Conn, req: Request, reply: dict[str, Any],
                           body: _Stream) -> str:
        """Header, then the payload piece by piece (each piece read on an I/O thread). Any
        failure after the header is out aborts the connection: a short reply, never a wrong
        one."""
        loop = asyncio.get_running_loop()
        frame = pack_header(reply)
        async with conn.write_lock:
            if conn.closing:
                return "CLIENT_GONE"
            conn.writer.write(frame)
            sent = 0
            try:
                while sent < body.length:
                    piece = await loop.run_in_executor(self._io, next, body.pieces, None)
                    if not piece:
                        raise DataCorrupt("payload ended early")
                    if conn.closing:
                        return "CLIENT_GONE"
                    conn.writer.write(piece)
                    sent += len(piece)
                    self.metrics.bytes_out.inc(len(piece))
                    await conn.writer.drain()
            except AmbryError as e:
                log.error("rid=%s op=%s: %s after %d of %d payload bytes; aborting the "
                          "connection", req.rid, req.op, e.message, sent, body.length)
                conn.abort()
                return e.code
            except (ConnectionError, OSError):
                conn.abort()
                return "CLIENT_GONE"
            except BaseException:
                conn.abort()
                raise
            finally:
                close = getattr(body.pieces, "close", None)
                if close is not None:
                    close()
        return STATUS_OK

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _replica(self, partition: int) -> Replica:
        r = self.replicas.get(partition)
        if r is None:
            if partition in self.failed_replicas:
                raise ReplicaUnavailable(f"replica of partition {partition} on {self.node_id} "
                                         f"failed to open")
            raise ReplicaUnavailable(f"partition {partition} has no replica on {self.node_id}")
        return r

    # ================================================================ ops
    async def _op_ping(self, req: Request, _p: _Payload) -> tuple[dict[str, Any], None]:
        # "serving": the partitions whose replica here is open and not rebuilding, i.e. can
        # answer every request, "not found" included; a frontend reports ready only once
        # enough replicas of every partition serve (ambry.frontend.readiness)
        serving = sorted(pid for pid, r in self.replicas.items() if not r.rebuilding)
        return {"node": self.node_id, "time_ms": self.clock.now_ms(), "serving": serving}, None

    async def _op_put(self, req: Request, payload: _Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        bid = BlobId.from_bytes(a["blob_id"])
        props = BlobProperties.from_wire(a["props"])
        res = await self._run(r.put, bid, props, a["usermeta"], payload or b"")
        await r.durable_async(res.end)
        self._notify_change()
        return {"result": res.status, "life_version": res.life_version}, None

    async def _op_get(self, req: Request, _p: _Payload) -> tuple[dict[str, Any], Any]:
        a = req.args
        r = self._replica(a["partition"])
        bid = BlobId.from_bytes(a["blob_id"])
        rng = a["range"]
        if rng is not None and (len(rng) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in rng)):
            raise InvalidArgument("range must be [start >= 0, length >= 0]")
        verify_max = self.cfg.storage.verify_on_read_max_bytes

        def locate_and_read() -> tuple[BlobRead, int, int, bytes | None]:
            # one trip to an I/O thread for a small blob: locate, then read (and verify)
            read: BlobRead = r.get(bid, a["include_deleted"], a["include_expired"])
            total = read.payload_len
            start, length = 0, total
            if rng is not None:
                start, length = int(rng[0]), int(rng[1])
                if start > total:
                    raise InvalidArgument(f"range starts at {start}, past the blob's "
                                          f"{total} bytes")
                length = min(length, total - start)
            data = None
            if not a["info_only"] and length and read.header.total_len <= verify_max:
                data = read.read_payload(start, length)  # verifies the whole record first
            return read, start, length, data

        read, start, length, data = await self._run(locate_and_read)
        fields = {"props": read.properties.to_wire(), "usermeta": read.user_metadata,
                  "state": state_to_wire(read.state, read.expiry_ms),
                  "blob_size": read.payload_len, "range_start": start}
        if a["info_only"] or length == 0:
            return fields, None
        if data is not None:
            return fields, data
        if start == 0 and length == read.payload_len:
            return fields, _Stream(read.iter_payload(_STREAM_CHUNK_BYTES), length)
        return fields, _Stream(_range_pieces(read, start, length), length)

    def _mutation_args(self, req: Request) -> tuple[Replica, BlobId, int | None, int | None]:
        a = req.args
        r = self._replica(a["partition"])
        bid = BlobId.from_bytes(a["blob_id"])
        t, lv = a["time_ms"], a["life_version"]
        if t is not None and not 0 <= t <= _U64:
            raise InvalidArgument("time_ms out of range")
        if lv is not None and not 0 <= lv <= _U16:
            raise InvalidArgument("life_version must be in [0, 65535]")
        return r, bid, t, lv

    async def _op_delete(self, req: Request, _p: _Payload) -> tuple[dict[str, Any], None]:
        r, bid, t, lv = self._mutation_args(req)
        res = await self._run(functools.partial(
            r.delete, bid, t, lv, tombstone_if_missing=req.args["tombstone_if_missing"]))
        await r.durable_async(res.end)
        self._notify_change()
        return {"result": res.status, "life_version": res.life_version}, None

    async def _op_ttl_update(self, req: Request,
                             _p: _Payload) -> tuple[dict[str, Any], None]:
        r, bid, t, lv = self._mutation_args(req)
        res = await self._run(r.ttl_update, bid, t, lv)
        await r.durable_async(res.end)
        self._notify_change()
        return {"result": res.status, "life_version": res.life_version}, None

    async def _op_undelete(self, req: Request, _p: _Payload) -> tuple[dict[str, Any], None]:
        r, bid, t, lv = self._mutation_args(req)
        res = await self._run(r.undelete, bid, t, lv)
        await r.durable_async(res.end)
        self._notify_change()
        return {"result": res.status, "life_version": res.life_version}, None

    @staticmethod
    def _check_container(a: dict[str, Any]) -> None:
        if not (0 <= a["account_id"] <= _U16 and 0 <= a["container_id"] <= _U16):
            raise InvalidArgument("account_id and container_id must be in [0, 65535]")

    async def _op_name_put(self, req: Request, _p: _Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        self._check_container(a)
        for k in ("ts_ms", "created_ms", "size"):
            if not 0 <= a[k] <= _U64:
                raise InvalidArgument(f"{k} out of range")
        if not 0 <= a["dc_id"] <= 0xFF:
            raise InvalidArgument("dc_id must be in [0, 255]")
        entry = NameRecord(a["account_id"], a["container_id"], a["name"], a["blob_id"],
                           a["ts_ms"], a["dc_id"], a["deleted"], a["size"], a["content_type"],
                           a["created_ms"])
        token, base = a["token"], a["base"]
        if token is not None and base is not None:
            if not (len(base) == 3 and all(isinstance(x, int) and not isinstance(x, bool)
                                           for x in base[:2])
                    and isinstance(base[2], (bytes, bytearray))):
                raise InvalidArgument("base must be [ts_ms, dc_id, blob_id]")
            base = (base[0], base[1], bytes(base[2]))
        fut = await self._run(functools.partial(
            r.name_put, entry, bytes(token) if token is not None else None, base))
        await asyncio.wrap_future(fut)
        self._notify_change()
        return {}, None

    async def _op_name_reserve(self, req: Request,
                               _p: _Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        self._check_container(a)
        if not 1 <= len(a["token"]) <= 64:
            raise InvalidArgument("token must be 1 to 64 bytes")
        granted, e = await self._run(functools.partial(
            r.name_reserve, a["account_id"], a["container_id"], a["name"], bytes(a["token"]),
            a["lease_ms"]))
        return {"granted": granted,
                "entry": e.to_wire() if e is not None else None}, None

    async def _op_name_release(self, req: Request,
                               _p: _Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        self._check_container(a)
        r.name_release(a["account_id"], a["container_id"], a["name"], bytes(a["token"]))
        return {}, None

    async def _op_name_get(self, req: Request, _p: _Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        self._check_container(a)
        e = await self._run(r.name_get, a["account_id"], a["container_id"], a["name"])
        return {"entry": e.to_wire() if e is not None else None}, None

    async def _op_name_list(self, req: Request,
                            _p: _Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        self._check_container(a)
        limit = max(1, min(a["limit"], MAX_LIST_LIMIT))
        entries = await self._run(functools.partial(
            r.name_list, a["account_id"], a["container_id"], a["prefix"], a["start_after"],
            limit))
        out: list[dict[str, Any]] = []
        used = 0
        truncated = False
        for e in entries:
            w = e.to_wire()
            used += _approx_wire_bytes(w)
            if used > _REPLY_LIST_BUDGET_BYTES and out:
                truncated = True  # the client continues from the last name it got
                break
            out.append(w)
        return {"entries": out, "truncated": truncated}, None

    async def _entries(self, r: Replica, tok: Any, max_entries: int, max_bytes: int
                       ) -> tuple[list[dict[str, Any]], tuple[bytes, int], int]:
        token: tuple[bytes, int] | None = None
        if tok is not None:
            if (not isinstance(tok, (list, tuple)) or len(tok) != 2
                    or not isinstance(tok[0], (bytes, bytearray))
                    or not isinstance(tok[1], int) or isinstance(tok[1], bool) or tok[1] < 0):
                raise InvalidArgument("token must be [incarnation bytes, sequence >= 0]")
            token = (bytes(tok[0]), int(tok[1]))
        max_entries = max(1, min(max_entries, MAX_ENTRIES_BATCH))
        max_bytes = max(1, min(max_bytes, MAX_ENTRIES_BYTES))
        if token is not None and r.caught_up(token):
            return [], token, 0
        entries, new_token, remaining = await self._run(r.entries_since, token, max_entries,
                                                        max_bytes)
        out: list[dict[str, Any]] = []
        used = 0
        last_seq = token[1] if token is not None and token[0] == new_token[0] else 0
        for i, e in enumerate(entries):
            w = e.to_wire()
            used += _approx_wire_bytes(w)
            if used > _REPLY_LIST_BUDGET_BYTES and out:
                # cut to keep the header bounded: the token covers what is returned, the rest
                # counts as remaining
                remaining += sum(x.record_len for x in entries[i:])
                new_token = (new_token[0], last_seq)
                break
            out.append(w)
            last_seq = e.sequence
        return out, new_token, remaining

    async def _op_entries_since(self, req: Request,
                                _p: _Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        out, new_token, remaining = await self._entries(r, a["token"], a["max_entries"],
                                                        a["max_bytes"])
        return {"entries": out, "token": [new_token[0], new_token[1]],
                "remaining_bytes": remaining}, None

    async def _op_replicate(self, req: Request, _p: _Payload) -> tuple[dict[str, Any], None]:
        """Batched pull for every partition a peer shares with this node; long-polls."""
        a = req.args
        reqs = a["requests"]
        if len(reqs) > 100_000 or not all(isinstance(x, (list, tuple)) and len(x) == 2
                                          and isinstance(x[0], int) for x in reqs):
            raise InvalidArgument("requests must be [[partition, token], ...]")
        wait_s = max(0, min(a["wait_ms"], 60_000)) / 1000
        deadline = time.monotonic() + wait_s
        per_bytes = max(1, a["max_bytes"] // max(1, len(reqs)))
        while True:
            changed = self._changed
            results = []
            any_entries = False
            budget = _REPLY_LIST_BUDGET_BYTES
            for pid, tok in reqs:
                r = self._replica(pid)
                out, token, remaining = await self._entries(r, tok, a["max_entries"], per_bytes)
                size = sum(_approx_wire_bytes(w) for w in out)
                if size > budget and any_entries:  # keep the reply header bounded
                    same = tok is not None and bytes(tok[0]) == token[0]
                    out, token = [], (token[0], tok[1] if same else 0)
                budget -= size
                any_entries = any_entries or bool(out)
                results.append([pid, out, [token[0], token[1]], remaining])
            left = deadline - time.monotonic()
            if any_entries or left <= 0 or self._draining:
                return {"results": results}, None
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                return {"results": results}, None
            # Something changed: let a few more writes land before answering, so one
            # round carries a batch, not one record per write per peer (each round costs
            # both sides a scan per partition; lag grows by at most this much).
            await asyncio.sleep(min(_REPLICATE_COALESCE_S,
                                    max(0.0, deadline - time.monotonic())))

    async def _op_digest(self, req: Request, _p: _Payload) -> tuple[dict[str, Any], None]:
        r = self._replica(req.args["partition"])
        return await self._run(r.digest), None

    async def _op_stats(self, req: Request, _p: _Payload) -> tuple[dict[str, Any], None]:
        def collect() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for pid, r in sorted(self.replicas.items()):
                m = asdict(r.stats())
                m["damage"] = [{"kind": d.kind, "segment": d.segment, "offset": d.offset,
                                "length": d.length, "reason": d.reason}
                               for d in list(r.damage)]
                m["usage_ready"] = r.usage.ready
                m["usage"] = [[a, c, t.bytes, t.blobs, t.expiring_chunk_bytes,
                               t.expired_bytes]
                              for (a, c), t in sorted(r.usage_totals().items())]
                out.append(m)
            for pid, err in sorted(self.failed_replicas.items()):
                out.append({"partition_id": pid, "error": err})
            return out

        return {"node": self.node_id, "replicas": await self._run(collect)}, None

    async def _op_blob_state(self, req: Request,
                             _p: _Payload) -> tuple[dict[str, Any], None]:
        a = req.args
        r = self._replica(a["partition"])
        bid = BlobId.from_bytes(a["blob_id"])
        if bid.partition_id != r.partition_id:
            raise InvalidArgument(f"blob {bid} belongs to partition {bid.partition_id}")
        state, has_put = await self._run(r.state, bid)
        return {"state": state_to_wire(state) if state is not None else None,
                "has_put": has_put}, None


class _Stream:
    """A reply payload produced piece by piece by a blocking iterator (run on I/O threads)."""

    def __init__(self, pieces: Iterator[bytes], length: int) -> None:
        self.pieces = pieces
        self.length = length


def _range_pieces(read: BlobRead, start: int, length: int) -> Iterator[bytes]:
    # a range of a large record: read as it is, in bounded pieces (a whole-record check would
    # read the entire record for every range request; the scrubber checks sealed segments)
    off = start
    end = start + length
    while off < end:
        n = min(_STREAM_CHUNK_BYTES, end - off)
        yield read.read_payload(off, n)
        off += n


def _approx_wire_bytes(m: dict[str, Any]) -> int:
    n = 16
    for k, v in m.items():
        n += len(k) + 10
        if isinstance(v, (bytes, str)):
            n += len(v) * (4 if isinstance(v, str) else 1)
    return n


def run_node(cfg: ClusterConfig, node_id: str, data_dir: str | Path | None = None,
             replication_factory: ReplicationFactory | None = None, *,
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
