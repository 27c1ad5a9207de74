"""The warm tier's tooling on real node processes (issue 17): ``ambry admin ec-status`` and
``ec-dump``, the ``ambry_ec_*`` metrics on a node's /metrics, and ranged reads of encoded
blobs that fetch only the range (checked by the fragment nodes), also when a data fragment
is corrupt."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ec_helpers import (
    SEGMENT_BYTES,
    admin,
    ec_cluster,
    ec_status_cli,
    node_metrics,
    put_blobs,
    running,
    wait_for,
)

from ambry.testing.cluster import LocalCluster

pytest.importorskip("pyeclib")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running(ec_cluster(tmp_path, datacenters=1)) as c:
        yield c


def _corrupt_all_blocks(path: Path) -> None:
    """Invert every byte after the header and table: every block fails its checksum."""
    from ambry.ec.fragfile import read_header

    with open(path, "r+b") as f:
        h, _ = read_header(f)
        f.seek(h.data_offset)
        data = f.read()
        f.seek(h.data_offset)
        f.write(bytes(b ^ 0xFF for b in data))


async def test_ec_status_metrics_dump_and_ranged_reads_of_encoded_blobs(
        cluster: LocalCluster) -> None:
    blobs = await put_blobs(cluster, 20)  # 4 MiB: 3 sealed segments of 1 MiB

    def encoded() -> dict[str, Any] | None:
        code, st = ec_status_cli(cluster)
        (row,) = st["partitions"]
        freed = all(len(v["freed_segments"]) >= 2 for v in row["replicas"].values())
        return st if code == 0 and row["state"] == "encoded" and freed else None

    st = await wait_for(lambda: asyncio.to_thread(encoded),
                        "ec-status to say encoded and every replica freed")
    (row,) = st["partitions"]
    assert row["policy"] == {"ec": {"k": 2, "m": 1}} and row["unreachable_replicas"] == []
    assert len(row["segments"]) >= 2
    for seg in row["segments"]:
        assert [f["health"] for f in seg["fragments"]] == ["ok"] * 3
        assert sorted(f["node"] for f in seg["fragments"]) == sorted(cluster.nodes)
    text = admin("ec-status", "--config", str(cluster.config_path))
    assert text.returncode == 0 and "encoded" in text.stdout, text.stdout + text.stderr

    # metrics: replicas gave disk back, fragment files hold some, the coordinator encoded
    coord = row["coordinator"]
    m = node_metrics(cluster, coord)
    assert m['ambry_ec_encoded_bytes_total{partition="0"}'] >= 2 * SEGMENT_BYTES * 0.9
    assert m['ambry_ec_encoded_segments_total{partition="0"}'] >= 2
    assert m['ambry_ec_encode_backlog_bytes{partition="0"}'] >= 0
    assert m['ambry_ec_encode_cpu_seconds_total{partition="0"}'] > 0
    for node in cluster.nodes:
        m = node_metrics(cluster, node)
        assert m['ambry_ec_freed_bytes{partition="0"}'] > SEGMENT_BYTES  # two segments' payloads
        assert m['ambry_ec_fragment_bytes{partition="0"}'] > 0

    # a ranged read of an encoded blob moves the range, not the record (it used to fetch the
    # whole 200 KiB record body from the fragments for every range)
    reader = next(n for n in cluster.nodes if n != coord)
    before = node_metrics(cluster, reader)
    key = 'ambry_ec_fragment_read_bytes_total{partition="0"}'
    async with cluster.nodes[reader].client() as cl:
        for bid, data in blobs.items():
            _, got = await cl.get_bytes(bid, range=(70_000, 10_000))
            assert bytes(got) == data[70_000:80_000], bid
    after = node_metrics(cluster, reader)
    assert after[key] - before[key] <= len(blobs) * 10_000, (before[key], after[key])

    # ec-dump: a fragment file reads OK; once every block of data fragment 0 of the first
    # segment is corrupt, ec-dump and ec-status --verify say so, and ranged reads through it
    # are rebuilt from the other two fragments (the fragment node's block check caught it)
    seg = row["segments"][0]
    f0 = seg["fragments"][0]
    path = (cluster.data_root / f0["node"] / "fragments" / "p0" /
            f"{seg['source']}_{seg['segment']:08d}_{seg['generation']}.frag0")
    dump = admin("ec-dump", str(path))
    assert dump.returncode == 0 and "fragment 0 (data)" in dump.stdout and "OK" in dump.stdout
    _corrupt_all_blocks(path)
    dump = admin("ec-dump", "--json", str(path))
    assert dump.returncode == 1 and json.loads(dump.stdout)["bad_stripes"], dump.stdout
    code, st = ec_status_cli(cluster, "--verify")
    assert code == 1 and st["partitions"][0]["state"] == "degraded"
    bad = [f for s in st["partitions"][0]["segments"] for f in s["fragments"]
           if f["health"] != "ok"]
    assert [(f["node"], f["fragment"], f["health"]) for f in bad] == \
        [(f0["node"], 0, "damaged")]

    before = node_metrics(cluster, reader)
    async with cluster.nodes[reader].client() as cl:
        for bid, data in blobs.items():
            _, got = await cl.get_bytes(bid, range=(5_000, 150_000))
            assert bytes(got) == data[5_000:155_000], bid
    after = node_metrics(cluster, reader)
    recon = 'ambry_ec_reconstruction_reads_total{partition="0"}'
    corrupt = 'ambry_ec_fragment_read_errors_total{partition="0",reason="corrupt"}'
    assert after[recon] > before[recon] and after[corrupt] > before[corrupt]
