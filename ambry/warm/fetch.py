"""Reads bytes of an encoded segment through its fragments: the pieces that hold them
(``SegmentLayout.pieces``) from the data fragments' nodes, and, for a piece whose node is
down, slow, or whose bytes failed the caller's check, the same window of k other fragments,
rebuilt (``Codec.rebuild_window``). Reads are hedged as the router's GETs are
(docs/performance.md): a window not answered within the p95 of recent fragment reads (at
least ``hedge_min_ms``) is also rebuilt from k other fragments and the first good answer
wins; a node whose read timed out is *suspect* for ``suspect_s`` and read around (its windows
rebuilt from the others at once, it is asked last), so a stopped node costs one timeout, not
one per read. Implements ``ambry.storage.ecstate.FragmentReader`` for
replicas' I/O threads (it hands the work to the event loop and waits, bounded).

Does not own checking the bytes (the reader checks them against the blob record's checksum
and asks again with ``rebuild=True``) nor which node holds what (the EC_SEGMENT record's
placement)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ambry.common.errors import AmbryError, DataCorrupt, Unavailable
from ambry.ec.codec import Codec
from ambry.ec.layout import Piece, SegmentLayout
from ambry.protocol.client import NodeClient
from ambry.storage.api import EcRecord

__all__ = ["FragmentFetcher"]

#: a fragment reported for a verify is not reported again for this long
_REPORT_EVERY_S = 60.0
#: fragment read latencies kept for the hedge delay (p95)
_LATENCY_SAMPLES = 256


def hedge_delay_s(samples: list[float], floor_s: float, cap_s: float) -> float:
    """The p95 of recent fragment read latencies, at least ``floor_s``, at most ``cap_s``
    (before any sample: ``floor_s``)."""
    if not samples:
        return min(floor_s, cap_s)
    s = sorted(samples)
    p95 = s[min(len(s) - 1, int(0.95 * len(s)))]
    return min(max(p95, floor_s), cap_s)

log = logging.getLogger(__name__)


def _discard_late(late: set[asyncio.Future[bytes]]) -> Callable[[asyncio.Future[bytes]], None]:
    def done(f: asyncio.Future[bytes]) -> None:
        late.discard(f)
        if not f.cancelled():
            f.exception()  # retrieved: a late failure is expected, not "never retrieved"
    return done


def read_limit_s(fragment_timeout_ms: int) -> float:
    """The longest a replica's read through fragments lasts (its I/O thread gives up then):
    fragments a replica stopped reading through are deleted only this long after."""
    return 4 * fragment_timeout_ms / 1000 + 5


class FragmentFetcher:
    def __init__(self, loop: asyncio.AbstractEventLoop, client: Callable[[str], NodeClient],
                 timeout_ms: int, hedge_min_ms: int = 20, suspect_s: float = 30.0) -> None:
        self.loop = loop
        self.client = client
        self.timeout_ms = timeout_ms
        self.hedge_min_ms = hedge_min_ms
        self.suspect_s = suspect_s
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        #: node -> monotonic time until which it is read around (its read timed out)
        self._suspect: dict[str, float] = {}
        self.hedged_reads: Counter[int] = Counter()  # windows whose hedge was started
        self._late: set[asyncio.Future[bytes]] = set()  # direct reads a hedge beat
        # per partition, for /metrics and ec_status (ambry.storage.metrics)
        self.reconstruction_reads: Counter[int] = Counter()  # windows rebuilt from k others
        self.fragment_reads: Counter[int] = Counter()
        self.fragment_read_bytes: Counter[int] = Counter()
        #: (partition, reason) -> failed fragment reads; reason: "unavailable" (down, slow,
        #: refused) or "corrupt" (the node's block check, or the reader's record check, failed)
        self.fragment_read_errors: Counter[tuple[int, str]] = Counter()
        self._codecs: dict[tuple[int, int], Codec] = {}
        self._reported: dict[tuple[bytes, int], float] = {}  # (record, fragment) -> when
        self._asks: set[asyncio.Task[None]] = set()

    def codec(self, k: int, m: int) -> Codec:
        c = self._codecs.get((k, m))
        if c is None:
            c = self._codecs[(k, m)] = Codec(k, m)
        return c

    # ---------------------------------------------------------------- FragmentReader
    def read_encoded(self, partition_id: int, rec: EcRecord, offset: int, length: int,
                     rebuild: bool = False, verified: bool = False,
                     check: Callable[[bytes], bool] | None = None) -> bytes:
        if rebuild:  # the reader's record check failed on what the data fragments sent
            self.fragment_read_errors[(partition_id, "corrupt")] += 1
        fut = asyncio.run_coroutine_threadsafe(
            self.read(partition_id, rec, offset, length, rebuild, verified, check), self.loop)
        limit_s = read_limit_s(self.timeout_ms)
        try:
            return fut.result(timeout=limit_s)
        except concurrent.futures.TimeoutError:
            # stop the read on the loop too: its window reads are cancelled and release their
            # replies, instead of running on for a caller that is gone
            fut.cancel()
            self.fragment_read_errors[(partition_id, "unavailable")] += 1
            raise Unavailable(f"partition {partition_id}: the fragments of segment "
                              f"{rec.segment} did not answer within {limit_s:.0f} s") from None

    # ---------------------------------------------------------------- on the loop
    async def window(self, partition_id: int, rec: EcRecord, fragment: int, offset: int,
                     length: int, verified: bool = False) -> bytes:
        """Bytes ``[offset, offset + length)`` of one fragment; ``verified``: its node checks
        the blocks they lie in against the fragment's checksum table first (it reads those
        blocks from its own disk, but only the window crosses the network)."""
        node = rec.placement[fragment]
        t0 = time.monotonic()
        try:
            reply = await self.client(node).request(
                "ec_frag_read", {"partition": partition_id, "source": rec.source_hex,
                                 "segment": rec.segment, "generation": rec.generation,
                                 "fragment": fragment, "offset": offset, "length": length,
                                 "verify": verified},
                timeout_ms=self.timeout_ms)
            try:
                data = bytes(await reply.read()) if reply.payload_len else b""
            except BaseException:
                # cancelled (a hedge or rebuild that no longer needs it) or failed mid-payload:
                # a streamed payload left unread holds its pipelined connection, and every
                # request queued behind it waits for the stall timeout; drop it now, off
                # this task (which may be cancelled again)
                reply.release_soon()
                raise
            if len(data) != length:
                raise DataCorrupt(f"short fragment read ({len(data)} of {length} bytes)")
        except DataCorrupt:
            self.fragment_read_errors[(partition_id, "corrupt")] += 1
            raise
        except (TimeoutError, AmbryError, OSError) as e:
            self.fragment_read_errors[(partition_id, "unavailable")] += 1
            if isinstance(e, (TimeoutError, Unavailable, OSError)):
                # down, stopped or unreachable: read around it for a while
                self._suspect[node] = time.monotonic() + self.suspect_s
            raise
        self._latencies.append(time.monotonic() - t0)
        self._suspect.pop(node, None)
        self.fragment_reads[partition_id] += 1
        self.fragment_read_bytes[partition_id] += length
        return data

    async def read(self, partition_id: int, rec: EcRecord, offset: int, length: int,
                   rebuild: bool = False, verified: bool = False,
                   check: Callable[[bytes], bool] | None = None) -> bytes:
        layout = SegmentLayout.from_stripe_bytes(rec.k, rec.m, rec.stripe_bytes,
                                                 rec.original_bytes)
        pieces = layout.pieces(offset, length)
        if rebuild and check is not None:
            return await self._find_bad_fragment(partition_id, rec, pieces, check)
        parts = await asyncio.gather(*(self._piece(partition_id, rec, p, rebuild, verified)
                                       for p in pieces))
        return b"".join(parts)

    def suspect(self, node: str) -> bool:
        until = self._suspect.get(node)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._suspect[node]  # probed again by the next read
            return False
        return True

    def hedge_delay_s(self) -> float:
        return hedge_delay_s(list(self._latencies), self.hedge_min_ms / 1000,
                             self.timeout_ms / 1000)

    async def _piece(self, partition_id: int, rec: EcRecord, p: Piece, rebuild: bool,
                     verified: bool) -> bytes:
        """One piece: from its data fragment; if that node is suspect, rebuilt from k others
        at once; if it has not answered after the hedge delay, rebuilt from k others too and
        the first good answer wins (the other is cancelled)."""
        node = rec.placement[p.fragment]
        if rebuild or self.suspect(node):
            return await self._rebuild(partition_id, rec, p, verified)
        direct = asyncio.ensure_future(self.window(partition_id, rec, p.fragment,
                                                   p.fragment_offset, p.length, verified))
        first, _ = await asyncio.wait({direct}, timeout=self.hedge_delay_s())
        if first:
            try:
                return direct.result()
            except (TimeoutError, AmbryError, OSError) as e:
                log.warning("partition %d: fragment %d on %s: %s; rebuilding the window",
                            partition_id, p.fragment, node, e)
                return await self._rebuild(partition_id, rec, p, verified)
        self.hedged_reads[partition_id] += 1
        hedge = asyncio.ensure_future(self._rebuild(partition_id, rec, p, verified))
        pending: set[asyncio.Future[bytes]] = {direct, hedge}
        errors: list[BaseException] = []
        try:
            while pending:
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for f in done:
                    if f.exception() is None:
                        return f.result()
                    errors.append(f.exception())  # type: ignore[arg-type]
        finally:
            if hedge in pending:
                hedge.cancel()
            if direct in pending:
                # not cancelled: it runs out its timeout (bounded) in the background, and a
                # node that never answers is then suspect (read around) for suspect_s
                self._late.add(direct)
                direct.add_done_callback(_discard_late(self._late))
        log.warning("partition %d: fragment %d on %s and its rebuild failed: %s",
                    partition_id, p.fragment, node, errors)
        err = errors[-1]
        raise err if isinstance(err, (AmbryError, OSError, TimeoutError)) else \
            Unavailable(str(err))

    async def _find_bad_fragment(self, partition_id: int, rec: EcRecord,
                                 pieces: list[Piece], check: Callable[[bytes], bool]) -> bytes:
        """The caller's check failed on what the data fragments sent. Rebuilding every piece
        would be wrong too: a piece of another fragment is rebuilt from the same byte
        positions of the bad one. So each piece is read both ways, and each fragment whose
        piece disagrees with its rebuild is tried as the one bad fragment (its pieces
        rebuilt, the others as read) until ``check`` passes; that fragment's node is asked
        to verify it (the damage it finds is what the repair rebuilds:
        ``ambry.storage.fraghealth``, ``ambry.warm.repair``). More than one bad fragment
        under the same bytes is a clean ``DataCorrupt``, never wrong bytes."""
        direct, rebuilt = await asyncio.gather(
            asyncio.gather(*(self.window(partition_id, rec, p.fragment, p.fragment_offset,
                                         p.length) for p in pieces), return_exceptions=True),
            asyncio.gather(*(self._rebuild(partition_id, rec, p) for p in pieces),
                           return_exceptions=True))
        suspects = sorted({p.fragment for p, d, r in zip(pieces, direct, rebuilt, strict=True)
                           if not isinstance(d, bytes) or d != r})
        for f in suspects:
            parts = [r if p.fragment == f else d
                     for p, d, r in zip(pieces, direct, rebuilt, strict=True)]
            if all(isinstance(x, bytes) for x in parts):
                body = b"".join(parts)  # type: ignore[arg-type]
                if check(body):
                    self._report(partition_id, rec, f)
                    return body
        raise DataCorrupt(f"partition {partition_id} segment {rec.segment}: no single "
                          f"fragment explains the bad bytes (fragments {suspects} disagree "
                          f"with their rebuilds); more than m of a stripe's are corrupt")

    def _report(self, partition_id: int, rec: EcRecord, fragment: int) -> None:
        key = (rec.key, fragment)
        now = time.monotonic()
        if now - self._reported.get(key, -_REPORT_EVERY_S) < _REPORT_EVERY_S:
            return  # asked already: its verify is running or done
        self._reported[key] = now
        log.error("partition %d: fragment %d of segment %d on %s sent bytes that fail the "
                  "blob's checksum; asking it to verify the fragment", partition_id, fragment,
                  rec.segment, rec.placement[fragment])

        async def ask() -> None:
            try:
                reply = await self.client(rec.placement[fragment]).request(
                    "ec_frag_stat", {"partition": partition_id, "source": rec.source_hex,
                                     "segment": rec.segment, "generation": rec.generation,
                                     "fragment": fragment},
                    timeout_ms=max(60_000, self.timeout_ms))
                await reply.release()
            except (TimeoutError, AmbryError, OSError) as e:
                log.warning("partition %d: fragment %d verify on %s failed: %r", partition_id,
                            fragment, rec.placement[fragment], e)

        t = self.loop.create_task(ask())
        self._asks.add(t)
        t.add_done_callback(self._asks.discard)

    async def _rebuild(self, partition_id: int, rec: EcRecord, p: Piece,
                       verified: bool = False) -> bytes:
        """The window of piece ``p`` rebuilt from the same window of k other fragments:
        asks every other fragment's node that is not suspect (suspect ones only if those
        cannot make k) and decodes from the first k that answer; the rest are cancelled,
        so one stopped node among them costs nothing."""
        others = [i for i in range(rec.k + rec.m) if i != p.fragment]
        healthy = [i for i in others if not self.suspect(rec.placement[i])]
        rest = [i for i in others if i not in healthy]
        got: dict[int, Any] = {}
        for group in (healthy, rest):
            if len(got) >= rec.k or not group:
                continue
            tasks = {asyncio.ensure_future(self.window(partition_id, rec, i, p.fragment_offset,
                                                       p.length, verified)): i for i in group}
            pending = set(tasks)
            try:
                while pending and len(got) < rec.k:
                    done, pending = await asyncio.wait(pending,
                                                       return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        if not t.cancelled() and t.exception() is None:
                            got[tasks[t]] = t.result()
            finally:
                for t in pending:
                    t.cancel()
        if len(got) < rec.k:
            raise Unavailable(f"partition {partition_id}: {len(got)} fragments answered, "
                              f"{rec.k} needed to rebuild a window")
        got = dict(sorted(got.items())[:rec.k])
        self.reconstruction_reads[partition_id] += 1
        codec = self.codec(rec.k, rec.m)
        return await asyncio.get_running_loop().run_in_executor(
            None, codec.rebuild_window, got, p.fragment)
