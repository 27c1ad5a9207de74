"""Frontend benchmark: throughput through the REST API and memory flatness for huge blobs.

Starts a real 1-DC store (3 storage nodes with the default fsync group commit, one frontend)
on loopback, then measures:
  * 4 KiB PUT/GET with 32 clients, 1 MiB PUT/GET with 8 clients: ops/s, MB/s, p50/p99/max,
    errors, every GET body verified against what was PUT;
  * single uploads and downloads of 1 GiB and 4 GiB (streamed from a generator, verified by
    xxh3 while streaming) with the frontend's peak RSS sampled throughout (target < 300 MB and
    flat as the size grows);
  * 64 concurrent 64 MiB uploads (the frontend-wide in-flight byte budget keeps RSS bounded).
Prints a markdown table beside the machine limits measured in the same run. Copies written:
3 (one per replica).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import xxhash

from ambry.testing.frontend import RssSampler, StoreCluster
from benchmarks import limits
from benchmarks._payload import Verifier, body_bytes, filler, object_tag, windows
from benchmarks._results import print_run_header
from benchmarks._stats import percentiles_ms

HEADERS = {"x-ambry-service-id": "bench", "x-ambry-content-type": "application/octet-stream"}
PIECE = 1 << 20
_FILL = filler(0)


async def load(base: str, size: int, clients: int, seconds: float) -> list[dict[str, object]]:
    run = os.urandom(4).hex()
    ids: list[tuple[str, int, int]] = []  # (location, object tag, xxh3): every body its own
    rows = []
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as s:
        for op in ("PUT", "GET"):
            lat: list[float] = []
            errors = 0
            verified = 0
            stop = time.perf_counter() + seconds

            async def worker(i: int, op: str, stop: float, lat: list[float]) -> None:
                nonlocal errors, verified
                k = i
                while time.perf_counter() < stop:
                    k += 1
                    t0 = time.perf_counter()
                    try:
                        if op == "PUT":
                            tag = object_tag(f"bench_frontend-{run}-{i}-{k}")
                            body = body_bytes(_FILL, tag, size)
                            async with s.post(base + "/", data=body, headers=HEADERS) as r:
                                if r.status != 201:
                                    errors += 1
                                    continue
                                ids.append((r.headers["Location"], tag,
                                            xxhash.xxh3_64_intdigest(body)))
                        else:
                            loc, tag, digest = ids[k % len(ids)]
                            v = Verifier(tag, size, digest)
                            async with s.get(base + loc) as r:
                                body = await r.read()
                                v.update(body)
                                if r.status != 200 or v.error():
                                    errors += 1
                                    continue
                                verified += len(body)
                    except aiohttp.ClientError:
                        errors += 1
                        continue
                    lat.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(i, op, stop, lat) for i in range(clients)))
            dt = time.perf_counter() - t0
            p50, p99, mx = percentiles_ms(lat)
            rows.append({"workload": f"{_size(size)} {op}", "clients": clients,
                         "ops/s": len(lat) / dt, "MB/s": len(lat) * size / dt / 1e6,
                         "p50": p50, "p99": p99, "max": mx, "errors": errors,
                         "verified": verified})
    return rows


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n // div} {unit}"
    return f"{n} B"


async def _body(size: int, seed: int, hasher: xxhash.xxh3_64) -> AsyncIterator[bytes]:
    """Unique per object and per MiB (benchmarks/_payload.py): a misplaced chunk fails."""
    for piece in windows(_FILL, object_tag(f"bench_frontend-{seed}-{size}"), size):
        hasher.update(piece)
        yield piece


async def huge(base: str, fe_pid: int, size: int) -> list[dict[str, object]]:
    rows = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as s:
        sent_hash = xxhash.xxh3_64()
        with RssSampler(fe_pid) as rss:
            t0 = time.perf_counter()
            async with s.post(base + "/", data=_body(size, size, sent_hash),
                              headers=HEADERS) as r:
                assert r.status == 201, await r.text()
                loc = r.headers["Location"]
            dt = time.perf_counter() - t0
        rows.append({"workload": f"{_size(size)} single upload", "clients": 1,
                     "MB/s": size / dt / 1e6, "rss": rss.peak_bytes, "errors": 0,
                     "verified": size})
        got = xxhash.xxh3_64()
        n = 0
        with RssSampler(fe_pid) as rss:
            t0 = time.perf_counter()
            async with s.get(base + loc) as r:
                async for piece in r.content.iter_chunked(PIECE):
                    got.update(piece)
                    n += len(piece)
            dt = time.perf_counter() - t0
        ok = n == size and got.intdigest() == sent_hash.intdigest()
        rows.append({"workload": f"{_size(size)} single download", "clients": 1,
                     "MB/s": size / dt / 1e6, "rss": rss.peak_bytes,
                     "errors": 0 if ok else 1, "verified": n if ok else 0})
        async with s.delete(base + loc) as r:
            assert r.status == 202
    return rows


async def concurrent_uploads(base: str, fe_pid: int, n: int, size: int) -> dict[str, object]:
    """``n`` uploads of ``size`` at once (frontend RSS sampled), then every blob read back
    one at a time and checked against the hash of what was sent."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as s:
        errors = 0
        stored: list[tuple[str, int]] = []

        async def one(i: int) -> None:
            nonlocal errors
            h = xxhash.xxh3_64()
            async with s.post(base + "/", data=_body(size, i, h), headers=HEADERS) as r:
                if r.status != 201:
                    errors += 1
                    if errors == 1:
                        print(f"first failed upload: {r.status} "
                              f"{r.headers.get('x-ambry-error-code')} {await r.text()}",
                              file=sys.stderr)
                    return
                stored.append((r.headers["Location"], h.intdigest()))

        with RssSampler(fe_pid) as rss:
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            dt = time.perf_counter() - t0
        verified = 0
        for loc, want in stored:
            got = xxhash.xxh3_64()
            async with s.get(base + loc) as r:
                async for piece in r.content.iter_chunked(PIECE):
                    got.update(piece)
            if r.status == 200 and got.intdigest() == want:
                verified += size
            else:
                errors += 1
            async with s.delete(base + loc):
                pass
    return {"workload": f"{n} x {_size(size)} concurrent uploads", "clients": n,
            "MB/s": n * size / dt / 1e6, "rss": rss.peak_bytes, "errors": errors,
            "verified": verified}


async def run(a: argparse.Namespace, base: str, fe_pid: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    rows += await load(base, 4096, 32, a.seconds)
    rows += await load(base, 1 << 20, 8, a.seconds)
    for size in a.huge:
        rows += await huge(base, fe_pid, size)
    if a.concurrent:
        rows.append(await concurrent_uploads(base, fe_pid, a.concurrent, a.concurrent_size))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--huge", type=int, nargs="*", default=[1 << 30, 4 << 30])
    ap.add_argument("--concurrent", type=int, default=64)
    ap.add_argument("--concurrent-size", type=int, default=64 << 20)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    print_run_header(__file__, argv)
    if a.smoke:
        a.seconds, a.huge, a.concurrent, a.concurrent_size = 1.0, [16 << 20], 4, 8 << 20
    root = tempfile.mkdtemp(prefix="ambry-bench-fe-", dir=a.dir)
    need = sum(a.huge) * 3 + a.concurrent * a.concurrent_size * 3 + (2 << 30)
    if shutil.disk_usage(root).free < need:
        print(f"not enough free disk in {root}: need {need / 1e9:.1f} GB")
        return 2
    try:
        lim = limits.measure_all(root, quick=a.smoke)
        store = StoreCluster(root, datacenters=1, nodes_per_dc=3, partitions=16,
                             capacity="64GiB", storage={"segment_size_bytes": "1GiB"},
                             frontend={"chunk_size_bytes": "4MiB",
                                       "inflight_budget_bytes": "128MiB"},
                             extra={"replication": {"scrub_interval_s": 0}}, log_level="WARNING")
        with store:
            fe = store.frontends["dc1"]
            assert fe.pid is not None
            rows = asyncio.run(run(a, fe.base_url, fe.pid))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    two_hop = lim["loopback_tcp_mbps"] / 2
    print(f"# Frontend benchmark ({time.strftime('%Y-%m-%d %H:%M')}, 1 DC x 3 nodes, 3 copies, "
          f"fsync group commit, {os.cpu_count()} CPUs)\n")
    print(f"Machine limits measured in this run: sequential write + fsync "
          f"{lim['seq_write_fsync_mbps']:,.0f} MB/s (/3 copies = "
          f"{lim['seq_write_fsync_mbps'] / 3:,.0f} MB/s of user data); 4 KiB write+fdatasync "
          f"{lim['fsync_4k_iops']:,.0f} IOPS; loopback TCP {lim['loopback_tcp_mbps']:,.0f} MB/s "
          f"(two hops: {two_hop:,.0f} MB/s).\n")
    print("| workload | clients | ops/s | MB/s | p50 ms | p99 ms | max ms | errors | "
          "verified MB | frontend peak RSS | vs limit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w = str(r["workload"])
        vs = ""
        if "PUT" in w or "upload" in w:
            vs = f"{float(r['MB/s']) / (lim['seq_write_fsync_mbps'] / 3):.0%} of fsync write/3"
        elif "GET" in w or "download" in w:
            vs = f"{float(r['MB/s']) / two_hop:.0%} of 2-hop loopback"
        ops = f"{float(r['ops/s']):,.0f}" if "ops/s" in r else ""
        lat = (f"{float(r['p50']):.1f} | {float(r['p99']):.1f} | {float(r['max']):.1f}"
               if "p50" in r else " | | ")
        rss = f"{int(r['rss']) / 1e6:.0f} MB" if "rss" in r else ""
        print(f"| {w} | {r['clients']} | {ops} | {float(r['MB/s']):,.1f} | {lat} | "
              f"{r['errors']} | {int(r['verified']) / 1e6:,.0f} | {rss} | {vs} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
