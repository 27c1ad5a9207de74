"""Idle cost of a running 2-DC cluster (replication on): CPU per process while nothing happens.

Starts the 2-DC profile (2 datacenters x 3 storage nodes, one frontend per DC) on loopback,
writes a few blobs so replication has tokens and peers, lets it settle, then samples every
process's CPU time over a quiet window. Target (BENCHMARKS.md): < 2 % of a core per process.
Replication long-polls (one batched request per peer node per ``long_poll_ms``), so idle
cost does not grow with the number of partitions.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from ambry.testing.frontend import StoreCluster
from benchmarks._results import print_run_header


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0, help="quiet window to measure")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    print_run_header(__file__, argv)
    settle_s = 5.0
    if a.smoke:
        a.seconds, settle_s = 2.0, 1.0
    root = tempfile.mkdtemp(prefix="ambry-bench-idle-")
    try:
        with StoreCluster(root, datacenters=2, nodes_per_dc=3, partitions=a.partitions,
                          log_level="WARNING",
                          extra={"replication": {"scrub_interval_s": 0}}) as store:
            for i in range(20):
                req = urllib.request.Request(
                    store.url("dc1" if i % 2 else "dc2", "/"), data=b"x" * 1000,
                    method="POST", headers={"x-ambry-service-id": "bench",
                                            "x-ambry-content-type": "text/plain"})
                urllib.request.urlopen(req, timeout=10).close()
            time.sleep(settle_s)  # replication catches up, then everything is idle
            procs = {f"node {nid}": psutil.Process(n.pid) for nid, n in store.nodes.items()
                     if n.pid}
            procs |= {f"frontend {dc}": psutil.Process(f.pid)
                      for dc, f in store.frontends.items() if f.pid}
            before = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
            time.sleep(a.seconds)
            after = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"# Idle cost, 2 DCs x 3 nodes + 2 frontends, {a.partitions} partitions, "
          f"replication on ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"Quiet window: {a.seconds:.0f} s. Target: < 2 % of a core per process.\n")
    print("| process | CPU s in window | % of a core | target met |")
    print("|---|---|---|---|")
    for k in sorted(procs):
        used = after[k] - before[k]
        pct = used / a.seconds * 100
        print(f"| {k} | {used:.2f} | {pct:.2f} % | {'yes' if pct < 2 else 'NO'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
