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
from typing import Any

import pytest

from ambry.testing.cluster import LocalCluster
from ambry.warm.fetch import hedge_delay_s
from tests.integration.test_ec_warm_tier import _put_all, _read_all, _status, _wait

pytest.importorskip("pyeclib")

TIMEOUT_MS = 10_000  # long, so that waiting it out even once per read is plain to see
EC = {"stripe_bytes": "256KiB", "min_age_s": 0, "scan_interval_s": 0.3,
      "encode_rate_bytes_per_s": "64MiB", "fragment_timeout_ms": TIMEOUT_MS,
      "fragment_hedge_min_ms": 20, "fragment_suspect_s": 2}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, datacenters=2, nodes_per_dc=3, partitions=1,
                     storage={"segment_size_bytes": 1024 * 1024},
                     extra={"partitions": {"count": 1, "capacity_bytes": "1GiB",
                                           "policy": {"ec": {"k": 2, "m": 1}}},
                            "ec": EC})
    c.start()
    try:
        yield c
    finally:
        c.kill_all()


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
    blobs = await _put_all(cluster, 20)

    async def freed() -> dict[str, dict[str, Any]] | None:
        st = await _status(cluster)
        return st if all(len(s["freed_segments"]) >= 2 for s in st.values()) else None

    st = await _wait(freed, "every replica to free its sealed segments")
    rec = next(r for r in st["dc1-n1"]["records"] if r["datacenter"] == "dc1")
    reader = "dc1-n1" if rec["placement"][0] != "dc1-n1" else "dc1-n2"
    victim = next(n for n in rec["placement"][:2] if n != reader)  # a data fragment's node
    proc = cluster.nodes[victim]
    os.kill(proc.pid or 0, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        for _ in range(2):  # the second round reads around the suspect node at once
            async with asyncio.timeout(TIMEOUT_MS / 1000 * 3):
                await _read_all(cluster, blobs, [reader])
        took = time.monotonic() - t0
        # 40 whole-blob reads, about half with a window on the stopped node: hedged, each
        # costs a p95 delay, not the 10 s timeout (the bound is generous: a busy 2-core box)
        assert took < TIMEOUT_MS / 1000, f"40 reads took {took:.1f} s"
        mine = (await _status_of(cluster, reader))
        assert mine["fragment_read_errors"]["corrupt"] == 0
    finally:
        os.kill(proc.pid or 0, signal.SIGCONT)

    # back: every node answers, every fragment is there, every blob reads from every node
    async def healthy() -> bool:
        st = await _status(cluster)
        return len(st) == 6 and all(len(s["freed_segments"]) >= 2 for s in st.values())

    await _wait(healthy, "the stopped node to answer again")
    await _read_all(cluster, blobs, list(cluster.nodes))


async def _status_of(c: LocalCluster, node: str) -> dict[str, Any]:
    async with c.nodes[node].client() as cl:
        reply = await cl.request("ec_status")
        await reply.release()
    job = reply.header["partitions"][0].get("job") or {}
    return dict(job)
