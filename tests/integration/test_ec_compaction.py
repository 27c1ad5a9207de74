"""Compaction of encoded segments (issue 17, ambry/warm/recode.py) on a real 2-DC cluster of
3 nodes per DC, k=2 m=1: blobs deleted inside encoded segments give their fragment bytes
back (the coordinator re-encodes the live ones into a new generation, every replica moves
onto it, the old fragments are deleted), every live blob still reads verified from every
node, before and after a kill -9; a SIGSTOPped replica holds its datacenter's re-encoding
back without losing anything; a coordinator killed mid-way starts over and finishes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ec_helpers import (
    EC_REPAIR,
    coordinator,
    dc_nodes,
    ec_cluster,
    ec_status,
    ec_status_cli,
    flip_fragment_byte,
    frag_path,
    node_metrics,
    put_blobs,
    read_all,
    running,
    wait_all_freed,
    wait_for,
)

from ambry.common.blobid import BlobId
from ambry.common.errors import BlobDeleted, BlobNotFound
from ambry.storage import filenames
from ambry.testing.cluster import LocalCluster

pytest.importorskip("pyeclib")

#: deleted blobs are dead at once (compaction's retention applies to re-encoding too)
STORAGE = {"compaction_retention_s": 0, "compaction_interval_s": 1}
#: old fragments go fetch.read_limit_s (4 x fragment_timeout_ms + 5 s) after the last replica
#: moved: 1 s timeouts keep that to 9 s
EC = {**EC_REPAIR, "fragment_timeout_ms": 1000}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running(ec_cluster(tmp_path, EC, storage=STORAGE)) as c:
        yield c


def _fragment_files(root: Path) -> dict[str, int]:
    """Fragment file name -> allocated bytes, over every node (``.tmp`` ones too)."""
    out: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if ".frag" in f:
                out[os.path.join(dirpath, f)] = os.stat(os.path.join(dirpath, f)).st_blocks * 512
    return out


def _names(rec: dict[str, Any]) -> set[str]:
    return {filenames.fragment_name(rec["source"], rec["segment"], rec["generation"], i)
            for i in range(len(rec["placement"]))}


async def _delete(c: LocalCluster, blobs: list[BlobId]) -> None:
    # as the frontend does: 2 of the 3 local replicas; replication carries it to the rest
    for nid in ("dc1-n1", "dc1-n2"):
        async with c.nodes[nid].client() as cl:
            for bid in blobs:
                await cl.delete(bid)


async def _recoded(c: LocalCluster, dcs: tuple[str, ...] = ("dc1", "dc2"),
                   nodes: list[str] | None = None) -> dict[str, dict[str, Any]] | None:
    """The status of ``nodes`` (default: all) once, in each of ``dcs``, some record was
    re-encoded, none of them reads through a replaced record and no fragment file of one is
    left on disk; else None."""
    st = await ec_status(c, nodes)
    replaced = {}
    for s in st.values():
        for r in s["records"]:
            if r["replaced"]:
                replaced[f"{r['source']}/{r['segment']}/{r['generation']}"] = r
    if {r["datacenter"] for r in replaced.values()} < set(dcs):
        return None
    if any(set(s["refs"]) & set(replaced) for s in st.values()):
        return None
    on_disk = {os.path.basename(p) for p in _fragment_files(c.data_root)}
    if any(_names(r) & on_disk for r in replaced.values()):
        return None
    return st


async def _reading(c: LocalCluster, blobs: dict[BlobId, bytes], nodes: list[str],
                   stop: asyncio.Event) -> list[asyncio.Task[int]]:
    """One task per node reading ``blobs`` round and round until ``stop``; each returns the
    reads it did and raises on the first failed or wrong one."""
    async def loop(nid: str) -> int:
        n = 0
        async with c.nodes[nid].client() as cl:
            while not stop.is_set():
                for bid, data in blobs.items():
                    _, got = await cl.get_bytes(bid)
                    assert bytes(got) == data, f"{bid} from {nid}: wrong bytes"
                    n += 1
        return n

    return [asyncio.create_task(loop(nid)) for nid in nodes]


async def _gone_or_right(c: LocalCluster, dead: dict[BlobId, bytes], nodes: list[str]
                         ) -> int:
    """On each node, a dead blob's payload is gone (re-encoded away) or, where it was never
    encoded (an active segment), still the bytes PUT: never anything else. Returns the
    fewest gone on a node."""
    fewest = len(dead)
    for nid in nodes:
        gone = 0
        async with c.nodes[nid].client() as cl:
            for bid, data in dead.items():
                with pytest.raises(BlobDeleted):
                    await cl.get_bytes(bid)
                try:
                    _, got = await cl.get_bytes(bid, include_deleted=True)
                except (BlobDeleted, BlobNotFound):
                    gone += 1
                    continue
                assert bytes(got) == data, f"{bid} on {nid}: wrong bytes"
        fewest = min(fewest, gone)
    return fewest


async def test_deleted_blobs_give_back_their_fragment_bytes_and_live_ones_read_everywhere(
        cluster: LocalCluster) -> None:
    blobs = await put_blobs(cluster, 20)  # 3 sealed segments of 1 MiB per replica
    await wait_all_freed(cluster)
    before = sum(_fragment_files(cluster.data_root).values())
    ids = list(blobs)
    dead = {b: blobs[b] for b in ids[::2]}
    live = {b: blobs[b] for b in ids[1::2]}
    # readers on a replica of each DC all along: no read may fail or be wrong while the
    # segments are re-encoded, the replicas move and the old fragments are deleted
    stop = asyncio.Event()
    reads = await _reading(cluster, live, ["dc1-n2", "dc2-n3"], stop)
    await _delete(cluster, list(dead))

    st = await wait_for(lambda: _recoded(cluster), "re-encoding in both DCs, old fragments "
                        "dropped and no replica reading through them")
    stop.set()
    done = await asyncio.gather(*reads)
    assert all(n > 0 for n in done), done
    after = sum(_fragment_files(cluster.data_root).values())
    print(f"fragment bytes on disk: {before} -> {after} ({after / before:.2f}x) with half "
          f"the blobs deleted")
    assert after < 0.75 * before
    # the coordinators count it on /metrics (the recode counters were in ec_status only)
    recoded, dropped = (f"ambry_ec_{n}_total{{partition=\"0\"}}"
                        for n in ("recoded_segments", "dropped_fragments"))

    async def counted() -> tuple[list[dict[str, float]], int] | None:
        # every re-encoded segment's 3 old fragments dropped and counted, nothing running
        st = await ec_status(cluster)
        coords = [coordinator(st, dc) for dc in ("dc1", "dc2")]
        if any(st[n]["job"]["recoding"] for n in coords):
            return None
        ms = [await asyncio.to_thread(node_metrics, cluster, n) for n in coords]
        if any(m[recoded] < 1 or m[dropped] < 3 * m[recoded] for m in ms):
            return None
        frag = sum(_fragment_files(cluster.data_root).values())
        again = [await asyncio.to_thread(node_metrics, cluster, n) for n in coords]
        return (ms, frag) if [m[recoded] for m in again] == [m[recoded] for m in ms] else None

    ms, frag = await wait_for(counted, "the coordinators to count the dropped fragments")
    for m in ms:
        assert m['ambry_ec_recode_cpu_seconds_total{partition="0"}'] > 0
    reclaimed = sum(m['ambry_ec_recode_reclaimed_bytes_total{partition="0"}'] for m in ms)
    # fragments given back: (k+m)/k = 1.5 bytes per segment byte left out (+- padding)
    assert 1.2 * reclaimed < before - frag < 1.8 * reclaimed, (before, frag, reclaimed)
    # each replaced record's successor is what the replicas read through now
    for s in st.values():
        successors = {r["replaces"] for r in s["records"] if r["replaces"]}
        assert successors and all(r["replaced"] for r in s["records"]
                                  if f"{r['source']}/{r['segment']}/{r['generation']}"
                                  in successors)
    await read_all(cluster, live, list(cluster.nodes))
    # most dead blobs sat in encoded segments: their payloads are gone on every node
    assert await _gone_or_right(cluster, dead, list(cluster.nodes)) >= 4

    # kill -9 a replica (its index snapshot may predate the move): same answers after
    victim = cluster.nodes["dc1-n2"]
    victim.kill()
    victim.start()
    await victim.wait_ready_async()
    await read_all(cluster, live, ["dc1-n2"])
    assert await _gone_or_right(cluster, dead, ["dc1-n2"]) >= 4
    code, out = await asyncio.to_thread(ec_status_cli, cluster)
    assert code == 0, out
    for row in out["partitions"]:
        assert row["state"] == "encoded"
        assert row["replaced_segments"]
        assert all(s["fragments_left"] == 0 for s in row["replaced_segments"])


async def test_a_stopped_replica_holds_back_its_datacenter_and_nothing_is_lost(
        cluster: LocalCluster) -> None:
    # a replica that is stopped (SIGSTOP), not dead, cannot say whether it holds the
    # deleted blobs dead, nor move off the old fragments: its datacenter re-encodes and
    # drops nothing meanwhile; the other datacenter goes on; once it runs again, both finish
    blobs = await put_blobs(cluster, 20)
    await wait_all_freed(cluster)
    ids = list(blobs)
    dead = {b: blobs[b] for b in ids[::2]}
    live = {b: blobs[b] for b in ids[1::2]}
    stopped = cluster.nodes["dc1-n3"]
    assert stopped.proc is not None
    os.kill(stopped.proc.pid, signal.SIGSTOP)
    try:
        await _delete(cluster, list(dead))
        await wait_for(lambda: _recoded(cluster, ("dc2",), dc_nodes(cluster, "dc2")),
                       "dc2 to re-encode")
        st = await ec_status(cluster, ["dc1-n1", "dc1-n2"])
        assert not any(r["replaced"] for s in st.values() for r in s["records"]
                       if r["datacenter"] == "dc1"), "dc1 re-encoded without dc1-n3's word"
        await read_all(cluster, live, ["dc1-n1", "dc1-n2"])
    finally:
        os.kill(stopped.proc.pid, signal.SIGCONT)
    await wait_for(lambda: _recoded(cluster), "dc1 to re-encode once dc1-n3 runs again")
    await read_all(cluster, live, list(cluster.nodes))
    assert await _gone_or_right(cluster, dead, dc_nodes(cluster, "dc1")) >= 4


async def test_rot_in_an_old_fragment_is_not_carried_into_the_re_encoded_segment(
        cluster: LocalCluster) -> None:
    # a byte flipped in every block of dc1's data fragment 0 (no scrub has seen it): the
    # re-encoding reads every live record whole and checks it, so the bad bytes are rebuilt
    # from the other fragments, never encoded into the new generation; once the old
    # fragments are gone, every live blob still reads right
    blobs = await put_blobs(cluster, 20)
    st = await wait_all_freed(cluster)
    recs = [r for r in st["dc1-n1"]["records"] if r["datacenter"] == "dc1"]
    for r in recs:
        block = r["stripe_bytes"] // r["k"]
        for s in range(-(-r["bytes"] // r["stripe_bytes"])):
            flip_fragment_byte(frag_path(cluster, r, 0), s * block + block // 2)
    ids = list(blobs)
    live = {b: blobs[b] for b in ids[1::2]}
    await _delete(cluster, ids[::2])
    await wait_for(lambda: _recoded(cluster), "re-encoding in both DCs")
    await read_all(cluster, live, list(cluster.nodes))


@pytest.mark.slow
async def test_coordinator_killed_mid_re_encoding_starts_over_and_finishes(
        tmp_path: Path) -> None:
    # slow fragment writes (256 KiB/s) keep the re-encoding running long enough to kill -9
    # its coordinator in the middle: its .tmp fragments are started over, nothing is
    # recorded twice, the old fragments go only once every replica moved
    ec = {**EC, "encode_rate_bytes_per_s": "256KiB"}
    with running(ec_cluster(tmp_path, ec, storage=STORAGE)) as c:
        blobs = await put_blobs(c, 20)
        await wait_all_freed(c, timeout_s=180)
        ids = list(blobs)
        dead = {b: blobs[b] for b in ids[::2]}
        live = {b: blobs[b] for b in ids[1::2]}
        await _delete(c, list(dead))

        async def recoding() -> bool:
            st = await ec_status(c, ["dc1-n1"])
            return bool(st["dc1-n1"]["job"].get("recoding"))

        await wait_for(recoding, "dc1's coordinator to be re-encoding")
        coord = c.nodes["dc1-n1"]
        coord.kill()
        assert any(p.endswith(".tmp") for p in _fragment_files(c.data_root))
        coord.start()
        await coord.wait_ready_async()
        await wait_for(lambda: _recoded(c), "re-encoding to finish after the restart", 240)
        assert not any(p.endswith(".tmp") for p in _fragment_files(c.data_root))
        await read_all(c, live, list(c.nodes))
        assert await _gone_or_right(c, dead, list(c.nodes)) >= 4


async def test_a_fragment_node_silent_too_long_is_rebuilt_on_a_spare_node(
        tmp_path: Path) -> None:
    # 4 nodes per DC, k=2 m=1: one node of each DC holds no fragment of partition 0 (a
    # spare). A fragment node killed -9 and silent past ec.spare_rebuild_after_s: its
    # datacenter's segments are re-encoded onto the nodes left, replicas move onto the new
    # records and read without reconstruction; when it comes back its old fragments go
    replicas = [f"dc{d}-n{i}" for d in (1, 2) for i in (1, 2, 3)]
    ec = {**EC, "spare_rebuild_after_s": 2}
    with running(ec_cluster(tmp_path, ec, nodes_per_dc=4, replicas=replicas,
                            storage=STORAGE)) as c:
        dc1 = ["dc1-n1", "dc1-n2", "dc1-n3"]
        blobs = await put_blobs(c, 20, dc1)
        st = await wait_all_freed(c, replicas)
        placement = {tuple(r["placement"]) for s in st.values() for r in s["records"]
                     if r["datacenter"] == "dc1"}
        assert len(placement) == 1
        victim = next(n for n in placement.pop() if n != "dc1-n1")  # not the coordinator
        c.nodes[victim].kill()
        alive = [n for n in dc1 if n != victim]

        async def moved() -> bool:
            st = await ec_status(c, alive)
            for s in st.values():
                cur = {f"{r['source']}/{r['segment']}/{r['generation']}": r
                       for r in s["records"] if r["datacenter"] == "dc1" and not r["replaced"]}
                if not cur or any(victim in r["placement"] for r in cur.values()):
                    return False
                if not set(s["refs"]) <= set(cur) | {
                        f"{r['source']}/{r['segment']}/{r['generation']}"
                        for r in s["records"] if r["datacenter"] != "dc1"}:
                    return False
            return True

        await wait_for(moved, f"dc1's segments re-encoded without {victim}")

        async def rebuilt_reads() -> int:
            return sum(s["job"]["reconstruction_reads"]
                       for s in (await ec_status(c, alive)).values())

        before = await rebuilt_reads()
        await read_all(c, blobs, alive)
        assert await rebuilt_reads() == before  # the fragments are all on live nodes now
        assert (await ec_status(c, ["dc1-n1"]))["dc1-n1"]["job"]["spare_rebuilds"] >= 1
        # back (not wiped): it moves onto the new records too, its old fragments are dropped
        c.nodes[victim].start()
        await c.nodes[victim].wait_ready_async()
        await wait_for(lambda: _recoded(c, ("dc1",), replicas),
                       "old fragments dropped once every dc1 replica moved")
        await read_all(c, blobs, dc1)
