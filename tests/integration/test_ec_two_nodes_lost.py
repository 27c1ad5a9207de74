"""The warm tier at k=4, m=2 (the 2 DCs x 6 nodes profile of config/bench-ec.yaml) loses any
TWO nodes of a datacenter after encoding (issue 17, "Must show"), with real processes: kill -9
or wipe of two nodes; every blob then reads back from the datacenter's surviving replicas,
rebuilt from the fragments left and compared with what was PUT; restarted, the repair brings
every fragment back, each verified by its node, and ``ambry admin ec-status --verify`` says
``encoded`` (healthy) again.

All ``@slow`` (``make faults``): 12 node processes and a repair take about 20 s a case on a
busy 2-core machine, beyond ``make test``'s few seconds; the fast regression test of the read
path's bug is ``test_ec_fragment_read_cancel.py``. Waits are on conditions, never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ambry.common.blobid import BlobId, new_blob_id
from ambry.common.properties import BlobProperties
from ambry.testing.cluster import LocalCluster, NodeProcess

pytest.importorskip("pyeclib")

REPO_ROOT = Path(__file__).resolve().parents[2]
K, M = 4, 2
SEGMENT = 1024 * 1024
BLOB = 200 * 1024
#: partition 0 has replicas on nodes 1-3 of each datacenter; its fragments go to all 6
REPLICAS = [f"dc{d}-n{j}" for d in (1, 2) for j in (1, 2, 3)]
EC = {"stripe_bytes": "256KiB", "min_age_s": 0, "scan_interval_s": 0.3,
      "encode_rate_bytes_per_s": "64MiB", "fragment_timeout_ms": 5000,
      "repair_interval_s": 0.5, "scrub_interval_s": 3600}
WAIT_S = 240.0  # generous: a busy 2-core machine runs 12 nodes here


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, datacenters=2, nodes_per_dc=6, partitions=1, replicas_per_dc=3,
                     storage={"segment_size_bytes": SEGMENT},
                     extra={"partitions": [{"id": 0, "replicas": REPLICAS,
                                            "policy": {"ec": {"k": K, "m": M}}}],
                            "ec": EC}, log_level="WARNING")
    c.start()
    try:
        yield c
    finally:
        c.kill_all()


async def _call(n: NodeProcess, op: str, fields: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    async with n.client() as cl:
        reply = await cl.request(op, fields)
        await reply.release()
        return reply.header


async def _status(c: LocalCluster) -> dict[str, dict[str, Any]]:
    out = {}
    for nid in REPLICAS:
        n = c.nodes[nid]
        if n.running:
            try:
                out[nid] = next(p for p in (await _call(n, "ec_status"))["partitions"]
                                if p["partition"] == 0)
            except (OSError, TimeoutError, StopIteration):
                continue
    return out


async def _wait(cond: Any, what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _put_all(c: LocalCluster, n_blobs: int) -> dict[BlobId, bytes]:
    """PUTs to dc1's three replicas (replication takes them to dc2)."""
    blobs: dict[BlobId, bytes] = {}
    clients = [c.nodes[n].client() for n in REPLICAS if n.startswith("dc1")]
    try:
        for _ in range(n_blobs):
            bid = new_blob_id(1, 101, 5, 0)
            data = os.urandom(BLOB)
            props = BlobProperties(size=BLOB, created_ms=int(time.time() * 1000), ttl_s=-1,
                                   service_id="t", content_type="application/octet-stream")
            await asyncio.gather(*(cl.put(bid, props, b"um", data) for cl in clients))
            blobs[bid] = data
    finally:
        for cl in clients:
            await cl.close()
    return blobs


async def _read_all(c: LocalCluster, blobs: dict[BlobId, bytes], nodes: list[str]) -> None:
    for nid in nodes:
        async with c.nodes[nid].client(request_timeout_ms=60_000) as cl:
            for bid, data in blobs.items():
                _, got = await cl.get_bytes(bid)
                assert bytes(got) == data, f"{bid} from {nid}: wrong bytes"


def _ec_status(c: LocalCluster) -> dict[str, Any]:
    """``ambry admin ec-status --verify --json``: partition 0's row of dc1."""
    r = subprocess.run([sys.executable, "-m", "ambry.cli", "admin", "ec-status", "--config",
                        str(c.config_path), "--json", "--verify"], check=False,
                       capture_output=True, text=True, timeout=120, cwd=str(REPO_ROOT),
                       env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert r.stdout, r.stderr
    rows = json.loads(r.stdout)
    rows = rows["partitions"] if isinstance(rows, dict) else rows
    return next(x for x in rows if x["partition"] == 0 and x["datacenter"] == "dc1")


async def _encoded_and_freed(c: LocalCluster) -> list[dict[str, Any]]:
    """Waits until every replica freed its sealed segments; dc1's EC_SEGMENT records."""
    async def all_freed() -> dict[str, dict[str, Any]] | None:
        st = await _status(c)
        ok = len(st) == len(REPLICAS) and all(len(s["freed_segments"]) >= 2
                                              for s in st.values())
        return st if ok else None

    st = await _wait(all_freed, "every replica to free its sealed segments")
    recs = {(r["source"], r["segment"], r["generation"]): r
            for s in st.values() for r in s["records"] if r["datacenter"] == "dc1"}
    assert recs and all(r["k"] == K and r["m"] == M and len(r["placement"]) == K + M
                        for r in recs.values())
    return sorted(recs.values(), key=lambda r: (r["source"], r["segment"]))


def _pick(recs: list[dict[str, Any]], st: dict[str, dict[str, Any]], roles: str
          ) -> list[str]:
    """Two dc1 nodes by role: ``data`` (holds a data fragment; a replica only if it must),
    ``anydata``, ``parity`` (holds a parity fragment),
    ``coord`` (the coordinator: a replica and a fragment node), ``replica`` (another
    replica)."""
    place = recs[0]["placement"]
    assert len({r["placement"][0] for r in recs}) == 1  # placement is per partition
    coord = next(n for n, s in st.items() if n.startswith("dc1") and s.get("job")
                 and s["job"].get("coordinator"))
    replicas = [n for n in REPLICAS if n.startswith("dc1")]
    # nodes that are not replicas first: the replicas left then read through fragments
    pools = {"data": sorted((n for n in place[:K] if n != coord), key=lambda n: n in replicas),
             "anydata": [n for n in place[:K] if n != coord],
             "parity": list(place[K:]),  # the coordinator may hold one
             "coord": [coord],
             # a replica holding a data fragment first: its loss is then also a data loss
             "replica": sorted((n for n in replicas if n != coord),
                               key=lambda n: place.index(n) >= K)}
    out: list[str] = []
    for role in roles.split("+"):
        out.append(next(n for n in pools[role] if n not in out))
    return out


async def _lose_two_and_repair(c: LocalCluster, blobs: dict[BlobId, bytes], roles: str,
                               wipe: bool) -> None:
    recs = await _encoded_and_freed(c)
    st = await _status(c)
    victims = _pick(recs, st, roles)
    survivors = [n for n in REPLICAS if n.startswith("dc1") and n not in victims]
    before = {n: st[n]["job"]["reconstruction_reads"] for n in survivors}
    for v in victims:
        c.nodes[v].kill()
        if wipe:
            shutil.rmtree(c.nodes[v].data_dir)
    # every blob from every surviving replica of dc1: reconstructed, the PUT bytes
    await _read_all(c, blobs, survivors)
    after = await _status(c)
    if any(recs[0]["placement"].index(v) < K for v in victims):  # a data fragment lost
        assert sum(after[n]["job"]["reconstruction_reads"] - before[n]
                   for n in survivors) > 0, \
            "no read was rebuilt from the other fragments: the test lost nothing it reads"
    for v in victims:
        c.nodes[v].start()
    for v in victims:
        await c.nodes[v].wait_ready_async(120)

    async def healthy() -> dict[str, Any] | None:
        row = await asyncio.to_thread(_ec_status, c)
        ok = row["state"] == "encoded" and all(
            f["health"] == "ok" for s in row["segments"] for f in s["fragments"])
        return row if ok else None

    try:
        row = await _wait(healthy, f"ec-status healthy after {victims} came back "
                                   f"{'wiped' if wipe else 'from kill -9'}")
    except AssertionError:
        row = await asyncio.to_thread(_ec_status, c)
        bad = [(s["segment"], f) for s in row["segments"] for f in s["fragments"]
               if f["health"] != "ok"]
        raise AssertionError(f"not healthy after {victims} came back: {row['state']} "
                             f"{bad}") from None
    # every segment encoded before is still there, every fragment verified by its node
    keys = {(s["source"], s["segment"]) for s in row["segments"]}
    assert {(r["source"], r["segment"]) for r in recs} <= keys

    replica_victims = [v for v in victims if v in REPLICAS]

    async def replicas_freed_again() -> bool:
        s = await _status(c)
        return all(v in s and len(s[v]["freed_segments"]) >= 2 for v in replica_victims)

    await _wait(replicas_freed_again, f"{replica_victims} to free their segments again")
    await _read_all(c, blobs, [n for n in REPLICAS if n.startswith("dc1")])


# ------------------------------------------------------------------------------ slow
@pytest.mark.slow
@pytest.mark.parametrize("wipe", [False, True], ids=["kill9", "wipe"])
@pytest.mark.parametrize("roles", ["data+data", "data+parity", "parity+parity",
                                   "coord+anydata", "coord+replica", "replica+parity"])
async def test_any_two_nodes_of_a_dc_lost_reads_rebuilt_then_repair_restores_health(
        cluster: LocalCluster, roles: str, wipe: bool) -> None:
    blobs = await _put_all(cluster, 20)
    await _lose_two_and_repair(cluster, blobs, roles, wipe)
