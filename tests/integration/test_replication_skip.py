"""Skipping what an intra-DC peer already has, with real processes (docs/replication.md,
"Skipping what a peer already has").

A frontend tells each replica of a PUT which other replicas acked it durably (by replica
incarnation); a node then leaves those PUTs out when that peer pulls. Before, every PUT
written to all three replicas was pulled by both peers of each and checked there: a third of
a node's CPU per small PUT. What must not change: a replica that missed a write (stopped,
wiped, a frontend killed before it told anyone) still gets it, and cross-DC replication is
never filtered. Every test waits on conditions; durability is fsync (acks carry the
incarnation only then).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ambry.common.blobid import BlobId, BlobType, decode
from ambry.common.properties import BlobProperties
from ambry.storage.api import Entry, RecordType
from ambry.testing.cluster import LocalCluster, NodeProcess
from ambry.testing.frontend import StoreCluster

HEADERS = {"x-ambry-service-id": "skip-test", "x-ambry-content-type": "application/x-test"}
REPLICATION = {"long_poll_ms": 500, "backoff_max_s": 1, "request_timeout_ms": 5000,
               "scrub_interval_s": 0, "confirm_hold_ms": 100}
STORAGE = {"durability": "fsync", "segment_size_bytes": "8MiB"}
#: a stopped replica's writes are given up quickly, and it is then skipped by the frontend
FRONTEND = {"straggler_grace_ms": 200, "node_timeout_ms": 2000, "failure_backoff_s": 1}
CONVERGE_S = 60.0


# ====================================================================== helpers
async def wait_for(what: str, cond: Any, timeout_s: float = CONVERGE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await cond()
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


async def missing_on(node: NodeProcess, blob_ids: list[str]) -> list[str]:
    """The blobs whose PUT this node does not hold (asked over the node protocol)."""
    out = []
    async with node.client() as c:
        for text in blob_ids:
            bid = decode(text)
            st = await c.blob_state(bid)
            if not st.has_put:
                out.append(text)
    return out


async def confirm_stats(node: NodeProcess) -> dict[str, int]:
    async with node.client() as c:
        h = await c._call("stats")
    return dict(h["confirms"])


async def post_blobs(base: str, n: int, size: int = 4096) -> list[str]:
    out = []
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            async with s.post(base + "/", data=os.urandom(size) + i.to_bytes(4, "big"),
                              headers=HEADERS) as r:
                assert r.status == 201, (r.status, await r.text())
                out.append(r.headers["Location"].lstrip("/"))
    return out


async def converged(store: StoreCluster, blob_ids: list[str]) -> bool:
    for node in store.nodes.values():
        if await missing_on(node, blob_ids):
            return False
    return True


async def wait_all_replicas_written(base: str, store: StoreCluster) -> None:
    """Until a PUT reaches every replica (a node restarted by the test before is up again
    and no longer skipped by the frontend's failure detector): a test that stops one node
    next needs the other two."""
    async def all_three() -> bool:
        try:
            ids = await post_blobs(base, 1)
        except AssertionError:
            return False
        return not any([await missing_on(n, ids) for n in store.nodes.values()])
    await wait_for("a PUT on all three replicas", all_three, 30)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    with StoreCluster(tmp_path_factory.mktemp("skip"), datacenters=1, nodes_per_dc=3,
                      partitions=2, storage=STORAGE, frontend=FRONTEND,
                      extra={"replication": REPLICATION}) as st:
        yield st


@pytest.fixture
async def healthy(store: StoreCluster) -> AsyncIterator[StoreCluster]:
    """The store with every node running (a test's stopped node resumed, a killed one or
    the frontend started again)."""
    yield store
    for n in store.nodes.values():
        if n.proc is not None and n.running:
            n.proc.send_signal(signal.SIGCONT)
        if not n.running:
            n.start()
    for n in store.nodes.values():
        n.wait_ready()
    fe = store.frontends["dc1"]
    if not fe.running:
        fe.start()
        fe.wait_ready()


# ====================================================================== the filter at a node
def props() -> BlobProperties:
    return BlobProperties(4, int(time.time() * 1000), service_id="skip-test")


async def test_a_node_skips_a_put_only_for_the_replica_it_is_confirmed_on(
        tmp_path: Path) -> None:
    # What broke (before): a peer got every PUT and checked it, though the frontend had
    # written it there. What must hold: only the confirmed incarnation is spared, a delete
    # is always sent, an unfiltered (cross-DC) pull gets everything, a hold ends.
    with LocalCluster(tmp_path, nodes_per_dc=3, partitions=1, storage=STORAGE,
                      extra={"replication": {"enabled": False}}) as cl:
        a, b, c = (cl.nodes[f"dc1-n{i}"] for i in (1, 2, 3))
        pid = 0  # "partitions: {count: 1}" is partition 0
        async with a.client() as ca, b.client() as cb, c.client() as cc:
            incs = {}
            keys = []
            for name, client in (("a", ca), ("b", cb), ("c", cc)):
                bid = BlobId(1, 1, 1, pid, os.urandom(16), BlobType.SIMPLE)
                rep = await client.put(bid, props(), b"", b"data")
                assert rep.incarnation is not None, "an fsync'd ack names its incarnation"
                incs[name] = rep.incarnation
                keys.append(bid)
            assert len(set(incs.values())) == 3
            k = keys[0]  # on A only
            ca.confirm(k.to_bytes(), incs["b"])  # "k is durable on B's replica"
            await ca.flush_confirms()

            async def pull(**kw: Any) -> tuple[list[Entry], tuple[bytes, int], int]:
                [(_p, raw, tok, remaining)] = await ca.replicate(
                    [(pid, None)], max_entries=100, max_bytes=1 << 20, **kw)
                return [Entry.from_wire(e) for e in raw], tok, remaining

            def puts(entries: list[Entry]) -> list[bytes]:
                return [e.key for e in entries if e.type == RecordType.PUT]

            got, tok, remaining = await pull(confirmed_on={pid: incs["b"]})
            assert puts(got) == [], "B's own confirmed PUT must not be sent to B"
            assert tok[1] >= 1 and remaining == 0, "the token moves past what was skipped"
            got, _, _ = await pull(confirmed_on={pid: incs["c"]})
            assert puts(got) == [k.to_bytes()], "a confirmation naming B changes nothing for C"
            got, _, _ = await pull()
            assert puts(got) == [k.to_bytes()], "an unfiltered pull gets everything"
            got, _, _ = await pull(confirmed_on={pid: os.urandom(16)})
            assert puts(got) == [k.to_bytes()], "a wiped B (new incarnation) gets it again"

            await ca.delete(k)
            got, _, _ = await pull(confirmed_on={pid: incs["b"]})
            assert [e.type for e in got] == [RecordType.DELETE], "a delete is always sent"

            # a young unconfirmed PUT is held back (its confirmation may be on its way) and
            # sent once the hold ends; confirmed during the hold, it is never sent
            _, tok, _ = await pull(confirmed_on={pid: incs["b"]})
            for confirm_it in (False, True):
                bid = BlobId(1, 1, 1, pid, os.urandom(16), BlobType.SIMPLE)
                await ca.put(bid, props(), b"", b"late")
                t0 = time.monotonic()
                task = asyncio.ensure_future(ca.replicate(
                    [(pid, tok)], max_entries=100, max_bytes=1 << 20, wait_ms=3000,
                    confirmed_on={pid: incs["b"]}, hold_ms=600, hold_dc=1))
                if confirm_it:
                    await asyncio.sleep(0.1)
                    cb.confirm(bid.to_bytes(), incs["b"])  # any frontend's request carries it
                    await cb.flush_confirms()
                    ca.confirm(bid.to_bytes(), incs["b"])
                    await ca.flush_confirms()
                [(_p, raw, tok2, _r)] = await task
                if confirm_it:
                    assert raw == [] and tok2[1] > tok[1], "confirmed while held: skipped"
                else:
                    assert [Entry.from_wire(e).key for e in raw] == [bid.to_bytes()]
                    assert time.monotonic() - t0 >= 0.5, "sent before its hold ended"
                tok = tok2
            stats = await confirm_stats(a)
            assert stats["skipped"] >= 2 and stats["held"] >= 1


# ====================================================================== hostile, end to end
async def test_puts_written_everywhere_are_skipped_and_all_replicas_converge(
        healthy: StoreCluster) -> None:
    # the happy path the whole thing is for: peers skip what the frontend wrote to them
    before = {n: (await confirm_stats(node))["skipped"] for n, node in healthy.nodes.items()}
    ids = await post_blobs(healthy.url("dc1", ""), 20)
    await wait_for("every replica holds every blob", lambda: converged(healthy, ids))

    async def skipped_enough() -> bool:
        got = [(await confirm_stats(node))["skipped"] - before[n]
               for n, node in healthy.nodes.items()]
        return sum(got) >= 20  # 40 pulls of these PUTs would check them all
    await wait_for("peers skipping the PUTs every replica acked", skipped_enough, 20)


async def test_a_replica_stopped_during_the_puts_gets_them_once_it_resumes(
        healthy: StoreCluster) -> None:
    # the straggler: the frontend gives up on it (its ack never came: nothing confirmed on
    # it), so its peers must send it those PUTs when it pulls again
    await wait_all_replicas_written(healthy.url("dc1", ""), healthy)
    victim = healthy.nodes["dc1-n3"]
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        ids = await post_blobs(healthy.url("dc1", ""), 12)
    finally:
        victim.proc.send_signal(signal.SIGCONT)
    await wait_for("the resumed replica holds every blob",
                   lambda: converged(healthy, ids))


async def test_a_wiped_replica_gets_every_blob_back_despite_confirmations(
        healthy: StoreCluster) -> None:
    # the liar: confirmations name the replica's old incarnation; wiped, it pulls with a
    # new one and must get every blob, also those its peers were told it has
    ids = await post_blobs(healthy.url("dc1", ""), 15)
    await wait_for("every replica holds every blob", lambda: converged(healthy, ids))
    victim = healthy.nodes["dc1-n2"]
    async with victim.client() as c:
        old = {r["partition_id"]: r["incarnation"] for r in await c.stats()}
    victim.kill()
    shutil.rmtree(victim.data_dir)
    victim.start()
    victim.wait_ready()
    async with victim.client() as c:
        new = {r["partition_id"]: r["incarnation"] for r in await c.stats()}
    assert all(new[p] != old[p] for p in old), "a wiped replica has a new incarnation"
    await wait_for("the wiped replica holds every blob again",
                   lambda: converged(healthy, ids))


async def test_a_frontend_killed_right_after_the_acks_loses_nothing(
        healthy: StoreCluster) -> None:
    # the frontend dies before it told anyone (kill -9 right after the 201s, while one
    # replica is stopped): nothing is confirmed, so everything replicates as before
    await wait_all_replicas_written(healthy.url("dc1", ""), healthy)
    victim = healthy.nodes["dc1-n1"]
    fe = healthy.frontends["dc1"]
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        ids = await post_blobs(healthy.url("dc1", ""), 8)
        fe.kill()
    finally:
        victim.proc.send_signal(signal.SIGCONT)
    await wait_for("every replica holds every blob", lambda: converged(healthy, ids))


# ====================================================================== two datacenters
def test_cross_dc_replication_still_converges_with_intra_dc_skipping(tmp_path: Path) -> None:
    # cross-DC pulls are never filtered and blobs from the other DC are never held: all six
    # replicas get every blob written in either datacenter, while each DC's nodes skip
    # what their own frontend wrote to them
    with StoreCluster(tmp_path, datacenters=2, nodes_per_dc=3, partitions=2,
                      storage=STORAGE, frontend=FRONTEND,
                      extra={"replication": REPLICATION}) as st:
        async def run() -> None:
            ids = await post_blobs(st.url("dc1", ""), 10) + \
                await post_blobs(st.url("dc2", ""), 10)
            await wait_for("all six replicas hold every blob", lambda: converged(st, ids))
            stats = [await confirm_stats(n) for n in st.nodes.values()]
            assert all(s["skipped"] > 0 for s in stats), stats
        asyncio.run(run())
