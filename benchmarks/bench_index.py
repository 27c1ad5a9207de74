#!/usr/bin/env python3
"""Benchmark the blob index implementations (ambry.native) and print a markdown table.

For each implementation and entry count it reports:

* bytes/entry as reported by ``memory_bytes()`` and as the process RSS grew while inserting;
* insert and get throughput through the Python API (one call per key, random 16-byte keys);
* ``dump(0, n)`` and a bulk ``load()`` of that dump into a fresh index.

Usage::

    python benchmarks/bench_index.py --entries 1000000 10000000 --impl c python

The pure-Python index needs ~200 B/entry and ~1 us per put, so by default it is only run up to
``--python-max`` entries (1,000,000); larger counts are skipped with a note.  Each measurement
runs in a fresh child process so RSS deltas do not include memory left behind by earlier runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    """Resident set size of this process (psutil when installed, else /proc/self/status)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("cannot read RSS: install psutil") from None
    return int(psutil.Process().memory_info().rss)


def index_class(impl: str) -> type:
    if impl == "c":
        from ambry.native._cindex import CBlobIndex

        return CBlobIndex
    from ambry.native._pyindex import PyBlobIndex

    return PyBlobIndex


def measure(impl: str, n: int) -> dict[str, float]:
    """Runs in the child process."""
    cls = index_class(impl)
    raw = os.urandom(16 * n)
    keys = [raw[i:i + 16] for i in range(0, 16 * n, 16)]
    del raw
    gc.collect()
    gc.disable()  # the index holds no Python objects (C) or only atoms (python)

    rss0 = rss_bytes()
    ix = cls()
    put = ix.put
    t0 = time.perf_counter()
    for i, k in enumerate(keys):
        put(k, 7, i, 4096, 0, 0, 0, 0)
    insert_s = time.perf_counter() - t0
    rss1 = rss_bytes()
    mem = ix.memory_bytes()

    get = ix.get
    t0 = time.perf_counter()
    for k in keys:
        get(k)
    get_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    buf = ix.dump(0, n)
    dump_s = time.perf_counter() - t0
    del ix
    fresh = cls()
    t0 = time.perf_counter()
    loaded = fresh.load(buf)
    load_s = time.perf_counter() - t0
    assert loaded == n == len(fresh)
    assert fresh.get(keys[n // 2]) == (7, n // 2, 4096, 0, 0, 0, 0)
    return {
        "mem_per_entry": mem / n,
        "rss_per_entry": (rss1 - rss0) / n,
        "insert_ops": n / insert_s,
        "get_ops": n / get_s,
        "dump_s": dump_s,
        "load_s": load_s,
        "loaded_mem_per_entry": fresh.memory_bytes() / n,
    }


def run_child(impl: str, n: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, __file__, "--child", impl, str(n)],
        env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{impl} n={n} failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--impl", nargs="+", choices=["c", "python"], default=["c", "python"])
    ap.add_argument(
        "--python-max", type=int, default=1_000_000,
        help="largest entry count run for the python implementation (default 1,000,000)",
    )
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return
    sys.path.insert(0, str(REPO))
    from benchmarks._results import print_run_header
    print_run_header(__file__)

    notes = []
    rows = []
    for impl in args.impl:
        for n in args.entries:
            if impl == "python" and n > args.python_max:
                notes.append(
                    f"python at {n:,} entries skipped (over --python-max {args.python_max:,})"
                )
                continue
            print(f"running {impl} n={n:,} ...", file=sys.stderr, flush=True)
            r = run_child(impl, n)
            rows.append(
                f"| {impl} | {n:,} | {r['mem_per_entry']:.1f} | {r['rss_per_entry']:.1f} "
                f"| {r['insert_ops'] / 1e6:.2f} M | {r['get_ops'] / 1e6:.2f} M "
                f"| {r['dump_s']:.3f} | {r['load_s']:.3f} | {r['loaded_mem_per_entry']:.1f} |"
            )
    print(
        "| implementation | entries | B/entry (memory_bytes) | B/entry (RSS delta) "
        "| insert ops/s | get ops/s | dump s | load s | B/entry after load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    for note in notes:
        print(f"\nNote: {note}.")


if __name__ == "__main__":
    main()
