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
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ec_helpers import (
    EC_REPAIR,
    coordinator,
    ec_cluster,
    ec_records,
    ec_status,
    ec_status_cli,
    put_blobs,
    read_all,
    running,
    wait_all_freed,
    wait_for,
)

from ambry.common.blobid import BlobId
from ambry.testing.cluster import LocalCluster

pytest.importorskip("pyeclib")

K, M = 4, 2
#: partition 0 has replicas on nodes 1-3 of each datacenter; its fragments go to all 6
REPLICAS = [f"dc{d}-n{j}" for d in (1, 2) for j in (1, 2, 3)]
DC1_REPLICAS = [n for n in REPLICAS if n.startswith("dc1")]
WAIT_S = 240.0  # generous: a busy 2-core machine runs 12 nodes here


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running(ec_cluster(tmp_path, {**EC_REPAIR, "fragment_timeout_ms": 5000}, k=K, m=M,
                            nodes_per_dc=6, replicas=REPLICAS, replicas_per_dc=3,
                            log_level="WARNING")) as c:
        yield c


async def _status(c: LocalCluster) -> dict[str, dict[str, Any]]:
    """Partition 0's row from each replica that answers (nodes get killed and wiped here)."""
    return await ec_status(c, REPLICAS, skip_unreachable=True)


async def _read_all(c: LocalCluster, blobs: dict[BlobId, bytes], nodes: list[str]) -> None:
    await read_all(c, blobs, nodes, request_timeout_ms=60_000)


def _ec_status(c: LocalCluster) -> dict[str, Any]:
    """``ambry admin ec-status --verify --json``: partition 0's row of dc1."""
    _, rows = ec_status_cli(c, "--verify")
    rows = rows["partitions"] if isinstance(rows, dict) else rows
    return next(x for x in rows if x["partition"] == 0 and x["datacenter"] == "dc1")


async def _encoded_and_freed(c: LocalCluster) -> list[dict[str, Any]]:
    """Waits until every replica freed its sealed segments; dc1's EC_SEGMENT records."""
    recs = ec_records(await wait_all_freed(c, REPLICAS, WAIT_S), "dc1")
    assert recs and all(r["k"] == K and r["m"] == M and len(r["placement"]) == K + M
                        for r in recs)
    return recs


def _pick(recs: list[dict[str, Any]], st: dict[str, dict[str, Any]], roles: str
          ) -> list[str]:
    """Two dc1 nodes by role: ``data`` (holds a data fragment; a replica only if it must),
    ``anydata``, ``parity`` (holds a parity fragment),
    ``coord`` (the coordinator: a replica and a fragment node), ``replica`` (another
    replica)."""
    place = recs[0]["placement"]
    assert len({r["placement"][0] for r in recs}) == 1  # placement is per partition
    coord = coordinator(st, "dc1")
    # nodes that are not replicas first: the replicas left then read through fragments
    pools = {"data": sorted((n for n in place[:K] if n != coord), key=lambda n: n in DC1_REPLICAS),
             "anydata": [n for n in place[:K] if n != coord],
             "parity": list(place[K:]),  # the coordinator may hold one
             "coord": [coord],
             # a replica holding a data fragment first: its loss is then also a data loss
             "replica": sorted((n for n in DC1_REPLICAS if n != coord),
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
    survivors = [n for n in DC1_REPLICAS if n not in victims]
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
        row = await wait_for(healthy, f"ec-status healthy after {victims} came back "
                                      f"{'wiped' if wipe else 'from kill -9'}", WAIT_S)
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

    await wait_for(replicas_freed_again, f"{replica_victims} to free their segments again",
                   WAIT_S)
    await _read_all(c, blobs, DC1_REPLICAS)


# ------------------------------------------------------------------------------ slow
@pytest.mark.slow
@pytest.mark.parametrize("wipe", [False, True], ids=["kill9", "wipe"])
@pytest.mark.parametrize("roles", ["data+data", "data+parity", "parity+parity",
                                   "coord+anydata", "coord+replica", "replica+parity"])
async def test_any_two_nodes_of_a_dc_lost_reads_rebuilt_then_repair_restores_health(
        cluster: LocalCluster, roles: str, wipe: bool) -> None:
    blobs = await put_blobs(cluster, 20, DC1_REPLICAS)
    await _lose_two_and_repair(cluster, blobs, roles, wipe)
