"""`make bench` / `make bench-smoke`: run every benchmark and keep the tables.

Full runs write `benchmarks/results/<date>-<benchmark>.md` with the machine description;
`--smoke` runs tiny versions (< 60 s in all) and writes nothing, for CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, full-run args, smoke args)
BENCHMARKS = [
    ("bench_index.py", ["--entries", "1000000", "10000000"],
     ["--entries", "100000", "--impl", "c"]),
    ("bench_store.py", [], ["--smoke"]),
    ("bench_frontend.py", [], ["--smoke"]),
    ("bench_compare.py", ["--compare", "swift"], ["--smoke"]),
    ("bench_s3.py", ["--compare", "swift"], ["--smoke"]),
    ("bench_sdk.py", [], ["--smoke"]),
    ("bench_idle.py", [], ["--smoke"]),
    ("bench_replication_lag.py", [], ["--smoke"]),
    ("bench_restart.py", [], ["--smoke"]),
]


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    return (f"{platform.node()}: {os.cpu_count()} CPUs, {mem}, {platform.platform()}, "
            f"Python {platform.python_version()}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("only", nargs="*", help="run only these scripts")
    a = ap.parse_args()
    failed = 0
    stamp = time.strftime("%Y-%m-%d")
    for script, full, smoke in BENCHMARKS:
        if a.only and script not in a.only:
            continue
        if not (HERE / script).exists():
            continue
        args = smoke if a.smoke else full
        print(f"== {script} {' '.join(args)}", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / script), *args],
                              check=False, capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr[-4000:])
        if proc.returncode != 0:
            failed += 1
            print(f"!! {script} exited {proc.returncode}")
            continue
        if not a.smoke:
            out = HERE / "results" / f"{stamp}-{script.removesuffix('.py')}.md"
            out.write_text(f"Machine: {machine()}\n\n{proc.stdout}")
            print(f"-> {out.relative_to(HERE.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
