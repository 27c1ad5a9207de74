"""API benchmark, Ambry-py side by side with OpenStack Swift and the machine's limits.

Starts the real cluster of a profile with ``ambry cluster up`` (the operator's path):
``--profile 1dc`` = config/bench-1dc.yaml (the headline: 1 DC x 3 nodes, 3 copies, fsync
group commit, one frontend) or ``--profile 2dc`` = config/local.yaml (2 DCs x 3 nodes, 6 copies
with replication, PUTs and GETs through dc1's frontend). Then runs, with the load generator of
benchmarks/loadgen.py (several client processes, pre-generated payloads, every GET body
verified against what was PUT):

  4 KiB PUT/GET at 32 clients, 1 MiB PUT/GET at 8, 64 MiB PUT/GET at 2, and an 80/20 GET/PUT
  mix of model-artifact sizes at 8,

first against a null server (stores nothing; the generator's own ceiling on this machine),
then against Ambry through ``POST /`` and, like for like with Swift's
``PUT /<container>/<object>``, through named blobs (``PUT/GET /named/<a>/<c>/<name>``: a blob
write plus a name record) at 4 KiB and 1 MiB, then (``--compare swift``) against Swift started
by ../shared/peers/swift/up.sh (3 replicas, tempauth) in the same run. CPU used by every server
process and by the clients is sampled from /proc per phase (benchmarks/_cpu.py). Prints the
run's provenance (commit, machine, load before, command), one markdown table with the machine
limits measured in the same run and the Ambry/Swift ratio per row, and a table of CPU
milliseconds per request per process role (frontend or proxy, each node, client).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import psutil
import yaml

from benchmarks import limits
from benchmarks._cpu import CpuSampler, PhaseCpu, cpu_table
from benchmarks._results import print_run_header
from benchmarks._stats import percentiles_ms
from benchmarks.loadgen import PhaseResult, run_phases, serve_null, swift_setup

KIB, MIB = 1 << 10, 1 << 20
SWIFT_DIR = ROOT.parent / "shared" / "peers" / "swift"
SWIFT_SPEC = {"kind": "swift", "auth_url": "http://127.0.0.1:8080/auth/v1.0",
              "user": "test:tester", "key": "testing"}
# model-artifact size mix by count: configs/metadata, shards of features, checkpoints
ARTIFACT_MIX = [(4 * KIB, 0.40), (256 * KIB, 0.25), (MIB, 0.20), (16 * MIB, 0.10),
                (64 * MIB, 0.05)]
PROFILES = {"1dc": ("config/bench-1dc.yaml", 3), "2dc": ("config/local.yaml", 6)}


def workloads(seconds: float, smoke: bool) -> list[tuple[str, int, list[dict[str, Any]]]]:
    """(name, clients, phases); a GET row reuses the objects of the PUT phase before it."""
    big = 8 * MIB if smoke else 64 * MIB
    mix = [(s, w) for s, w in ARTIFACT_MIX if not smoke or s <= 4 * MIB]
    return [
        ("4 KiB", 32, [{"op": "PUT", "sizes": [(4 * KIB, 1.0)], "seconds": seconds},
                       {"op": "GET", "sizes": [(4 * KIB, 1.0)], "seconds": seconds}]),
        ("1 MiB", 8, [{"op": "PUT", "sizes": [(MIB, 1.0)], "seconds": seconds, "fresh": True},
                      {"op": "GET", "sizes": [(MIB, 1.0)], "seconds": seconds}]),
        (f"{big // MIB} MiB", 2,
         [{"op": "PUT", "sizes": [(big, 1.0)], "seconds": seconds * 1.5, "fresh": True},
          {"op": "GET", "sizes": [(big, 1.0)], "seconds": seconds * 1.5}]),
        ("artifact mix", 8,
         [{"op": "PUT", "sizes": mix, "seconds": seconds / 2, "fresh": True, "fill": True},
          {"op": "MIX", "sizes": mix, "seconds": seconds * 1.5, "get_fraction": 0.8}]),
    ]


# ---------------------------------------------------------------------------------- systems
@contextlib.contextmanager
def null_server() -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
    import multiprocessing as mp

    port = _free_port()
    p = mp.get_context("spawn").Process(target=serve_null, args=(port,), daemon=True)
    p.start()
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/none", ok=(404,))
    try:
        yield {"kind": "null", "url": url}, {"null server": p.pid or 0}
    finally:
        p.terminate()
        p.join(10)


@contextlib.contextmanager
def ambry_cluster(profile: str, root: str, frontend_workers: int | None = None
                  ) -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
    config, _copies = PROFILES[profile]
    if frontend_workers is not None:  # the profile's config with frontend.workers replaced
        doc = yaml.safe_load((ROOT / config).read_text())
        doc.setdefault("frontend", {})["workers"] = frontend_workers
        config = os.path.join(root, f"{Path(config).stem}-fe{frontend_workers}.yaml")
        Path(config).write_text(yaml.safe_dump(doc, sort_keys=False))
    data = os.path.join(root, "ambry-data")
    log = open(os.path.join(root, "cluster.log"), "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "ambry.cli", "cluster", "up",
                             "--config", config, "--data-dir", data, "--log-level", "WARNING"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        state_path = Path(data) / "cluster.json"
        deadline = time.time() + 120
        url = ""
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ambry cluster up exited {proc.returncode}; see {log.name}")
            if state_path.exists():
                state = json.loads(state_path.read_text())
                fes = [p for p in state["processes"] if p["role"] == "frontend"
                       and p["datacenter"] == "dc1"]
                if fes and _http_ok(f"http://127.0.0.1:{fes[0]['port']}/healthCheck"):
                    url = f"http://127.0.0.1:{fes[0]['port']}"
                    break
            time.sleep(0.5)
        if not url:
            raise RuntimeError("ambry cluster did not become healthy in 120 s")
        if frontend_workers and frontend_workers > 1:  # every worker, not the first one up
            while _ready_workers(url) < frontend_workers:
                if time.time() > deadline:
                    raise RuntimeError(f"{frontend_workers} frontend workers not ready")
                time.sleep(0.5)
        time.sleep(3)  # let fresh replicas finish their first replication round
        pids = {f"{p['role']} {p['id']}": p["pid"] for p in state["processes"]}
        yield {"kind": "ambry", "url": url}, pids
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _ready_workers(url: str) -> int:
    """Frontend workers whose readiness /metrics reports as 1 (frontend.workers > 1)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0
    return sum(1 for line in text.splitlines()
               if line.startswith("ambry_frontend_worker_ready{") and line.endswith(" 1.0"))


def swift_pids() -> dict[str, int]:
    """Swift's server processes by role ("proxy 123", "object 456", ...): the parents only.
    Their forked workers (same command line) are counted with them by the CPU sampler;
    listing them too counted every worker's CPU twice."""
    found: dict[int, tuple[str, int]] = {}
    for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        for name in ("swift-proxy-server", "swift-object-server",
                     "swift-container-server", "swift-account-server", "memcached"):
            if name in cmd and "bench" not in cmd:
                role = name.removeprefix("swift-").removesuffix("-server")
                found[p.info["pid"]] = (role, p.info["ppid"])
    return {f"{role} {pid}": pid for pid, (role, ppid) in found.items() if ppid not in found}


@contextlib.contextmanager
def swift() -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
    subprocess.run(["bash", str(SWIFT_DIR / "up.sh"), "--fresh"], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        swift_setup(SWIFT_SPEC)
        yield SWIFT_SPEC, swift_pids()
    finally:
        subprocess.run(["bash", str(SWIFT_DIR / "down.sh")], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------- running
API = {"ambry": ("POST /", "GET /<blobId>"),
       "ambry-named": ("PUT /named/default/default/<name>", "GET /named/default/default/<name>"),
       "swift": ("PUT /v1/<account>/loadgen/<object>", "GET /v1/<account>/loadgen/<object>"),
       "null": ("POST /", "GET /<key>")}
NAMED_ROWS = {"4 KiB", "1 MiB"}


def run_system(spec: dict[str, Any], pids: dict[str, int], seconds: float, smoke: bool,
               only: set[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    named = spec["kind"] == "ambry-named"
    for name, clients, phases in workloads(seconds, smoke):
        if only is not None and name not in only:
            continue
        sampler = CpuSampler(pids)
        cpu: list[PhaseCpu] = []

        def on_phase(_i: int, when: str, sampler: CpuSampler = sampler,
                     cpu: list[PhaseCpu] = cpu) -> None:
            if when == "start":
                sampler.start()
            else:
                cpu.append(sampler.stop())

        procs = 2 if clients >= 8 else 1
        results = run_phases(spec, phases, clients, processes=procs, on_phase=on_phase)
        for ph, res, c in zip(phases, results, cpu, strict=True):
            if ph.get("fill"):
                continue
            op = ph["op"] if ph["op"] != "MIX" else "80/20 GET/PUT"
            sizes = ph["sizes"]
            row = _row(f"{name}{' named' if named else ''} {op}", clients, res, c)
            row["size"] = sizes[0][0] if len(sizes) == 1 else 0
            put_api, get_api = API[spec["kind"]]
            row["api"] = (put_api if op == "PUT" else get_api if op == "GET" else
                          f"{get_api} + {put_api}")
            rows.append(row)
    return rows


def _row(workload: str, clients: int, r: PhaseResult, cpu: PhaseCpu) -> dict[str, Any]:
    p50, p99, mx = percentiles_ms(r.latencies)
    dt = r.seconds or 1.0
    by_role: dict[str, float] = {}
    for k, v in cpu.cores().items():
        role = k.split(" ")[0]
        by_role[role] = by_role.get(role, 0.0) + v
    by_role["client"] = r.client_cpu_s / dt
    return {"workload": workload, "clients": clients, "ops": r.ops / dt,
            "mbps": r.bytes / dt / 1e6, "p50": p50, "p99": p99, "max": mx,
            "errors": r.errors, "verified": r.verified, "cpu": by_role,
            "first_error": r.first_error, "phase_cpu": cpu, "count": r.ops,
            "client_cpu_s": r.client_cpu_s}


# ---------------------------------------------------------------------------------- output
def print_table(title: str, copies: int, lim: dict[str, float],
                systems: dict[str, list[dict[str, Any]]]) -> None:
    seq3 = lim["seq_write_fsync_mbps"] / 3
    hop2 = lim["loopback_tcp_mbps"] / 2
    print(f"\n## {title}\n")
    print("| workload | clients | system | request | copies | ops/s | MB/s | p50 ms | p99 ms | "
          "max ms | errors | verified MB | CPU cores by process | per server core | vs Swift | "
          "vs Swift per core | vs limit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    swift_rows = {r["workload"]: r for r in systems.get("swift", [])}
    for system, rows in systems.items():
        for r in rows:
            w = r["workload"]
            sw = swift_rows.get(w.replace(" named", ""))
            vs_swift = (f"{r['ops'] / sw['ops']:.1f}x" if sw and sw["ops"] and system == "ambry"
                        else "")
            like = w.replace(" named", "")
            if like.startswith("4 KiB PUT"):
                vs = f"{r['ops'] / lim['fsync_4k_iops']:.0%} of 4 KiB fdatasync IOPS"
            elif "PUT" in like and "80/20" not in like:
                vs = f"{r['mbps'] / seq3:.0%} of fsync seq write/3"
            elif "GET" in like:
                vs = f"{r['mbps'] / hop2:.0%} of 2-hop loopback"
            else:
                vs = ""
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cpu"].items()) if v >= 0.01)
            eff = _per_core(r)
            sw_eff = _per_core(sw) if sw else 0.0
            unit = "ops/s" if w.startswith("4 KiB") else "MB/s"
            per_core = f"{eff:,.1f} {unit}" if eff else ""
            vs_core = (f"{eff / sw_eff:.1f}x" if system == "ambry" and eff and sw_eff else "")
            cp = {"ambry": str(copies), "swift": "3", "null": "0"}[system]
            print(f"| {w} | {r['clients']} | {system} | `{r['api']}` | {cp} | {r['ops']:,.0f} | "
                  f"{r['mbps']:,.1f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | "
                  f"{r['errors']} | {r['verified'] / 1e6:,.0f} | {cpu} | {per_core} | "
                  f"{vs_swift} | {vs_core} | {vs} |")
    print("\n### CPU milliseconds per request, per process role (from /proc, per phase)\n")
    print("Server CPU of each process (children included) and the load generator's own CPU "
          "over each phase, divided by the requests it completed. Swift's `other` is its "
          "account and container servers and memcached.\n")
    print(cpu_table([{"workload": r["workload"], "system": system, "api": f"`{r['api']}`",
                      "ops": r["count"], "size": r["size"], "cpu": r["phase_cpu"],
                      "client_cpu_s": r["client_cpu_s"]}
                     for system, rows in systems.items() for r in rows]))
    for system, rows in systems.items():
        for r in rows:
            if r["first_error"]:
                print(f"\n{system} {r['workload']}: first error: {r['first_error']}")


def _per_core(r: dict[str, Any]) -> float:
    """Throughput per core of server CPU (clients excluded): ops/s for 4 KiB rows, MB/s for
    the others. Removes the bias of the scheduler sharing CPU per process under contention."""
    cores = float(sum(v for k, v in r["cpu"].items() if k != "client"))
    if cores <= 0:
        return 0.0
    return float(r["ops"] if r["workload"].startswith("4 KiB") else r["mbps"]) / cores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="1dc")
    ap.add_argument("--compare", choices=["swift"], default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--smoke", action="store_true", help="tiny run (CI): 4 KiB and 1 MiB rows")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--frontend-workers", type=int, default=None,
                    help="frontend.workers of the Ambry cluster [default: the profile's]")
    ap.add_argument("--rows", default=None,
                    help="only these workloads, comma-separated (e.g. '4 KiB')")
    a = ap.parse_args(argv)
    print_run_header(__file__, argv)
    only = None
    if a.smoke:
        a.seconds = 1.0
        only = {"4 KiB", "1 MiB"}
    if a.rows:
        only = {r.strip() for r in a.rows.split(",")} & (only or {r.strip() for r in
                                                                  a.rows.split(",")})
    root = tempfile.mkdtemp(prefix="ambry-bench-cmp-", dir=a.dir)
    need = 6 << 30 if not a.smoke else 1 << 30
    if shutil.disk_usage(root).free < need:
        print(f"not enough free disk in {root}: need {need / 1e9:.1f} GB")
        return 2
    os.chdir(ROOT)
    try:
        lim = limits.measure_all(root, quick=a.smoke)
        systems: dict[str, list[dict[str, Any]]] = {}
        with null_server() as (spec, pids):
            systems["null"] = run_system(spec, pids, a.seconds, a.smoke,
                                         only=({"4 KiB"} if a.smoke else {"4 KiB", "1 MiB"})
                                         & (only or {"4 KiB", "1 MiB"}))
        with ambry_cluster(a.profile, root, a.frontend_workers) as (spec, pids):
            systems["ambry"] = run_system(spec, pids, a.seconds, a.smoke, only)
            named = {**spec, "kind": "ambry-named"}
            systems["ambry"] += run_system(named, pids, a.seconds, a.smoke,
                                           NAMED_ROWS & only if only else NAMED_ROWS)
        if a.compare == "swift":
            with swift() as (spec, pids):
                systems["swift"] = run_system(spec, pids, a.seconds, a.smoke, only)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    config, copies = PROFILES[a.profile]
    load = os.getloadavg()
    print(f"# API benchmark, profile {a.profile} ({config}), {time.strftime('%Y-%m-%d %H:%M')}"
          f", {os.cpu_count()} CPUs, load average at the end {load[0]:.1f} (before: above)\n")
    print(f"Machine limits measured in this run: sequential write + fsync "
          f"{lim['seq_write_fsync_mbps']:,.0f} MB/s (/3 copies = "
          f"{lim['seq_write_fsync_mbps'] / 3:,.0f} MB/s of user data); 4 KiB write+fdatasync "
          f"{lim['fsync_4k_iops']:,.0f} IOPS; loopback TCP {lim['loopback_tcp_mbps']:,.0f} MB/s "
          f"(1 stream; two hops node -> frontend -> client: "
          f"{lim['loopback_tcp_mbps'] / 2:,.0f} MB/s). The null server row is the load "
          f"generator's own ceiling (same clients, a server that stores nothing). Every GET "
          f"body is verified against what was PUT; CPU is cores used per process role "
          f"during the phase (clients and servers share the machine's {os.cpu_count()} CPUs).")
    print_table(f"{a.profile} profile", copies, lim, systems)
    return 0


# ---------------------------------------------------------------------------------- helpers
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _wait_http(url: str, ok: tuple[int, ...] = (200,), timeout: float = 30) -> None:
    import urllib.error

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in ok:
                    return
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


if __name__ == "__main__":
    raise SystemExit(main())
