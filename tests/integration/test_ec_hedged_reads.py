"""Hedged fragment reads (issue 17): a SIGSTOPped fragment node (alive on TCP, never
answering) must not stall reads of encoded blobs for ``ec.fragment_timeout_ms`` each; the
reader rebuilds the window from k others after a short p95 delay and reads around the
stopped node once one of its reads timed out. Real processes, 2 DCs x 3 nodes, k=2 m=1."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ec_helpers import EC, ec_cluster, ec_status, put_blobs, read_all, running, wait_all_freed

from ambry.testing.cluster import LocalCluster
from ambry.warm.fetch import hedge_delay_s

pytest.importorskip("pyeclib")

TIMEOUT_MS = 10_000  # long, so that waiting it out even once per read is plain to see


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    ec = {**EC, "fragment_timeout_ms": TIMEOUT_MS, "fragment_hedge_min_ms": 20,
          "fragment_suspect_s": 2}
    with running(ec_cluster(tmp_path, ec)) as c:
        yield c


def test_hedge_delay_is_the_p95_of_recent_reads_within_floor_and_cap() -> None:
    assert hedge_delay_s([], 0.02, 2.0) == 0.02
    assert hedge_delay_s([0.001] * 100, 0.02, 2.0) == 0.02  # the floor
    assert hedge_delay_s([0.01] * 95 + [0.5] * 5, 0.001, 2.0) == 0.5
    assert hedge_delay_s([0.01] * 96 + [0.5] * 4, 0.001, 2.0) == 0.01
    assert hedge_delay_s([9.0] * 10, 0.02, 2.0) == 2.0  # never past the timeout


async def test_sigstopped_data_fragment_node_does_not_stall_encoded_reads(
        cluster: LocalCluster) -> None:
    # broke before: every read of a window on the stopped node waited fragment_timeout_ms
    # (10 s here) before it rebuilt from the others; 20 blobs took minutes
    blobs = await put_blobs(cluster, 20)
    st = await wait_all_freed(cluster)
    rec = next(r for r in st["dc1-n1"]["records"] if r["datacenter"] == "dc1")
    reader = "dc1-n1" if rec["placement"][0] != "dc1-n1" else "dc1-n2"
    victim = next(n for n in rec["placement"][:2] if n != reader)  # a data fragment's node
    proc = cluster.nodes[victim]
    os.kill(proc.pid or 0, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        for _ in range(2):  # the second round reads around the suspect node at once
            async with asyncio.timeout(TIMEOUT_MS / 1000 * 3):
                await read_all(cluster, blobs, [reader])
        took = time.monotonic() - t0
        # 40 whole-blob reads, about half with a window on the stopped node: hedged, each
        # costs a p95 delay, not the 10 s timeout (the bound is generous: a busy 2-core box)
        assert took < TIMEOUT_MS / 1000, f"40 reads took {took:.1f} s"
        mine = (await ec_status(cluster, [reader]))[reader].get("job") or {}
        assert mine["fragment_read_errors"]["corrupt"] == 0
    finally:
        os.kill(proc.pid or 0, signal.SIGCONT)

    # back: every node answers, every fragment is there, every blob reads from every node
    await wait_all_freed(cluster)
    await read_all(cluster, blobs, list(cluster.nodes))
