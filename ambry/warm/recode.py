"""Compaction of encoded segments: re-encode an EC_SEGMENT record's live blobs into a new
generation, and drop the old fragments once no replica of the datacenter reads through them
(docs/erasure-coding.md, "Compaction of encoded segments").

Runs on the encoding coordinator of the partition in its datacenter, after the encode job:

1. **Plan** (every ``storage.compaction_interval_s``, as the log's own compaction). For each
   current (not replaced) record of this datacenter whose fragments are
   all intact (the repair's last survey), the blobs dead here (deleted, or expired and not
   made permanent, longer than ``storage.compaction_retention_s`` ago: compaction's own rule,
   ``indexentry.is_dead``) and what they hold. Records whose dead bytes (blobs dead plus
   everything else the encoded segment held that no replica reads through it: tombstones,
   TTL updates, the segment header) are below ``ec.recode_min_reclaim_ratio`` of the record
   are left alone.
2. **Ask.** Every replica of the partition in the datacenter must hold each dropped blob dead
   too (``ec_live``); a blob one of them holds alive stays. A replica that does not answer:
   the record waits.
3. **Re-encode.** The live records, read whole through the old fragments and checked (record
   header checksum and body checksum; a failed check reads again rebuilding from the other
   fragments), are laid out end to end as a new encoded segment and written by the same
   stripe loop as a first encoding (``encoder.write_fragments``). The new record carries
   their new offsets and ``replaces`` = the old record's key, and its key is the old one's
   next generation (``ecstate.successor_key``: deterministic, so a coordinator killed
   mid-way writes the same files again). Every blob dead at every replica: the new record
   is empty (no fragments).
4. **Move.** Each replica, once it holds the new record and its fragments are all intact,
   moves its freed segments onto it; a dropped blob's payload becomes GONE and its PUT
   leaves the index, as compaction drops a PUT (``EcState.remap``).
5. **Drop.** When every replica of the datacenter answers that it holds the new record and
   none of its freed segments reads through the old one (``ec_status`` ``refs``), and a read
   begun before a replica moved can no longer be running (``fetch.read_limit_s`` later), the
   old fragment files are deleted on their nodes (a node that does not answer: next pass).

Does not own the freed maps (``ambry.storage.ecstate``), the stripe loop (``encoder``) nor
reading fragments (``fetch``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import xxhash

from ambry.common.config import ClusterConfig, EcConfig
from ambry.common.errors import AmbryError, DataCorrupt, InvalidArgument
from ambry.ec.codec import DEFAULT_BACKEND
from ambry.ec.layout import SegmentLayout, Stripe
from ambry.ec.placement import place_in_datacenter
from ambry.protocol.client import NodeClient
from ambry.storage.api import EcRecord, EcStore, RunIO
from ambry.storage.ecstate import DIR_ENTRY, current, ec_key, key_text, successor_key
from ambry.storage.format import RECORD_HEADER_SIZE, decode_record_header
from ambry.warm.encoder import EncodeFailed, write_fragments
from ambry.warm.fetch import FragmentFetcher, read_limit_s
from ambry.warm.repair import Survey, tables_hash
from ambry.warm.status import PeerSilent, ask_about_blobs, replica_rows

__all__ = ["Recoder"]

log = logging.getLogger(__name__)


class Recoder:
    """Re-encoding and dropping of one partition's encoded segments in this datacenter."""

    def __init__(self, node_id: str, datacenter: str, config: ClusterConfig, store: EcStore,
                 ec: EcConfig, run_io: RunIO, client: Callable[[str], NodeClient],
                 fetcher: FragmentFetcher, survey: Callable[[], Survey],
                 caught_up: Callable[[Collection[str]], Awaitable[bool]]) -> None:
        self.node_id, self.dc, self.cfg = node_id, datacenter, config
        self.store, self.ec, self.run_io = store, ec, run_io
        self.client, self.fetcher = client, fetcher
        self.survey, self.caught_up = survey, caught_up
        self.pid = store.partition_id
        self.recode_cpu_s = 0.0  # CPU seconds inside the codec re-encoding
        self.recoded_segments = 0
        self.reclaimed_bytes = 0  # encoded bytes given up by re-encoding (per datacenter)
        self.dropped_fragments = 0
        self.spare_rebuilds = 0  # records re-encoded off a node silent too long
        self.running: str | None = None  # the record being re-encoded
        self._dropped: set[bytes] = set()  # replaced records whose fragments are all gone
        #: fragment node -> since when (monotonic) it has not answered the survey
        self._silent_since: dict[str, float] = {}
        self._told_no_spare: set[bytes] = set()
        self._next_plan = 0.0
        #: replaced record -> since when no replica reads through it (monotonic)
        self._unreferenced_since: dict[bytes, float] = {}

    # ---------------------------------------------------------------- one pass
    async def run_once(self) -> int:
        """Re-encode what pays now and drop what nobody reads; returns records re-encoded."""
        done = 0
        survey = self.survey()
        healthy = survey.healthy_keys
        now = time.monotonic()
        recs: list[EcRecord] = []
        if now >= self._next_plan:
            # planning looks up every blob of every record in the index: as often as the
            # log's own compaction runs (storage.compaction_interval_s)
            self._next_plan = now + self.cfg.storage.compaction_interval_s
            recs = [r for r in current(await self.run_io(self.store.ec_records))
                    if r.datacenter == self.dc and r.key in healthy and r.original_bytes > 0]
        for rec in recs:
            try:
                if await self.maybe_recode(rec):
                    done += 1
            except (EncodeFailed, AmbryError, OSError, TimeoutError) as e:
                log.warning("partition %d: re-encoding segment %d of %s failed (%s); next "
                            "pass tries again", self.pid, rec.segment, rec.source_hex, e)
        done += await self.rebuild_on_spares(survey)
        await self.drop_replaced()
        return done

    # ---------------------------------------------------------------- spare nodes
    async def rebuild_on_spares(self, survey: Survey) -> int:
        """Re-encode, onto a placement without them, the records with fragments on nodes
        silent for ``ec.spare_rebuild_after_s`` (all their blobs: the silent nodes cannot
        say which are dead), when the datacenter has spare nodes; returns records done."""
        now = time.monotonic()
        silent = {h.record.placement[i] for h in survey.records for i in h.unknown}
        for node in list(self._silent_since):
            if node not in silent:
                del self._silent_since[node]
        for node in silent:
            self._silent_since.setdefault(node, now)
        gone = {n for n, t in self._silent_since.items()
                if now - t >= self.ec.spare_rebuild_after_s}
        if not gone:
            return 0
        done = 0
        for h in survey.records:
            rec = h.record
            lost = {rec.placement[i] for i in h.unknown}
            if not lost or not lost <= gone or len(h.intact) < rec.k or h.missing:
                continue  # not (only) long-silent nodes, or a repair in place comes first
            try:
                placement = place_in_datacenter(self.cfg.cluster_map, self.pid, self.dc,
                                                rec.k + rec.m, previous=rec.placement,
                                                unavailable=gone)
            except InvalidArgument:
                if rec.key not in self._told_no_spare:
                    self._told_no_spare.add(rec.key)
                    log.warning("partition %d: segment %d of %s has fragments on %s, silent "
                                "for %.0f s, and %s has no spare node: its reads rebuild "
                                "around them until they come back", self.pid, rec.segment,
                                rec.source_hex, sorted(lost), self.ec.spare_rebuild_after_s,
                                self.dc)
                continue
            if not await self.caught_up(gone):
                continue
            log.warning("partition %d: segment %d of %s: %s silent for %.0f s; re-encoding it "
                        "onto %s", self.pid, rec.segment, rec.source_hex, sorted(lost),
                        self.ec.spare_rebuild_after_s, list(placement.nodes))
            try:
                await self.recode(rec, rec.directory, placement.nodes)
            except (EncodeFailed, AmbryError, OSError, TimeoutError) as e:
                log.warning("partition %d: rebuilding segment %d of %s on spares failed (%s); "
                            "next pass tries again", self.pid, rec.segment, rec.source_hex, e)
                continue
            self.spare_rebuilds += 1
            done += 1
        return done

    async def maybe_recode(self, rec: EcRecord) -> bool:
        live, dead = await self.run_io(self.store.ec_recode_plan, rec.key)
        entries = {e[0]: e for e in rec.entries()}
        if dead:
            alive = await self._alive_somewhere(dead)
            if alive is None:
                return False  # a replica did not answer: wait
            if alive:
                live += b"".join(DIR_ENTRY.pack(*entries[u]) for u in alive)
        live_bytes = sum(e[2] for e in DIR_ENTRY.iter_unpack(live))
        if rec.original_bytes - live_bytes < self.ec.recode_min_reclaim_ratio * \
                rec.original_bytes:
            return False
        if not await self.caught_up(()):
            return False
        await self.recode(rec, live)
        return True

    async def _alive_somewhere(self, uuids: list[bytes]) -> set[bytes] | None:
        """The blobs among ``uuids`` a replica of this datacenter holds alive; None when one
        does not answer."""
        peers = [p.id for p in self.cfg.cluster_map.replicas_in(self.pid, self.dc)
                 if p.id != self.node_id]
        try:
            alive = await ask_about_blobs(self.client, peers, "ec_live", self.pid, uuids,
                                          self.ec.fragment_timeout_ms)
        except PeerSilent as e:
            log.info("partition %d: cannot ask %s which blobs it holds alive (%r); "
                     "re-encoding waits", self.pid, e.node, e.cause)
            return None
        return set().union(*alive.values())

    # ---------------------------------------------------------------- re-encode
    async def recode(self, rec: EcRecord, live: bytes,
                     nodes: Sequence[str] | None = None) -> EcRecord:
        """Write the live blobs of ``rec`` (``live``: its directory entries to keep) as a new
        encoded segment on ``nodes`` (default: where ``rec``'s fragments are, as long as
        those nodes are in the map) and append the record that replaces ``rec``."""
        keep = sorted(DIR_ENTRY.iter_unpack(live), key=lambda e: e[1])
        size = sum(e[2] for e in keep)
        directory = bytearray()
        off = 0
        for uuid, _old, total, body in keep:
            directory += DIR_ENTRY.pack(uuid, off, total, body)
            off += total
        source, segment, generation = successor_key(rec)
        k, m = rec.k, rec.m
        started = time.monotonic()
        self.running = key_text(rec)
        try:
            if not keep:
                new = EcRecord(source, segment, generation, self.dc, k, m, DEFAULT_BACKEND,
                               rec.stripe_bytes, 0, (), tables_hash([]), b"", rec.key)
            else:
                if nodes is None:
                    try:
                        nodes = place_in_datacenter(
                            self.cfg.cluster_map, self.pid, self.dc, k + m,
                            previous=rec.placement if len(rec.placement) == k + m else None
                        ).nodes
                    except InvalidArgument as e:
                        raise EncodeFailed(str(e)) from None
                layout = SegmentLayout.plan(k, m, size, self.ec.stripe_bytes)
                log.info("partition %d: re-encoding segment %d of %s: %d of %d blobs, %d of "
                         "%d bytes, onto %s", self.pid, rec.segment, rec.source_hex,
                         len(keep), rec.blobs, size, rec.original_bytes, list(nodes))
                done = await write_fragments(
                    partition=self.pid, source_hex=source.hex(), segment=segment,
                    generation=generation, layout=layout, nodes=nodes,
                    codec=self.fetcher.codec(k, m), client=self.client,
                    timeout_ms=self.ec.fragment_timeout_ms,
                    rate_bytes_per_s=self.ec.encode_rate_bytes_per_s,
                    read=_RecordStream(self, rec, keep).read)
                self.recode_cpu_s += done.codec_cpu_s
                new = EcRecord(source, segment, generation, self.dc, k, m, DEFAULT_BACKEND,
                               layout.stripe_bytes, size, tuple(nodes), done.tables_xxh3,
                               bytes(directory), rec.key)
        finally:
            self.running = None
        end = await self.run_io(self.store.ec_apply, ec_key(source, segment, generation),
                                new.to_props())
        await self.store.durable_async(end)
        self.recoded_segments += 1
        self.reclaimed_bytes += rec.original_bytes - size
        log.info("partition %d: segment %d of %s re-encoded as generation %d (%d -> %d bytes, "
                 "%d -> %d blobs) in %.2f s", self.pid, rec.segment, rec.source_hex,
                 generation, rec.original_bytes, size, rec.blobs, len(keep),
                 time.monotonic() - started)
        return new

    async def read_record(self, rec: EcRecord, offset: int, total: int, body: int) -> bytes:
        """One whole record of an encoded segment, its header and body checked (a failed
        check reads again, finding and rebuilding around the one bad fragment)."""
        def ok(data: bytes) -> bool:
            try:
                h = decode_record_header(data[:RECORD_HEADER_SIZE])
            except DataCorrupt:
                return False
            return h.total_len == total and h.body_xxh3 == body and \
                xxhash.xxh3_64_intdigest(data[RECORD_HEADER_SIZE:]) == body

        data = await self.fetcher.read(self.pid, rec, offset, total)
        if ok(data):
            return data
        log.warning("partition %d: a record of segment %d failed its check read through the "
                    "fragments; rebuilding", self.pid, rec.segment)
        return await self.fetcher.read(self.pid, rec, offset, total, rebuild=True, check=ok)

    # ---------------------------------------------------------------- drop
    async def drop_replaced(self) -> int:
        """Delete the fragments of replaced records that no replica of this datacenter reads
        through any more; returns fragment files deleted."""
        recs = [r for r in await self.run_io(self.store.ec_records) if r.datacenter == self.dc]
        successor = {r.replaces: r for r in recs if r.replaces}
        old = [r for r in recs if r.key in successor and r.placement
               and r.key not in self._dropped]
        if not old:
            return 0
        views = await self._replica_views()
        if views is None:
            return 0
        deleted = 0
        for r in old:
            name, nxt = key_text(r), key_text(successor[r.key])
            if not all(nxt in v["records"] and name not in v["refs"] for v in views):
                # a replica does not know the new record yet, or reads through r
                self._unreferenced_since.pop(r.key, None)
                continue
            # a read a replica began through r before it moved may still be running: the
            # fragments go once no such read can be (fetch.read_limit_s)
            since = self._unreferenced_since.setdefault(r.key, time.monotonic())
            if time.monotonic() - since < read_limit_s(self.ec.fragment_timeout_ms):
                continue
            answered = 0
            for i, node in enumerate(r.placement):
                try:
                    reply = await self.client(node).request(
                        "ec_frag_delete", {"partition": self.pid, "source": r.source_hex,
                                           "segment": r.segment, "generation": r.generation,
                                           "fragment": i},
                        timeout_ms=self.ec.fragment_timeout_ms)
                    await reply.release()
                except (AmbryError, OSError, TimeoutError) as e:
                    log.info("partition %d: cannot delete fragment %d of replaced segment %s "
                             "on %s (%s); next pass", self.pid, i, name, node, e)
                    continue
                answered += 1
                deleted += bool(reply.header.get("deleted"))
            if answered == len(r.placement):
                self._dropped.add(r.key)
                log.info("partition %d: fragments of replaced segment %s dropped", self.pid,
                         name)
        self.dropped_fragments += deleted
        return deleted

    async def _replica_views(self) -> list[dict[str, Any]] | None:
        """Per replica of this datacenter: the records it holds and those its freed segments
        read through (as key texts); None when one does not answer."""
        try:
            rows = await replica_rows(self.cfg.cluster_map, self.client, self.pid, self.dc,
                                      self.ec.fragment_timeout_ms)
        except PeerSilent as e:
            log.info("partition %d: cannot ask %s what it reads through (%r); old fragments "
                     "stay", self.pid, e.node, e.cause)
            return None
        if any(p is None for p in rows.values()):
            return None
        return [{"records": {f"{r['source']}/{r['segment']}/{r['generation']}"
                             for r in p.get("records") or ()},
                 "refs": set(p.get("refs") or ())} for p in rows.values() if p is not None]


class _RecordStream:
    """The new encoded segment's bytes, stripe by stripe: the kept records end to end, each
    read whole and checked (memory: one stripe plus one record)."""

    def __init__(self, recoder: Recoder, rec: EcRecord,
                 keep: list[tuple[bytes, int, int, int]]) -> None:
        self.recoder, self.rec, self.keep = recoder, rec, keep
        self.next = 0
        self.buf = bytearray()

    async def read(self, st: Stripe) -> bytes:
        while len(self.buf) < st.data_bytes and self.next < len(self.keep):
            _uuid, off, total, body = self.keep[self.next]
            self.next += 1
            self.buf += await self.recoder.read_record(self.rec, off, total, body)
        out = bytes(self.buf[:st.data_bytes])
        del self.buf[:st.data_bytes]
        return out

