"""The warm tier end to end (issue 17): bytes on disk per byte stored before and after
erasure coding, GET throughput and p99 of encoded vs replicated blobs (healthy, and with one
fragment node killed or stopped), and the encode throughput per core.

    python benchmarks/bench_warm.py                 # both profiles, 200 KiB and 4 KiB blobs
    python benchmarks/bench_warm.py --smoke         # local profile, a few MiB (CI)

Profiles: ``local`` (2 DCs x 3 nodes, k=2 m=1, as config/local.yaml) and ``bench-ec``
(2 DCs x 6 nodes, k=4 m=2, as config/bench-ec.yaml; stripes of 4 MiB there, 1 MiB blocks).
Real node processes on loopback (``ambry.testing.cluster``), two partitions: partition 0 is
erasure-coded, partition 1 replicated (the control). Each blob is written to all 3 replicas
of both datacenters (node protocol, as replication would leave them), with encoding held
back (``ec.min_age_s`` huge); then the disk is measured (**before**), the nodes restart with
``min_age_s: 0``, the run waits until every sealed segment is encoded and every replica freed
what it can, and measures again (**after**). Bytes on disk are allocated blocks
(``st_blocks``: punched holes count zero) of every file of the partition on every node: log
segments, index snapshots, EC maps and fragment files. "Sealed only" leaves out the active
segment of each replica, which stays replicated by design, and the bytes stored in it.

GETs are node-protocol reads from a replica in dc1 (the frontend adds the same cost to both
kinds), ``--concurrency`` at once, random blobs of the set, every reply checked. "One node
down" kills (SIGKILL) or stops (SIGSTOP) a node of dc1 holding a data fragment of the encoded
segments that is not the node read from: encoded reads then rebuild from k others; the
replicated control is read from its local disk either way.

Encode CPU: the CPU seconds of the coordinating processes (dc1's and dc2's first replicas)
while they encode, per MB encoded, and the codec's own CPU (``ambry_ec_encode_cpu_seconds``).

Compaction of encoded segments (ambry/warm/recode.py; the cluster runs with
``storage.compaction_retention_s: 0``, so a deleted blob is dead at once): after the GETs,
the nodes restart with ``storage.compaction_interval_s: 1`` (how often re-encoding is
planned, as the log's compaction), every other blob of the encoded partition (in
dc1's coordinator's log order: about half of each segment) is deleted as a frontend does (2 of the 3 replicas of dc1; replication carries
the tombstones on), and the run waits until every encoded record of both datacenters is
replaced (or, for one whose dead bytes stay below ``ec.recode_min_reclaim_ratio``, nothing
more is replaced for 10 s), no replica reads through a replaced one and no fragment file of
one is left. Reported: bytes on disk per byte of LIVE data before and after (all data, and
sealed segments only), fragment bytes, the wall time from the last delete until the old
fragments were gone, MB re-encoded per CPU-second of the coordinating processes and of the
codec (``ambry_ec_recode_cpu_seconds``), every live blob read back from every replica and
every deleted one answering deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ambry.common.blobid import BlobId, new_blob_id
from ambry.common.errors import BlobDeleted
from ambry.common.properties import BlobProperties
from ambry.testing.cluster import LocalCluster
from ambry.warm.fetch import read_limit_s
from benchmarks._results import print_run_header
from benchmarks._stats import percentiles_ms

MiB = 1024 * 1024
PROFILES = {
    "local": {"nodes_per_dc": 3, "k": 2, "m": 1, "stripe": "1MiB"},
    "bench-ec": {"nodes_per_dc": 6, "k": 4, "m": 2, "stripe": "4MiB"},
}


def _partitions(nodes_per_dc: int, k: int, m: int) -> list[dict[str, Any]]:
    # partition 0 (ec) on nodes 1-3 of each DC, partition 1 (replicated) on the last 3
    def reps(first: int) -> list[str]:
        return [f"dc{d}-n{j}" for d in (1, 2) for j in range(first, first + 3)]

    return [{"id": 0, "replicas": reps(1), "policy": {"ec": {"k": k, "m": m}}},
            {"id": 1, "replicas": reps(nodes_per_dc - 2)}]


def _alloc(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def disk_bytes(c: LocalCluster, pid: int, sealed_only: bool = False) -> int:
    """Allocated bytes of every file of partition ``pid`` on every node (replica directory
    and fragment files); ``sealed_only``: only sealed log segments and fragment files."""
    total = 0
    for node in c.nodes:
        rdir = c.data_root / node / f"p{pid}"
        if rdir.is_dir():
            from ambry.storage.filenames import parse_segment_name

            files = sorted(p for p in rdir.rglob("*") if p.is_file())
            logs = sorted((parse_segment_name(p.name), p) for p in files
                          if p.parent == rdir and parse_segment_name(p.name) is not None)
            for p in files:
                if sealed_only and (not logs or p not in [x[1] for x in logs[:-1]]):
                    continue
                total += _alloc(p)
        fdir = c.data_root / node / "fragments" / f"p{pid}"
        if fdir.is_dir():
            total += sum(_alloc(p) for p in fdir.iterdir() if ".frag" in p.name)
    return total


def disk_bytes_by_kind(c: LocalCluster, pid: int) -> dict[str, int]:
    """Allocated bytes of partition ``pid`` on every node, per kind of file: sealed log
    segments, the active segments, fragment files, index snapshots, the EC state (records
    under ec/, .ecfree maps) and the rest (names database, incarnation, ...)."""
    from ambry.storage.filenames import parse_segment_name

    out = {"sealed segments": 0, "active segments": 0, "fragments": 0, "index": 0,
           "ec state": 0, "other": 0}
    for node in c.nodes:
        rdir = c.data_root / node / f"p{pid}"
        if rdir.is_dir():
            segs = sorted((parse_segment_name(p.name), p) for p in rdir.iterdir()
                          if p.is_file() and parse_segment_name(p.name) is not None)
            active = segs[-1][1] if segs else None
            for p in rdir.rglob("*"):
                if not p.is_file():
                    continue
                if p.parent == rdir and parse_segment_name(p.name) is not None:
                    kind = "active segments" if p == active else "sealed segments"
                elif p.name.startswith("index"):
                    kind = "index"
                elif p.suffix == ".ecfree" or p.parent.name == "ec":
                    kind = "ec state"
                else:
                    kind = "other"
                out[kind] += _alloc(p)
        fdir = c.data_root / node / "fragments" / f"p{pid}"
        if fdir.is_dir():
            out["fragments"] += sum(_alloc(p) for p in fdir.iterdir() if ".frag" in p.name)
    return out


def sealed_payload_bytes(c: LocalCluster, pid: int, dead: set[str] | None = None) -> float:
    """Payload bytes of the PUT records in the sealed segments of each replica of ``pid``,
    averaged over its replicas (their logs hold the same blobs in slightly different orders,
    so their sealed segments hold slightly different sets); ``dead``: ids (text) left out."""
    from ambry.storage.inspect import dump_segment

    per_replica = []
    for node in c.nodes:
        rdir = c.data_root / node / f"p{pid}"
        from ambry.storage.filenames import parse_segment_name

        logs = [p for _n, p in sorted((parse_segment_name(p.name), p) for p in rdir.iterdir()
                                      if parse_segment_name(p.name) is not None)] \
            if rdir.is_dir() else []
        if not logs:
            continue
        per_replica.append(sum(row.get("payload_len", 0) for seg in logs[:-1]
                               for row in dump_segment(str(seg)) if row.get("type") == "PUT"
                               and (not dead or row.get("key") not in dead)))
    return sum(per_replica) / len(per_replica) if per_replica else 0.0


async def _status(c: LocalCluster) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for nid, n in c.nodes.items():
        if not n.running:
            continue
        async with n.client() as cl:
            reply = await cl.request("ec_status")
            await reply.release()
            out[nid] = reply.header["partitions"]
    return out


def _metric(c: LocalCluster, node: str, name: str) -> float:
    with urllib.request.urlopen(c.nodes[node].http_url("/metrics"), timeout=10) as r:
        for line in r.read().decode().splitlines():
            m = re.match(rf'^{re.escape(name)}\{{partition="0"\}} (\S+)$', line)
            if m:
                return float(m.group(1))
    return 0.0


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def put_all(c: LocalCluster, pid: int, replicas: list[str], blob_bytes: int,
                  total_bytes: int, concurrency: int = 8) -> dict[BlobId, bytes]:
    blobs: dict[BlobId, bytes] = {}
    clients = {n: c.nodes[n].client(pool_size=concurrency) for n in replicas}
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        bid = new_blob_id(1, 101, 5, pid)
        data = os.urandom(blob_bytes)
        props = BlobProperties(size=blob_bytes, created_ms=int(time.time() * 1000), ttl_s=-1,
                               service_id="bench", content_type="application/octet-stream")
        async with sem:
            for n in replicas:  # in the same order everywhere: replicas' logs line up
                await clients[n].put(bid, props, b"", data)
        blobs[bid] = data

    for _ in range(0, total_bytes // blob_bytes, concurrency):
        await asyncio.gather(*(one() for _ in range(concurrency)))
    for cl in clients.values():
        await cl.close()
    return blobs


async def get_load(c: LocalCluster, node: str, blobs: dict[BlobId, bytes], seconds: float,
                   concurrency: int) -> tuple[float, float, float, int]:
    """(GETs/s, MB/s, p99 ms, errors) of ``concurrency`` readers for ``seconds``."""
    ids = list(blobs)
    lat: list[float] = []
    errors = 0
    nbytes = 0
    cl = c.nodes[node].client(pool_size=concurrency, request_timeout_ms=30_000)
    end = time.monotonic() + seconds

    async def reader(seed: int) -> None:
        nonlocal errors, nbytes
        rnd = random.Random(seed)
        while time.monotonic() < end:
            bid = rnd.choice(ids)
            t0 = time.perf_counter()
            try:
                _, got = await cl.get_bytes(bid)
                if bytes(got) != blobs[bid]:
                    raise AssertionError(f"{bid}: wrong bytes")
            except Exception:  # noqa: BLE001 - counted
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)
            nbytes += len(got)

    t0 = time.monotonic()
    await asyncio.gather(*(reader(i) for i in range(concurrency)))
    took = time.monotonic() - t0
    await cl.close()
    return len(lat) / took, nbytes / took / 1e6, percentiles_ms(lat)[1], errors


async def verify_all(c: LocalCluster, nodes: list[str], blobs: dict[BlobId, bytes]) -> int:
    bad = 0
    for n in nodes:
        async with c.nodes[n].client() as cl:
            for bid, data in blobs.items():
                try:
                    _, got = await cl.get_bytes(bid)
                    bad += bytes(got) != data
                except Exception:  # noqa: BLE001 - counted
                    bad += 1
    return bad


def _rewrite(c: LocalCluster, **ec: Any) -> None:
    c.config["ec"].update(ec)
    c.config_path.write_text(yaml.safe_dump(c.config, sort_keys=False))


async def run_profile(name: str, blob_bytes: int, total_bytes: int, segment_bytes: int,
                      get_s: float, concurrency: int, root: Path) -> dict[str, Any]:
    prof = PROFILES[name]
    npd, k, m = prof["nodes_per_dc"], prof["k"], prof["m"]
    parts = _partitions(npd, k, m)
    c = LocalCluster(root, datacenters=2, nodes_per_dc=npd, partitions=2, replicas_per_dc=3,
                     storage={"segment_size_bytes": segment_bytes,
                              # deleted blobs dead at once: the compaction phase
                              "compaction_retention_s": 0},
                     extra={"partitions": parts,
                            "ec": {"stripe_bytes": prof["stripe"], "min_age_s": 10**9,
                                   "scan_interval_s": 0.5,
                                   "encode_rate_bytes_per_s": "1GiB",
                                   "fragment_timeout_ms": 2000}},
                     log_level="WARNING")
    row: dict[str, Any] = {"profile": name, "k": k, "m": m, "blob": blob_bytes}
    try:
        c.start()
        ec_blobs = await put_all(c, 0, parts[0]["replicas"], blob_bytes, total_bytes)
        rep_blobs = await put_all(c, 1, parts[1]["replicas"], blob_bytes, total_bytes)
        stored = len(ec_blobs) * blob_bytes
        row["stored"] = stored
        row["before"] = disk_bytes(c, 0) / stored
        row["kinds_before"] = disk_bytes_by_kind(c, 0)
        row["control"] = disk_bytes(c, 1) / (len(rep_blobs) * blob_bytes)
        before_sealed = disk_bytes(c, 0, sealed_only=True)
        sealed_stored = sealed_payload_bytes(c, 0)
        # encode now: restart every node with min_age_s 0
        c.stop()
        _rewrite(c, min_age_s=0)
        c.start()
        coords = [n for n in parts[0]["replicas"] if n.endswith("-n1")]
        cpu0 = {n: _cpu_s(c.nodes[n].pid or 0) for n in coords}
        t0 = time.monotonic()

        def settled(st: dict[str, list[dict[str, Any]]]) -> bool:
            ok = True
            for n in parts[0]["replicas"]:
                p0 = next((p for p in st.get(n, []) if p["partition"] == 0), None)
                if p0 is None:
                    raise RuntimeError(f"{n} has no replica of partition 0: {st.get(n)}")
                job = p0.get("job") or {}
                if job.get("coordinator") and (job.get("backlog_bytes") or job.get("encoding")):
                    ok = False
            return ok

        freed_prev = -1
        stable = 0
        while time.monotonic() - t0 < 600:
            st = await _status(c)
            freed = sum(len(p["freed_segments"]) for ps in st.values() for p in ps
                        if p["partition"] == 0)
            stable = stable + 1 if settled(st) and freed == freed_prev else 0
            if stable >= 6:  # encoded everything and no replica freed more for 3 s
                break
            freed_prev = freed
            await asyncio.sleep(0.5)
        took = time.monotonic() - t0
        cpu = sum(_cpu_s(c.nodes[n].pid or 0) - cpu0[n] for n in coords)
        enc_bytes = sum(_metric(c, n, "ambry_ec_encoded_bytes_total") for n in coords)
        codec_cpu = sum(_metric(c, n, "ambry_ec_encode_cpu_seconds_total") for n in coords)
        row["encoded_mb"] = enc_bytes / 1e6
        row["encode_mb_per_cpu_s"] = enc_bytes / 1e6 / cpu if cpu else 0.0
        row["codec_mb_per_cpu_s"] = enc_bytes / 1e6 / codec_cpu if codec_cpu else 0.0
        row["encode_wall_s"] = took
        row["after"] = disk_bytes(c, 0) / stored
        row["kinds_after"] = disk_bytes_by_kind(c, 0)
        st = await _status(c)
        recs = {(r["source"], r["segment"]): r for ps in st.values() for p in ps
                if p["partition"] == 0 for r in p["records"] if r["datacenter"] == "dc1"}
        row["left_small"] = sum((p.get("job") or {}).get("left_small_segments", 0)
                                for ps in st.values() for p in ps if p["partition"] == 0)
        row["sealed_stored"] = sealed_stored
        after_sealed = disk_bytes(c, 0, sealed_only=True)
        row["sealed_before"] = before_sealed / sealed_stored if sealed_stored else 0.0
        row["sealed_after"] = after_sealed / sealed_stored if sealed_stored else 0.0
        freed = {n: next(len(p["freed_segments"]) for p in st[n] if p["partition"] == 0)
                 for n in parts[0]["replicas"]}
        row["freed_segments"] = freed
        row["unreadable"] = await verify_all(c, parts[0]["replicas"], ec_blobs)
        # GETs
        reader = "dc1-n2"  # a replica of both partitions' DC, not the coordinator
        rep_reader = parts[1]["replicas"][1]
        row["get"] = {}
        row["get"]["encoded healthy"] = await get_load(c, reader, ec_blobs, get_s, concurrency)
        row["get"]["replicated healthy"] = await get_load(c, rep_reader, rep_blobs, get_s,
                                                          concurrency)
        if not recs:  # nothing encoded (small records stay replicated): no fragment reads
            row["victim"] = None
            row["compaction"] = None
            return row
        placement = next(iter(recs.values()))["placement"]
        victim = next(x for x in placement[:k] if x != reader and x != rep_reader)
        for how, sig in (("SIGKILL", signal.SIGKILL), ("SIGSTOP", signal.SIGSTOP)):
            proc = c.nodes[victim]
            if sig == signal.SIGKILL:
                proc.kill()
            else:
                proc.start()
                await proc.wait_ready_async(60)
                os.kill(proc.pid or 0, signal.SIGSTOP)
            row["get"][f"encoded, {victim} {how}"] = await get_load(c, reader, ec_blobs, get_s,
                                                                   concurrency)
            row["get"][f"replicated, {victim} {how}"] = await get_load(
                c, rep_reader, rep_blobs, get_s, concurrency)
            if sig == signal.SIGSTOP:
                os.kill(proc.pid or 0, signal.SIGCONT)
        row["victim"] = victim
        row["compaction"] = await compaction_phase(c, parts[0]["replicas"], ec_blobs,
                                                   blob_bytes)
    finally:
        c.kill_all()
    return row


def log_order(c: LocalCluster, node: str, pid: int, blobs: dict[BlobId, bytes]
              ) -> list[BlobId]:
    """The blobs in the order of ``node``'s log of ``pid`` (those not found last)."""
    from ambry.storage.filenames import parse_segment_name
    from ambry.storage.inspect import dump_segment

    by_text = {b.to_str(): b for b in blobs}
    rdir = c.data_root / node / f"p{pid}"
    out: list[BlobId] = []
    for _n, seg in sorted((parse_segment_name(p.name), p) for p in rdir.iterdir()
                          if parse_segment_name(p.name) is not None):
        for row in dump_segment(str(seg)):
            b = by_text.pop(row.get("key", ""), None) if row.get("type") == "PUT" else None
            if b is not None:
                out.append(b)
    return out + list(by_text.values())


def _fragment_names(rec: dict[str, Any]) -> set[str]:
    from ambry.storage.filenames import fragment_name

    return {fragment_name(rec["source"], rec["segment"], rec["generation"], i)
            for i in range(len(rec["placement"]))}


def _key(r: dict[str, Any]) -> str:
    return f"{r['source']}/{r['segment']}/{r['generation']}"


async def compaction_phase(c: LocalCluster, replicas: list[str], blobs: dict[BlobId, bytes],
                           blob_bytes: int) -> dict[str, Any]:
    """Delete every other blob of partition 0, wait until its encoded segments are re-encoded
    without them and the old fragments are gone; bytes on disk per live byte, re-encode
    time and CPU, every live blob verified and every deleted one deleted."""
    coords = [n for n in replicas if n.endswith("-n1")]
    ids = log_order(c, coords[0], 0, blobs)  # every other one of each segment
    dead = {b: blobs[b] for b in ids[::2]}
    live = {b: blobs[b] for b in ids[1::2]}
    dead_text = {b.to_str() for b in dead}
    out: dict[str, Any] = {"live_stored": len(live) * blob_bytes, "deleted": len(dead)}
    # a clean start after the GETs' killed and stopped node (no fragment node suspect), and
    # re-encoding planned every second (storage.compaction_interval_s, as the log's own
    # compaction: 600 s by default would be most of the time measured)
    c.stop()
    c.config["storage"]["compaction_interval_s"] = 1
    c.config_path.write_text(yaml.safe_dump(c.config, sort_keys=False))
    c.start()
    st = await _status(c)
    before = {_key(r) for ps in st.values() for p in ps if p["partition"] == 0
              for r in p["records"] if not r.get("replaced") and r.get("bytes")}
    out["records"] = len(before)
    out["disk_before"] = disk_bytes(c, 0)
    out["sealed_disk_before"] = disk_bytes(c, 0, sealed_only=True)
    out["sealed_live_before"] = sealed_payload_bytes(c, 0, dead_text)
    out["kinds_before"] = disk_bytes_by_kind(c, 0)
    # as the frontend deletes: 2 of the 3 local replicas (dc1); replication does the rest
    t0 = time.monotonic()
    clients = [c.nodes[n].client() for n in replicas[:2]]
    try:
        for bid in dead:
            await asyncio.gather(*(cl.delete(bid) for cl in clients))
    finally:
        for cl in clients:
            await cl.close()
    out["delete_s"] = time.monotonic() - t0
    cpu0 = {n: _cpu_s(c.nodes[n].pid or 0) for n in coords}
    t1 = time.monotonic()

    def settled(st: dict[str, list[dict[str, Any]]]) -> tuple[bool, bool, set[str]]:
        """(moved: nothing is being re-encoded and no replica reads through a replaced
        record; gone: moved and none of their fragment files is left; the records
        replaced)"""
        rows = [p for ps in st.values() for p in ps if p["partition"] == 0]
        replaced = {_key(r): r for p in rows for r in p["records"] if r.get("replaced")}
        moved = not any(set(p.get("refs") or ()) & set(replaced) for p in rows) and \
            not any((p.get("job") or {}).get("recoding") for p in rows)
        on_disk = {p.name for node in c.nodes
                   for p in (c.data_root / node / "fragments" / "p0").glob("*.frag*")}
        gone = moved and not any(_fragment_names(r) & on_disk for r in replaced.values())
        return moved, gone, set(replaced)

    def cpu_now() -> float:
        return sum(_cpu_s(c.nodes[n].pid or 0) - cpu0[n] for n in coords)

    # done: every record replaced and the old fragments gone; or (a record whose dead bytes
    # stay below ec.recode_min_reclaim_ratio is left) nothing more replaced for 10 s. The
    # time and coordinators' CPU are taken when every replica first read through the new
    # records only ("moved"), and when the old fragments were gone: the coordinator deletes
    # them fetch.read_limit_s (4 x ec.fragment_timeout_ms + 5 s) after that, so a read a
    # replica began before it moved still finds them
    last, since = -1, time.monotonic()
    t_moved: float | None = None
    cpu = 0.0
    while True:
        moved, gone, replaced = settled(await _status(c))
        now = time.monotonic()
        if len(replaced) != last:
            last, since, t_moved = len(replaced), now, None
        if not moved:
            t_moved = None
        elif t_moved is None:
            t_moved, cpu = now, cpu_now()
        if gone and (before <= replaced or now - since > 10):
            break
        if now - t1 > 900:
            raise RuntimeError(f"re-encoding did not finish in 900 s: {len(replaced & before)} "
                               f"of {len(before)} records replaced")
        await asyncio.sleep(0.5)
    assert t_moved is not None
    out["recode_wall_s"] = t_moved - t1
    out["gone_wall_s"] = now - t1
    out["grace_s"] = read_limit_s(int(c.config["ec"]["fragment_timeout_ms"]))
    out["records_replaced"] = len(replaced & before)
    st = await _status(c)
    new = {_key(r): r for ps in st.values() for p in ps if p["partition"] == 0
           for r in p["records"] if r.get("replaces")}  # both DCs' new records, once each
    out["recoded_mb"] = sum(r.get("bytes", 0) for r in new.values()) / 1e6
    codec_cpu = sum(_metric(c, n, "ambry_ec_recode_cpu_seconds_total") for n in coords)
    out["recoded_segments"] = sum(_metric(c, n, "ambry_ec_recoded_segments_total")
                                  for n in coords)
    out["dropped_fragments"] = sum(_metric(c, n, "ambry_ec_dropped_fragments_total")
                                   for n in coords)
    out["mb_per_cpu_s"] = out["recoded_mb"] / cpu if cpu else 0.0
    out["codec_mb_per_cpu_s"] = out["recoded_mb"] / codec_cpu if codec_cpu else 0.0
    out["disk_after"] = disk_bytes(c, 0)
    out["sealed_disk_after"] = disk_bytes(c, 0, sealed_only=True)
    out["sealed_live_after"] = sealed_payload_bytes(c, 0, dead_text)
    out["kinds_after"] = disk_bytes_by_kind(c, 0)
    out["unreadable"] = await verify_all(c, replicas, live)
    not_deleted = 0
    for n in replicas:
        async with c.nodes[n].client() as cl:
            for bid in dead:
                try:
                    await cl.get_bytes(bid)
                    not_deleted += 1
                except BlobDeleted:
                    pass
                except Exception:  # noqa: BLE001 - counted
                    not_deleted += 1
    out["not_deleted"] = not_deleted
    return out


def _verdict(unreadable: int) -> str:
    return "yes" if unreadable == 0 else f"NO: {unreadable} failed"


def report(rows: list[dict[str, Any]]) -> None:
    print("\n### Bytes on disk per byte stored (2 datacenters; goal <= 3.0x at k=4 m=2)\n")
    print("| profile | blob | stored | replicated control | ec before | ec after | "
          "sealed only: before | sealed only: after | every blob verified |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['profile']} k={r['k']} m={r['m']} | {r['blob'] // 1024} KiB | "
              f"{r['stored'] / MiB:.0f} MiB | {r['control']:.2f}x | {r['before']:.2f}x | "
              f"{r['after']:.2f}x | {r['sealed_before']:.2f}x | {r['sealed_after']:.2f}x | "
              f"{_verdict(r['unreadable'])} |")
    print("\n### Encode throughput\n")
    print("| profile | blob | MB encoded (both DCs) | wall s | MB per CPU-second of the "
          "coordinating processes | MB per CPU-second in the codec |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['profile']} | {r['blob'] // 1024} KiB | {r['encoded_mb']:.1f} | "
              f"{r['encode_wall_s']:.1f} | {r['encode_mb_per_cpu_s']:.0f} | "
              f"{r['codec_mb_per_cpu_s']:.0f} |")
    print("\n### GETs (node protocol, whole blobs, every reply checked)\n")
    print("| profile | blob | case | GET/s | MB/s | p99 ms | errors |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        for case, (ops, mbs, p99, err) in r.get("get", {}).items():
            print(f"| {r['profile']} | {r['blob'] // 1024} KiB | {case} | {ops:.0f} | "
                  f"{mbs:.1f} | {p99:.1f} | {err} |")
    print()
    print("### Where the bytes are (partition 0, every node; MiB allocated, before -> after)\n")
    kinds = list(rows[0]["kinds_before"]) if rows else []
    print("| profile | blob | " + " | ".join(kinds) + " | segments left replicated: "
          "small records |")
    print("|---|---:|" + "---:|" * len(kinds) + "---:|")
    for r in rows:
        cells = [f"{r['kinds_before'][k] / MiB:.1f} -> {r['kinds_after'][k] / MiB:.1f}"
                 for k in kinds]
        print(f"| {r['profile']} | {r['blob'] // 1024} KiB | " + " | ".join(cells) +
              f" | {r['left_small']} |")
    print()
    comp = [r for r in rows if r.get("compaction")]
    if comp:
        print("### Compaction of encoded segments: every other blob of the encoded partition "
              "deleted, re-encoded without them\n")
        print("Bytes on disk per byte of LIVE data (all data / sealed segments only), before "
              "and after the re-encoding; fragment files of every node.\n")
        print("| profile | blob | live stored | all data: before -> after | sealed only: "
              "before -> after | fragment MiB: before -> after | records re-encoded | every "
              "live blob verified | every deleted one deleted |")
        print("|---|---:|---:|---:|---:|---:|---:|---|---|")
        for r in comp:
            x = r["compaction"]
            fb, fa = x["kinds_before"]["fragments"], x["kinds_after"]["fragments"]
            print(f"| {r['profile']} k={r['k']} m={r['m']} | {r['blob'] // 1024} KiB | "
                  f"{x['live_stored'] / MiB:.0f} MiB | {x['disk_before'] / x['live_stored']:.2f}x"
                  f" -> {x['disk_after'] / x['live_stored']:.2f}x | "
                  f"{x['sealed_disk_before'] / x['sealed_live_before']:.2f}x -> "
                  f"{x['sealed_disk_after'] / x['sealed_live_after']:.2f}x | "
                  f"{fb / MiB:.1f} -> {fa / MiB:.1f} ({fa / fb:.2f}x) | "
                  f"{x['records_replaced']} of {x['records']} | {_verdict(x['unreadable'])} | "
                  f"{_verdict(x['not_deleted'])} |")
        print("\n| profile | blob | deletes: s | wall s from the last delete: re-encoded "
              "and every replica moved | : old fragments gone (read grace) | MB re-encoded "
              "(both DCs) | MB per CPU-second of the coordinating processes (until moved) | "
              "MB per CPU-second in the codec | segments re-encoded / fragment files dropped "
              "(coordinators' metrics) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in comp:
            x = r["compaction"]
            print(f"| {r['profile']} | {r['blob'] // 1024} KiB | {x['delete_s']:.1f} | "
                  f"{x['recode_wall_s']:.1f} | {x['gone_wall_s']:.1f} ({x['grace_s']:.0f}) | "
                  f"{x['recoded_mb']:.1f} | "
                  f"{x['mb_per_cpu_s']:.0f} | {x['codec_mb_per_cpu_s']:.0f} | "
                  f"{x['recoded_segments']:.0f} / {x['dropped_fragments']:.0f} |")
        print("\n| profile | blob | " + " | ".join(kinds) + " |")
        print("|---|---:|" + "---:|" * len(kinds))
        for r in comp:
            x = r["compaction"]
            cells = [f"{x['kinds_before'][k] / MiB:.1f} -> {x['kinds_after'][k] / MiB:.1f}"
                     for k in kinds]
            print(f"| {r['profile']} | {r['blob'] // 1024} KiB | " + " | ".join(cells) + " |")
        print()
    for r in rows:
        print(f"- {r['profile']} {r['blob'] // 1024} KiB: freed segments per replica "
              f"{r['freed_segments']}; payload in sealed segments {r['sealed_stored'] / MiB:.1f} MiB (replica average)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI")
    ap.add_argument("--profile", choices=sorted(PROFILES), action="append")
    ap.add_argument("--blob-kib", type=int, action="append")
    ap.add_argument("--total-mib", type=int, default=48, help="per partition")
    ap.add_argument("--segment-mib", type=int, default=4)
    ap.add_argument("--get-s", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args(argv)
    print_run_header("benchmarks/bench_warm.py", argv if argv is not None else sys.argv[1:])
    if a.smoke:
        profiles, blobs, total, seg, get_s = ["local"], [200], 4, 1, 1.0
    else:
        profiles = a.profile or ["local", "bench-ec"]
        blobs = a.blob_kib or [200, 4]
        total, seg, get_s = a.total_mib, a.segment_mib, a.get_s
    rows = []
    for prof in profiles:
        for kib in blobs:
            with tempfile.TemporaryDirectory(prefix="bench-warm-") as d:
                t0 = time.monotonic()
                # at least 4 records a segment and 8 sealed segments (4 MiB chunks too)
                seg_b = max(seg * MiB, 4 * (kib * 1024 + 4096))
                total_b = max(total * MiB, 9 * seg_b)
                rows.append(asyncio.run(run_profile(prof, kib * 1024, total_b, seg_b,
                                                    get_s, a.concurrency, Path(d))))
                print(f"# {prof}, {kib} KiB blobs: {time.monotonic() - t0:.0f} s", flush=True)
    report(rows)
    bad = sum(r["unreadable"] for r in rows)
    bad += sum(r["compaction"]["unreadable"] + r["compaction"]["not_deleted"]
               for r in rows if r.get("compaction"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
