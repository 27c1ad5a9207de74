"""Where does the CPU of one request go? CPU milliseconds per operation, per process.

Starts a 1-DC store (3 storage nodes, one frontend; the same defaults as the benchmarks),
stores a few hundred blobs, then runs a fixed number of PUTs or GETs of one size with
``--clients`` connections and divides the CPU time each process used by the operation count.
CPU per op is steadier than ops/s on a shared, noisy machine: it says how many operations the
machine's cores could carry if nothing else ran. ``--py-spy DIR`` also records a py-spy
profile (``--gil``: only samples holding the GIL, i.e. Python CPU) of the frontend and one
node during the run and prints the hottest frames of each.

    python benchmarks/profile_ops.py --op PUT --size 4096 --ops 3000
    python benchmarks/profile_ops.py --op GET --size 1048576 --clients 8 --py-spy /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import psutil

from ambry.testing.frontend import TEST_S3, StoreCluster
from benchmarks._results import print_run_header

HEADERS = {"x-ambry-service-id": "profile", "x-ambry-content-type": "application/octet-stream"}


def s3_signer(store: StoreCluster) -> Callable[[str, str, bytes], dict[str, str]]:
    """Headers of a request to the store's S3 port signed with SigV4 by botocore (payload
    SHA-256 signed, as boto3 sends over http), for :func:`drive` with ``s3``."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    key = TEST_S3["access_keys"][0]
    signer = S3SigV4Auth(Credentials(key["access_key"], key["secret_key"]), "s3",
                         TEST_S3["region"])

    def sign(method: str, url: str, body: bytes) -> dict[str, str]:
        req = AWSRequest(method=method, url=url, data=body)
        signer.add_auth(req)
        return dict(req.headers.items())

    return sign


async def drive(base: str, op: str, size: int, clients: int, n: int, ids: list[str],
                named: bool = False,
                s3: Callable[[str, str, bytes], dict[str, str]] | None = None) -> None:
    """``named``: PUT /named/default/default/<unique name> (a blob plus a name record, what
    every S3 PutObject does) and GET by name, instead of POST / and GET /<id>. ``s3`` (a
    signer; ``base`` is then the S3 port): PutObject / GetObject of bucket ``profile``."""
    payload = os.urandom(size)
    left = n
    run = os.urandom(4).hex()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
        async def worker(i: int) -> None:
            nonlocal left
            k = i
            while left > 0:
                left -= 1
                k += 1
                if s3 is not None:
                    if op == "PUT":
                        url = f"{base}/profile/{run}/{i}-{k}"
                        async with s.put(url, data=payload,
                                         headers=s3("PUT", url, payload)) as r:
                            await r.read()
                            assert r.status == 200, r.status
                            ids.append(url)
                    else:
                        url = ids[k % len(ids)]
                        async with s.get(url, headers=s3("GET", url, b"")) as r:
                            body = await r.read()
                            assert r.status == 200 and len(body) == size, r.status
                elif op == "PUT" and named:
                    path = f"/named/default/default/profile/{run}/{i}-{k}"
                    async with s.put(base + path, data=payload, headers=HEADERS) as r:
                        await r.read()
                        assert r.status == 201, r.status
                        ids.append(path)
                elif op == "PUT":
                    async with s.post(base + "/", data=payload, headers=HEADERS) as r:
                        await r.read()
                        assert r.status == 201, r.status
                        ids.append(r.headers["Location"])
                else:
                    async with s.get(base + ids[k % len(ids)]) as r:
                        body = await r.read()
                        assert r.status == 200 and len(body) == size, r.status
        await asyncio.gather(*(worker(i) for i in range(clients)))


async def make_bucket(url: str, sign: Callable[[str, str, bytes], dict[str, str]]) -> None:
    async with aiohttp.ClientSession() as s, s.put(url, headers=sign("PUT", url, b"")) as r:
        assert r.status == 200, (r.status, await r.text())


def _frame(f: str) -> tuple[str, str]:
    """('Class.func', 'pkg/module.py') of one py-spy raw frame 'func (path/file.py:line)'."""
    func, _, where = f.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return func, path


def hottest(raw_path: Path, top: int) -> list[str]:
    """From py-spy's raw (collapsed) output: functions by own samples; our code's (ambry/)
    functions by inclusive samples; own samples by package (where the CPU goes by layer)."""
    incl: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    layer: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        for func, path in set(frames):
            if path.startswith("ambry/"):
                incl[f"{func} ({path})"] += n
        func, path = frames[-1]
        own[f"{func} ({path.rsplit('/', 1)[-1]})"] += n
        parts = path.split("/")
        layer["/".join(parts[:2]) if parts[0] == "ambry" else parts[0]] += n
    total = total or 1
    out = [f"self {v / total:5.1%}  {k}" for k, v in own.most_common(top)]
    entry = ("ambry/cli/", "ambry/frontend/server.py", "ambry/storage/node.py")
    out += [f"incl {v / total:5.1%}  {k}" for k, v in incl.most_common()
            if not any(e in k for e in entry)][:top]
    out.append("own samples by package: " + ", ".join(
        f"{k} {v / total:.0%}" for k, v in layer.most_common(12)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--op", choices=["PUT", "GET"], default="PUT")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--ops", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--no-replication", action="store_true")
    ap.add_argument("--no-skip", action="store_true",
                    help="replication.skip_confirmed false: intra-DC peers pull and check "
                         "every record, also those every replica acked (the A/B of issue 16)")
    ap.add_argument("--named", action="store_true",
                    help="PUT/GET /named/default/default/<name> instead of POST / and GET /<id>")
    ap.add_argument("--s3", action="store_true",
                    help="PutObject/GetObject through the S3 port (SigV4 by botocore)")
    ap.add_argument("--py-spy", metavar="DIR", default=None)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    print_run_header(__file__)
    root = tempfile.mkdtemp(prefix="ambry-profile-", dir=a.dir)
    try:
        with StoreCluster(root, datacenters=1, nodes_per_dc=3, partitions=16,
                          log_level="WARNING", frontend={"chunk_size_bytes": "4MiB"},
                          extra={"replication": {"scrub_interval_s": 0,
                                                 "enabled": not a.no_replication,
                                                 "skip_confirmed": not a.no_skip}}) as st:
            base = st.url("dc1", "")
            sign = None
            if a.s3:
                base, sign = st.s3_url("dc1"), s3_signer(st)
                asyncio.run(make_bucket(base + "/profile", sign))
            ids: list[str] = []
            asyncio.run(drive(base, "PUT", a.size, a.clients, 300, ids, a.named, sign))
            fe = st.frontends["dc1"]
            procs = {"frontend": psutil.Process(fe.pid)}
            for name, node in st.nodes.items():
                procs[name] = psutil.Process(node.pid)
            spies = []
            if a.py_spy:
                out = Path(a.py_spy)
                out.mkdir(parents=True, exist_ok=True)
                first_node = next(iter(st.nodes))
                for name in ("frontend", first_node):
                    f = out / f"{a.op}-{a.size}-{name}.txt"
                    spies.append((name, f, subprocess.Popen(
                        ["py-spy", "record", "-p", str(procs[name].pid), "-f", "raw", "-o",
                         str(f), "--nonblocking", "--gil", "-r", "200"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
                time.sleep(1)
            c0 = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
            me0 = time.process_time()
            t0 = time.perf_counter()
            asyncio.run(drive(base, a.op, a.size, a.clients, a.ops, ids, a.named, sign))
            dt = time.perf_counter() - t0
            client = (time.process_time() - me0) / a.ops * 1e3
            per = {k: (sum(p.cpu_times()[:2]) - c0[k]) / a.ops * 1e3 for k, p in procs.items()}
            for _n, _f, sp in spies:
                sp.send_signal(2)
                sp.wait(30)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    nodes = sum(v for k, v in per.items() if k != "frontend")
    total = nodes + per["frontend"] + client
    kind = " S3" if a.s3 else " named" if a.named else ""
    print(f"{a.op}{kind} {a.size} B x {a.ops}, {a.clients} clients, "
          f"replication {'off' if a.no_replication else 'on'}"
          f"{', no skip' if a.no_skip and not a.no_replication else ''}: {a.ops / dt:,.0f} ops/s "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"CPU ms per op: frontend {per['frontend']:.2f}, storage nodes {nodes:.2f} "
          f"({', '.join(f'{k} {v:.2f}' for k, v in per.items() if k != 'frontend')}), "
          f"client {client:.2f}; total {total:.2f} -> at most "
          f"{os.cpu_count() or 1:d} cores / {total:.2f} ms = "
          f"{(os.cpu_count() or 1) * 1e3 / total:,.0f} ops/s on this machine")
    for name, f, _sp in spies:
        if f.exists():
            print(f"\npy-spy --gil, {name}:")
            print("\n".join(hottest(f, 15)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
