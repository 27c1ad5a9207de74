"""Faults on the warm tier (issue 17) with real processes: 2 DCs x 3 nodes, k=2 m=1, 1 MiB
segments. After encoding, a node of a datacenter is killed (-9) or wiped: every blob reads
back reconstructed and verified, then repair restores full health (every fragment of every
encoded segment present and verified by its node, every replica freed again). A flipped
byte in a fragment file is caught at GET (the right bytes still come back) and by the
scrub, then repaired; bytes corrupt on more than m fragments of a stripe are a clean error,
never wrong bytes. The coordinator killed mid-encode loses nothing and the job finishes;
a whole datacenter wiped comes back from the other one and is encoded again.

The fast variant (wipe of one node, a flipped byte, corruption beyond m) runs in
``make test``; the others are ``@slow`` (``make faults``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ec_helpers import (
    EC_REPAIR,
    coordinator,
    dc_nodes,
    ec_cluster,
    ec_records,
    ec_status,
    flip_fragment_byte,
    frag_path,
    node_call,
    put_blobs,
    read_all,
    running,
    wait_all_freed,
    wait_for,
)

from ambry.common.blobid import BlobId
from ambry.common.errors import DataCorrupt
from ambry.storage import filenames
from ambry.storage.inspect import dump_segment, verify_path
from ambry.testing.cluster import LocalCluster

pytest.importorskip("pyeclib")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running(ec_cluster(tmp_path, EC_REPAIR)) as c:
        yield c


async def _status(c: LocalCluster) -> dict[str, dict[str, Any]]:
    """Every node's row that answers (nodes get killed and wiped here)."""
    return await ec_status(c, skip_unreachable=True)


# ------------------------------------------------------------------------------ helpers
def _frag(r: dict[str, Any], i: int) -> dict[str, Any]:
    return {"partition": 0, "source": r["source"], "segment": r["segment"],
            "generation": r["generation"], "fragment": i}


async def _unhealthy(c: LocalCluster, recs: list[dict[str, Any]]) -> list[str]:
    """What is not fully healthy: a fragment absent, or failing its node's verify."""
    bad = []
    for r in recs:
        for i, nid in enumerate(r["placement"]):
            try:
                h = await node_call(c.nodes[nid], "ec_frag_stat", _frag(r, i))
            except Exception as e:  # noqa: BLE001 - absent or node down: reported
                bad.append(f"segment {r['segment']} fragment {i} on {nid}: {e!r}")
                continue
            if not h["ok"]:
                bad.append(f"segment {r['segment']} fragment {i} on {nid}: {h['problems']}")
    return bad


async def _full_health(c: LocalCluster, recs: list[dict[str, Any]], what: str) -> None:
    async def healthy() -> bool:
        return not await _unhealthy(c, recs)

    try:
        await wait_for(healthy, what)
    except AssertionError:
        raise AssertionError(f"{what}: {await _unhealthy(c, recs)}") from None


async def _lose_and_repair(c: LocalCluster, blobs: dict[BlobId, bytes], victim: str,
                           wipe: bool) -> None:
    """kill -9 (and wipe) ``victim``; every blob reads from its datacenter's other nodes;
    restarted, the datacenter returns to full health with no segment encoded twice."""
    dc = victim[:3]
    st = await _status(c)
    recs = ec_records(st, dc)
    assert recs
    c.nodes[victim].kill()
    if wipe:
        shutil.rmtree(c.nodes[victim].data_dir)
    await read_all(c, blobs, [n for n in dc_nodes(c, dc) if n != victim])
    c.nodes[victim].start()
    await c.nodes[victim].wait_ready_async()
    await _full_health(c, recs, f"full health after {victim} came back "
                                f"{'wiped' if wipe else 'from kill -9'}")

    async def replica_freed_again() -> bool:
        s = (await _status(c)).get(victim)
        return s is not None and len(s["freed_segments"]) >= 2

    await wait_for(replica_freed_again, f"{victim}'s replica to free its segments again")
    # what was encoded is not encoded again (a wiped coordinator gets its blobs back by
    # replication, already encoded: the repair rebuilds its fragments instead). Its new log
    # cuts segments elsewhere, so at most the one holding blobs of its old active segment
    # (never encoded) is encoded, not the 3 it had before
    now = ec_records(await _status(c), dc)
    assert {r["source"] for r in recs} <= {r["source"] for r in now}
    assert len(now) - len(recs) <= 1, [(r["source"][:8], r["segment"]) for r in now]
    await read_all(c, blobs, dc_nodes(c, dc))


def _admin_verify_and_dump_understand_freed_segments(c: LocalCluster) -> None:
    # `ambry admin verify` used to report every freed payload (punched out: its bytes are
    # in fragments now) as a corrupt record, and the dump showed EC_SEGMENT records bare
    reports = verify_path(str(c.data_root))
    assert reports and all(r.ok for r in reports), [(r.path, r.damage[:2], r.error)
                                                    for r in reports if not r.ok]
    assert all(r.freed_segments >= 2 and r.freed_records > 0 for r in reports)
    replica = c.nodes["dc1-n1"].data_dir / filenames.replica_dir_name(0)
    rows = [row for name in sorted(os.listdir(replica))
            if filenames.parse_segment_name(name)
            for row in dump_segment(str(replica / name))]
    assert not [r for r in rows if r.get("type") == "DAMAGE"]
    assert any(r.get("checksum") == "freed" for r in rows)
    ec_rows = [r for r in rows if r.get("type") == "EC_SEGMENT"]
    assert ec_rows and all(r["ec"]["k"] == 2 and r["ec"]["m"] == 1 and
                           len(r["ec"]["placement"]) == 3 for r in ec_rows)


# ------------------------------------------------------------------------------ fast
async def test_wiped_node_reads_reconstructed_repair_restores_health_and_rot_is_repaired(
        cluster: LocalCluster) -> None:
    # before repair existed, a wiped fragment node never got its fragments back (every
    # read of them rebuilt from the others, forever); a flipped fragment byte was worked
    # around at read but never repaired; a replica freed bytes against lost fragments
    blobs = await put_blobs(cluster, 20)  # 4 MiB: 3 sealed segments of 1 MiB
    st = await wait_all_freed(cluster)
    recs = ec_records(st, "dc1")
    _admin_verify_and_dump_understand_freed_segments(cluster)
    # kill -9 after freeing, before an index snapshot covers the freed segments: the
    # restart replayed their records, found zeros where payloads were and dropped the
    # blobs as damage (BlobNotFound); freed payloads are not damage
    restarted = cluster.nodes[coordinator(st, "dc1")]
    restarted.kill()
    restarted.start()
    await restarted.wait_ready_async()
    await read_all(cluster, blobs, [restarted.node_id])
    # a data fragment's node that is not the coordinator (the slow tests take every node)
    coord = coordinator(st, "dc1")
    victim = next(n for n in recs[0]["placement"][:2] if n != coord)
    await _lose_and_repair(cluster, blobs, victim, wipe=True)

    # the rot: a byte of data fragment 0 flipped where a blob lives; a GET still answers
    # the right bytes, the node is told, and the repair rewrites the stripe
    r = recs[0]
    path = frag_path(cluster, r, 0)
    flip_fragment_byte(path, 50_000)
    await read_all(cluster, blobs, [n for n in dc_nodes(cluster, "dc1")])
    await _full_health(cluster, recs, "the flipped byte repaired")

    # beyond m: the same byte bad in both data fragments of the stripe: the stripe cannot
    # be rebuilt in dc1, and a dc1 node answers a clean DATA_CORRUPT, never wrong bytes
    flip_fragment_byte(frag_path(cluster, r, 0), 60_000)
    flip_fragment_byte(frag_path(cluster, r, 1), 60_000)
    errors = 0
    async with cluster.nodes[coord].client() as cl:
        for bid, data in blobs.items():
            try:
                _, got = await cl.get_bytes(bid)
            except DataCorrupt:
                errors += 1
                continue
            assert bytes(got) == data, f"{bid}: wrong bytes"
    assert errors >= 1


# ------------------------------------------------------------------------------ slow
@pytest.mark.slow
@pytest.mark.parametrize("wipe", [False, True], ids=["kill9", "wipe"])
@pytest.mark.parametrize("which", [0, 1, 2])
async def test_any_node_of_a_dc_lost_reads_reconstructed_then_repair_restores_health(
        cluster: LocalCluster, which: int, wipe: bool) -> None:
    # every node of dc1 in turn (the coordinator among them), killed -9 or wiped
    blobs = await put_blobs(cluster, 20)
    await wait_all_freed(cluster)
    await _lose_and_repair(cluster, blobs, dc_nodes(cluster, "dc1")[which], wipe)


@pytest.mark.slow
async def test_coordinator_killed_mid_encode_loses_nothing_and_the_job_finishes(
        tmp_path: Path) -> None:
    # kill -9 of the coordinator while fragments are half written: nothing is lost, the
    # .tmp fragments never count, and the job starts over and finishes after the restart
    with running(ec_cluster(tmp_path, {**EC_REPAIR, "encode_rate_bytes_per_s": "256KiB"})) as c:
        coord = coordinator(await _status(c), "dc1")
        blobs = await put_blobs(c, 20)

        async def tmp_fragment() -> bool:
            return any(p.name.endswith(".tmp") for nid in dc_nodes(c, "dc1")
                       for p in (c.nodes[nid].data_dir / filenames.FRAGMENTS_DIR).rglob("*"))

        await wait_for(tmp_fragment, "a fragment being written in dc1")
        c.nodes[coord].kill()
        await read_all(c, blobs, [n for n in dc_nodes(c, "dc1") if n != coord])
        c.nodes[coord].start()
        await c.nodes[coord].wait_ready_async()
        st = await wait_all_freed(c)
        await _full_health(c, ec_records(st, "dc1"), "dc1 encoded after the restart")
        await read_all(c, blobs, list(c.nodes))
        leftovers = [p for nid in dc_nodes(c, "dc1")
                     for p in (c.nodes[nid].data_dir / filenames.FRAGMENTS_DIR).rglob("*.tmp")]
        assert not leftovers


@pytest.mark.slow
async def test_flipped_parity_byte_is_found_by_the_scrub_and_repaired(tmp_path: Path) -> None:
    # no GET reads a parity fragment while the data fragments are healthy: only the scrub
    # finds its rot; the repair rewrites the stripe (checked here without asking the node)
    from ambry.ec.fragfile import verify

    ec = {**EC_REPAIR, "scrub_interval_s": 1, "scrub_bytes_per_s": "64MiB"}
    with running(ec_cluster(tmp_path, ec)) as c:
        blobs = await put_blobs(c, 20)
        st = await wait_all_freed(c)
        r = ec_records(st, "dc1")[0]
        path = frag_path(c, r, 2)
        flip_fragment_byte(path, 1000)
        assert not verify(path).ok

        async def repaired() -> bool:
            return verify(path).ok

        await wait_for(repaired, "the scrub to find the flipped parity byte and the repair")
        await read_all(c, blobs, dc_nodes(c, "dc1"))


@pytest.mark.slow
async def test_wiped_datacenter_comes_back_from_the_other_and_is_encoded_again(
        cluster: LocalCluster) -> None:
    # every node of dc1 wiped: its replicas come back from dc2 by replication; its old
    # encoded segments lost all their fragments (more than m): nothing is freed against
    # them, the segments are encoded again from the replicas and freed against those
    blobs = await put_blobs(cluster, 20)
    st = await wait_all_freed(cluster)
    old = {r["source"] for r in ec_records(st, "dc1")}
    for nid in dc_nodes(cluster, "dc1"):
        cluster.nodes[nid].kill()
        shutil.rmtree(cluster.nodes[nid].data_dir)
    await read_all(cluster, blobs, dc_nodes(cluster, "dc2"))
    for nid in dc_nodes(cluster, "dc1"):
        cluster.nodes[nid].start()
    for nid in dc_nodes(cluster, "dc1"):
        await cluster.nodes[nid].wait_ready_async()

    async def encoded_again() -> list[dict[str, Any]] | None:
        s = await _status(cluster)
        new = [r for r in ec_records(s, "dc1") if r["source"] not in old]
        freed = all(len(s.get(n, {}).get("freed_segments", ())) >= 2
                    for n in dc_nodes(cluster, "dc1"))
        return new if new and freed else None

    new = await wait_for(encoded_again, "dc1 encoded again and freed", timeout_s=180)
    await _full_health(cluster, new, "dc1's new fragments")
    await read_all(cluster, blobs, list(cluster.nodes))
