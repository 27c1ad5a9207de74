"""Operator tooling on real processes: cluster-map reload (SIGHUP), usage per container,
JSON logs, graceful SIGTERM of the frontend."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from fe_helpers import (
    FAST_STORAGE,
    KIB,
    MIB,
    SERVICE,
    blob_bytes,
    call,
    port_refused,
    post_blob,
    store_fixture,
    until,
)

from ambry.common.blobid import decode
from ambry.testing.cluster import REPO_ROOT, NodeProcess, free_ports
from ambry.testing.frontend import StoreCluster

pytestmark = pytest.mark.timeout(300)

FAST_REPLICATION = {"long_poll_ms": 300, "backoff_max_s": 1}


def _ambry(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambry.cli", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=check)


def _metric(url: str, name: str) -> float | None:
    """The value of one sample (``name`` with its labels, as in the text format)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


async def _wait_metric(url: str, name: str, value: float, timeout_s: float = 20) -> None:
    async def reached() -> bool:
        return await asyncio.to_thread(_metric, url, name) == value

    await until(reached, timeout_s, f"{name} == {value} at {url}")


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()
            if line.startswith("{")]


# ====================================================================== reload
async def test_sighup_grows_a_running_cluster_by_partitions_and_a_node(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Add 4 partitions and a 4th node to a running 3-node cluster: nothing restarts, new
    writes land on the new partitions too, every old and new blob (and a name written
    before) reads back, and the replicas of the new partitions converge."""
    store = StoreCluster(tmp_path, datacenters=1, nodes_per_dc=3, partitions=4,
                         storage=FAST_STORAGE, extra={"replication": FAST_REPLICATION})
    with store:
        try:
            await _grow_and_check(store, http)
        finally:
            print(store.logs(80))


async def _grow_and_check(store: StoreCluster, http: aiohttp.ClientSession) -> None:
    base = store.url("dc1").rstrip("/")
    before: dict[str, bytes] = {}
    for i in range(12):
        data = blob_bytes(1000 + i, f"old-{i}")
        before[await post_blob(http, base, data)] = data
    big = blob_bytes(3 * MIB + 5, "old-big")  # a composite: chunks on several partitions
    before[await post_blob(http, base, big)] = big
    (await call(http, "PUT", base + "/named/default/default/runs/1/model.pt", SERVICE,
                b"weights-v1")).expect(201)

    # a bad file and an unsafe change are refused; the old map stays in force
    cfg_path = store.config_path
    good = cfg_path.read_text()
    n1 = store.nodes["dc1-n1"]
    metrics_n1 = n1.http_url("/metrics")
    cfg_path.write_text("nodes: [this is: not a cluster map")
    n1.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await _wait_metric(metrics_n1, "ambry_config_reload_failed", 1.0)
    moved = yaml.safe_load(good)
    moved["nodes"][0]["port"] += 1
    cfg_path.write_text(yaml.safe_dump(moved))
    n1.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await _wait_metric(metrics_n1, 'ambry_config_reloads_total{result="failed"}', 2.0)
    assert "its own" not in n1.log_tail(200)
    assert "node dc1-n1 changed" in n1.log_tail(200)
    cfg_path.write_text(good)
    assert (await call(http, "GET", f"{base}/{next(iter(before))}")).status == 200

    # grow the map the way an operator does: build-clustermap --from, then SIGHUP
    taken = {p for n in store.config["nodes"] for p in (n["port"], n["http_port"])}
    taken |= {f.port for f in store.frontends.values()}
    port, http_port = [p for p in free_ports(8) if p not in taken][:2]
    out = _ambry("admin", "build-clustermap", "--from", str(cfg_path), "--add-partitions",
                 "4", "--add-node", f"dc1=dc1-n4@127.0.0.1:{port}:{http_port}",
                 "-o", str(cfg_path))
    print(out.stderr)
    grown = yaml.safe_load(cfg_path.read_text())
    assert grown["cluster"]["name_partitions"] == 4
    new_pids = {p["id"] for p in grown["partitions"]} - {0, 1, 2, 3}
    assert new_pids == {4, 5, 6, 7}
    assert all("dc1-n4" in p["replicas"] for p in grown["partitions"] if p["id"] in new_pids)
    store.config.clear()
    store.config.update(grown)
    n4 = NodeProcess("dc1-n4", cfg_path, store.nodes_cluster.data_root, "127.0.0.1", port,
                     http_port, store.root / "dc1-n4.log")
    store.nodes["dc1-n4"] = n4
    n4.start()
    await n4.wait_ready_async()
    for node in list(store.nodes.values())[:3]:
        node.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    for node in list(store.nodes.values())[:3]:
        await _wait_metric(node.http_url("/metrics"),
                           'ambry_config_reloads_total{result="ok"}', 1.0)
        await _wait_metric(node.http_url("/metrics"), "ambry_config_reload_failed", 0.0)
    fe = store.frontends["dc1"]
    fe.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await _wait_metric(fe.url("/metrics"), 'ambry_config_reloads_total{result="ok"}', 1.0)
    await asyncio.to_thread(store.wait_settled)

    # new writes use the new partitions; everything reads back
    after: dict[str, bytes] = {}
    for i in range(48):
        data = blob_bytes(500 + i, f"new-{i}")
        after[await post_blob(http, base, data)] = data
    on_new = [b for b in after if decode(b).partition_id in new_pids]
    assert len(on_new) >= 5, sorted(decode(b).partition_id for b in after)
    for bid, data in {**before, **after}.items():
        got = (await call(http, "GET", f"{base}/{bid}")).expect(200)
        assert got.body == data, bid
    got = (await call(http, "GET", base + "/named/default/default/runs/1/model.pt")).expect(200)
    assert got.body == b"weights-v1"
    (await call(http, "PUT", base + "/named/default/default/runs/2/model.pt", SERVICE,
                b"weights-v2")).expect(201)
    # a blob id naming a partition that does not exist is still a 400
    bad = decode(on_new[0])
    unknown = type(bad)(bad.datacenter_id, bad.account_id, bad.container_id, 99, bad.uuid,
                        bad.blob_type).to_str()
    assert (await call(http, "GET", f"{base}/{unknown}")).status == 400

    # every replica of every partition (old and new) converges
    deadline = time.monotonic() + 60
    while True:
        res = await asyncio.to_thread(_ambry, "admin", "digests", "--config", str(cfg_path),
                                      "--json", check=False)
        if res.returncode == 0:
            break
        assert time.monotonic() < deadline, res.stdout[-3000:]
        await asyncio.sleep(1)
    parts = json.loads(res.stdout)["partitions"]
    assert {int(p) for p in parts} == set(range(8))
    assert all(len(reps) == 3 for reps in parts.values())
    assert sum(v["blobs"] for p in new_pids for v in parts[str(p)].values()) > 0


# ====================================================================== usage, logs, SIGTERM
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("ops"), datacenters=1, nodes_per_dc=3,
                             partitions=4, extra={"replication": FAST_REPLICATION,
                                                  "daemon": {"log_format": "json",
                                                             "shutdown_grace_s": 20}})


@pytest.fixture
async def base(store: StoreCluster) -> AsyncIterator[str]:
    yield store.url("dc1").rstrip("/")


def _usage(store: StoreCluster) -> dict[str, Any]:
    res = _ambry("admin", "usage", "--config", str(store.config_path), "--json", check=False)
    assert res.returncode in (0, 1), res.stderr
    doc = json.loads(res.stdout)
    doc["by_name"] = {f"{r['account']}/{r['container']}": r for r in doc["containers"]}
    return doc


async def test_usage_per_container_counts_each_blob_once(
        store: StoreCluster, http: aiohttp.ClientSession, base: str) -> None:
    models = {"x-ambry-target-container-name": "models"}
    plain = [blob_bytes(n, f"u{n}") for n in (10 * KIB, 20 * KIB, 30 * KIB, 1, 5000)]
    plain_ids = [await post_blob(http, base, d) for d in plain]
    model_sizes = [3 * MIB + 17, 64 * KIB]  # a composite (4 chunks) and a simple blob
    for n in model_sizes:
        await post_blob(http, base, blob_bytes(n, f"m{n}"), models)

    def expect(doc: dict[str, Any], key: str, blobs: int, payload: int) -> bool:
        row = doc["by_name"].get(key)
        # bytes are PUT record bytes: the payload plus a header, properties and user
        # metadata per record (chunks are records too)
        return row is not None and row["blobs"] == blobs and \
            payload <= row["bytes"] <= payload + 1024 * (blobs + 4)

    async def counted(blobs: int, payload: int) -> bool:
        doc = await asyncio.to_thread(_usage, store)
        return not doc["incomplete_partitions"] and not doc["unreachable"] and \
            expect(doc, "default/default", blobs, payload) and \
            expect(doc, "default/models", 2, sum(model_sizes))

    total = sum(len(d) for d in plain)
    await until(lambda: counted(5, total), 20, "usage of both containers")
    # a deleted blob leaves the usage once every replica has the delete
    (await call(http, "DELETE", f"{base}/{plain_ids[2]}")).expect(202)
    await until(lambda: counted(4, total - len(plain[2])), 20, "usage after a delete")
    # a restarted node counts its replicas again (opened from snapshots: a usage pass)
    n2 = store.nodes["dc1-n2"]
    n2.restart()
    await until(lambda: counted(4, total - len(plain[2])), 30, "usage after a restart")
    await asyncio.to_thread(store.wait_settled)
    text = await asyncio.to_thread(
        lambda: urllib.request.urlopen(n2.http_url("/metrics"), timeout=5).read().decode())
    assert 'ambry_container_usage_blobs{account="default",container="models"}' in text
    assert 'ambry_replica_usage_ready{partition="0"} 1.0' in text


def test_daemon_log_lines_are_json_objects(store: StoreCluster) -> None:
    node = _json_lines(store.nodes["dc1-n1"].log_path)
    fe = _json_lines(store.frontends["dc1"].log_path)
    assert node and fe
    for line, who in ((node[0], "node"), (fe[0], "frontend")):
        assert {"ts", "level", "logger", "msg", who} <= set(line), line
    assert node[0]["node"] == "dc1-n1" and fe[0]["frontend"] == "dc1"
    assert any("serving" in line["msg"] for line in node)


async def test_sigterm_lets_a_slow_upload_finish_then_exits_0(
        store: StoreCluster, http: aiohttp.ClientSession, base: str) -> None:
    fe = store.frontends["dc1"]
    piece = blob_bytes(256 * KIB, "slow")
    pieces = 12
    started = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        for i in range(pieces):
            yield piece
            if i == 1:
                started.set()
            await asyncio.sleep(0.25)

    upload = asyncio.create_task(call(http, "POST", base + "/", SERVICE, slow_body()))
    await started.wait()
    t0 = time.monotonic()
    fe.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    await until(lambda: asyncio.to_thread(port_refused, fe.host, fe.port), 5,
                "new connections refused after SIGTERM")
    got = await upload
    got.expect(201)
    assert time.monotonic() - t0 > 1.0  # it really was in flight while the frontend drained
    code = await asyncio.to_thread(fe.proc.wait, 30)  # type: ignore[union-attr]
    assert code == 0, fe.log_tail()
    assert any("draining: 1 requests in flight" in line["msg"]
               for line in _json_lines(fe.log_path))
    fe.start()
    await fe.wait_ready_async()
    # the blob is whole
    got2 = (await call(http, "GET", base + got.headers["Location"])).expect(200)
    assert got2.body == piece * pieces
