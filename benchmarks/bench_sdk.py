"""Python SDK benchmark: throughput of ambry.client and the client's own memory.

Starts a real 1-DC store (3 storage nodes with the default fsync group commit, one frontend
with 4 MiB chunks) on loopback and drives it with the sync :class:`ambry.client.Client`
(4 parts in flight, 4 MiB parts and ranges), measuring in this process (the client):
  * upload of a file (``put(path)``: parallel chunk uploads + stitch, resumable) and download
    to a file (``download``: parallel range GETs, verified by xxh3) of 1 MiB (x20), 64 MiB
    and 1 GiB blobs: MB/s and the client's peak RSS;
  * uploads from a generator of 1 GiB and 4 GiB (nothing on disk), read back through a
    seekable reader (``open(id).read``), every byte hashed: MB/s and peak RSS, which must stay
    flat as the size grows (target < 200 MB).
Prints a markdown table beside the machine limits measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import xxhash

from ambry.client import Client
from ambry.testing.frontend import RssSampler, StoreCluster
from benchmarks import limits
from benchmarks._payload import filler, object_tag, windows
from benchmarks._results import print_run_header

PIECE = 1 << 20
_FILL = filler(0)


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n // div} {unit}"
    return f"{n} B"


def _pieces(size: int, seed: int) -> Iterator[bytes]:
    """Unique per object and per MiB (benchmarks/_payload.py): a misplaced chunk fails."""
    yield from windows(_FILL, object_tag(f"bench_sdk-{seed}"), size)


def _write_file(path: Path, size: int, seed: int) -> str:
    h = xxhash.xxh3_64()
    with open(path, "wb") as f:
        for p in _pieces(size, seed):
            h.update(p)
            f.write(p)
    return h.hexdigest()


def _file_hash(path: Path) -> str:
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while p := f.read(PIECE):
            h.update(p)
    return h.hexdigest()


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, seconds, peak RSS of this process while it ran)."""
    with RssSampler(os.getpid(), interval_s=0.01) as rss:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    return out, dt, rss.peak_bytes


def file_round_trips(c: Client, work: Path, size: int, repeat: int) -> list[dict[str, Any]]:
    src = work / f"src-{size}.bin"
    dst = work / f"dst-{size}.bin"
    want = _write_file(src, size, size)
    ids: list[str] = []

    def up() -> None:
        for _ in range(repeat):
            ids.append(c.put(src, progress=False))

    def down() -> None:
        for blob_id in ids:
            c.download(blob_id, dst, progress=False)

    _, dt_up, rss_up = _timed(up)
    _, dt_down, rss_down = _timed(down)
    ok = _file_hash(dst) == want
    for blob_id in ids:
        c.delete(blob_id)
    src.unlink()
    dst.unlink()
    label = f"{_size(size)}" + (f" x{repeat}" if repeat > 1 else "")
    return [
        {"workload": f"{label} put(path)", "MB/s": repeat * size / dt_up / 1e6, "rss": rss_up,
         "ok": True},
        {"workload": f"{label} download(path)", "MB/s": repeat * size / dt_down / 1e6,
         "rss": rss_down, "ok": ok},
    ]


def generator_round_trip(c: Client, size: int) -> list[dict[str, Any]]:
    sent = xxhash.xxh3_64()

    def body() -> Iterator[bytes]:
        for p in _pieces(size, size + 1):
            sent.update(p)
            yield p

    blob_id, dt_up, rss_up = _timed(lambda: c.put(body(), progress=False))

    def read_back() -> str:
        h = xxhash.xxh3_64()
        with c.open(blob_id) as f:
            while p := f.read(PIECE):
                h.update(p)
        return h.hexdigest()

    got, dt_down, rss_down = _timed(read_back)
    c.delete(blob_id)
    return [
        {"workload": f"{_size(size)} put(generator)", "MB/s": size / dt_up / 1e6,
         "rss": rss_up, "ok": True},
        {"workload": f"{_size(size)} open().read()", "MB/s": size / dt_down / 1e6,
         "rss": rss_down, "ok": got == sent.hexdigest()},
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--files", type=int, nargs="*", default=[1 << 20, 64 << 20, 1 << 30])
    ap.add_argument("--small-repeat", type=int, default=20)
    ap.add_argument("--generators", type=int, nargs="*", default=[1 << 30, 4 << 30])
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    print_run_header(__file__, argv)
    if a.smoke:
        a.files, a.small_repeat, a.generators = [1 << 20, 8 << 20], 3, [16 << 20]
    root = tempfile.mkdtemp(prefix="ambry-bench-sdk-", dir=a.dir)
    need = (sum(a.files) + (a.small_repeat - 1) * min(a.files, default=0)
            + sum(a.generators)) * 3 + 2 * max(a.files, default=0) + (2 << 30)
    if shutil.disk_usage(root).free < need:
        print(f"not enough free disk in {root}: need {need / 1e9:.1f} GB")
        shutil.rmtree(root, ignore_errors=True)
        return 2
    rows: list[dict[str, Any]] = []
    try:
        lim = limits.measure_all(root, quick=a.smoke)
        store = StoreCluster(Path(root) / "store", datacenters=1, nodes_per_dc=3,
                             partitions=16, capacity="64GiB",
                             storage={"segment_size_bytes": "1GiB"},
                             frontend={"chunk_size_bytes": "4MiB",
                                       "inflight_budget_bytes": "256MiB"},
                             extra={"replication": {"scrub_interval_s": 0}},
                             log_level="WARNING")
        work = Path(root) / "client"
        work.mkdir()
        with store, Client(store.url("dc1", ""), resume_dir=work / "resume",
                           progress=False) as c:
            base_rss = psutil.Process().memory_info().rss
            for size in a.files:
                rows += file_round_trips(c, work, size, a.small_repeat if size <= 1 << 20
                                         else 1)
            for size in a.generators:
                rows += generator_round_trip(c, size)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    two_hop = lim["loopback_tcp_mbps"] / 2
    print(f"# SDK benchmark ({time.strftime('%Y-%m-%d %H:%M')}, 1 DC x 3 nodes, 3 copies, "
          f"fsync group commit, {os.cpu_count()} CPUs; client: 4 MiB parts, 4 in flight)\n")
    print(f"Machine limits measured in this run: sequential write + fsync "
          f"{lim['seq_write_fsync_mbps']:,.0f} MB/s (/3 copies = "
          f"{lim['seq_write_fsync_mbps'] / 3:,.0f} MB/s of user data); loopback TCP "
          f"{lim['loopback_tcp_mbps']:,.0f} MB/s (two hops: {two_hop:,.0f} MB/s). "
          f"Client RSS before the first transfer: {base_rss / 1e6:.0f} MB.\n")
    print("| workload | MB/s | client peak RSS | verified | vs limit |")
    print("|---|---|---|---|---|")
    failed = 0
    for r in rows:
        w = str(r["workload"])
        if "put" in w:
            vs = f"{r['MB/s'] / (lim['seq_write_fsync_mbps'] / 3):.0%} of fsync write/3"
        else:
            vs = f"{r['MB/s'] / two_hop:.0%} of 2-hop loopback"
        failed += 0 if r["ok"] else 1
        print(f"| {w} | {r['MB/s']:,.1f} | {r['rss'] / 1e6:.0f} MB | "
              f"{'yes' if r['ok'] else 'NO'} | {vs} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
