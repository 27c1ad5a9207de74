"""Storage node restart time with many blobs, end to end: a real ``ambry server`` process.

One node, one datacenter, ``--partitions`` replicas (16, as each node of config/local.yaml
holds), replication on but without peers, for each count in ``--blobs`` (1M and 10M). Blobs
have small payloads (16-100 bytes) so that the index, not the disk, is what grows. They are
created through the store API, one of two ways (``--fill``):
  * ``store`` (default): with the node stopped, one worker process per CPU opens the node's
    replica directories with ``Replica.open`` (the node's own config) and writes through
    ``Replica.put``, the call the node's PUT handler makes, then closes them (which writes the
    index snapshots, as a graceful node stop does). ~10x faster than over the network, which
    is what makes 10M blobs a minutes-long fill instead of an hour-and-a-half one;
  * ``protocol``: through the running node (``NodeClient.put``, pipelined, ``--concurrency``
    in flight).
Either fill runs with ``durability: page-cache``; every restart below runs with the default
config (fsync group commit). Measured, from the moment the process is spawned until it serves again
(``/healthCheck`` answers 200 and a GET of a known blob of every partition returns its bytes):
  (a) graceful restart: SIGTERM (the node writes index snapshots on the way down), start;
  (b) ``kill -9`` after writing a tail of blobs that no snapshot covers yet (just under the
      snapshot loop's ``snapshot_min_records`` per replica: the most a crash leaves to replay
      at a low write rate), start: snapshot load + replay of the tail, every tail blob that
      was acknowledged must be there;
  (c) every ``index.snap`` deleted, start: the index is rebuilt from the whole log (up to
      ``--rebuild-max-blobs``).
Also printed: the node's own "started in" time (replicas opened and listening; the rest is
interpreter start and imports), blobs and log bytes from ``/metrics``, and the node's RSS
growth per blob (the index's own bytes per entry are not on ``/metrics``:
``bench_index.py`` measures them). Target (BENCHMARKS.md): serving again in < 5 s with 10M
blobs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import random
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from ambry.common.blobid import BlobId, new_blob_id
from ambry.common.config import load_config
from ambry.common.errors import AmbryError
from ambry.common.properties import BlobProperties
from ambry.protocol.client import NodeClient
from ambry.storage import filenames
from ambry.storage.replica import Replica
from ambry.testing.cluster import LocalCluster, NodeProcess
from benchmarks import limits
from benchmarks._results import print_run_header

STORAGE = {"segment_size_bytes": "256MiB", "compaction_retention_s": 3600,
           "snapshot_interval_s": 30}  # config/local.yaml's storage section
SNAPSHOT_MIN_RECORDS = 10_000  # StorageConfig default: the snapshot loop's trigger per replica
TEN_MILLION = 10_000_000


class Filler:
    """Creates blobs through one node's protocol port, ``concurrency`` requests in flight,
    round-robin over the partitions. Keeps the payload of a few blobs to read back."""

    def __init__(self, node: NodeProcess, partitions: int, concurrency: int, seed: int) -> None:
        self.node = node
        self.partitions = partitions
        self.concurrency = concurrency
        self.rnd = random.Random(seed)
        self.noise = os.urandom(1 << 16)
        self.written = 0
        self.firsts: dict[BlobId, bytes] = {}  # the first blob of each partition: probes

    async def fill(self, n: int, keep: int = 0, keep_last: int = 0,
                   progress_every: int = 0) -> tuple[float, dict[BlobId, bytes]]:
        """Write ``n`` blobs; returns (seconds, the payloads of ``keep`` random ones and of
        about the ``keep_last`` last ones acknowledged)."""
        client = NodeClient(self.node.host, self.node.port, pool_size=8,
                            request_timeout_ms=60_000)
        kept: dict[BlobId, bytes] = {}
        keep_at = set(self.rnd.sample(range(n), min(keep, n)))
        last: list[tuple[BlobId, bytes]] = []
        nxt = iter(range(n))
        t0 = time.monotonic()
        created_ms = int(time.time() * 1000)

        async def worker() -> None:
            for i in nxt:
                pid = (self.written + i) % self.partitions
                bid = new_blob_id(1, 1, 1, pid)
                size = 16 + (i * 7919) % 85
                start = (i * 104729) % (len(self.noise) - size)
                payload = self.noise[start:start + size]
                props = BlobProperties(size=size, created_ms=created_ms,
                                       service_id="bench-restart", account_id=1,
                                       container_id=1)
                await client.put(bid, props, b"", payload)
                if i in keep_at:
                    kept[bid] = payload
                if self.written + i < self.partitions:
                    self.firsts[bid] = payload
                if keep_last:
                    last.append((bid, payload))
                    if len(last) > 2 * keep_last:
                        del last[:keep_last]
                if progress_every and i % progress_every == progress_every - 1:
                    print(f"  ... {i + 1:,} blobs ({time.monotonic() - t0:.0f} s)",
                          file=sys.stderr, flush=True)

        try:
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        finally:
            await client.close()
        dt = time.monotonic() - t0
        self.written += n
        kept.update(last[-keep_last:] if keep_last else [])
        return dt, kept


def _store_fill_worker(job: tuple[str, str, str, list[int], int, int, int]
                       ) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """One fill process: writes ``per_partition`` blobs into each of ``partitions`` of the
    stopped node through ``Replica.put``, then closes the replicas (snapshots written).
    Returns (the first blob of each partition, ``keep`` random blobs) as raw id -> payload."""
    config_path, data_root, node_id, partitions, per_partition, keep, seed = job
    cfg = load_config(config_path, data_root)
    storage = dataclasses.replace(cfg.storage, durability="page-cache")
    by_id = {p.id: p for p in cfg.cluster_map.partitions}
    rnd = random.Random(seed)
    noise = os.urandom(1 << 16)
    created_ms = int(time.time() * 1000)
    firsts: dict[bytes, bytes] = {}
    kept: dict[bytes, bytes] = {}
    total = per_partition * len(partitions)
    keep_at = set(rnd.sample(range(total), min(keep, total)))
    i = 0
    for pid in partitions:
        path = cfg.node_data_dir(node_id) / filenames.replica_dir_name(pid)
        replica = Replica.open(str(path), pid, storage, by_id[pid].capacity_bytes)
        first = True
        try:
            for _ in range(per_partition):
                bid = new_blob_id(1, 1, 1, pid)
                size = 16 + (i * 7919) % 85
                start = (i * 104729) % (len(noise) - size)
                payload = noise[start:start + size]
                props = BlobProperties(size=size, created_ms=created_ms,
                                       service_id="bench-restart", account_id=1,
                                       container_id=1)
                replica.put(bid, props, b"", payload)
                if first:
                    firsts[bid.to_bytes()] = payload
                    first = False
                if i in keep_at:
                    kept[bid.to_bytes()] = payload
                i += 1
        finally:
            replica.close()
    return firsts, kept


def store_fill(cluster: LocalCluster, node: NodeProcess, partitions: int, blobs: int,
               workers: int) -> tuple[float, dict[BlobId, bytes], dict[BlobId, bytes]]:
    """Fill the stopped ``node`` with ``blobs`` blobs through ``Replica.put`` in ``workers``
    processes. Returns (seconds, probes: the first blob of each partition, 1000 kept)."""
    assert not node.running
    per_partition = -(-blobs // partitions)
    shares = [list(range(partitions))[w::workers] for w in range(workers)]
    jobs = [(str(cluster.config_path), str(cluster.data_root), node.node_id, share,
             per_partition, 1000 * len(share) // partitions, w)
            for w, share in enumerate(shares) if share]
    t0 = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_store_fill_worker, jobs)
    dt = time.monotonic() - t0
    probes: dict[BlobId, bytes] = {}
    kept: dict[BlobId, bytes] = {}
    for firsts, k in results:
        probes |= {BlobId.from_bytes(b): p for b, p in firsts.items()}
        kept |= {BlobId.from_bytes(b): p for b, p in k.items()}
    return dt, probes, kept


async def missing(node: NodeProcess, blobs: dict[BlobId, bytes]) -> int:
    """How many of ``blobs`` the node does not serve with the right bytes."""
    client = NodeClient(node.host, node.port, pool_size=4)
    bad = 0
    sem = asyncio.Semaphore(64)

    async def one(bid: BlobId, want: bytes) -> None:
        nonlocal bad
        async with sem:
            try:
                _, got = await client.get_bytes(bid)
            except AmbryError:
                bad += 1
                return
            bad += got != want

    try:
        await asyncio.gather(*(one(b, p) for b, p in blobs.items()))
    finally:
        await client.close()
    return bad


async def wait_serving(node: NodeProcess, probes: dict[BlobId, bytes], t_spawn: float,
                       timeout_s: float) -> float:
    """Seconds from ``t_spawn`` until /healthCheck is 200 and every probe blob reads back."""
    while True:
        now = time.monotonic()
        if now - t_spawn > timeout_s:
            raise TimeoutError(f"{node.name} not serving after {timeout_s} s; log tail:\n"
                               f"{node.log_tail()}")
        node._check_alive()
        if await asyncio.to_thread(node._health) == 200:
            client = NodeClient(node.host, node.port, pool_size=1, connect_timeout_ms=500,
                                request_timeout_ms=5000)
            try:
                if all([(await client.get_bytes(b))[1] == p for b, p in probes.items()]):
                    return time.monotonic() - t_spawn
            except AmbryError:
                pass
            finally:
                await client.close()
        await asyncio.sleep(0.01)


def metrics(node: NodeProcess) -> dict[str, float]:
    """Sums over the node's replicas of a few /metrics gauges."""
    with urllib.request.urlopen(node.http_url("/metrics"), timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for name in ("ambry_replica_blobs", "ambry_replica_log_bytes", "ambry_replica_segments"):
        pattern = rf"^{name}\{{[^}}]*\}} (\S+)$"
        out[name] = sum(float(m) for m in re.findall(pattern, text, re.MULTILINE))
    return out


def last_start_log(node: NodeProcess) -> str:
    text = node.log_path.read_text(errors="replace")
    return text.rsplit("---- start #", 1)[-1]


def started_in(node: NodeProcess) -> float | None:
    m = re.search(r"started in ([\d.]+) s", last_start_log(node))
    return float(m.group(1)) if m else None


def replayed(node: NodeProcess) -> int:
    return sum(int(x) for x in re.findall(r"(\d+) records replayed", last_start_log(node)))


def set_durability(cluster: LocalCluster, durability: str | None) -> None:
    """Rewrite the node's config file: ``durability`` in storage, or the default (None)."""
    raw = yaml.safe_load(cluster.config_path.read_text())
    raw["storage"].pop("durability", None)
    if durability is not None:
        raw["storage"]["durability"] = durability
    cluster.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))


async def restart(node: NodeProcess, how: str, probes: dict[BlobId, bytes],
                  timeout_s: float) -> dict[str, Any]:
    """Stop the node (``how``: graceful / kill9 / graceful-nosnap), start it, time it."""
    t0 = time.monotonic()
    if how == "kill9":
        node.kill()
    else:
        await asyncio.to_thread(node.terminate, 300)
    stop_s = time.monotonic() - t0
    removed = 0
    if how == "graceful-nosnap":
        for d in node.data_dir.iterdir():
            snap = d / filenames.SNAPSHOT
            if filenames.parse_replica_dir_name(d.name) is not None and snap.exists():
                snap.unlink()
                removed += 1
    t_spawn = time.monotonic()
    node.start()
    serving = await wait_serving(node, probes, t_spawn, timeout_s)
    return {"how": how, "stop_s": stop_s, "serving_s": serving, "node_s": started_in(node),
            "replayed": replayed(node), "snapshots_removed": removed,
            "rss": node.rss_bytes(), "metrics": await asyncio.to_thread(metrics, node)}


async def run(a: argparse.Namespace, cluster: LocalCluster, blobs: int) -> dict[str, Any]:
    node = next(iter(cluster.nodes.values()))
    res: dict[str, Any] = {"blobs": blobs, "rss_empty": node.rss_bytes(),
                           "node_s_empty": started_in(node)}
    filler = Filler(node, a.partitions, a.concurrency, seed=1)
    print(f"  filling {blobs:,} blobs through {a.fill} (page-cache durability)",
          file=sys.stderr, flush=True)
    if a.fill == "protocol":
        fill_s, kept = await filler.fill(blobs, keep=1000, progress_every=max(1, blobs // 10))
        probes = dict(filler.firsts)
        set_durability(cluster, None)
    else:
        await asyncio.to_thread(node.terminate, 300)
        set_durability(cluster, None)
        fill_s, probes, kept = await asyncio.to_thread(
            store_fill, cluster, node, a.partitions, blobs, a.workers)
        filler.written = blobs
        node.start()
        await wait_serving(node, probes, time.monotonic(), a.timeout)
    res["fill_s"] = fill_s
    kept |= probes

    rows = []
    print("  (a) graceful restart", file=sys.stderr, flush=True)
    rows.append(await restart(node, "graceful", probes, a.timeout))
    rows[-1]["lost"] = await missing(node, kept)

    tail = a.tail_per_replica * a.partitions
    print(f"  (b) writing a tail of {tail:,} blobs (fsync), then kill -9", file=sys.stderr,
          flush=True)
    tail_s, tail_kept = await filler.fill(tail, keep=1000, keep_last=200)
    res.update(tail=tail, tail_s=tail_s)
    rows.append(await restart(node, "kill9", probes, a.timeout))
    rows[-1]["lost"] = await missing(node, kept | tail_kept)

    if blobs <= a.rebuild_max_blobs:
        print("  (c) restart without index snapshots", file=sys.stderr, flush=True)
        rows.append(await restart(node, "graceful-nosnap", probes, a.timeout))
        rows[-1]["lost"] = await missing(node, kept | tail_kept)
    res["rows"] = rows
    return res


def report(a: argparse.Namespace, res: dict[str, Any]) -> None:
    n = res["blobs"]
    fill_rate = n / res["fill_s"]
    how = (f"`NodeClient.put` ({a.concurrency} in flight)" if a.fill == "protocol" else
           f"`Replica.put` in {a.workers} processes, node stopped")
    print(f"\n## {n:,} blobs\n")
    print(f"Fill: {n:,} blobs of 16-100 bytes through {how}, durability page-cache: "
          f"{res['fill_s']:.1f} s, {fill_rate:,.0f} puts/s. "
          f"Tail before the kill -9: {res['tail']:,} blobs ({a.tail_per_replica:,} per "
          f"replica) with fsync group commit: {res['tail'] / res['tail_s']:,.0f} puts/s. "
          f"Node RSS empty: {res['rss_empty'] / 1e6:.0f} MB.\n")
    print("| restart | blobs (/metrics) | stop s | serving again s | node's own start s | "
          "records replayed | acked blobs lost | RSS after | RSS over the empty node, per blob | "
          "target < 5 s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    what = {"graceful": "(a) SIGTERM, start",
            "kill9": "(b) kill -9 after the tail, start",
            "graceful-nosnap": "(c) snapshots deleted, start (full rebuild)"}
    for r in res["rows"]:
        blobs = int(r["metrics"]["ambry_replica_blobs"])
        growth = (r["rss"] - res["rss_empty"]) / max(1, blobs)
        own = f"{r['node_s']:.2f}" if r["node_s"] is not None else "?"
        print(f"| {what[r['how']]} | {blobs:,} | {r['stop_s']:.2f} | **{r['serving_s']:.2f}** | "
              f"{own} | {r['replayed']:,} | {r['lost']} | {r['rss'] / 1e6:.0f} MB | "
              f"{growth:.0f} B | {'met' if r['serving_s'] < 5 else 'NOT met'} |")
    log_b = res["rows"][0]["metrics"]["ambry_replica_log_bytes"]
    print(f"\nLog on disk: {log_b / 1e6:,.0f} MB for {n:,} blobs ({log_b / n:.0f} B per blob "
          f"record). The index's bytes per entry are not exported on /metrics; the RSS growth "
          f"above is an upper bound (it includes allocator slack and per-replica buffers). "
          f"`bench_index.py` measures the C index itself: 45-46 B per blob at 1M and 10M.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--blobs", type=int, nargs="+", default=[1_000_000, TEN_MILLION])
    ap.add_argument("--fill", choices=["store", "protocol"], default="store",
                    help="create the blobs through Replica.put in worker processes with the "
                         "node stopped (store), or through the running node (protocol)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                    help="fill processes (--fill store)")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--tail-per-replica", type=int, default=SNAPSHOT_MIN_RECORDS - 1000)
    ap.add_argument("--timeout", type=float, default=600.0, help="per restart")
    ap.add_argument("--rebuild-max-blobs", type=int, default=1_000_000,
                    help="(c), the rebuild without snapshots, only up to this many blobs (it "
                         "is Python-bound, ~40k records/s: 10M take 5-8 min)")
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (< 20 s)")
    a = ap.parse_args(argv)
    print_run_header(__file__, argv)
    if a.smoke:
        a.blobs, a.tail_per_replica, a.workers = [5_000], 50, 1
    load_before = os.getloadavg()
    results = []
    lim: dict[str, float] = {}
    for blobs in a.blobs:
        root = tempfile.mkdtemp(prefix="ambry-bench-restart-", dir=a.dir)
        need = (blobs + a.tail_per_replica * a.partitions) * 400 + (1 << 30)
        try:
            if shutil.disk_usage(root).free < need:
                print(f"not enough free disk in {root}: need {need / 1e9:.1f} GB")
                return 2
            lim = lim or limits.measure_all(root, quick=True)
            cluster = LocalCluster(root, datacenters=1, nodes_per_dc=1,
                                   partitions=a.partitions, replicas_per_dc=1,
                                   capacity="64GiB",
                                   storage={**STORAGE, "durability": "page-cache"},
                                   extra={"replication": {"scrub_interval_s": 0}},
                                   log_level="INFO")
            with cluster:
                results.append(asyncio.run(run(a, cluster, blobs)))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"# Node restart with many blobs ({time.strftime('%Y-%m-%d %H:%M')}, 1 node, "
          f"{a.partitions} replicas, {os.cpu_count()} CPUs)\n")
    print(f"Machine load (1/5/15 min) before: {load_before[0]:.2f} / {load_before[1]:.2f} / "
          f"{load_before[2]:.2f}, after: {load_after[0]:.2f} / {load_after[1]:.2f} / "
          f"{load_after[2]:.2f}. Limits measured in this run: 4 KiB write+fdatasync "
          f"{lim['fsync_4k_iops']:,.0f} IOPS (1 writer); sequential write + fsync "
          f"{lim['seq_write_fsync_mbps']:,.0f} MB/s. Target (BENCHMARKS.md): serving again "
          f"in < 5 s with 10M blobs.")
    for res in results:
        report(a, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
