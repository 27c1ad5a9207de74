"""`make bench` / `make bench-smoke`: run every benchmark and keep the tables.

Full runs write `benchmarks/results/<date>-<benchmark>.md` (each benchmark's output opens
with the commit, machine, load before the run and exact command: benchmarks/_results.py),
one benchmark at a time (their numbers must not share the machine). `--smoke` runs tiny
versions and writes nothing, for CI: two at a time (``--jobs``), the machine limits measured
once for all of them, < 60 s in all.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import limits

# (script, full-run args, smoke args); the longest smoke runs first
BENCHMARKS = [
    ("bench_compare.py", ["--compare", "swift"], ["--smoke"]),
    ("bench_frontend.py", [], ["--smoke"]),
    ("bench_replication_lag.py", [], ["--smoke"]),
    ("bench_idle.py", [], ["--smoke"]),
    ("bench_restart.py", [], ["--smoke"]),
    ("bench_s3.py", ["--compare", "swift"], ["--smoke"]),
    ("bench_sdk.py", [], ["--smoke"]),
    ("bench_store.py", [], ["--smoke"]),
    ("bench_ec.py", [], ["--smoke"]),
    ("bench_warm.py", [], ["--smoke"]),
    ("bench_index.py", ["--entries", "1000000", "10000000"],
     ["--entries", "100000", "--impl", "c"]),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--jobs", type=int, default=None,
                    help="benchmarks run at once (default: 2 with --smoke, else 1)")
    ap.add_argument("only", nargs="*", help="run only these scripts")
    a = ap.parse_args()
    jobs = a.jobs or (2 if a.smoke else 1)
    stamp = time.strftime("%Y-%m-%d")
    todo = [(script, a.smoke and smoke or full) for script, full, smoke in BENCHMARKS
            if (not a.only or script in a.only) and (HERE / script).exists()]
    env = dict(os.environ)
    scratch = tempfile.mkdtemp(prefix="ambry-bench-all-")
    if a.smoke:
        env[limits.CACHE_ENV] = os.path.join(scratch, "limits.json")
        os.environ[limits.CACHE_ENV] = env[limits.CACHE_ENV]
        limits.measure_all(scratch, quick=True)
    t0 = time.monotonic()

    def run(script: str, args: list[str]) -> tuple[str, list[str], float,
                                                   subprocess.CompletedProcess[str]]:
        t = time.monotonic()
        proc = subprocess.run([sys.executable, str(HERE / script), *args], check=False,
                              capture_output=True, text=True, env=env)
        return script, args, time.monotonic() - t, proc

    failed = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for script, args, took, proc in pool.map(lambda t: run(*t), todo):
                print(f"== {script} {' '.join(args)} ({took:.1f} s)", flush=True)
                sys.stdout.write(proc.stdout)
                sys.stderr.write(proc.stderr[-4000:])
                if proc.returncode != 0:
                    failed += 1
                    print(f"!! {script} exited {proc.returncode}")
                    continue
                if not a.smoke:
                    out = HERE / "results" / f"{stamp}-{script.removesuffix('.py')}.md"
                    # each benchmark opens its output with commit, machine, load and command
                    # (benchmarks/_results.py)
                    out.write_text(proc.stdout)
                    print(f"-> {out.relative_to(HERE.parent)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"== {len(todo)} benchmarks in {time.monotonic() - t0:.0f} s, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
