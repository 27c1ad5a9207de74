"""Storage node restart time with many blobs, end to end: a real ``ambry server`` process.

One node, one datacenter, ``--partitions`` replicas (16, as each node of config/local.yaml
holds), replication on but without peers. Blobs are created through the node protocol
(``NodeClient.put``, pipelined, ``--concurrency`` in flight) with small payloads (16-100
bytes) so that the index, not the disk, is what grows. The fill runs with ``durability:
page-cache`` (it is several times faster); every restart below runs with the default config
(fsync group commit). Measured, from the moment the process is spawned until it serves again
(``/healthCheck`` answers 200 and a GET of a known blob of every partition returns its bytes):
  (a) graceful restart: SIGTERM (the node writes index snapshots on the way down), start;
  (b) ``kill -9`` after writing a tail of blobs that no snapshot covers yet (just under the
      snapshot loop's ``snapshot_min_records`` per replica: the most a crash leaves to replay
      at a low write rate), start: snapshot load + replay of the tail, every tail blob that
      was acknowledged must be there;
  (c) every ``index.snap`` deleted, start: the index is rebuilt from the whole log.
Also printed: the node's own "started in" time (replicas opened and listening; the rest is
interpreter start and imports), blobs and log bytes from ``/metrics``, and the node's RSS
growth per blob (the index's own bytes per entry are not on ``/metrics``:
``bench_index.py`` measures them). Target (BENCHMARKS.md): serving again in < 5 s with 10M
blobs. When creating ``--ten-million`` blobs through the node protocol would take longer than
``--max-fill-minutes``, the run says so and extrapolates from ``bench_store.py``'s index-level
restart with 10M blobs.
"""

from __future__ import annotations

import argparse
import asyncio
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
from ambry.common.errors import AmbryError
from ambry.common.properties import BlobProperties
from ambry.protocol.client import NodeClient
from ambry.storage import filenames
from ambry.testing.cluster import LocalCluster, NodeProcess
from benchmarks import limits

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


async def run(a: argparse.Namespace, cluster: LocalCluster) -> dict[str, Any]:
    node = next(iter(cluster.nodes.values()))
    res: dict[str, Any] = {"rss_empty": node.rss_bytes(), "node_s_empty": started_in(node)}
    filler = Filler(node, a.partitions, a.concurrency, seed=1)
    print(f"  filling {a.blobs:,} blobs (page-cache durability)", file=sys.stderr, flush=True)
    fill_s, kept = await filler.fill(a.blobs, keep=1000, progress_every=max(1, a.blobs // 10))
    res["fill_s"] = fill_s
    probes = dict(filler.firsts)
    kept |= probes
    set_durability(cluster, None)

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

    print("  (c) restart without index snapshots", file=sys.stderr, flush=True)
    rows.append(await restart(node, "graceful-nosnap", probes, a.timeout))
    rows[-1]["lost"] = await missing(node, kept | tail_kept)
    res["rows"] = rows
    return res


def report(a: argparse.Namespace, res: dict[str, Any], lim: dict[str, float],
           load_before: tuple[float, ...], load_after: tuple[float, ...]) -> None:
    n = a.blobs
    fill_rate = n / res["fill_s"]
    print(f"# Node restart with many blobs ({time.strftime('%Y-%m-%d %H:%M')}, 1 node, "
          f"{a.partitions} replicas, {os.cpu_count()} CPUs)\n")
    print(f"Machine load (1/5/15 min) before: {load_before[0]:.2f} / {load_before[1]:.2f} / "
          f"{load_before[2]:.2f}, after: {load_after[0]:.2f} / {load_after[1]:.2f} / "
          f"{load_after[2]:.2f}. Limits measured in this run: 4 KiB write+fdatasync "
          f"{lim['fsync_4k_iops']:,.0f} IOPS (1 writer); sequential write + fsync "
          f"{lim['seq_write_fsync_mbps']:,.0f} MB/s.\n")
    print(f"Fill: {n:,} blobs of 16-100 bytes through `NodeClient.put` ({a.concurrency} in "
          f"flight, durability page-cache): {res['fill_s']:.1f} s, {fill_rate:,.0f} puts/s. "
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
    ten_min = TEN_MILLION / fill_rate / 60
    if n < TEN_MILLION:
        a_row = res["rows"][0]
        empty = res["node_s_empty"] or 0.0
        a_blobs = max(1, int(a_row["metrics"]["ambry_replica_blobs"]))
        per_blob = max(0.0, (a_row["node_s"] or 0.0) - empty) / a_blobs
        print(f"\n10M blobs: creating them this way would take {ten_min:.0f} min at "
              f"{fill_rate:,.0f} puts/s (budget {a.max_fill_minutes:.0f} min), so this run "
              f"stops at {n:,}. The 10M figure comes from `bench_store.py` at the index level "
              f"(`Replica.open` of one replica holding 10M blobs, snapshot load + tail replay: "
              f"1.26 s in benchmarks/results/2026-11-27-storage.md) and `bench_index.py` "
              f"(snapshot load of 10M entries: 1.9 s).", end="")
        if n < 500_000:
            print(" (Too few blobs here to extrapolate.)")
            return
        print(f" Extrapolated from this run: the node's "
              f"own start took {empty:.2f} s empty and {a_row['node_s'] or 0:.2f} s with "
              f"{a_blobs:,} blobs, so ~{per_blob * 1e6:.2f} s per 1M blobs: "
              f"~{empty + per_blob * TEN_MILLION:.1f} s at 10M, plus the process start and "
              f"imports ({a_row['serving_s'] - (a_row['node_s'] or 0):.2f} s here): "
              f"~{a_row['serving_s'] + per_blob * (TEN_MILLION - a_blobs):.1f} s to serve "
              f"again after a graceful restart.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--blobs", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--tail-per-replica", type=int, default=SNAPSHOT_MIN_RECORDS - 1000)
    ap.add_argument("--max-fill-minutes", type=float, default=15.0,
                    help="fill budget: 10M blobs are created only if they fit in it")
    ap.add_argument("--timeout", type=float, default=600.0, help="per restart")
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (< 20 s)")
    a = ap.parse_args(argv)
    if a.smoke:
        a.blobs, a.tail_per_replica = 20_000, 100
    load_before = os.getloadavg()
    root = tempfile.mkdtemp(prefix="ambry-bench-restart-", dir=a.dir)
    need = (a.blobs + a.tail_per_replica * a.partitions) * 400 + (1 << 30)
    try:
        if shutil.disk_usage(root).free < need:
            print(f"not enough free disk in {root}: need {need / 1e9:.1f} GB")
            return 2
        lim = limits.measure_all(root, quick=True)
        cluster = LocalCluster(root, datacenters=1, nodes_per_dc=1, partitions=a.partitions,
                               replicas_per_dc=1, capacity="64GiB",
                               storage={**STORAGE, "durability": "page-cache"},
                               extra={"replication": {"scrub_interval_s": 0}},
                               log_level="INFO")
        with cluster:
            res = asyncio.run(run(a, cluster))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(a, res, lim, load_before, os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
