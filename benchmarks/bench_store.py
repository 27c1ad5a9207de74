"""Storage engine benchmark: one replica, driven in-process through the Replica API.

Measures, with the default durability policy (fsync group commit) unless told otherwise:
  * 4 KiB put ops/s and latency with 32 writer threads; 4 KiB get ops/s (verified)
  * 1 MiB put and get MB/s with 8 threads
  * node restart time (Replica.open: snapshot load + tail replay) with 1M and 10M blobs,
    and the rebuild time without a snapshot
and prints them as a markdown table beside the machine limits measured in the same run
(benchmarks/limits.py). Threads stand in for the node's I/O pool; the network path is
measured by the node benchmark.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ambry import native
from ambry.common.blobid import BlobId, new_blob_id
from ambry.common.config import StorageConfig
from ambry.common.properties import BlobProperties
from ambry.storage.replica import Replica
from benchmarks import limits
from benchmarks._results import print_run_header
from benchmarks._stats import percentiles_ms

PARTITION = 1


def _props(n: int) -> BlobProperties:
    return BlobProperties(size=n, created_ms=int(time.time() * 1000), content_type="x/y",
                          service_id="bench")


def _run(threads: int, seconds: float, op: Callable[[random.Random], int]
         ) -> tuple[int, int, list[float], float]:
    stop = time.perf_counter() + seconds
    lat: list[float] = []
    counts = [0, 0]
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        mine: list[float] = []
        n = b = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            b += op(rnd)
            mine.append(time.perf_counter() - t0)
            n += 1
        with lock:
            lat.extend(mine)
            counts[0] += n
            counts[1] += b

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return counts[0], counts[1], lat, time.perf_counter() - t0


def bench_put_get(root: str, size: int, threads: int, seconds: float,
                  durability: str) -> list[dict[str, object]]:
    cfg = StorageConfig(durability=durability)
    d = os.path.join(root, f"putget-{size}")
    r = Replica.open(d, PARTITION, cfg, 1 << 45)
    payloads = [os.urandom(size) for _ in range(16)]
    written: list[tuple[BlobId, int]] = []
    wlock = threading.Lock()

    def put(rnd: random.Random) -> int:
        i = rnd.randrange(len(payloads))
        bid = new_blob_id(1, 1, 1, PARTITION)
        res = r.put(bid, _props(size), b"", payloads[i])
        r.durable_future(res.end).result()
        with wlock:
            written.append((bid, i))
        return size

    def get(rnd: random.Random) -> int:
        bid, i = written[rnd.randrange(len(written))]
        data = r.get(bid).read_payload()
        if data != payloads[i]:
            raise AssertionError("bad read")
        return len(data)

    rows = []
    syncs0 = r.log.syncs
    for name, op in (("put", put), ("get", get)):
        n, b, lat, dt = _run(threads, seconds, op)
        p50, p99, mx = percentiles_ms(lat)
        rows.append({"workload": f"{size // 1024} KiB {name}", "threads": threads,
                     "ops/s": n / dt, "MB/s": b / dt / 1e6, "p50 ms": p50, "p99 ms": p99,
                     "max ms": mx, "durability": durability,
                     "note": (f"{(n / max(1, r.log.syncs - syncs0)):.1f} puts per fdatasync"
                              if name == "put" and durability == "fsync" else "verified")})
    r.close()
    shutil.rmtree(d)
    return rows


def bench_restart(root: str, blobs: int) -> list[dict[str, object]]:
    d = os.path.join(root, f"restart-{blobs}")
    fill = StorageConfig(durability="page-cache")
    r = Replica.open(d, PARTITION, fill, 1 << 45)
    t0 = time.perf_counter()
    props = _props(0)
    pbytes = props  # same properties for all: the fill is about index size, not payloads
    for i in range(blobs):
        r.put(new_blob_id(1, 1, 1, PARTITION), pbytes, b"", b"")
        if i % 1_000_000 == 999_999:
            print(f"  ... {i + 1:,} blobs written ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    fill_s = time.perf_counter() - t0
    r.close()  # writes the snapshot
    rows = []
    cfg = StorageConfig()
    t0 = time.perf_counter()
    r = Replica.open(d, PARTITION, cfg, 1 << 45)
    open_s = time.perf_counter() - t0
    assert len(r.index) == blobs
    mem = r.index.memory_bytes()
    r.close(snapshot=False)
    rows.append({"workload": f"restart with {blobs:,} blobs (snapshot)", "seconds": open_s,
                 "note": f"fill {blobs / fill_s:,.0f} puts/s; index {mem / blobs:.1f} B/blob"})
    if blobs <= 1_000_000:
        os.remove(os.path.join(d, "index.snap"))
        t0 = time.perf_counter()
        r = Replica.open(d, PARTITION, cfg, 1 << 45)
        rebuild_s = time.perf_counter() - t0
        r.close(snapshot=False)
        rows.append({"workload": f"rebuild with {blobs:,} blobs (no snapshot)",
                     "seconds": rebuild_s, "note": "full log scan with checksums"})
    shutil.rmtree(d)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--restart-blobs", type=int, nargs="*", default=[1_000_000, 10_000_000])
    ap.add_argument("--durability", default="fsync", choices=["fsync", "page-cache"])
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (< 20 s)")
    ap.add_argument("--skip-putget", action="store_true", help="only the restart rows")
    ap.add_argument("--out", default=None, help="also write the markdown table to this file")
    a = ap.parse_args(argv)
    print_run_header(__file__, argv)
    if a.smoke:
        a.seconds, a.restart_blobs = 0.5, [10_000]
    root = tempfile.mkdtemp(prefix="ambry-bench-", dir=a.dir)
    try:
        free = shutil.disk_usage(root).free
        need = max(a.restart_blobs or [0]) * 200 * 2
        if free < need:
            print(f"not enough free disk in {root}: {free / 1e9:.1f} GB < {need / 1e9:.1f} GB")
            return 2
        lim = limits.measure_all(root, quick=a.smoke)
        rows = []
        if not a.skip_putget:
            rows += bench_put_get(root, 4096, 32, a.seconds, a.durability)
            rows += bench_put_get(root, 1 << 20, 8, a.seconds, a.durability)
        for n in a.restart_blobs:
            rows += bench_restart(root, n)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lines = [
        (f"# Storage engine benchmark ({time.strftime('%Y-%m-%d %H:%M')}, index: "
         f"{native.implementation}, {os.cpu_count()} CPUs)"),
        "",
        (f"Machine limits measured in this run: 4 KiB write+fdatasync "
         f"{lim['fsync_4k_iops']:,.0f} IOPS (1 writer); sequential write + fsync "
         f"{lim['seq_write_fsync_mbps']:,.0f} MB/s; loopback TCP "
         f"{lim['loopback_tcp_mbps']:,.0f} MB/s (1 stream)."),
        "",
        "| workload | threads | ops/s | MB/s | p50 ms | p99 ms | max ms | vs limit | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "seconds" in row:
            lines.append(f"| {row['workload']} | | | | | | | {row['seconds']:.2f} s "
                         f"(target < 5 s) | {row['note']} |")
            continue
        vs = ""
        if "put" in str(row["workload"]) and a.durability == "fsync":
            if str(row["workload"]).startswith("4 KiB"):
                vs = f"{float(row['ops/s']) / lim['fsync_4k_iops']:.1f}x 1-writer fsync IOPS"
            else:
                vs = f"{float(row['MB/s']) / lim['seq_write_fsync_mbps']:.0%} of seq fsync write"
        lines.append(f"| {row['workload']} | {row['threads']} | {float(row['ops/s']):,.0f} | "
                     f"{float(row['MB/s']):,.1f} | {float(row['p50 ms']):.2f} | "
                     f"{float(row['p99 ms']):.2f} | {float(row['max ms']):.1f} | {vs} | "
                     f"{row['note']} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
