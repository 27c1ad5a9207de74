"""The encoding coordinator of one partition in one datacenter: encodes a sealed segment of
its own replica into k + m fragments on the placement's nodes, verifies them, and appends the
EC_SEGMENT record (docs/erasure-coding.md, "States of a segment").

For one segment: read and check every record (``EcStore.ec_scan_segment``); ask every other
replica of the partition, in every datacenter, whether it still lacks any PUT of it (then it
waits: nobody may need to pull those records from here again); encode stripe by stripe (one
stripe in memory; the codec off the event loop) at ``ec.encode_rate_bytes_per_s``, sending
block i to node placement[i] (``ec_frag_write``); the last block makes each node verify its
file and answer its per-stripe checksum table, which must equal the coordinator's. Only then
the record is appended. A crash or a failure anywhere before that leaves the replicas as they
were and the next pass starts over from stripe 0 (same input, same placement, same bytes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from ambry.common.config import ClusterConfig, EcConfig, EcPolicy
from ambry.common.errors import InvalidArgument
from ambry.ec.codec import DEFAULT_BACKEND
from ambry.ec.gain import fragment_disk_bytes, worth_encoding
from ambry.ec.layout import SegmentLayout, Stripe
from ambry.ec.placement import place_in_datacenter
from ambry.protocol.client import NodeClient
from ambry.storage.api import EcRecord, EcStore, RunIO
from ambry.storage.ecstate import DIR_ENTRY, current, ec_key
from ambry.warm.encoder import EncodeFailed, write_fragments
from ambry.warm.fetch import FragmentFetcher
from ambry.warm.status import PeerSilent, ask_about_blobs, replica_rows

__all__ = ["MAX_DIRECTORY_BYTES", "EncodeJob"]

log = logging.getLogger(__name__)

#: the directory of an EC_SEGMENT record travels in replication's reply header (1 MiB):
#: a segment with more PUT records than fit is left replicated (32 bytes a record)
MAX_DIRECTORY_BYTES = 512 * 1024


class EncodeJob:
    def __init__(self, node_id: str, datacenter: str, config: ClusterConfig, store: EcStore,
                 policy: EcPolicy, ec: EcConfig, run_io: RunIO,
                 client: Callable[[str], NodeClient], fetcher: FragmentFetcher) -> None:
        self.node_id, self.dc, self.cfg = node_id, datacenter, config
        self.store, self.policy, self.ec = store, policy, ec
        self.run_io, self.client, self.fetcher = run_io, client, fetcher
        self.pid = store.partition_id
        self.encoded_bytes = 0
        self.encoded_segments = 0
        self.encode_cpu_s = 0.0  # CPU seconds inside the codec (encode MB/s per core)
        self.backlog_bytes = 0
        self.running: tuple[int, int] | None = None  # (segment, stripes done) while encoding
        #: (segment, generation) -> its bytes: sealed segments left replicated because
        #: freeing them would give back less than their fragments cost (small records)
        self.left_small: dict[tuple[int, int], int] = {}
        #: keys of this DC's EC_SEGMENT records with more than m fragments gone (the
        #: repair's survey): what only they cover is encoded again
        self.lost: Callable[[], Collection[bytes]] = frozenset

    async def candidates(self) -> list[tuple[int, int, int]]:
        """Sealed segments of this replica, old enough, not encoded yet."""
        sealed = await self.run_io(self.store.ec_sealed)
        done = {(r.segment, r.generation) for r in await self.run_io(self.store.ec_records)
                if r.source == self.store.incarnation}
        freed = await self.run_io(self.store.ec_freed_segments)
        now = time.time()
        out = [(n, g, size) for n, g, size, at in sealed
               if (n, g) not in done and n not in freed and (n, g) not in self.left_small
               and now - at >= self.ec.min_age_s]
        self.backlog_bytes = sum(x[2] for x in out)
        return out

    async def run_once(self) -> int:
        """Encode what is eligible now; returns the segments encoded."""
        done = 0
        for number, gen, _size in await self.candidates():
            if await self.encode(number, gen):
                done += 1
        return done

    async def _peers_have(self, directory: bytes) -> bool:
        """Every other replica, in every datacenter, has each PUT of ``directory`` or its
        tombstone (nobody will need to pull it from here again)."""
        peers = [p for p in self.cfg.cluster_map.partition(self.pid).replicas
                 if p != self.node_id]
        try:
            lacking = await ask_about_blobs(self.client, peers, "ec_missing", self.pid,
                                            [e[0] for e in DIR_ENTRY.iter_unpack(directory)],
                                            self.ec.fragment_timeout_ms)
        except PeerSilent as e:  # a peer we cannot ask: wait
            log.info("partition %d: cannot ask %s what it lacks (%r); encoding waits",
                     self.pid, e.node, e.cause)
            return False
        for peer, missing in lacking.items():
            if missing:
                log.info("partition %d: %s still lacks %d blobs of the segment; waiting",
                         self.pid, peer, len(missing))
                return False
        return True

    async def _covered(self, directory: bytes) -> bool:
        """Every PUT of ``directory`` is in an EC_SEGMENT record of this datacenter that is
        not lost, with the same record length and body checksum."""
        lost = self.lost()
        have: dict[bytes, tuple[int, int]] = {}
        for r in current(await self.run_io(self.store.ec_records)):
            if r.datacenter == self.dc and r.key not in lost:
                for uuid, _off, total, body in r.entries():
                    have[uuid] = (total, body)
        return all(have.get(u) == (total, body)
                   for u, _off, total, body in DIR_ENTRY.iter_unpack(directory))

    async def records_caught_up(self, skip: Collection[str] = ()) -> bool:
        """This replica holds every EC_SEGMENT record of this datacenter its peers here hold
        (a replica that started empty gets its log back before those records: encoding then
        would encode its blobs a second time); ``skip``: peers known silent (a rebuild onto
        a spare node goes on without them)."""
        mine = {(r.source_hex, r.segment, r.generation)
                for r in await self.run_io(self.store.ec_records) if r.datacenter == self.dc}
        try:
            rows = await replica_rows(self.cfg.cluster_map, self.client, self.pid, self.dc,
                                      self.ec.fragment_timeout_ms, {self.node_id, *skip})
        except PeerSilent as e:  # a peer we cannot ask: wait
            log.info("partition %d: cannot ask %s for its EC records (%r); encoding waits",
                     self.pid, e.node, e.cause)
            return False
        for peer, p in rows.items():
            theirs = {(r["source"], r["segment"], r["generation"])
                      for r in (p or {}).get("records") or () if r["datacenter"] == self.dc}
            if theirs - mine:
                log.info("partition %d: %s holds %d EC records of %s this replica lacks yet; "
                         "encoding waits", self.pid, peer, len(theirs - mine), self.dc)
                return False
        return True

    async def encode(self, number: int, generation: int) -> bool:
        size, directory, freeable = await self.run_io(self.store.ec_scan_segment, number,
                                                      generation)
        k, m = self.policy.k, self.policy.m
        replicas = len(self.cfg.cluster_map.replicas_in(self.pid, self.dc))
        frag_bytes = fragment_disk_bytes(k, m, size, self.ec.stripe_bytes)
        if not worth_encoding(freeable, replicas, frag_bytes, self.ec.encode_min_gain_ratio):
            self.left_small[(number, generation)] = size
            log.info("partition %d segment %d: freeing it would give back %d bytes on %d "
                     "replicas, its fragments cost %d: left replicated (small records)",
                     self.pid, number, freeable, replicas, frag_bytes)
            return False
        if len(directory) > MAX_DIRECTORY_BYTES:
            log.warning("partition %d segment %d: %d PUT records, more than an EC_SEGMENT "
                        "record carries; left replicated", self.pid, number,
                        len(directory) // DIR_ENTRY.size)
            return False
        if not await self._peers_have(directory):
            return False
        if not await self.records_caught_up():
            return False
        if await self._covered(directory):
            # this replica started empty (wiped) and got these blobs back by replication:
            # they are encoded here already (the repair rebuilds their lost fragments)
            log.info("partition %d segment %d: every blob of it is in an encoded segment of "
                     "%s already; not encoded again", self.pid, number, self.dc)
            return False
        try:
            placement = place_in_datacenter(self.cfg.cluster_map, self.pid, self.dc, k + m)
        except InvalidArgument as e:
            log.error("partition %d: %s", self.pid, e)
            return False
        layout = SegmentLayout.plan(k, m, size, self.ec.stripe_bytes)
        started = time.monotonic()
        log.info("partition %d: encoding segment %d (%d bytes, %d stripes) onto %s",
                 self.pid, number, size, layout.stripe_count, list(placement.nodes))

        async def read(st: Stripe) -> bytes:
            data: bytes = await self.run_io(self.store.ec_read, number, st.segment_offset,
                                            st.data_bytes)
            return data

        try:
            done = await write_fragments(
                partition=self.pid, source_hex=self.store.incarnation.hex(), segment=number,
                generation=generation, layout=layout, nodes=placement.nodes,
                codec=self.fetcher.codec(k, m), client=self.client,
                timeout_ms=self.ec.fragment_timeout_ms,
                rate_bytes_per_s=self.ec.encode_rate_bytes_per_s, read=read,
                progress=lambda s: setattr(self, "running", (number, s)))
        except EncodeFailed as e:
            log.warning("partition %d segment %d: %s; will start over", self.pid, number, e)
            return False
        finally:
            self.running = None
        self.encode_cpu_s += done.codec_cpu_s
        rec = EcRecord(self.store.incarnation, number, generation, self.dc, k, m,
                       DEFAULT_BACKEND, layout.stripe_bytes, size, placement.nodes,
                       done.tables_xxh3, directory)
        end = await self.run_io(self.store.ec_apply, ec_key(rec.source, number, generation),
                                rec.to_props())
        await self.store.durable_async(end)
        self.encoded_bytes += size
        self.encoded_segments += 1
        log.info("partition %d: segment %d encoded and recorded in %.2f s", self.pid, number,
                 time.monotonic() - started)
        return True
