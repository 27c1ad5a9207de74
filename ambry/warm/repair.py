"""Health and repair of one partition's fragments in one datacenter (docs/erasure-coding.md,
"Repair").

A **survey** asks every node of the placements of the datacenter's EC_SEGMENT records (the
ones this node's replica holds) for its fragment files of the partition (``ec_frag_list``:
names, lengths, and the damage its scrub or a failed read found, ``fraghealth``) and sorts
each record's fragments into intact, missing (absent, torn, or damaged as a whole, on a node
that answered), damaged stripes, and unknown (the node did not answer). Every node surveys
the partitions it has a replica of: its freeing pass frees bytes only against records whose
k + m fragments are all intact, and the encode job re-encodes what only **lost** records
cover (more than m fragments missing: a datacenter wiped, whose replicas came back from the
other datacenter by replication; then the segments are encoded again locally from them).

The **repair** runs on the first replica of the partition in the datacenter that answers a
ping (the encoding coordinator, or the next one while it is down), every
``ec.repair_interval_s``. For each record with at least k intact fragments:

* a missing fragment on a node that answers (it came back wiped, or a replacement under the
  same id) is rebuilt whole: stripe by stripe, k other blocks are read (each checked against
  its fragment's checksum table), the lost block is rebuilt (``Codec.rebuild_window``) and
  streamed to the node (``ec_frag_write``); before the last block goes, the k + m checksum
  tables (the rebuilt one included) must hash to the record's ``tables_xxh3``, and the node's
  verify of the file must give the same table;
* damaged stripes of a fragment are rebuilt the same way and written in place
  (``ec_frag_patch``), where the node checks each block against its file's own table.

A node that does not answer is waited for. Rebuilding a dead node's fragment on a spare node
(``placement.rebuild_targets``) needs a new placement in the record and is not built yet.

Does not own the fragment files (the nodes' ``ambry.storage.fragments``), the reads of blobs
(``fetch``) or encoding (``job``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import xxhash

from ambry.common.config import ClusterConfig, EcConfig
from ambry.common.errors import AmbryError, DataCorrupt
from ambry.ec.codec import block_checksum
from ambry.ec.fragfile import FragmentHeader
from ambry.ec.layout import SegmentLayout, Stripe
from ambry.protocol.client import NodeClient
from ambry.storage import filenames
from ambry.storage.api import EcRecord, EcStore, RunIO
from ambry.storage.ecstate import current
from ambry.warm.fetch import FragmentFetcher

__all__ = ["FragmentRepair", "RecordHealth", "Survey"]

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class RecordHealth:
    record: EcRecord
    missing: tuple[int, ...] = ()  # fragments gone on nodes that answered: rebuild whole
    damaged: dict[int, tuple[int, ...]] = field(default_factory=dict)  # fragment -> stripes
    unknown: tuple[int, ...] = ()  # fragments on nodes that did not answer

    @property
    def healthy(self) -> bool:
        return not (self.missing or self.damaged or self.unknown)

    @property
    def lost(self) -> bool:
        """More than m fragments gone: the segment cannot be decoded in this datacenter."""
        return len(self.missing) > self.record.m

    @property
    def intact(self) -> list[int]:
        gone = set(self.missing) | set(self.unknown)
        return [i for i in range(self.record.k + self.record.m) if i not in gone]


@dataclass(frozen=True)
class Survey:
    records: tuple[RecordHealth, ...] = ()

    @property
    def healthy_keys(self) -> frozenset[bytes]:
        return frozenset(h.record.key for h in self.records if h.healthy)

    @property
    def lost_keys(self) -> frozenset[bytes]:
        return frozenset(h.record.key for h in self.records if h.lost)


def _expected_bytes(pid: int, rec: EcRecord, fragment: int) -> int:
    return FragmentHeader(rec.code, rec.k, rec.m, fragment, pid, rec.segment,
                          rec.generation, rec.original_bytes, rec.stripe_bytes).file_bytes


def tables_hash(tables: Sequence[Sequence[int]]) -> int:
    """What an EC_SEGMENT record's ``tables_xxh3`` is: the k + m per-stripe checksum tables,
    in fragment order (as ``job.EncodeJob`` computes it)."""
    return xxhash.xxh3_64_intdigest(b"".join(struct.pack(f"<{len(t)}Q", *t) for t in tables))


class FragmentRepair:
    """The survey and repair of one partition's fragments in this node's datacenter."""

    def __init__(self, node_id: str, datacenter: str, config: ClusterConfig, store: EcStore,
                 ec: EcConfig, run_io: RunIO, client: Callable[[str], NodeClient],
                 fetcher: FragmentFetcher) -> None:
        self.node_id, self.dc, self.cfg = node_id, datacenter, config
        self.store, self.ec, self.run_io = store, ec, run_io
        self.client, self.fetcher = client, fetcher
        self.pid = store.partition_id
        self.last = Survey()
        self._next_repair = 0.0
        self.fragments_rebuilt = 0
        self.stripes_patched = 0
        self.repair_failures = 0
        self._told_lost: set[bytes] = set()

    # ---------------------------------------------------------------- survey
    async def _listing(self, node: str) -> tuple[dict[str, int], dict[str, Any]] | None:
        try:
            reply = await self.client(node).request(
                "ec_frag_list", {"partition": self.pid}, timeout_ms=self.ec.fragment_timeout_ms)
            await reply.release()
        except (TimeoutError, AmbryError, OSError):
            return None
        names = {filenames.fragment_name(*f[:4]): int(f[4]) for f in reply.header["fragments"]}
        return names, dict(reply.header.get("damaged") or {})

    async def survey(self) -> Survey:
        # replaced (re-encoded) records are not surveyed: their fragments are on their way out
        recs = [r for r in current(await self.run_io(self.store.ec_records))
                if r.datacenter == self.dc]
        nodes = sorted({n for r in recs for n in r.placement})
        got = await asyncio.gather(*(self._listing(n) for n in nodes))
        listing = dict(zip(nodes, got, strict=True))
        out = []
        for r in recs:
            missing, unknown = [], []
            damaged: dict[int, tuple[int, ...]] = {}
            for i, node in enumerate(r.placement):
                ls = listing.get(node)
                if ls is None:
                    unknown.append(i)
                    continue
                name = filenames.fragment_name(r.source_hex, r.segment, r.generation, i)
                d = ls[1].get(name)
                if ls[0].get(name) != _expected_bytes(self.pid, r, i) or (d and d["whole"]):
                    missing.append(i)
                elif d:
                    damaged[i] = tuple(int(s) for s in d["stripes"])
            out.append(RecordHealth(r, tuple(missing), damaged, tuple(unknown)))
        self.last = Survey(tuple(out))
        return self.last

    # ---------------------------------------------------------------- who repairs
    async def drives(self) -> bool:
        """This node repairs the partition here when every replica listed before it in the
        datacenter is silent."""
        here = [r.id for r in self.cfg.cluster_map.replicas_in(self.pid, self.dc)]
        if self.node_id not in here:
            return False
        for peer in here[:here.index(self.node_id)]:
            try:
                reply = await self.client(peer).request("ping", timeout_ms=_PROBE_TIMEOUT_MS)
                await reply.release()
                return False
            except (TimeoutError, AmbryError, OSError):
                continue
        return True

    # ---------------------------------------------------------------- repair
    async def run_once(self, force: bool = False) -> Survey:
        """Survey; and, every ``ec.repair_interval_s`` when this node drives, repair."""
        survey = await self.survey()
        now = time.monotonic()
        if not force and now < self._next_repair:
            return survey
        self._next_repair = now + self.ec.repair_interval_s
        if all(h.healthy for h in survey.records) or not await self.drives():
            return survey
        for h in survey.records:
            if h.healthy:
                continue
            if h.lost:
                if h.record.key not in self._told_lost:
                    self._told_lost.add(h.record.key)
                    log.error("partition %d: segment %d of %s lost %d of its %d fragments in "
                              "%s: re-encoded from the replicas", self.pid, h.record.segment,
                              h.record.source_hex, len(h.missing), h.record.k + h.record.m,
                              self.dc)
                continue
            if len(h.intact) < h.record.k:
                continue  # wait for nodes that do not answer
            try:
                await self.repair(h)
            except (TimeoutError, AmbryError, OSError) as e:
                self.repair_failures += 1
                log.warning("partition %d segment %d: repair failed (%s); next pass tries "
                            "again", self.pid, h.record.segment, e)
        return await self.survey()

    async def _table(self, rec: EcRecord, i: int) -> list[int] | None:
        try:
            reply = await self.client(rec.placement[i]).request(
                "ec_frag_stat", {**self._names(rec, i), "verify": False},
                timeout_ms=self.ec.fragment_timeout_ms)
            await reply.release()
        except (TimeoutError, AmbryError, OSError):
            return None
        return list(reply.header["checksums"]) if reply.header["ok"] else None

    def _names(self, rec: EcRecord, i: int) -> dict[str, Any]:
        return {"partition": self.pid, "source": rec.source_hex, "segment": rec.segment,
                "generation": rec.generation, "fragment": i}

    async def repair(self, h: RecordHealth) -> None:
        rec = h.record
        got = await asyncio.gather(*(self._table(rec, i) for i in h.intact))
        tables = {i: t for i, t in zip(h.intact, got, strict=True) if t is not None}
        if len(tables) == rec.k + rec.m and tables_hash([tables[i] for i in range(len(tables))]
                                                        ) != rec.tables_xxh3:
            raise DataCorrupt(f"segment {rec.segment}: the fragments' checksum tables do not "
                              f"hash to the record's")
        for i in h.missing:
            await self.rebuild_fragment(rec, i, tables)
            self.fragments_rebuilt += 1
        for i, stripes in h.damaged.items():
            if i not in tables:
                continue
            layout = self._layout(rec)
            for s in stripes:
                block = await self._rebuild_block(rec, layout.stripe(s), i, tables)
                if block_checksum(block) != tables[i][s]:
                    raise DataCorrupt(f"segment {rec.segment} fragment {i} stripe {s}: the "
                                      f"rebuilt block does not match the fragment's table")
                reply = await self.client(rec.placement[i]).request(
                    "ec_frag_patch", {**self._names(rec, i), "stripe": s}, block,
                    timeout_ms=self.ec.fragment_timeout_ms)
                await reply.release()
                self.stripes_patched += 1
            log.info("partition %d: segment %d fragment %d on %s: stripes %s rebuilt from "
                     "%d others", self.pid, rec.segment, i, rec.placement[i], list(stripes),
                     rec.k)

    @staticmethod
    def _layout(rec: EcRecord) -> SegmentLayout:
        return SegmentLayout.from_stripe_bytes(rec.k, rec.m, rec.stripe_bytes,
                                               rec.original_bytes)

    async def _rebuild_block(self, rec: EcRecord, st: Stripe, lost: int,
                             tables: dict[int, list[int]]) -> bytes:
        """Block ``lost`` of stripe ``st`` from k other blocks that match their tables."""
        sources = [j for j in sorted(tables) if j != lost]
        good: dict[int, bytes] = {}
        pos = 0
        while len(good) < rec.k and pos < len(sources):
            batch = sources[pos:pos + rec.k - len(good)]
            pos += len(batch)
            got = await asyncio.gather(*(self.fetcher.window(
                self.pid, rec, j, st.fragment_offset, st.block_bytes) for j in batch),
                return_exceptions=True)
            for j, b in zip(batch, got, strict=True):
                if isinstance(b, bytes) and block_checksum(b) == tables[j][st.index]:
                    good[j] = b
        if len(good) < rec.k:
            raise DataCorrupt(f"segment {rec.segment} stripe {st.index}: {len(good)} intact "
                              f"blocks of the {rec.k} needed to rebuild fragment {lost}")
        codec = self.fetcher.codec(rec.k, rec.m)
        return await asyncio.get_running_loop().run_in_executor(
            None, codec.rebuild_window, good, lost)

    async def rebuild_fragment(self, rec: EcRecord, i: int,
                               tables: dict[int, list[int]]) -> None:
        """Rebuild fragment ``i`` whole onto its node, stripe by stripe (one stripe's k
        blocks in memory), at ``ec.encode_rate_bytes_per_s``."""
        layout = self._layout(rec)
        node = rec.placement[i]
        header = {"code": rec.code, "k": rec.k, "m": rec.m,
                  "original_bytes": rec.original_bytes, "stripe_bytes": rec.stripe_bytes}
        made: list[int] = []
        stripes = layout.stripes()
        started = time.monotonic()
        log.info("partition %d: rebuilding fragment %d of segment %d (%s) on %s from %d "
                 "others", self.pid, i, rec.segment, rec.source_hex, node, rec.k)
        for st in stripes:
            block = await self._rebuild_block(rec, st, i, tables)
            made.append(block_checksum(block))
            last = st.index == len(stripes) - 1
            if last:
                full = [made if j == i else tables.get(j) for j in range(rec.k + rec.m)]
                if all(t is not None for t in full) and \
                        tables_hash(full) != rec.tables_xxh3:  # type: ignore[arg-type]
                    raise DataCorrupt(f"segment {rec.segment}: fragment {i} rebuilt does not "
                                      f"match the record's checksum tables; not published")
            reply = await self.client(node).request(
                "ec_frag_write", {**self._names(rec, i), "header": header,
                                  "stripe": st.index, "finish": last}, block,
                timeout_ms=self.ec.fragment_timeout_ms)
            await reply.release()
            if last and (not reply.header.get("ok")
                         or list(reply.header["checksums"]) != made):
                raise DataCorrupt(f"fragment {i} on {node} read back differently after its "
                                  f"rebuild: {reply.header.get('problems')}")
            ahead = (st.segment_offset + st.data_bytes) / self.ec.encode_rate_bytes_per_s - \
                (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        log.info("partition %d: fragment %d of segment %d rebuilt on %s in %.2f s", self.pid,
                 i, rec.segment, node, time.monotonic() - started)
