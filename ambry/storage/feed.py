"""A replica's replication feed: the durable records after a peer's token, found fast.

Owns ``entries_since`` (the batch a peer pulls: durable records after its token, bounded by
count and bytes, with the bytes left behind them) and ``caught_up`` (the no-I/O answer for a
quiet partition), and the anchors that make both cheap: sparse sequence -> position samples
(every ``_SEQ_SAMPLE_EVERY`` records, and each segment's first record) and the positions where
the last batches ended (a peer's next request resumes right there). Does not own the records
(``log``) nor what replication does with them (``ambry.replication``).

Thread safety: anchors change under the log's lock, which appends hold; ``caught_up`` is one
dict lookup (atomic under the GIL) and safe on the event loop.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable

from ambry.common.errors import DataCorrupt
from ambry.storage.api import Entry, Token
from ambry.storage.format import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, RecordHeader
from ambry.storage.log import Log, Position

__all__ = ["ReplicationFeed"]

_SEQ_SAMPLE_EVERY = 256
_MAX_RESUME_HINTS = 4096


class ReplicationFeed:
    def __init__(self, log: Log, incarnation: Callable[[], bytes],
                 read_props: Callable[[Position, RecordHeader], bytes]) -> None:
        self.log = log
        self.lock = log.lock
        self._incarnation = incarnation  # the replica's: set on open, after this is built
        self.read_props = read_props
        # sparse sequence -> position samples, for entries_since (ascending by sequence)
        self._seq_samples: list[tuple[int, Position]] = []
        # where the last few batches ended: a peer's next request resumes right there
        self._resume_hints: OrderedDict[int, Position] = OrderedDict()

    @property
    def incarnation(self) -> bytes:
        return self._incarnation()

    def sample_seq(self, seq: int, pos: Position) -> None:
        if not self._seq_samples or (seq % _SEQ_SAMPLE_EVERY == 0
                                     and seq > self._seq_samples[-1][0]):
            self._seq_samples.append((seq, pos))

    def sample_segment_starts(self) -> None:
        """Read the first record header of each segment: cheap anchors for entries_since."""

        samples = []
        for seg in self.log.segments:
            if seg.size >= SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE:
                try:
                    h = self.log.read_header((seg.number, SEGMENT_HEADER_SIZE))
                    samples.append((h.sequence, (seg.number, SEGMENT_HEADER_SIZE)))
                except DataCorrupt:
                    continue
        samples.sort()
        self._seq_samples = samples
        self._resume_hints.clear()  # positions moved (compaction) or were never known

    def caught_up(self, token: Token | None) -> bool:
        """True when nothing durable follows ``token`` (cheap, no I/O, safe on the event
        loop): a peer's long poll for a quiet partition then needs no trip to a thread."""
        if token is None or token[0] != self.incarnation:
            return False
        hint = self._resume_hints.get(token[1])  # one dict lookup: atomic under the GIL
        return hint is not None and hint >= self.log.durable

    def entries_since(self, token: Token | None, max_entries: int = 1000,
                      max_bytes: int = 4 * 1024 * 1024) -> tuple[list[Entry], Token, int]:
        """Durable records after ``token``, in sequence order, bounded by count and by the sum
        of their record sizes. Returns (entries, new token, bytes of durable log left after
        them). A token of another incarnation starts over from the beginning."""
        after = 0
        if token is not None and token[0] == self.incarnation:
            after = token[1]
        durable = self.log.durable
        with self.lock:
            hint = self._resume_hints.get(after) if after else None
            if hint is not None:
                start: Position = hint
            else:
                i = bisect.bisect_right(self._seq_samples, (after + 1, (1 << 62, 0))) - 1
                start = self._seq_samples[i][1] if i >= 0 else (0, 0)
        out: list[Entry] = []
        used = 0
        last = after
        last_end: Position = start
        for rec in self.log.scan(start, verify=False, end=durable):
            h = rec.header
            if h.sequence <= after:
                last_end = (rec.position[0], rec.position[1] + h.total_len)
                continue
            if out and (len(out) >= max_entries or used + h.total_len > max_bytes):
                break
            props = self.read_props(rec.position, h) if h.type.carries_props else b""
            out.append(Entry(h.sequence, h.type, rec.key, h.life_version, h.state_flags,
                             h.time_ms, h.expiry_ms, h.blob_flags, h.payload_len, h.total_len,
                             props))
            used += h.total_len
            last = h.sequence
            last_end = (rec.position[0], rec.position[1] + h.total_len)
        if last > after:
            with self.lock:
                self._resume_hints[last] = last_end
                while len(self._resume_hints) > _MAX_RESUME_HINTS:
                    self._resume_hints.popitem(last=False)
        remaining = self._bytes_between(last_end, durable)
        return out, (self.incarnation, last), remaining

    def _bytes_between(self, a: Position, b: Position) -> int:
        if a >= b:
            return 0
        total = 0
        for seg in self.log.segments:
            if seg.number < a[0] or seg.number > b[0]:
                continue
            lo = max(a[1] if seg.number == a[0] else 0, SEGMENT_HEADER_SIZE)
            hi = b[1] if seg.number == b[0] else seg.size
            total += max(0, hi - lo)
        return total
