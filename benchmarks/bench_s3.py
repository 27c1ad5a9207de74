"""S3 API benchmark: PUT and GET of 4 KiB and 1 MiB objects through boto3, every GET verified.

Starts a real 1-DC store (3 storage nodes with the default fsync group commit, one frontend)
on loopback and drives its S3 port with boto3 (SigV4, payload SHA-256 signed, as boto3 does
over http) from a thread pool. Every object's body is its own (a stamp of the object's key
over a random filler, benchmarks/_payload.py), so a GET that returned another object fails.
``--compare swift ceph`` runs the same workloads, in the same run, against

* OpenStack Swift's s3api on 127.0.0.1:8080 (``../shared/peers/swift/up.sh`` starts it when it
  is not answering; tempauth's S3 credentials are ``test:tester`` / ``testing``), and
* Ceph RGW on 127.0.0.1:7480 (C++, 3 BlueStore OSDs, pool size 3; ``../shared/peers/ceph/up.sh``
  starts it, installing Debian's Ceph packages the first time; keys of its user ``bench``).
  When it cannot start here the run says why and exits 2.

A peer this benchmark started is stopped again at the end. CPU of every server process
(frontend / proxy / rgw, each node / object server / OSD, the rest) and of the client threads
is sampled from /proc per phase; the output opens with the commit, machine, load and command,
then a throughput table with the ratio to each peer, then CPU milliseconds per request per
role. ``--smoke``: one short round, for CI.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
import xxhash
from botocore.config import Config

from ambry.testing.frontend import TEST_S3, StoreCluster
from benchmarks import limits
from benchmarks._cpu import CpuSampler, cpu_table
from benchmarks._payload import Verifier, body_bytes, filler, object_tag
from benchmarks._results import print_run_header
from benchmarks._stats import percentiles_ms
from benchmarks.bench_compare import swift_pids

SWIFT_ENDPOINT = "http://127.0.0.1:8080"
SWIFT_UP = Path(__file__).resolve().parents[2] / "shared" / "peers" / "swift" / "up.sh"
CEPH_ENDPOINT = "http://127.0.0.1:7480"
CEPH_UP = Path(__file__).resolve().parents[2] / "shared" / "peers" / "ceph" / "up.sh"
CEPH_PIDS = Path("/tmp/ceph-peer/pids")  # D= in up.sh: one <daemon>.pid per process it started
# up.sh's defaults (S3_ACCESS / S3_SECRET override them there, and here)
CEPH_KEYS = (os.environ.get("S3_ACCESS", "CEPHPEERACCESSKEY001"),
             os.environ.get("S3_SECRET", "cephpeersecretkey0000000000000000000000001"))
SIZES = [("4 KiB", 4096, 32), ("1 MiB", 1 << 20, 8)]


def client(endpoint: str, ak: str, sk: str, pool: int) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak,
                        aws_secret_access_key=sk, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1},
                                      max_pool_connections=pool))


def workload(s3: Any, bucket: str, size: int, clients: int, seconds: float,
             pids: dict[str, int]) -> list[dict[str, object]]:
    fill = filler(size)
    keys: list[tuple[str, int, int]] = []  # (key, tag, xxh3)
    rows = []
    for op in ("PUT", "GET"):
        lat: list[float] = []
        errors = [0]
        moved = [0]
        first_error: list[str] = []
        stop = time.perf_counter() + seconds

        def worker(i: int, op: str = op, stop: float = stop, lat: list[float] = lat,
                   errors: list[int] = errors, moved: list[int] = moved,
                   first_error: list[str] = first_error) -> None:
            k = i * 1_000_000
            while time.perf_counter() < stop:
                k += 1
                t0 = time.perf_counter()
                try:
                    if op == "PUT":
                        key = f"bench/{size}/{bucket}/{k}"
                        tag = object_tag(key)
                        body = body_bytes(fill, tag, size)
                        s3.put_object(Bucket=bucket, Key=key, Body=body)
                        keys.append((key, tag, xxhash.xxh3_64_intdigest(body)))
                    else:
                        key, tag, digest = keys[k % len(keys)]
                        v = Verifier(tag, size, digest)
                        v.update(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                        if err := v.error():
                            raise RuntimeError(f"GET {key}: {err}")
                    moved[0] += size
                except Exception as e:  # noqa: BLE001 - counted, the run goes on
                    errors[0] += 1
                    first_error[:] = first_error or [repr(e)[:300]]
                    continue
                lat.append(time.perf_counter() - t0)

        sampler = CpuSampler(pids)
        sampler.start()
        me0 = time.process_time()  # the client: boto3's threads in this process
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(worker, range(clients)))
        took = time.perf_counter() - t0
        client_cpu_s = time.process_time() - me0
        cpu = sampler.stop()
        p50, p99, mx = percentiles_ms(lat)
        rows.append({"op": op, "clients": clients, "ops/s": len(lat) / took,
                     "MB/s": moved[0] / took / 1e6, "p50": p50, "p99": p99, "max": mx,
                     "errors": errors[0], "n": len(lat), "cpu": cpu,
                     "client_cpu_s": client_cpu_s, "size": size,
                     "first_error": first_error[0] if first_error else ""})
        if op == "PUT" and not keys:
            break
    return rows


def run_target(name: str, endpoint: str, ak: str, sk: str, seconds: float, smoke: bool,
               pids: dict[str, int]) -> list[tuple[str, str, dict[str, object]]]:
    out = []
    s3 = client(endpoint, ak, sk, 40)
    bucket = f"bench-{int(time.time())}"
    s3.create_bucket(Bucket=bucket)
    for label, size, clients in SIZES:
        for row in workload(s3, bucket, size, 4 if smoke else clients, seconds, pids):
            out.append((name, label, row))
    return out


def ambry_pids(store: StoreCluster) -> dict[str, int]:
    pids = {f"frontend {dc}": int(fe.pid or 0) for dc, fe in store.frontends.items()}
    pids.update({f"node {name}": int(node.pid or 0) for name, node in store.nodes.items()})
    return pids


def ceph_pids() -> dict[str, int]:
    """The daemons up.sh started ("rgw a", "osd 0", "mon a", "mgr x"), from its pid files."""
    out = {}
    for f in sorted(CEPH_PIDS.glob("*.pid")):
        with contextlib.suppress(OSError, ValueError):
            out[f.stem.replace(".", " ", 1)] = int(f.read_text().strip())
    return out


def answering(endpoint: str, path: str = "/") -> bool:
    try:
        with urllib.request.urlopen(endpoint + path, timeout=2) as r:
            return bool(r.status < 500)
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False


def start_ceph() -> str:
    """Start Ceph RGW with ../shared/peers/ceph/up.sh; '' when it answers, else why not."""
    if not CEPH_UP.exists():
        return f"{CEPH_UP} is missing"
    try:
        r = subprocess.run(["bash", str(CEPH_UP)], capture_output=True, text=True,
                           timeout=900, check=False)
    except subprocess.TimeoutExpired:
        return f"{CEPH_UP} did not finish in 900 s"
    if r.returncode != 0 or not answering(CEPH_ENDPOINT):
        tail = " | ".join((r.stdout + r.stderr).strip().splitlines()[-4:])
        return f"{CEPH_UP} exited {r.returncode}: {tail}"
    return ""


def swift_running() -> bool:
    return answering(SWIFT_ENDPOINT, "/healthcheck")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--compare", choices=["swift", "ceph"], nargs="+", default=[])
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    print_run_header(__file__, argv)
    seconds = 0.5 if a.smoke else a.seconds
    root = Path(a.dir or tempfile.mkdtemp(prefix="bench-s3-"))
    lim = limits.measure_all(str(root)) if not a.smoke else {}
    results: list[tuple[str, str, dict[str, object]]] = []
    store = StoreCluster(root / "store", datacenters=1, nodes_per_dc=3, partitions=4,
                         storage={"durability": "fsync"},
                         frontend={"chunk_size_bytes": "4MiB", "failure_backoff_s": 10})
    key = TEST_S3["access_keys"][0]
    stop: list[Path] = []  # down.sh of every peer this run started
    ceph_error = ""
    try:
        with store:
            results += run_target("ambry", store.s3_url(), key["access_key"],
                                  key["secret_key"], seconds, a.smoke, ambry_pids(store))
        if "swift" in a.compare:
            if not swift_running():
                subprocess.run(["bash", str(SWIFT_UP)], check=True)
                stop.append(SWIFT_UP.with_name("down.sh"))
            results += run_target("swift s3api", SWIFT_ENDPOINT, "test:tester", "testing",
                                  seconds, a.smoke, swift_pids())
        if "ceph" in a.compare:
            if not answering(CEPH_ENDPOINT):
                ceph_error = start_ceph()
                stop.append(CEPH_UP.with_name("down.sh"))
            if not ceph_error:
                results += run_target("ceph rgw", CEPH_ENDPOINT, *CEPH_KEYS, seconds, a.smoke,
                                      ceph_pids())
    finally:
        for down in stop:  # leave the machine as we found it (data kept: --purge is manual)
            subprocess.run(["bash", str(down)], check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if a.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"# S3 benchmark ({time.strftime('%Y-%m-%d %H:%M')}, boto3 over http, "
          f"{seconds:g} s per row, 1 DC x 3 nodes, fsync, 3 copies)\n")
    if lim:
        print(f"Machine limits measured in this run: sequential write + fsync "
              f"{lim['seq_write_fsync_mbps']:,.0f} MB/s, 4 KiB write+fdatasync "
              f"{lim['fsync_4k_iops']:,.0f} IOPS, loopback TCP "
              f"{lim['loopback_tcp_mbps']:,.0f} MB/s\n")
    peers = [p for p in ("swift s3api", "ceph rgw") if any(t == p for t, _l, _r in results)]
    by = {(t, lab, r["op"]): r for t, lab, r in results}
    print("| target | size | op | clients | ops/s | MB/s | p50 ms | p99 ms | max ms | errors | "
          + "".join(f"vs {p} | " for p in peers))
    print("|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(peers))
    failed = False
    for target, label, r in results:
        ratios = ""
        for p in peers:
            other = by.get((p, label, r["op"]))
            mine = float(r["ops/s"])  # type: ignore[arg-type]
            theirs = float(other["ops/s"]) if other else 0.0  # type: ignore[arg-type]
            ratios += (f"{mine / theirs:.2f}x | " if target == "ambry" and theirs else " | ")
        print(f"| {target} | {label} | {r['op']} | {r['clients']} | {float(r['ops/s']):,.0f} "
              f"| {float(r['MB/s']):,.1f} | {float(r['p50']):.1f} | {float(r['p99']):.1f} | "
              f"{float(r['max']):.1f} | {r['errors']} | {ratios}")
        failed |= bool(r["errors"]) or not r["n"]
    print("\n### CPU milliseconds per request, per process role (from /proc, per phase)\n")
    print("Client = boto3 and its threads in the benchmark process. Ceph's `other` is its mon "
          "and mgr; Swift's its account and container servers and memcached.\n")
    print(cpu_table([{"workload": f"{label} {r['op']}", "system": target, "ops": r["n"],
                      "size": r["size"], "cpu": r["cpu"], "client_cpu_s": r["client_cpu_s"]}
                     for target, label, r in results]))
    for target, label, r in results:
        if r["first_error"]:
            print(f"\n{target} {label} {r['op']}: first error: {r['first_error']}")
    if ceph_error:
        print(f"\nCeph RGW could not start on this machine, so it has no rows: {ceph_error}")
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
