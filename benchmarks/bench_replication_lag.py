"""Cross-DC replication lag at 50 % of the maximum PUT load (the 2-DC profile).

Starts the profile of config/local.yaml on loopback: 2 datacenters x 3 storage nodes, 16
partitions with 3 replicas in each datacenter, default durability (fsync group commit), one
frontend per datacenter, replication on. For each workload (4 KiB, and a size mix):
  1. max PUT throughput: closed loop, ``--clients`` clients through the dc1 frontend for
     ``--max-seconds``; then the time until every replica of every partition holds the same
     number of blobs again (the replication backlog the burst left behind);
  2. paced load at ``--load`` (50 %) of that maximum: open loop (each PUT is due at
     t0 + i / rate whether or not earlier ones finished; latency counts from the due time),
     for ``--seconds``. Every k-th acknowledged PUT is sampled (about ``--samples-per-s`` per
     second) and a poller asks the partition's replicas directly over the node protocol
     (``blob_state``, batched every ``--poll-ms``) until each has the blob: not through the
     dc2 frontend, which falls back to the origin datacenter and would hide the lag.
Lag = the poll reply that first showed the blob minus the moment the client got the 201 (so
it is rounded up by up to one poll interval, or 10 % for lags over 10 intervals: older samples
are polled less often). Rows: the first dc2 replica (the cross-DC hop: from then on a dc2
read is served in dc2, since the frontend asks all its local replicas before the origin
datacenter), all three dc2 replicas (the cross-DC hop, then intra-DC from the designated
puller), and the third dc1 replica (intra-DC convergence; the frontend acknowledges at 2 of
3). Target (BENCHMARKS.md): cross-DC lag p99 < 1 s on loopback, checked on the first row.
A thread writes 4 KiB + fdatasync every 50 ms meanwhile: on a shared machine the disk's
fsync latency is what every replication hop waits for, so it is printed beside the lag.

``--remote-down kill stop`` repeats each paced run (at the same rate) with one dc2 node down:
the one that is dc2's designated cross-DC puller of the most partitions, killed (``kill -9``)
or stopped (SIGSTOP: its peers' requests hang, nobody notices it) just before the run and
brought back after it. The lag rows then count the live dc2 replicas only. Target (issue 13):
cross-DC lag p99 < 2 s while any one node of the remote datacenter is dead or stopped (a
standby fetches a blob itself once it is ``standby_fetch_delay_ms`` old, docs/replication.md).

The load runs in a child process and the poller in this one (CLOCK_MONOTONIC is shared), so a
busy load generator does not delay the polls. CPU per process is sampled (psutil) over each
paced window; ``blob_state`` answers from the index, so a blob counts as present once a read
would find it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from ambry.common.blobid import BlobId, decode
from ambry.common.config import ClusterMap, load_config
from ambry.common.errors import AmbryError
from ambry.protocol.client import NodeClient
from ambry.testing.frontend import StoreCluster
from benchmarks import limits
from benchmarks._results import print_run_header
from benchmarks._stats import percentiles_ms

HEADERS = {"x-ambry-service-id": "bench", "x-ambry-content-type": "application/octet-stream"}
KIB = 1024
# (size, weight): mostly small blobs, a few large ones; mean ~48 KiB
SIZE_MIX = [(1 * KIB, 30), (4 * KIB, 30), (16 * KIB, 20), (64 * KIB, 12), (256 * KIB, 6),
            (1024 * KIB, 2)]
WORKLOADS = {"4KiB": [(4 * KIB, 1)], "mix": SIZE_MIX}
# the storage and frontend sections of config/local.yaml (the profile this reports on)
LOCAL_STORAGE = {"segment_size_bytes": "256MiB", "durability": "fsync",
                 "compaction_retention_s": 3600, "snapshot_interval_s": 30}
LOCAL_FRONTEND = {"chunk_size_bytes": "4MiB", "upload_window_chunks": 4,
                  "download_prefetch_chunks": 2, "inflight_budget_bytes": "128MiB",
                  "node_timeout_ms": 10000, "failure_threshold_errors": 3,
                  "failure_backoff_s": 10, "ttl_update_buffer_s": 1}


DOWN = {"kill": "killed (kill -9)", "stop": "stopped (SIGSTOP)"}


def _label(workload: str, row: dict[str, Any] | None = None) -> str:
    name = "4 KiB" if workload == "4KiB" else "mix 1 KiB-1 MiB"
    if row and row.get("down"):
        name += f", {row['victim']} {DOWN[row['down']]}"
    return name


# ============================================================ load generator (child process)
def _generator(conn: Connection, base: str, mix: list[tuple[int, int]], clients: int,
               seconds: float, rate: float, sample_every: int, max_inflight: int,
               seed: int) -> None:
    """Child process: closed loop (``rate`` 0, ``clients`` workers) or open loop at ``rate``
    PUT/s. Sends ("start", t0), ("s", blob id, ack time) for every ``sample_every``-th
    acknowledged PUT, and ("done", summary)."""
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.Runner()
    with runner:
        summary = runner.run(_drive(conn, base, mix, clients, seconds, rate, sample_every,
                                    max_inflight, seed))
    conn.send(("done", summary))
    conn.close()


async def _drive(conn: Connection, base: str, mix: list[tuple[int, int]], clients: int,
                 seconds: float, rate: float, sample_every: int, max_inflight: int,
                 seed: int) -> dict[str, Any]:
    import aiohttp

    rnd = random.Random(seed)
    sizes = [s for s, _ in mix]
    weights = [w for _, w in mix]
    payloads = {s: [os.urandom(s) for _ in range(4)] for s in sizes}
    lat: list[float] = []
    st = {"ok": 0, "bytes": 0, "errors": 0, "issued": 0}
    first_error: list[str] = []
    limit = clients if rate == 0 else max_inflight
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            timeout=aiohttp.ClientTimeout(total=60)) as s:

        async def one(size: int, started: float) -> None:
            body = payloads[size][st["issued"] % 4]
            st["issued"] += 1
            try:
                async with s.post(base + "/", data=body, headers=HEADERS) as r:
                    await r.read()
                    ack = time.monotonic()
                    if r.status != 201:
                        st["errors"] += 1
                        if not first_error:
                            first_error.append(f"{r.status} {r.headers.get('x-ambry-error-code')}")
                        return
                    loc = r.headers["Location"]
            except (aiohttp.ClientError, TimeoutError) as e:
                st["errors"] += 1
                if not first_error:
                    first_error.append(repr(e))
                return
            st["ok"] += 1
            st["bytes"] += size
            lat.append(ack - started)
            if sample_every and st["ok"] % sample_every == 0:
                conn.send(("s", loc.rsplit("/", 1)[-1], ack))

        t0 = time.monotonic()
        cpu0 = os.times()
        conn.send(("start", t0))
        if rate == 0:
            stop = t0 + seconds

            async def worker() -> None:
                while time.monotonic() < stop:
                    await one(rnd.choices(sizes, weights)[0], time.monotonic())

            await asyncio.gather(*(worker() for _ in range(clients)))
        else:
            slots = asyncio.Semaphore(max_inflight)
            tasks: set[asyncio.Task[None]] = set()

            async def paced(size: int, due: float) -> None:
                async with slots:  # waiting here counts in the latency (no coordinated omission)
                    await one(size, due)

            i = 0
            while True:
                now = time.monotonic()
                if now - t0 >= seconds:
                    break
                while t0 + i / rate <= now:
                    t = asyncio.ensure_future(paced(rnd.choices(sizes, weights)[0],
                                                    t0 + i / rate))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    i += 1
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            st["due"] = i
            await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        cpu1 = os.times()
    p50, p99, mx = percentiles_ms(lat)
    return {"ok": st["ok"], "errors": st["errors"], "bytes": st["bytes"], "due": st.get("due", 0),
            "elapsed": elapsed, "ops": st["ok"] / elapsed, "mbps": st["bytes"] / elapsed / 1e6,
            "p50": p50, "p99": p99, "max": mx,
            "cpu_share": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed,
            "first_error": first_error[0] if first_error else ""}


# ============================================================ poller (this process)
@dataclass
class Sample:
    blob: BlobId
    ack_t: float
    local: tuple[str, ...]   # replicas in the datacenter that took the PUT
    remote: tuple[str, ...]  # replicas in the other datacenter
    seen: dict[str, float] = field(default_factory=dict)
    next_check: float = 0.0

    @property
    def complete(self) -> bool:
        return len(self.seen) == len(self.local) + len(self.remote)


class LagTracker:
    """Polls the replicas that do not have a sampled blob yet (one ``blob_state`` each, all
    of a round at once, a round every ``interval_s``) and records when each first has it.
    A sample is asked again after ``max(interval_s, backoff x its age)``: the error stays
    within one interval or ``backoff`` of the lag, and a backlog of slow samples cannot turn
    the poller into the bottleneck."""

    def __init__(self, clients: dict[str, NodeClient], cmap: ClusterMap, local_dc: str,
                 remote_dc: str, interval_s: float, give_up_s: float,
                 backoff: float = 0.1, exclude: frozenset[str] = frozenset()) -> None:
        self.clients = clients
        self.exclude = exclude  # a node that is down: not asked, not waited for
        self.cmap = cmap
        self.local_dc = local_dc
        self.remote_dc = remote_dc
        self.interval_s = interval_s
        self.give_up_s = give_up_s
        self.backoff = backoff
        self.pending: list[Sample] = []
        self.done: list[Sample] = []
        self.given_up: list[Sample] = []
        self.errors = 0
        self.checks = 0
        self.rounds = 0
        self.closed = False
        self._wake = asyncio.Event()

    def add(self, blob_text: str, ack_t: float) -> None:
        bid = decode(blob_text)
        pid = bid.partition_id
        self.pending.append(Sample(
            bid, ack_t, tuple(n.id for n in self.cmap.replicas_in(pid, self.local_dc)
                              if n.id not in self.exclude),
            tuple(n.id for n in self.cmap.replicas_in(pid, self.remote_dc)
                  if n.id not in self.exclude)))
        self._wake.set()

    async def _check(self, s: Sample, node: str) -> None:
        try:
            st = await self.clients[node].blob_state(s.blob)
        except AmbryError:  # counted, and asked again next round
            self.errors += 1
            return
        if st.has_put:
            s.seen.setdefault(node, time.monotonic())

    async def run(self) -> None:
        while not (self.closed and not self.pending):
            t0 = time.monotonic()
            due = [s for s in self.pending if s.next_check <= t0]
            checks = [self._check(s, n) for s in due
                      for n in (*s.local, *s.remote) if n not in s.seen]
            for s in due:
                s.next_check = t0 + max(self.interval_s, self.backoff * (t0 - s.ack_t))
            if checks:
                self.checks += len(checks)
                self.rounds += 1
                await asyncio.gather(*checks)
            now = time.monotonic()
            still = []
            for s in self.pending:
                if s.complete:
                    self.done.append(s)
                elif now - s.ack_t > self.give_up_s:
                    self.given_up.append(s)
                else:
                    still.append(s)
            self.pending = still
            self._wake.clear()
            left = self.interval_s - (time.monotonic() - t0)
            if not self.pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(left, self.interval_s))
            elif left > 0:
                await asyncio.sleep(left)

    def lags(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"remote_first": [], "remote_all": [], "local_all": []}
        for s in self.done:
            rem = [s.seen[n] for n in s.remote]
            out["remote_first"].append(min(rem) - s.ack_t)
            out["remote_all"].append(max(rem) - s.ack_t)
            out["local_all"].append(max(s.seen[n] for n in s.local) - s.ack_t)
        return out


# ============================================================ orchestration
class ChildLoad:
    """One load generator process and the messages it sends."""

    def __init__(self, ctx: Any, args: tuple[Any, ...],
                 on_sample: Any = None, on_start: Any = None) -> None:
        self.parent, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_generator, args=(child, *args), daemon=True)
        self.on_sample = on_sample
        self.on_start = on_start
        self.summary: asyncio.Future[dict[str, Any]] | None = None
        self._child = child

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.summary = loop.create_future()
        self.proc.start()
        self._child.close()
        loop.add_reader(self.parent.fileno(), self._readable)
        try:
            return await self.summary
        finally:
            loop.remove_reader(self.parent.fileno())
            await asyncio.to_thread(self.proc.join, 30)
            self.parent.close()

    def _readable(self) -> None:
        assert self.summary is not None
        try:
            while self.parent.poll():
                kind, *rest = self.parent.recv()
                if kind == "s" and self.on_sample is not None:
                    self.on_sample(*rest)
                elif kind == "start" and self.on_start is not None:
                    self.on_start(*rest)
                elif kind == "done" and not self.summary.done():
                    self.summary.set_result(rest[0])
        except EOFError:
            if not self.summary.done():
                self.summary.set_exception(RuntimeError(
                    f"load generator exited (code {self.proc.exitcode}) without a summary"))
            asyncio.get_running_loop().remove_reader(self.parent.fileno())


async def converged_after(clients: dict[str, NodeClient], timeout_s: float) -> float | None:
    """Seconds until every replica of every partition holds the same number of blobs (the
    benchmark only adds blobs, so equal counts mean replication caught up); None on timeout."""
    t0 = time.monotonic()
    while True:
        per: dict[int, set[int]] = defaultdict(set)
        with contextlib.suppress(AmbryError):  # a busy node: ask again
            for reps in await asyncio.gather(*(c.stats() for c in clients.values())):
                for r in reps:
                    per[int(r["partition_id"])].add(int(r.get("blobs", -1)))
            if per and all(len(v) == 1 for v in per.values()):
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            return None
        await asyncio.sleep(0.2)


def py_spy(out_dir: str, workload: str, procs: dict[str, psutil.Process],
           seconds: float) -> list[subprocess.Popen[bytes]]:
    """Start py-spy (raw, non-blocking) on every process, for ``seconds``."""
    exe = Path(sys.executable).parent / "py-spy"
    os.makedirs(out_dir, exist_ok=True)
    return [subprocess.Popen(
        [str(exe), "record", "-p", str(p.pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw",
         "--nonblocking", "-o", os.path.join(out_dir, f"{workload}-{name.replace(' ', '-')}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, p in procs.items()]


class FsyncProbe:
    """A thread that writes 4 KiB + fdatasync every ``interval_s`` in ``directory`` and keeps
    the latencies: how slow the disk the nodes share is during a run (on a shared machine it is
    the first suspect when replication is slow: every hop waits for a group commit)."""

    def __init__(self, directory: str, interval_s: float = 0.05) -> None:
        self.path = os.path.join(directory, "fsync-probe.bin")
        self.interval_s = interval_s
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fsync-probe", daemon=True)

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        buf = os.urandom(4096)
        try:
            while not self._stop.wait(self.interval_s):
                t0 = time.perf_counter()
                os.write(fd, buf)
                os.fdatasync(fd)
                self.latencies.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
            os.remove(self.path)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_times(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for k, p in procs.items():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[k] = t.user + t.system
    return out


async def cross_dc_fetches(store: StoreCluster, dc: str) -> dict[str, int]:
    """Per node of ``dc``: blobs it fetched from the other datacenter since it started
    (/replication)."""

    def one(url: str) -> int:
        with urllib.request.urlopen(url, timeout=5) as r:
            rows = json.loads(r.read())["peers"]
        return sum(int(x["blobs_fetched"]) for x in rows if x["cross_dc"])

    nodes = store.nodes_in(dc)
    got = await asyncio.gather(*(asyncio.to_thread(one, n.http_url("/replication"))
                                 for n in nodes))
    return {n.node_id: k for n, k in zip(nodes, got, strict=True)}


def designated_victim(cmap: ClusterMap, datacenter: str) -> str:
    """The node of ``datacenter`` that is its designated cross-DC puller (first replica in
    cluster-map order) of the most partitions."""
    firsts = [cmap.replicas_in(p.id, datacenter)[0].id for p in cmap.partitions]
    return max(sorted(set(firsts)), key=firsts.count)


def fail_node(store: StoreCluster, node_id: str, how: str) -> None:
    node = store.nodes[node_id]
    assert node.proc is not None
    if how == "kill":
        node.kill()
    else:
        node.proc.send_signal(signal.SIGSTOP)


def restore_node(store: StoreCluster, node_id: str, how: str,
                 procs: dict[str, psutil.Process]) -> None:
    node = store.nodes[node_id]
    if how == "kill":
        node.start()
        assert node.pid is not None
        procs[f"node {node_id}"] = psutil.Process(node.pid)
    else:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGCONT)
    node.wait_ready()
    # until its peers pull from it again (they retry after a backoff of up to 10 s): a next
    # case that starts while they still see it down measures the detected failure, not the
    # one nobody notices
    deadline = time.monotonic() + 60
    for peer in store.nodes_in(node_id.split("-")[0]):  # the store names nodes <dc>-n<i>
        while peer.node_id != node_id:
            with urllib.request.urlopen(peer.http_url("/replication"), timeout=5) as r:
                rows = [x for x in json.loads(r.read())["peers"] if x["peer"] == node_id]
            if rows and all(x["peer_down_s"] == 0 for x in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.1)


async def run_workload(a: argparse.Namespace, store: StoreCluster, cmap: ClusterMap,
                       clients: dict[str, NodeClient], workload: str,
                       procs: dict[str, psutil.Process], down: str = "",
                       max_result: dict[str, Any] | None = None) -> dict[str, Any]:
    """One workload: its maximum (unless ``max_result`` gives it), then the paced run with
    the lag poller; with ``down`` ("kill" / "stop"), dc2's designated puller of the most
    partitions is down during the paced run."""
    ctx = multiprocessing.get_context("spawn")
    base = store.frontends["dc1"].base_url
    mix = WORKLOADS[workload]
    res: dict[str, Any] = {"workload": workload, "down": down, "victim": ""}
    fetched0 = await cross_dc_fetches(store, "dc2")

    # 1. the maximum, closed loop
    if max_result is None:
        print(f"  {workload}: max PUT load, {a.clients} clients, {a.max_seconds:.0f} s",
              file=sys.stderr, flush=True)
        mx = await ChildLoad(ctx, (base, mix, a.clients, a.max_seconds, 0.0, 0, 0, 1)).run()
        res["drain_max_s"] = await converged_after(clients, a.drain_timeout)
    else:
        mx = max_result
        res["drain_max_s"] = None
    res["max"] = mx

    # 2. paced at a.load x max, with the lag poller
    rate = max(1.0, mx["ops"] * a.load)
    sample_every = max(1, round(rate / a.samples_per_s))
    victim = designated_victim(cmap, "dc2") if down else ""
    res["victim"] = victim
    tracker = LagTracker(clients, cmap, "dc1", "dc2", a.poll_ms / 1000, a.give_up,
                         exclude=frozenset({victim} - {""}))
    cpu0: dict[str, float] = {}
    wall0 = [0.0]
    me = psutil.Process()
    procs_now = procs | {"lag poller": me}

    spies: list[subprocess.Popen[bytes]] = []

    def on_start(_t0: float) -> None:
        cpu0.update(cpu_times(procs_now))
        wall0[0] = time.monotonic()
        if a.py_spy:
            spies.extend(py_spy(a.py_spy, workload, procs, min(a.seconds, 20.0)))

    print(f"  {workload}: paced at {rate:,.0f} PUT/s for {a.seconds:.0f} s, sampling every "
          f"{sample_every}" + (f", {victim} {DOWN[down]}" if down else ""),
          file=sys.stderr, flush=True)
    load = ChildLoad(ctx, (base, mix, a.clients, a.seconds, rate, sample_every,
                           a.max_inflight, 2), on_sample=tracker.add, on_start=on_start)
    if down:
        fail_node(store, victim, down)
    try:
        poll_task = asyncio.ensure_future(tracker.run())
        with FsyncProbe(str(store.root)) as probe:
            paced = await load.run()
        cpu1 = cpu_times(procs_now)
        wall = time.monotonic() - wall0[0]
        for spy in spies:
            await asyncio.to_thread(spy.wait)
        tracker.closed = True
        await poll_task
    finally:
        if down:
            await asyncio.to_thread(restore_node, store, victim, down, procs)
    res["drain_paced_s"] = await converged_after(clients, a.drain_timeout)
    fetched1 = await cross_dc_fetches(store, "dc2")
    res.update(paced=paced, rate=rate, fsync=percentiles_ms(probe.latencies),
               sample_every=sample_every, lags=tracker.lags(),
               given_up=len(tracker.given_up), poll_errors=tracker.errors,
               checks=tracker.checks, rounds=tracker.rounds,
               cpu={k: (cpu1[k] - cpu0[k]) / wall for k in cpu1 if k in cpu0}
               | {"load generator": paced["cpu_share"]},
               fetches_per_put=sum(fetched1[n] - (0 if down == "kill" and n == victim
                                                  else fetched0[n]) for n in fetched1)
               / max(1, paced["ok"] + (mx["ok"] if max_result is None else 0)))
    return res


async def run(a: argparse.Namespace, store: StoreCluster) -> list[dict[str, Any]]:
    cfg = load_config(store.config_path)
    cmap = cfg.cluster_map
    clients = {n.id: NodeClient(n.host, n.port, pool_size=2, request_timeout_ms=10_000)
               for n in cmap.nodes}
    procs = {f"node {nid}": psutil.Process(n.pid) for nid, n in store.nodes.items() if n.pid}
    procs |= {f"frontend {dc}": psutil.Process(f.pid)
              for dc, f in store.frontends.items() if f.pid}
    try:
        rows = []
        for w in a.workloads:
            healthy = await run_workload(a, store, cmap, clients, w, procs)
            rows.append(healthy)
            for down in a.remote_down:
                rows.append(await run_workload(a, store, cmap, clients, w, procs, down,
                                               max_result=healthy["max"]))
        return rows
    finally:
        for c in clients.values():
            await c.close()


def report(a: argparse.Namespace, rows: list[dict[str, Any]], lim: dict[str, float],
           load_before: tuple[float, ...], load_after: tuple[float, ...]) -> bool:
    print(f"# Cross-DC replication lag ({time.strftime('%Y-%m-%d %H:%M')}, 2 DCs x 3 nodes, "
          f"{a.partitions} partitions, 3 + 3 copies, fsync group commit, {os.cpu_count()} "
          f"CPUs)\n")
    print(f"Machine load (1/5/15 min) before: {load_before[0]:.2f} / {load_before[1]:.2f} / "
          f"{load_before[2]:.2f}, after: {load_after[0]:.2f} / {load_after[1]:.2f} / "
          f"{load_after[2]:.2f}. Limits measured in this run: 4 KiB write+fdatasync "
          f"{lim['fsync_4k_iops']:,.0f} IOPS (1 writer); sequential write + fsync "
          f"{lim['seq_write_fsync_mbps']:,.0f} MB/s; loopback TCP "
          f"{lim['loopback_tcp_mbps']:,.0f} MB/s.\n")
    print(f"Load: through the dc1 frontend; max = {a.clients} clients closed loop for "
          f"{a.max_seconds:.0f} s; paced = open loop at {a.load:.0%} of that max for "
          f"{a.seconds:.0f} s (latency from each PUT's due time). Lag polled on the nodes "
          f"every {a.poll_ms:.0f} ms, or every 10 % of its age when older (values are rounded "
          f"up by up to that much).\n")
    print("## Maximum PUT load (closed loop)\n")
    print("| workload | clients | ops/s | MB/s | p50 ms | p99 ms | max ms | errors | "
          "all 6 replicas equal after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["down"]:
            continue  # paced at the healthy run's maximum
        m = r["max"]
        drain = f"{r['drain_max_s']:.1f} s" if r["drain_max_s"] is not None else \
            f"> {a.drain_timeout:.0f} s"
        print(f"| {_label(r['workload'])} PUT | {a.clients} | {m['ops']:,.0f} | "
              f"{m['mbps']:,.1f} | {m['p50']:.1f} | {m['p99']:.1f} | {m['max']:.0f} | "
              f"{m['errors']} | {drain} |")
    print(f"\n## Replication lag at {a.load:.0%} of the maximum (open loop)\n")
    print("| workload | PUT/s achieved / target / max | PUT p50 / p99 ms | PUT errors | lag of "
          "| samples | p50 ms | p99 ms | max ms | not seen | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for r in rows:
        p = r["paced"]
        lags = r["lags"]
        head = (f"| {_label(r['workload'], r)} | {p['ops']:,.0f} / {r['rate']:,.0f} / "
                f"{r['max']['ops']:,.0f} | {p['p50']:.1f} / {p['p99']:.1f} | {p['errors']} ")
        for key, what in (("remote_first", "first dc2 replica (cross-DC)"),
                          ("remote_all", "both live dc2 replicas" if r["down"]
                           else "all 3 dc2 replicas"),
                          ("local_all", "3rd dc1 replica (intra-DC)")):
            p50, p99, mx = percentiles_ms(lags[key])
            met = ""
            if key == "remote_first":
                bound_ms = 2000 if r["down"] else 1000
                good = p99 < bound_ms and r["given_up"] == 0 and len(lags[key]) > 0
                ok = ok and good
                met = f"p99 < {bound_ms // 1000} s: " + ("met" if good else "**NOT met**")
            print(f"{head}| {what} | {len(lags[key])} | {p50:.0f} | {p99:.0f} | {mx:.0f} | "
                  f"{r['given_up']} | {met} |")
            head = "| | | | "
    print("\n## Per run\n")
    print("| workload | sampled 1 in | poll rounds | blob_state calls | poll errors | "
          "all replicas equal after the paced run | cross-DC blob fetches per PUT | "
          "4 KiB fdatasync on the same disk meanwhile, p50 / p99 / max ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        drain = f"{r['drain_paced_s']:.1f} s" if r["drain_paced_s"] is not None else \
            f"> {a.drain_timeout:.0f} s"
        print(f"| {_label(r['workload'], r)} | {r['sample_every']} | {r['rounds']} | "
              f"{r['checks']:,} | {r['poll_errors']} | {drain} | {r['fetches_per_put']:.2f} | "
              f"{r['fsync'][0]:.1f} / {r['fsync'][1]:.1f} / {r['fsync'][2]:.0f} |")
    print("\n## CPU per process during the paced run (% of one core)\n")
    names = sorted({k for r in rows for k in r["cpu"]},
                   key=lambda k: (k.split()[0] != "frontend", k.split()[0] != "node", k))
    print("| process | " + " | ".join(_label(r["workload"], r) for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in names:
        print(f"| {k} | " + " | ".join(f"{r['cpu'].get(k, 0) * 100:.0f} %" for r in rows) + " |")
    print("| **sum** | " + " | ".join(f"{sum(r['cpu'].values()) * 100:.0f} %" for r in rows)
          + f" (of {(os.cpu_count() or 1) * 100} %) |")
    for r in rows:
        for phase in ("max", "paced"):
            if r[phase]["first_error"]:
                print(f"\nFirst {phase} error ({_label(r['workload'], r)}): "
                      f"{r[phase]['first_error']}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--clients", type=int, default=32, help="clients of the max-load phase")
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=45.0, help="paced run length")
    ap.add_argument("--load", type=float, default=0.5, help="paced rate as a share of max")
    ap.add_argument("--samples-per-s", type=float, default=20.0)
    ap.add_argument("--poll-ms", type=float, default=20.0)
    ap.add_argument("--give-up", type=float, default=60.0,
                    help="seconds after which a sampled blob not everywhere counts as not seen")
    ap.add_argument("--max-inflight", type=int, default=256,
                    help="open-loop PUTs in flight at most (later ones wait, counted in latency)")
    ap.add_argument("--drain-timeout", type=float, default=120.0)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--py-spy", default=None, metavar="DIR",
                    help="record py-spy profiles of every node and frontend during each paced "
                         "run (first 20 s) into DIR")
    ap.add_argument("--remote-down", nargs="*", default=["kill", "stop"], choices=list(DOWN),
                    help="also run each paced load with dc2's designated cross-DC puller of "
                         "the most partitions killed / stopped (none: --remote-down)")
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (< 20 s)")
    ap.add_argument("--no-skip", action="store_true",
                    help="replication.skip_confirmed false: intra-DC peers pull every record, "
                         "also those every replica acked (the A/B of docs/replication.md)")
    a = ap.parse_args(argv)
    print_run_header(__file__, argv)
    if a.smoke:
        a.workloads, a.clients, a.max_seconds, a.seconds = ["4KiB"], 16, 1.0, 1.5
        a.drain_timeout, a.give_up = 10.0, 10.0
    load_before = os.getloadavg()
    root = tempfile.mkdtemp(prefix="ambry-bench-lag-", dir=a.dir)
    try:
        if shutil.disk_usage(root).free < (4 << 30):
            print(f"not enough free disk in {root}: need 4 GB")
            return 2
        lim = limits.measure_all(root, quick=a.smoke)
        store = StoreCluster(root, datacenters=2, nodes_per_dc=3, partitions=a.partitions,
                             capacity="20GiB", storage=LOCAL_STORAGE, frontend=LOCAL_FRONTEND,
                             extra={"replication": {"scrub_interval_s": 0,
                                                    "skip_confirmed": not a.no_skip}},
                             log_level="WARNING")
        with store:
            rows = asyncio.run(run(a, store))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(a, rows, lim, load_before, os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
