"""Gray failures on real processes (issue 13, item 4): a storage node that is stopped
(SIGSTOP: it accepts connections and never answers) and peers that stall inside a frame of the
node protocol. What must hold: a straggling replica holds nothing the next request needs (the
frontend's budget is free again at quorum, the straggler is cancelled after a short grace and
its copy comes by replication); a stopped replica costs PUT/GET latency at most a
failure-detection interval; a node times out partial frames and bounds what one connection
holds of its payload budget. Stopped processes are always SIGCONT'd in a ``finally``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import time
from collections.abc import Iterator

import aiohttp
import pytest
from fe_helpers import (
    MIB,
    SERVICE,
    TIMEOUT,
    blob_bytes,
    call,
    node_records,
    post_blob,
    store_fixture,
    until,
)

from ambry.common.blobid import new_blob_id
from ambry.common.properties import BlobProperties
from ambry.protocol.framing import pack_header
from ambry.testing.cluster import LocalCluster, NodeProcess
from ambry.testing.frontend import StoreCluster

GRACE_MS = 300


async def _metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(url) as r:
        text = await r.text()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"{name} not in {url}"
    return float(m.group(1))


# ------------------------------------------------------------------------ node port limits
IDLE_S = 3.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    # a small node: the whole payload budget is one 64 MiB announcement
    cluster = LocalCluster(tmp_path_factory.mktemp("limits"), partitions=1, storage={
        "durability": "page-cache", "segment_size_bytes": "256MiB",
        "max_record_bytes": "64MiB", "inflight_payload_budget_bytes": "64MiB",
        "connection_payload_budget_bytes": "64MiB", "frame_idle_timeout_s": IDLE_S})
    cluster.start()
    n = cluster.nodes["dc1-n1"]
    try:
        yield n
    finally:
        print(f"==== log of {n.node_id} ====\n{n.log_tail(40)}")
        cluster.stop()


def _put_header(size: int, corr: int) -> bytes:
    props = BlobProperties(size=size, created_ms=int(time.time() * 1000), ttl_s=-1,
                           content_type="application/x-test", service_id="gray")
    return pack_header({"op": "put", "corr": corr, "rid": f"stall-{corr}", "partition": 0,
                        "blob_id": new_blob_id(1, 1, 1, 0).to_bytes(),
                        "props": props.to_wire(), "usermeta": b"", "payload_len": size})


async def test_stalled_payload_announcements_neither_block_puts_nor_stay_open(
        node: NodeProcess) -> None:
    # What broke: nine connections announcing a 64 MiB put and sending 100 bytes held the
    # whole payload budget until they chose to hang up: every other put waited (43 s for 300).
    stalled = []
    for i in range(9):
        r, w = await asyncio.open_connection(node.host, node.port)
        w.write(_put_header(64 * MIB, i + 1) + os.urandom(100))
        stalled.append((r, w))
    r, w = await asyncio.open_connection(node.host, node.port)  # a header begun, not finished
    w.write(_put_header(1, 99)[:7])
    stalled.append((r, w))
    for _r, w in stalled:
        await w.drain()
    metrics = node.http_url("/metrics")
    client = node.client(pool_size=4)
    try:
        async with asyncio.timeout(60):  # on main: blocked until the stalled peers hang up
            for round_ in range(3):
                await asyncio.gather(*(
                    client.put(new_blob_id(1, 1, 1, 0), BlobProperties(
                        size=64 * 1024, created_ms=int(time.time() * 1000), ttl_s=-1,
                        content_type="application/x-test", service_id="gray"),
                        b"", os.urandom(64 * 1024)) for _ in range(10)))
                if round_ == 0:
                    # served while all the stalled peers were still connected
                    assert await _metric(metrics, "ambry_node_idle_frames_closed_total") == 0
    finally:
        await client.close()
    # each stalled peer is disconnected after the idle timeout, its reservation freed
    async with asyncio.timeout(IDLE_S * 10):
        for r, _w in stalled:
            try:
                assert await r.read() == b""
            except ConnectionResetError:
                pass
    assert await _metric(metrics, "ambry_node_idle_frames_closed_total") == len(stalled)
    await until(lambda: _metric_is(metrics, "ambry_node_inflight_payload_bytes", 0),
                what="payload budget free again")
    for _r, w in stalled:
        w.close()


async def _metric_is(url: str, name: str, value: float) -> bool:
    return await _metric(url, name) == value


async def test_a_trickling_payload_is_not_idle_and_holds_only_what_it_sent(
        node: NodeProcess) -> None:
    # What broke: a put's whole announced payload was reserved before a byte of it came.
    # A peer that keeps sending (slower than the idle timeout) is not cut off, and holds
    # budget for the pieces it sent, not for the 64 MiB it announced.
    metrics = node.http_url("/metrics")
    r, w = await asyncio.open_connection(node.host, node.port)
    size = 64 * MIB
    try:
        w.write(_put_header(size, 1))
        sent = 0
        deadline = time.monotonic() + IDLE_S * 2  # outlive the idle timeout, sending
        while time.monotonic() < deadline:
            w.write(b"x" * 1000)
            await w.drain()
            sent += 1000
            await asyncio.sleep(IDLE_S / 6)
        held = await _metric(metrics, "ambry_node_inflight_payload_bytes")
        assert 0 < held <= 4 * MIB, held  # one piece, not the announced 64 MiB
        w.write(b"x" * (size - sent))  # the rest: the put completes
        await w.drain()
        async with asyncio.timeout(30):
            n = int.from_bytes(await r.readexactly(4), "big")
            reply = await r.readexactly(n)
        assert b"created" in reply
    finally:
        w.close()


# ------------------------------------------------------------------------ stopped replica
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(
        tmp_path_factory.mktemp("gray"), datacenters=1, nodes_per_dc=3, partitions=4,
        frontend={"node_timeout_ms": 10_000, "straggler_grace_ms": GRACE_MS,
                  "failure_backoff_s": 2, "inflight_budget_bytes": "16MiB"})


async def test_stopped_replica_holds_no_budget_and_gets_its_copies_by_replication(
        store: StoreCluster) -> None:
    # What broke: a write to a SIGSTOPped replica kept its chunk's reservation of the
    # frontend's budget until the node timeout, so uploads queued behind stragglers
    # (PUT p50 150 ms -> 9.3 s); the node was only skipped after 3 such timeouts.
    base = store.url("dc1", "")
    fe_metrics = store.url("dc1", "/metrics")
    victim = store.nodes["dc1-n3"]
    assert victim.proc is not None
    stored: dict[str, bytes] = {}
    latencies = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        victim.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(12):
                # 3 chunks + a metadata blob each: 12 MiB of the 16 MiB budget
                datas = [blob_bytes(2 * MIB + 1, f"gray-{i}-{k}") for k in range(4)]
                t0 = time.monotonic()
                ids = await asyncio.gather(*(post_blob(http, base, d) for d in datas))
                latencies.append(time.monotonic() - t0)
                stored.update(zip(ids, datas, strict=True))
                # the quorum answered: nothing of these uploads stays reserved for longer
                # than the stragglers' grace (it was the 10 s node timeout)
                await until(lambda: _metric_is(fe_metrics,
                                               "ambry_frontend_inflight_budget_bytes", 0),
                            what="budget free again", timeout_s=3)
            t0 = time.monotonic()
            for bid, data in list(stored.items())[:8]:
                assert (await call(http, "GET", f"{base}/{bid}")).expect(200).body == data
            get_s = time.monotonic() - t0
        finally:
            victim.proc.send_signal(signal.SIGCONT)
        # far below the 10 s node timeout: no upload waited for the stopped replica
        print("PUT rounds (s):", [round(x, 2) for x in latencies], "GETs (s):", round(get_s, 2))
        assert max(latencies) < 5, latencies
        assert get_s < 5, get_s
        # stragglers were cancelled after the grace: nothing is held for them either
        await until(lambda: _metric_is(fe_metrics, "ambry_frontend_straggler_bytes", 0),
                    what="stragglers gone")

        async def third_has_all() -> bool:
            recs = await node_records(store)
            return all("PUT" in recs.get((victim.node_id, bid), set()) for bid in stored)

        # the copies the stopped replica missed come by intra-DC replication
        t_rep = time.monotonic()
        await until(third_has_all, what="the stopped replica has every blob", timeout_s=60)
        print("replicated in", round(time.monotonic() - t_rep, 2))
        assert (await call(http, "POST", base + "/", SERVICE, b"after")).status == 201


# ------------------------------------------------------------------------ soak
@pytest.mark.slow
async def test_soak_mixed_load_with_one_replica_stopped(store: StoreCluster) -> None:
    """Mixed load (PUTs of 100 KiB and 3 MiB, GETs, DELETEs, named PUT/GET) for 20 s
    healthy, then 20 s with one replica SIGSTOPped: p50 stays within noise of healthy, p99
    within a failure-detection interval of it (far from the 10 s node timeout)."""
    base = store.url("dc1", "")
    victim = store.nodes["dc1-n2"]
    assert victim.proc is not None

    async def phase(http: aiohttp.ClientSession, seconds: float, tag: str
                    ) -> dict[str, list[float]]:
        lat: dict[str, list[float]] = {"put": [], "get": [], "other": []}
        ids: list[str] = []
        stop = time.monotonic() + seconds

        async def worker(w: int) -> None:
            i = 0
            while time.monotonic() < stop:
                i += 1
                size = 3 * MIB if i % 5 == 0 else 100 * 1024
                t0 = time.monotonic()
                ids.append(await post_blob(http, base, blob_bytes(size, f"{tag}{w}-{i}")))
                lat["put"].append(time.monotonic() - t0)
                t0 = time.monotonic()
                (await call(http, "GET", f"{base}/{ids[-1]}")).expect(200)
                lat["get"].append(time.monotonic() - t0)
                t0 = time.monotonic()
                if i % 3 == 0:
                    got = await call(http, "DELETE", f"{base}/{ids.pop(0)}",
                                     {"x-ambry-service-id": "soak"})
                    assert got.status == 202, got.text
                else:
                    url = f"{base}/named/default/default/soak/{tag}{w}-{i}"
                    (await call(http, "PUT", url, SERVICE, b"n")).expect(201)
                    (await call(http, "GET", url)).expect(200)
                lat["other"].append(time.monotonic() - t0)

        await asyncio.gather(*(worker(w) for w in range(8)))
        return lat

    def pct(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]

    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        healthy = await phase(http, 20, "h")
        victim.proc.send_signal(signal.SIGSTOP)
        try:
            stopped = await phase(http, 20, "s")
        finally:
            victim.proc.send_signal(signal.SIGCONT)
    for op in ("put", "get", "other"):
        h, s = healthy[op], stopped[op]
        print(f"{op}: healthy p50 {statistics.median(h) * 1000:.0f} ms p99 "
              f"{pct(h, 0.99) * 1000:.0f} ms | stopped p50 {statistics.median(s) * 1000:.0f} "
              f"ms p99 {pct(s, 0.99) * 1000:.0f} ms ({len(h)}/{len(s)} requests)")
        # detection interval: grace + a probe's grace every backoff; generous for a busy box
        assert statistics.median(s) < 3 * statistics.median(h) + 0.2, op
        assert pct(s, 0.99) < pct(h, 0.99) + 2 * GRACE_MS / 1000 + 2, op
