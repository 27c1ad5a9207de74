"""Cross-DC replication while one node of the receiving datacenter is dead or stopped.

Two datacenters x 3 storage nodes, a frontend per datacenter, replication with its shipped
defaults (``standby_fetch_delay_ms`` 1 s, ``request_timeout_ms`` 30 s). The victim is the dc2
node that is its datacenter's designated cross-DC puller of some partitions (the first dc2
replica in cluster-map order). It is killed with ``kill -9`` (its peers see connections
refused at once) or stopped with SIGSTOP (its peers' requests are accepted and never
answered: nothing notices it for ``request_timeout_ms``). Blobs written in dc1 must then
still reach a live dc2 replica within seconds, on every partition.

What broke (issue 13, item 8): only the designated replica fetched cross-DC, and a standby
took over after seeing it down for ``standby_wait_s`` (30 s); a stopped one was not even seen
down before its request timed out. Measured: 10 s of writes in dc1, dc1 lost 20 s later:
35 % of the acknowledged blobs were absent from dc2.

Fast variants here (``make test``); the soak (20 s of writes, lag percentiles printed) is
marked slow (``make faults``). The lag percentiles under load are the replication-lag
benchmark's job (``benchmarks/bench_replication_lag.py --remote-node-down``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from fe_helpers import SERVICE, blob_bytes, store_fixture

from ambry.common.blobid import decode
from ambry.common.config import load_config
from ambry.common.errors import AmbryError
from ambry.protocol.client import NodeClient
from ambry.testing.cluster import NodeProcess
from ambry.testing.frontend import StoreCluster

#: replication as shipped (config/local.yaml), except the scrubber; the point is that the
#: defaults hold the bound, not test-only small values
REPLICATION = {"scrub_interval_s": 0}
#: well below the 30 s of before, and generous for a busy 2-core machine (the target, lag
#: p99 < 2 s, is measured by the benchmark, not asserted here)
REACH_DC2_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("repl-remote-down"), datacenters=2,
                             nodes_per_dc=3, partitions=4,
                             extra={"replication": REPLICATION})


@dataclass
class Written:
    blob_id: str
    data: bytes
    acked_at: float
    partition: int
    seen_at: float | None = None


@dataclass
class Outcome:
    victim: str
    victim_partitions: set[int]
    blobs: list[Written] = field(default_factory=list)

    def lags_s(self) -> list[float]:
        return sorted(b.seen_at - b.acked_at for b in self.blobs if b.seen_at is not None)


def designated_in(store: StoreCluster, datacenter: str) -> dict[str, set[int]]:
    """node id -> the partitions it is ``datacenter``'s designated cross-DC puller of (the
    first replica of the partition there, in cluster-map order)."""
    cmap = load_config(store.config_path).cluster_map
    out: dict[str, set[int]] = {}
    for pid in store.partition_ids:
        out.setdefault(cmap.replicas_in(pid, datacenter)[0].id, set()).add(pid)
    return out


async def wait_seen_up(store: StoreCluster, node_id: str, timeout_s: float = 30.0) -> None:
    """Until every other node of ``node_id``'s datacenter pulls from it again (after a
    previous test restarted it, its peers retry only after their backoff; meanwhile they
    still see it down, and a SIGSTOP would not test the failure nobody notices)."""
    dc = next(n for n in load_config(store.config_path).cluster_map.nodes
              if n.id == node_id).datacenter
    deadline = time.monotonic() + timeout_s
    for n in store.nodes_in(dc):
        if n.node_id == node_id:
            continue
        while True:
            rows = [r for r in (await _replication(n))["peers"] if r["peer"] == node_id]
            if rows and all(r["peer_down_s"] == 0 for r in rows):
                break
            assert time.monotonic() < deadline, f"{n.node_id} still sees {node_id} down"
            await asyncio.sleep(0.1)


async def _replication(node: NodeProcess) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        with urllib.request.urlopen(node.http_url("/replication"), timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    return await asyncio.to_thread(get)


@contextlib.contextmanager
def failed(node: NodeProcess, how: str) -> Iterator[None]:
    """``kill -9`` or SIGSTOP ``node``; bring it back afterwards."""
    assert node.proc is not None
    if how == "kill":
        node.kill()
    else:
        node.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        if how == "kill":
            node.start()
        else:
            node.proc.send_signal(signal.SIGCONT)
        node.wait_ready()


async def remote_node_down_scenario(store: StoreCluster, how: str, write_s: float,
                                    min_victim_blobs: int) -> Outcome:
    """Fail the designated dc2 puller of some partitions, write in dc1 for ``write_s`` (and
    until ``min_victim_blobs`` landed on those partitions), and note when each blob is first
    on a live dc2 replica (asked over the node protocol: the dc2 frontend would fall back to
    dc1 and hide the lag). Gives up ``REACH_DC2_WITHIN_S`` after the last write."""
    victim, parts = max(designated_in(store, "dc2").items(), key=lambda kv: len(kv[1]))
    await wait_seen_up(store, victim)
    out = Outcome(victim, parts)
    live = [n for n in store.nodes_in("dc2") if n.node_id != victim]
    clients = {n.node_id: NodeClient(n.host, n.port, pool_size=2, request_timeout_ms=5000)
               for n in live}
    base = store.url("dc1", "")
    try:
        with failed(store.nodes[victim], how):
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=30)) as http:
                t_end = time.monotonic() + write_s
                i = extra = 0
                while time.monotonic() < t_end or \
                        sum(b.partition in parts for b in out.blobs) < min_victim_blobs:
                    # past write_s, only until enough blobs landed on the victim's partitions
                    # (the cap counts those extra writes: a 20 s run writes thousands before)
                    extra += time.monotonic() >= t_end
                    assert extra < 2000, "the dc1 frontend never chose the victim's partitions"
                    data = blob_bytes(2000 + i, f"remote-down-{how}-{i}")
                    async with http.post(base + "/", data=data, headers=SERVICE) as r:
                        assert r.status == 201, (r.status, await r.text())
                        bid = r.headers["Location"].rsplit("/", 1)[-1]
                    out.blobs.append(Written(bid, data, time.monotonic(),
                                             decode(bid).partition_id))
                    i += 1
                    await _note_arrivals(out, clients)
            deadline = time.monotonic() + REACH_DC2_WITHIN_S
            while any(b.seen_at is None for b in out.blobs) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                await _note_arrivals(out, clients)
            # the bytes, not only the index entry: read back from the replica that has it
            for b in out.blobs:
                if b.seen_at is not None:
                    await _assert_readable(b, clients)
    finally:
        for c in clients.values():
            await c.close()
    return out


async def _note_arrivals(out: Outcome, clients: dict[str, NodeClient]) -> None:
    pending = [b for b in out.blobs if b.seen_at is None]

    async def one(b: Written, c: NodeClient) -> None:
        with contextlib.suppress(AmbryError, OSError, TimeoutError):
            if (await c.blob_state(decode(b.blob_id))).has_put and b.seen_at is None:
                b.seen_at = time.monotonic()

    await asyncio.gather(*(one(b, c) for b in pending for c in clients.values()))


async def _assert_readable(b: Written, clients: dict[str, NodeClient]) -> None:
    for c in clients.values():
        if (await c.blob_state(decode(b.blob_id))).has_put:
            reply = await c.get(decode(b.blob_id))
            async with reply:
                assert await reply.read() == b.data
            return
    raise AssertionError(f"{b.blob_id} left dc2 again")


def _check(out: Outcome) -> None:
    missing = [b.blob_id for b in out.blobs if b.seen_at is None]
    on_victims = sum(b.partition in out.victim_partitions for b in out.blobs)
    lags = out.lags_s()
    print(f"victim {out.victim} (designated dc2 puller of partitions "
          f"{sorted(out.victim_partitions)}): {len(out.blobs)} blobs, {on_victims} on its "
          f"partitions; lag to the first live dc2 replica: max {max(lags, default=0):.2f} s, "
          f"p50 {lags[len(lags) // 2] if lags else 0:.2f} s")
    assert not missing, (f"{len(missing)} of {len(out.blobs)} blobs written in dc1 not on any "
                         f"live dc2 replica {REACH_DC2_WITHIN_S} s after the last write")


@pytest.mark.parametrize("how", ["kill", "stop"], ids=["kill-9", "SIGSTOP"])
async def test_blobs_reach_the_remote_dc_within_seconds_while_its_designated_puller_is_down(
        store: StoreCluster, how: str) -> None:
    _check(await remote_node_down_scenario(store, how, write_s=1.0, min_victim_blobs=8))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "stop"], ids=["kill-9", "SIGSTOP"])
async def test_20_s_of_writes_reach_the_remote_dc_while_its_designated_puller_is_down(
        store: StoreCluster, how: str) -> None:
    _check(await remote_node_down_scenario(store, how, write_s=20.0, min_victim_blobs=50))
