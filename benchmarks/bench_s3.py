"""S3 API benchmark: PUT and GET of 4 KiB and 1 MiB objects through boto3, every GET verified.

Starts a real 1-DC store (3 storage nodes with the default fsync group commit, one frontend)
on loopback and drives its S3 port with boto3 (SigV4, payload SHA-256 signed, as boto3 does
over http) from a thread pool. With ``--compare swift`` the same workloads also run against
OpenStack Swift's s3api on 127.0.0.1:8080 (``../shared/peers/swift/up.sh`` starts it when it
is not answering; tempauth's S3 credentials are ``test:tester`` / ``testing``), so the table
shows both side by side. Prints a markdown table beside the machine limits measured in the
same run. ``--smoke``: one short round, for CI.
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
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from botocore.config import Config

from ambry.testing.frontend import TEST_S3, StoreCluster
from benchmarks import limits
from benchmarks._stats import percentiles_ms

SWIFT_ENDPOINT = "http://127.0.0.1:8080"
SWIFT_UP = Path(__file__).resolve().parents[2] / "shared" / "peers" / "swift" / "up.sh"
SIZES = [("4 KiB", 4096, 32), ("1 MiB", 1 << 20, 8)]


def client(endpoint: str, ak: str, sk: str, pool: int) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak,
                        aws_secret_access_key=sk, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1},
                                      max_pool_connections=pool))


def workload(s3: Any, bucket: str, size: int, clients: int, seconds: float
             ) -> list[dict[str, object]]:
    payloads = [os.urandom(size) for _ in range(8)]
    keys: list[tuple[str, int]] = []
    rows = []
    for op in ("PUT", "GET"):
        lat: list[float] = []
        errors = [0]
        moved = [0]
        stop = time.perf_counter() + seconds

        def worker(i: int, op: str = op, stop: float = stop, lat: list[float] = lat,
                   errors: list[int] = errors, moved: list[int] = moved) -> None:
            k = i * 1_000_000
            while time.perf_counter() < stop:
                k += 1
                t0 = time.perf_counter()
                try:
                    if op == "PUT":
                        j = k % len(payloads)
                        key = f"bench/{size}/{k}"
                        s3.put_object(Bucket=bucket, Key=key, Body=payloads[j])
                        keys.append((key, j))
                    else:
                        key, j = keys[k % len(keys)]
                        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                        if body != payloads[j]:
                            errors[0] += 1
                            continue
                    moved[0] += size
                except Exception:  # noqa: BLE001 - counted, the run goes on
                    errors[0] += 1
                    continue
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(worker, range(clients)))
        took = time.perf_counter() - t0
        p50, p99, mx = percentiles_ms(lat)
        rows.append({"op": op, "clients": clients, "ops/s": len(lat) / took,
                     "MB/s": moved[0] / took / 1e6, "p50": p50, "p99": p99, "max": mx,
                     "errors": errors[0], "n": len(lat)})
        if op == "PUT" and not keys:
            break
    return rows


def run_target(name: str, endpoint: str, ak: str, sk: str, seconds: float, smoke: bool
               ) -> list[tuple[str, str, dict[str, object]]]:
    out = []
    s3 = client(endpoint, ak, sk, 40)
    bucket = f"bench-{int(time.time())}"
    s3.create_bucket(Bucket=bucket)
    for label, size, clients in SIZES:
        for row in workload(s3, bucket, size, 4 if smoke else clients, seconds):
            out.append((name, label, row))
    return out


def swift_running() -> bool:
    try:
        with urllib.request.urlopen(SWIFT_ENDPOINT + "/healthcheck", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--compare", choices=["swift"], default=None)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    seconds = 0.5 if a.smoke else a.seconds
    root = Path(a.dir or tempfile.mkdtemp(prefix="bench-s3-"))
    lim = limits.measure_all(str(root)) if not a.smoke else {}
    results: list[tuple[str, str, dict[str, object]]] = []
    store = StoreCluster(root / "store", datacenters=1, nodes_per_dc=3, partitions=4,
                         storage={"durability": "fsync"},
                         frontend={"chunk_size_bytes": "4MiB", "failure_backoff_s": 10})
    key = TEST_S3["access_keys"][0]
    started_swift = False
    try:
        with store:
            results += run_target("ambry", store.s3_url(), key["access_key"],
                                  key["secret_key"], seconds, a.smoke)
        if a.compare == "swift":
            if not swift_running():
                subprocess.run(["bash", str(SWIFT_UP)], check=True)
                started_swift = True
            results += run_target("swift s3api", SWIFT_ENDPOINT, "test:tester", "testing",
                                  seconds, a.smoke)
    finally:
        if started_swift:  # leave the machine as we found it
            subprocess.run(["bash", str(SWIFT_UP.with_name("down.sh"))], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if a.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"# S3 benchmark ({time.strftime('%Y-%m-%d %H:%M')}, boto3 over http, "
          f"{seconds:g} s per row, 1 DC x 3 nodes, fsync, 3 copies)\n")
    if lim:
        print(f"Machine limits measured in this run: {lim}\n")
    print("| target | size | op | clients | ops/s | MB/s | p50 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = False
    for target, label, r in results:
        print(f"| {target} | {label} | {r['op']} | {r['clients']} | {float(r['ops/s']):,.0f} "
              f"| {float(r['MB/s']):,.1f} | {float(r['p50']):.1f} | {float(r['p99']):.1f} | "
              f"{float(r['max']):.1f} | {r['errors']} |")
        failed |= bool(r["errors"]) or not r["n"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
