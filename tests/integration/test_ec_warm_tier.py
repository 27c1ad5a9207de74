"""The warm tier end to end (issue 17) on a real 2-DC cluster of 3 nodes per DC, k=2 m=1:
sealed segments get encoded, every replica frees their payload bytes, every blob still reads
verified from every node, with one fragment node killed too, and a flipped byte in a
fragment is caught at read."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ec_helpers import (
    BLOB_BYTES,
    ec_cluster,
    ec_status,
    put_blobs,
    read_all,
    running,
    wait_all_freed,
    wait_disk_ratio_below,
    wait_for,
)

from ambry.common.blobid import BlobId
from ambry.common.errors import BlobDeleted
from ambry.storage import filenames
from ambry.storage.inspect import dump_segment
from ambry.testing.cluster import LocalCluster

pytest.importorskip("pyeclib")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running(ec_cluster(tmp_path)) as c:
        yield c


async def test_sealed_segments_encode_free_replicas_and_read_back_everywhere(
        cluster: LocalCluster) -> None:
    # before: nothing encoded; bytes on disk were 6 copies of every blob
    blobs = await put_blobs(cluster, 20)  # 4 MiB: 3 sealed segments of 1 MiB
    # a replica frees a segment once all its blobs are in encoded segments of its DC
    st = await wait_all_freed(cluster)
    dc1_records = [r for r in st["dc1-n1"]["records"] if r["datacenter"] == "dc1"]
    assert dc1_records and all(r["k"] == 2 and r["m"] == 1 for r in dc1_records)
    stored = len(blobs) * BLOB_BYTES

    # the sealed segments at 3.0x (+ what hole punching cannot free: the 4 KiB blocks
    # shared with record headers), the active segment still at 6.0x. Freeing is a
    # background pass per replica (a replica's last sealed segment waits for the
    # coordinator's next one): wait for the ratio itself, not for a count of freed
    # segments that a busy machine may reach before the last pass (4.64x seen flaky)
    ratio = await wait_disk_ratio_below(cluster, stored, 4.5)
    print(f"bytes on disk per byte stored after encoding: {ratio:.2f}x (6 replicas: 6.0x)")
    await read_all(cluster, blobs, list(cluster.nodes))

    # kill -9 a fragment node of dc1: reads there rebuild from the other two
    victim = dc1_records[0]["placement"][0]
    cluster.nodes[victim].kill()
    await read_all(cluster, blobs, [n for n in cluster.nodes if n.startswith("dc1")
                                     and n != victim])


async def test_small_blobs_are_encoded_and_their_replicas_keep_skeletons(
        cluster: LocalCluster) -> None:
    # 4 KiB blobs: hole punching alone frees no whole page of them, so they used to stay
    # replicated (6.3x); freed segments are now rewritten as skeletons (headers, keys and
    # properties only), so encoding them pays and they cost about 3.5x
    size = 4096
    blobs = await put_blobs(cluster, 1000, size=size)  # ~4 MiB: 4 sealed 1 MiB segments
    stored = len(blobs) * size
    ratio = await wait_disk_ratio_below(cluster, stored, 4.8)
    print(f"4 KiB blobs: {ratio:.2f}x bytes on disk per byte stored (replicated: 6.3x)")
    st = await ec_status(cluster)
    assert all(s["freed_segments"] for s in st.values())
    assert not any((s.get("job") or {}).get("left_small_segments") for s in st.values())
    await read_all(cluster, blobs, ["dc1-n2", "dc2-n3"])


def _freed_everywhere(c: LocalCluster) -> set[str]:
    """Blob ids (text) whose PUT payload is punched out of every replica's log: their bytes
    live only in the fragments now (what ``ambry admin dump-log`` marks ``freed``)."""
    per_node = []
    for n in c.nodes.values():
        rdir = n.data_dir / "p0"
        got = set()
        for name in sorted(os.listdir(rdir)):
            if filenames.parse_segment_name(name) is None:
                continue
            for row in dump_segment(str(rdir / name)):
                if row.get("type") == "PUT" and row.get("checksum") == "freed":
                    got.add(row["key"])
        per_node.append(got)
    return set.intersection(*per_node)


async def _state(n: Any, bid: BlobId) -> tuple[bool, bool, int]:
    """(deleted, permanent, expiry_ms) as one replica says."""
    async with n.client() as cl:
        reply, _ = await cl.get_bytes(bid, include_deleted=True, include_expired=True)
        return reply.state.deleted, reply.state.permanent, reply.expiry_ms


def _compaction_runs(n: Any) -> float:
    with urllib.request.urlopen(n.http_url("/metrics"), timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("ambry_node_compaction_runs_total "):
                return float(line.split()[1])
    return 0.0


async def test_delete_ttl_update_undelete_on_freed_blobs_survive_restart_and_compaction(
        cluster: LocalCluster) -> None:
    # the promise for encoded data: deletes, TTL updates and undeletes keep working
    # on blobs whose payload lives only in fragments (their tombstones stay replicated), on
    # every replica of both DCs, through a kill -9 and a compaction of a freed replica
    ttl_s = 3600
    blobs = await put_blobs(cluster, 20, ttl_s=ttl_s)
    by_text = {b.to_str(): b for b in blobs}

    async def three_freed() -> list[BlobId] | None:
        freed = await asyncio.to_thread(_freed_everywhere, cluster)
        picked = [by_text[t] for t in sorted(freed) if t in by_text]
        return picked[:3] if len(picked) >= 3 else None

    gone, kept, revived = await wait_for(three_freed, "3 blobs freed on every replica")
    expiry = {b: (await _state(cluster.nodes["dc1-n1"], b))[2] for b in blobs}
    assert all(e > time.time() * 1000 for e in expiry.values())
    # as the frontend does: 2 of the 3 local replicas; replication carries it to the rest
    for nid in ("dc1-n1", "dc1-n2"):
        async with cluster.nodes[nid].client() as cl:
            await cl.delete(gone)
            await cl.ttl_update(kept)
            await cl.delete(revived)

    async def everywhere(want: dict[BlobId, tuple[bool, bool]]) -> bool:
        for n in cluster.nodes.values():
            if not n.running:
                continue
            for bid, (deleted, permanent) in want.items():
                if (await _state(n, bid))[:2] != (deleted, permanent):
                    return False
        return True

    await wait_for(lambda: everywhere({gone: (True, False), kept: (False, True),
                                    revived: (True, False)}),
                "delete and TTL update replicated to both DCs")
    for nid in ("dc1-n1", "dc1-n2"):
        async with cluster.nodes[nid].client() as cl:
            await cl.undelete(revived)
    final = {gone: (True, False), kept: (False, True), revived: (False, False)}
    await wait_for(lambda: everywhere(final), "undelete replicated to both DCs")

    async def check(nodes: list[str]) -> None:
        for nid in nodes:
            async with cluster.nodes[nid].client() as cl:
                with pytest.raises(BlobDeleted):
                    await cl.get_bytes(gone)
                # the deleted blob's bytes still read back, checked, through the fragments
                # (after compaction too: it skips freed segments, so with no retention it
                # does not drop this PUT; a compaction that re-encodes would change this)
                reply, got = await cl.get_bytes(gone, include_deleted=True)
                assert reply.state.deleted and bytes(got) == blobs[gone], nid
                reply, got = await cl.get_bytes(kept)
                assert reply.state.permanent and bytes(got) == blobs[kept], nid
                reply, got = await cl.get_bytes(revived)
                assert not reply.state.deleted and not reply.state.permanent, nid
                assert reply.expiry_ms == expiry[revived] and bytes(got) == blobs[revived]
                for bid in set(blobs) - {gone, kept, revived}:
                    reply, got = await cl.get_bytes(bid)
                    assert (reply.state.deleted, reply.state.permanent) == (False, False)
                    assert reply.expiry_ms == expiry[bid] and bytes(got) == blobs[bid]

    await check(list(cluster.nodes))

    # kill -9 a replica that freed its segments; it comes back with compaction on (every
    # second, no retention: the deleted blob is dead at once)
    victim = cluster.nodes["dc1-n2"]
    freed_before = (await ec_status(cluster))["dc1-n2"]["freed_segments"]
    assert freed_before
    victim.kill()
    raw = yaml.safe_load(cluster.config_path.read_text())
    raw["storage"] |= {"compaction_interval_s": 1, "compaction_retention_s": 0}
    victim.config_path = cluster.root / "dc1-n2-compacting.yaml"
    victim.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    victim.start()
    await victim.wait_ready_async()
    await check(["dc1-n2"])  # recovery kept every state

    async def compacted() -> bool:  # a whole pass ran since the restart
        return await asyncio.to_thread(_compaction_runs, victim) >= 2

    await wait_for(compacted, "two compaction passes on the restarted replica")
    st = (await ec_status(cluster))["dc1-n2"]
    assert set(freed_before) <= set(st["freed_segments"]), (freed_before, st)
    await check(list(cluster.nodes))
    assert "Traceback" not in victim.log_tail(400), victim.log_tail(80)
