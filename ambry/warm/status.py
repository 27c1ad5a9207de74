"""The cluster-wide view of the warm tier that ``ambry admin ec-status`` prints: per partition
and datacenter, its state (replicated / encoding / encoded / degraded), its encoded segments,
where each fragment is and whether it is healthy, and the bytes freed and held.

Two halves: :func:`survey` asks every node (``ec_status``, and ``ec_frag_list`` or, with
``verify``, ``ec_frag_stat`` of every recorded fragment) and :func:`summarize` turns those
answers into rows, a pure function of values (unit-tested without nodes).

A partition's state in a datacenter:

* ``degraded``: a fragment of an encoded segment is missing, torn, fails its checksum (with
  ``verify``) or its node does not answer;
* ``encoding``: its coordinator is encoding a segment now;
* ``replicated``: no segment is encoded in the datacenter (yet, or the policy is
  ``replicated``);
* ``encoded``: segments are encoded and every fragment is healthy (``backlog_bytes`` says how
  much sealed data still waits: its replicas' other PUTs, or its age).

Does not own the node ops it calls (``ambry.storage.fragments``) nor repairing what it finds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ambry.common.config import ClusterMap
from ambry.ec.fragfile import HEADER_BYTES
from ambry.ec.layout import SegmentLayout
from ambry.protocol.client import NodeClient

__all__ = ["UUID_BATCH", "PeerSilent", "Survey", "ask_about_blobs", "fragment_file_bytes",
           "replica_rows", "summarize", "survey"]


@dataclass
class Survey:
    """What the nodes answered; ``errors[node]`` when a node did not."""

    status: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fragment_bytes: dict[str, dict[int, int]] = field(default_factory=dict)
    #: node -> partition -> {(source, segment, generation, fragment): file bytes}
    listings: dict[str, dict[int, dict[tuple[str, int, int, int], int]]] = \
        field(default_factory=dict)
    #: (node, partition, source, segment, generation, fragment) -> ec_frag_stat reply
    stats: dict[tuple[str, int, str, int, int, int], dict[str, Any]] = \
        field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def fragment_file_bytes(k: int, m: int, stripe_bytes: int, original_bytes: int) -> int:
    """The exact length of a complete fragment file (``fragfile``: header, table, blocks)."""
    layout = SegmentLayout.from_stripe_bytes(k, m, stripe_bytes, original_bytes)
    return HEADER_BYTES + 8 * layout.stripe_count + 8 + layout.fragment_bytes


async def _ask(c: NodeClient, op: str, args: dict[str, Any] | None, timeout_ms: int
               ) -> dict[str, Any]:
    reply = await c.request(op, args, timeout_ms=timeout_ms)
    await reply.release()
    return dict(reply.header)


class PeerSilent(Exception):
    """A replica that did not answer ``ec_status`` (``node``; the error in ``cause``)."""

    def __init__(self, node: str, cause: BaseException) -> None:
        super().__init__(f"{node}: {cause!r}")
        self.node, self.cause = node, cause


async def replica_rows(cmap: ClusterMap, client: Callable[[str], NodeClient], partition: int,
                       datacenter: str, timeout_ms: int, skip: Collection[str] = ()
                       ) -> dict[str, dict[str, Any] | None]:
    """Replica node -> its ``ec_status`` row of ``partition`` (None if it has none), for
    every replica of the partition in ``datacenter`` not in ``skip``, asked one at a time;
    :class:`PeerSilent` for the first that does not answer."""
    out: dict[str, dict[str, Any] | None] = {}
    for peer in cmap.replicas_in(partition, datacenter):
        if peer.id in skip:
            continue
        try:
            rows = (await _ask(client(peer.id), "ec_status", None, timeout_ms))["partitions"]
        except Exception as e:
            raise PeerSilent(peer.id, e) from e
        out[peer.id] = next((p for p in rows if p["partition"] == partition), None)
    return out


#: blob uuids per ec_missing / ec_live question (the ops take at most 10000)
UUID_BATCH = 4096


async def ask_about_blobs(client: Callable[[str], NodeClient], peers: Collection[str], op: str,
                          partition: int, uuids: list[bytes], timeout_ms: int
                          ) -> dict[str, set[bytes]]:
    """Peer -> the uuids among ``uuids`` it names in its answer to ``op`` (``ec_missing``:
    those it lacks; ``ec_live``: those it holds alive), asked peer by peer in batches;
    :class:`PeerSilent` for the first that does not answer."""
    field = {"ec_missing": "missing", "ec_live": "live"}[op]
    out: dict[str, set[bytes]] = {}
    for peer in peers:
        named: set[bytes] = set()
        for i in range(0, len(uuids), UUID_BATCH):
            try:
                answer = await _ask(client(peer), op, {"partition": partition,
                                                      "uuids": uuids[i:i + UUID_BATCH]},
                                    timeout_ms)
            except Exception as e:
                raise PeerSilent(peer, e) from e
            named.update(bytes(u) for u in answer[field])
        out[peer] = named
    return out


async def survey(cmap: ClusterMap, client: Callable[[str], NodeClient], *,
                 verify: bool = False, timeout_ms: int = 5000) -> Survey:
    """Ask every node of the map for its replicas' warm-tier state and its fragment files."""
    sv = Survey()

    async def status_of(node_id: str) -> None:
        try:
            r = await _ask(client(node_id), "ec_status", None, timeout_ms)
        except Exception as e:  # noqa: BLE001 - reported as unreachable
            sv.errors[node_id] = str(e) or type(e).__name__
            return
        sv.status[node_id] = list(r["partitions"])
        sv.fragment_bytes[node_id] = {int(p): int(b) for p, b in r.get("fragment_bytes", [])}

    await asyncio.gather(*(status_of(n.id) for n in cmap.nodes))
    ec_parts = [p.id for p in cmap.partitions if p.policy is not None]

    async def listing_of(node_id: str) -> None:
        if node_id in sv.errors:
            return
        out: dict[int, dict[tuple[str, int, int, int], int]] = {}
        try:
            for pid in ec_parts:
                r = await _ask(client(node_id), "ec_frag_list", {"partition": pid}, timeout_ms)
                out[pid] = {(str(s), int(g0), int(g1), int(i)): int(b)
                            for s, g0, g1, i, b in r["fragments"]}
        except Exception as e:  # noqa: BLE001 - reported as unreachable
            sv.errors[node_id] = str(e) or type(e).__name__
            return
        sv.listings[node_id] = out

    await asyncio.gather(*(listing_of(n.id) for n in cmap.nodes))
    if verify:
        async def stat(key: tuple[str, int, str, int, int, int]) -> None:
            node, pid, source, seg, gen, i = key
            try:
                sv.stats[key] = await _ask(client(node), "ec_frag_stat", {
                    "partition": pid, "source": source, "segment": seg, "generation": gen,
                    "fragment": i}, timeout_ms=max(timeout_ms, 60_000))
            except Exception as e:  # noqa: BLE001 - shown as the fragment's problem
                sv.stats[key] = {"ok": False, "problems": [str(e) or type(e).__name__]}

        wanted = {(node, pid, *f) for node, parts in sv.listings.items()
                  for pid, frags in parts.items() for f in frags}
        await asyncio.gather(*(stat(k) for k in sorted(wanted)))
    return sv


def _fragment_health(sv: Survey, pid: int, rec: Mapping[str, Any], i: int, node: str
                     ) -> tuple[str, str]:
    if node in sv.errors:
        return "unreachable", sv.errors[node]
    key = (str(rec["source"]), int(rec["segment"]), int(rec["generation"]), i)
    size = sv.listings.get(node, {}).get(pid, {}).get(key)
    if size is None:
        return "missing", ""
    want = fragment_file_bytes(rec["k"], rec["m"], rec["stripe_bytes"], rec["bytes"])
    if size != want:
        return "torn", f"{size} bytes, {want} expected"
    st = sv.stats.get((node, pid, *key))
    if st is not None and not st.get("ok"):
        return "damaged", "; ".join(st.get("problems", []))
    return "ok", ""


def summarize(cmap: ClusterMap, sv: Survey) -> list[dict[str, Any]]:
    """One row per (partition, datacenter): state, segments and their fragments' health,
    coordinator backlog, replicas' freed segments and bytes."""
    rows: list[dict[str, Any]] = []
    for p in cmap.partitions:
        for dc in cmap.datacenters:
            here = [n.id for n in cmap.replicas_in(p.id, dc.name)]
            records: dict[tuple[str, int, int], dict[str, Any]] = {}
            replicas: dict[str, dict[str, Any]] = {}
            job: dict[str, Any] | None = None
            for node in here:
                for st in sv.status.get(node, []):
                    if st.get("partition") != p.id:
                        continue
                    replicas[node] = {
                        "freed_segments": list(st.get("freed_segments", [])),
                        "freed_segment_bytes": st.get("freed_segment_bytes", 0),
                        "freed_allocated_bytes": st.get("freed_allocated_bytes", 0)}
                    for r in st.get("records", []):
                        if r["datacenter"] == dc.name:
                            records.setdefault((r["source"], r["segment"], r["generation"]), r)
                    if st.get("job") and st["job"].get("coordinator"):
                        job = st["job"]
            segments = []
            replaced = []
            for key in sorted(records):
                r = records[key]
                if r.get("replaced"):
                    # re-encoded without its dead blobs: its fragments go once no replica
                    # reads through them (ambry/warm/recode.py)
                    left = sum(1 for i, node in enumerate(r["placement"])
                               if (key + (i,)) in sv.listings.get(node, {}).get(p.id, {}))
                    replaced.append({"source": r["source"], "segment": r["segment"],
                                     "generation": r["generation"], "bytes": r["bytes"],
                                     "fragments_left": left})
                    continue
                frags = []
                for i, node in enumerate(r["placement"]):
                    health, detail = _fragment_health(sv, p.id, r, i, node)
                    frags.append({"fragment": i, "node": node, "health": health,
                                  "role": "data" if i < r["k"] else "parity",
                                  **({"detail": detail} if detail else {})})
                segments.append({"source": r["source"], "segment": r["segment"],
                                 "generation": r["generation"], "bytes": r["bytes"],
                                 "blobs": r["blobs"], "k": r["k"], "m": r["m"],
                                 "healthy": all(f["health"] == "ok" for f in frags),
                                 "fragments": frags})
            unreachable = [n for n in here if n in sv.errors]
            if any(not s["healthy"] for s in segments):
                state = "degraded"
            elif job is not None and job.get("encoding"):
                state = "encoding"
            elif not segments:
                state = "replicated"
            else:
                state = "encoded"
            rows.append({
                "partition": p.id, "datacenter": dc.name,
                "policy": ({"ec": {"k": p.policy.k, "m": p.policy.m}}
                           if p.policy is not None else "replicated"),
                "state": state, "segments": segments, "replaced_segments": replaced,
                "encoded_bytes": sum(s["bytes"] for s in segments),
                "backlog_bytes": job.get("backlog_bytes", 0) if job else 0,
                # left replicated: small records (freeing them would not pay for fragments)
                "left_small_segments": job.get("left_small_segments", 0) if job else 0,
                "left_small_bytes": job.get("left_small_bytes", 0) if job else 0,
                "coordinator": here[0] if here else None,
                "encoding": job.get("encoding") if job else None,
                "replicas": replicas, "unreachable_replicas": unreachable})
    return rows
