"""Helpers shared by the warm tier's integration tests (issue 17; imported by the test modules).

Owns the EC test cluster's config (:func:`ec_cluster`: 1 MiB segments, one partition with an
``ec: {k, m}`` policy, fast encode settings :data:`EC` / :data:`EC_REPAIR`) and its lifetime
(:func:`running`; :func:`one_node` for the fragment ops of one node), writing and reading
back blobs straight to storage nodes (:func:`put_blobs`, :func:`read_all`), asking nodes for
their ``ec_status`` (:func:`ec_status`, :func:`wait_all_freed`, :func:`ec_records`,
:func:`coordinator`), their ``/metrics`` (:func:`node_metrics`) and ``ambry admin``
(:func:`admin`, :func:`ec_status_cli`), waiting on a condition (:func:`wait_for`) and bytes
on disk (:func:`disk_bytes`). Does not own any
assertion beyond "every blob read back is the one PUT" and "the admin command printed
something".
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ambry.common.blobid import BlobId, new_blob_id
from ambry.common.properties import BlobProperties
from ambry.ec.fragfile import read_header
from ambry.storage import filenames
from ambry.testing.cluster import REPO_ROOT, LocalCluster, NodeProcess

SEGMENT_BYTES = 1024 * 1024  # storage.segment_size_bytes: 20 blobs seal 3 segments
BLOB_BYTES = 200 * 1024  # bigger than a block (stripe 256 KiB at k=2: 128 KiB blocks)
#: the ``ec`` section: encode at once, fast, in 256 KiB stripes
EC: dict[str, Any] = {"stripe_bytes": "256KiB", "min_age_s": 0, "scan_interval_s": 0.3,
                      "encode_rate_bytes_per_s": "64MiB", "fragment_timeout_ms": 2000}
#: :data:`EC` with the repair loop running every 0.5 s (the scrub only when a test asks)
EC_REPAIR: dict[str, Any] = {**EC, "repair_interval_s": 0.5, "scrub_interval_s": 3600}
WAIT_S = 90.0  # what a wait_for allows by default: generous, a busy 2-core box runs 6 nodes


def ec_cluster(root: Path, ec: dict[str, Any] | None = None, *, k: int = 2, m: int = 1,
               datacenters: int = 2, nodes_per_dc: int = 3, replicas: list[str] | None = None,
               storage: dict[str, Any] | None = None, **kw: Any) -> LocalCluster:
    """A cluster (not started) of ``datacenters`` x ``nodes_per_dc`` nodes with one partition
    (0) of policy ``ec: {k, m}`` in 1 MiB segments, the ``ec`` section ``ec`` (default
    :data:`EC`). ``replicas``: the node ids that hold partition 0 (default: every node of
    each DC); ``storage``: more of the ``storage`` section; ``kw`` goes to
    :class:`LocalCluster`."""
    policy = {"ec": {"k": k, "m": m}}
    partitions: Any = ({"count": 1, "capacity_bytes": "1GiB", "policy": policy}
                       if replicas is None else
                       [{"id": 0, "replicas": replicas, "policy": policy}])
    return LocalCluster(root, datacenters=datacenters, nodes_per_dc=nodes_per_dc, partitions=1,
                        storage={"segment_size_bytes": SEGMENT_BYTES, **(storage or {})},
                        extra={"partitions": partitions, "ec": EC if ec is None else ec}, **kw)


@contextmanager
def running(c: LocalCluster) -> Iterator[LocalCluster]:
    """``c`` started; every node killed (-9) on the way out, whatever happened."""
    c.start()
    try:
        yield c
    finally:
        c.kill_all()


@contextmanager
def one_node(root: Path) -> Iterator[NodeProcess]:
    """The node of a started one-node cluster (one replicated partition), for tests of the
    node's fragment ops; killed (-9) on the way out."""
    with running(LocalCluster(root, partitions=1)) as c:
        yield c.nodes["dc1-n1"]


def dc_nodes(c: LocalCluster, dc: str) -> list[str]:
    """The ids of ``dc``'s nodes (``dc1-n1``, ...)."""
    return [nid for nid in c.nodes if nid.startswith(dc)]


async def node_call(n: NodeProcess, op: str, fields: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """The reply header of one node protocol request (its payload, if any, dropped)."""
    async with n.client() as cl:
        reply = await cl.request(op, fields)
        await reply.release()
        return reply.header


async def ec_status(c: LocalCluster, nodes: Iterable[str] | None = None, *, partition: int = 0,
                    skip_unreachable: bool = False) -> dict[str, dict[str, Any]]:
    """Node id -> that node's ``ec_status`` row of ``partition``, from every running node of
    ``nodes`` (default: all). A node that does not answer raises, unless
    ``skip_unreachable`` (for tests that kill nodes): then it is left out."""
    out = {}
    for nid in c.nodes if nodes is None else nodes:
        n = c.nodes[nid]
        if not n.running:
            continue
        try:
            rows = (await node_call(n, "ec_status"))["partitions"]
            out[nid] = next(p for p in rows if p["partition"] == partition)
        except (OSError, TimeoutError, StopIteration):
            if not skip_unreachable:
                raise
    return out


async def wait_for(cond: Callable[[], Awaitable[Any]], what: str,
                   timeout_s: float = WAIT_S) -> Any:
    """Polls ``cond()`` (an awaitable: wrap blocking checks in ``asyncio.to_thread``) every
    0.2 s until it gives something true, and returns that; AssertionError naming ``what``
    after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def wait_all_freed(c: LocalCluster, nodes: Iterable[str] | None = None,
                         timeout_s: float = WAIT_S) -> dict[str, dict[str, Any]]:
    """Waits until every node of ``nodes`` (default: all) answers ``ec_status`` and has freed
    at least 2 sealed segments (20 blobs seal 3; a replica's last sealed one waits for the
    coordinator's next segment); their rows."""
    want = list(c.nodes if nodes is None else nodes)

    async def all_freed() -> dict[str, dict[str, Any]] | None:
        st = await ec_status(c, want, skip_unreachable=True)
        ok = len(st) == len(want) and all(len(s["freed_segments"]) >= 2 for s in st.values())
        return st if ok else None

    st: dict[str, dict[str, Any]] = await wait_for(
        all_freed, "every replica to free its sealed segments", timeout_s)
    return st


def ec_records(st: dict[str, dict[str, Any]], dc: str) -> list[dict[str, Any]]:
    """``dc``'s EC_SEGMENT records as every node of ``st`` knows them, one per segment (and
    generation), by source and segment."""
    recs: dict[tuple[str, int, int], dict[str, Any]] = {}
    for s in st.values():
        for r in s["records"]:
            if r["datacenter"] == dc:
                recs[(r["source"], r["segment"], r["generation"])] = r
    return sorted(recs.values(), key=lambda r: (r["source"], r["segment"]))


def coordinator(st: dict[str, dict[str, Any]], dc: str) -> str:
    """The node of ``dc`` that runs the encode job, as ``ec_status`` rows say."""
    return next(nid for nid, s in st.items() if nid.startswith(dc) and s.get("job")
                and s["job"].get("coordinator"))


async def put_blobs(c: LocalCluster, n_blobs: int, nodes: Iterable[str] | None = None, *,
                    ttl_s: int = -1, size: int = BLOB_BYTES) -> dict[BlobId, bytes]:
    """PUTs ``n_blobs`` random blobs of ``size`` bytes to partition 0 on each of ``nodes``
    (default: dc1's; replication takes them to the other DC), one blob at a time; id ->
    bytes."""
    blobs: dict[BlobId, bytes] = {}
    clients = [c.nodes[n].client() for n in (dc_nodes(c, "dc1") if nodes is None else nodes)]
    try:
        for _ in range(n_blobs):
            bid = new_blob_id(1, 101, 5, 0)
            data = os.urandom(size)
            props = BlobProperties(size=size, created_ms=int(time.time() * 1000),
                                   ttl_s=ttl_s, service_id="t",
                                   content_type="application/octet-stream")
            await asyncio.gather(*(cl.put(bid, props, b"um", data) for cl in clients))
            blobs[bid] = data
    finally:
        for cl in clients:
            await cl.close()
    return blobs


async def read_all(c: LocalCluster, blobs: dict[BlobId, bytes], nodes: Iterable[str],
                   **client_kw: Any) -> None:
    """Every blob read whole from each of ``nodes`` is the bytes PUT (``client_kw``: for
    :meth:`NodeProcess.client`)."""
    for nid in nodes:
        async with c.nodes[nid].client(**client_kw) as cl:
            for bid, data in blobs.items():
                _, got = await cl.get_bytes(bid)
                assert bytes(got) == data, f"{bid} from {nid}: wrong bytes"


def disk_bytes(root: Path) -> int:
    """Bytes the segment and fragment files under ``root`` hold on disk (allocated blocks:
    freed holes count 0)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.endswith(".log") or ".frag" in f:
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def node_metrics(c: LocalCluster, node: str, prefix: str = "ambry_ec_") -> dict[str, float]:
    """``name{labels}`` -> value of a node's ``/metrics`` samples whose name starts with
    ``prefix`` (blocking: wrap in ``asyncio.to_thread`` in a test)."""
    with urllib.request.urlopen(c.nodes[node].http_url("/metrics"), timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith(prefix):
            out[name] = float(value)
    return out


async def wait_disk_ratio_below(c: LocalCluster, stored: int, limit: float) -> float:
    """Waits until the bytes on disk under ``c`` (:func:`disk_bytes`) per byte ``stored`` are
    below ``limit`` (freeing is a background pass per replica: wait for the ratio itself, not
    for a count of freed segments); the ratio."""
    async def below() -> float | None:
        ratio = disk_bytes(c.data_root) / stored
        return ratio if ratio < limit else None

    ratio: float = await wait_for(below, f"bytes on disk per byte stored < {limit}x")
    return ratio


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    """``ambry admin <args>`` in a subprocess (output captured, exit code not checked)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "ambry.cli", "admin", *args],
                          check=False, capture_output=True, text=True, timeout=120, env=env,
                          cwd=str(REPO_ROOT))


def ec_status_cli(c: LocalCluster, *extra: str) -> tuple[int, Any]:
    """``ambry admin ec-status --json <extra>`` on ``c``'s config: (exit code, its JSON)."""
    r = admin("ec-status", "--config", str(c.config_path), "--json", *extra)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def frag_path(c: LocalCluster, r: dict[str, Any], i: int, partition: int = 0) -> Path:
    """Where fragment ``i`` of the EC_SEGMENT record ``r`` (an ``ec_status`` row) is."""
    node = c.nodes[r["placement"][i]]
    return node.data_dir / filenames.FRAGMENTS_DIR / filenames.replica_dir_name(partition) / \
        filenames.fragment_name(r["source"], r["segment"], r["generation"], i)


def flip_fragment_byte(path: Path, fragment_offset: int) -> None:
    """Rot: flips one byte of a fragment file's blocks, ``fragment_offset`` bytes in."""
    with open(path, "r+b") as f:
        h, _ = read_header(f)
        f.seek(h.data_offset + fragment_offset)
        b = f.read(1)
        f.seek(h.data_offset + fragment_offset)
        f.write(bytes([b[0] ^ 0x5A]))
