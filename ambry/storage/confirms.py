"""What a pulling peer already has: the frontends' confirmations, and the pull filter.

A frontend that wrote a blob to the replicas of its datacenter knows which of them acked it
durably. It tells each of those nodes "blob K is durable on replica incarnations {i, j}"
(``confirms`` on its next request to the node, ``ambry.protocol.messages``). This module
owns the node's side of that:

* :class:`ConfirmationBook`: the confirmations, in memory, bounded in count and age. Losing
  them (a restart) only costs CPU: the peers then check those records as before.
* :func:`decide` / :func:`filter_batch`: the pure decision of a ``replicate`` long poll for a
  peer that asked to be filtered (an intra-DC peer, :class:`PullFilter`): a PUT record already
  durable on the peer's replica incarnation is *skipped* (the token moves past it, nothing is
  sent), a young PUT written through a frontend of this datacenter and not confirmed yet is
  *held* a moment (its confirmation is probably on its way), everything else is sent as
  before. Deletes, TTL updates, undeletes and name records are always sent.

Why it is safe (docs/replication.md, "Skipping what a peer already has"): a confirmation
names the *incarnation* of the replica that acked, a random id made with the replica's
directory and returned in the node's put reply, and only for an ack that was durable
(fsync policy). A peer that lost its disk pulls with a new incarnation and gets everything;
a confirmation naming anybody else changes nothing for a puller; an unconfirmed record (a
replica timed out, the frontend died before telling) is sent as before, after at most
``hold_ms``. Cross-DC pulls are never filtered (the puller does not ask), and the scrubber and
digests do not look here.

Does not own the wire (``ambry.protocol``), the long poll (``ops``) nor the records (``feed``).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ambry.storage.api import Entry, RecordType

__all__ = ["ConfirmationBook", "Decision", "FilteredBatch", "PullFilter", "decide",
           "filter_batch"]

#: blob ids whose confirmations a node keeps; ~200 bytes each (the 65,536 keep ~13 MB). A
#: peer pulls a record within about a second of its write, so this covers minutes of writes
#: at thousands per second; an evicted confirmation only means the peer checks the record.
CONFIRMATIONS_MAX = 65_536
#: confirmations older than this are ignored: they are only worth anything until the peers
#: pulled past the record, and a short life limits what a replica directory restored from a
#: backup with its old incarnation (an operator error: docs/operations.md) could miss
CONFIRMATION_TTL_S = 60.0
_INCARNATIONS_MAX = 4096  # interned incarnation ids (one object per replica, not per blob)
_BLOB_ID_BYTES = 32
_ORIGIN_DC_OFFSET = 3  # ambry.common.blobid: the origin datacenter id byte


class ConfirmationBook:
    """blob id -> the replica incarnations a frontend saw it durable on. Event-loop only."""

    def __init__(self, max_keys: int = CONFIRMATIONS_MAX, ttl_s: float = CONFIRMATION_TTL_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._keys: OrderedDict[bytes, tuple[float, tuple[bytes, ...]]] = OrderedDict()
        self._interned: dict[bytes, bytes] = {}
        self._held_since: OrderedDict[bytes, float] = OrderedDict()
        self._event: asyncio.Event | None = None
        # counters (the node's ``stats``): confirmations received, and what filtered long
        # polls did with the PUT records they read
        self.noted = 0
        self.skipped = 0
        self.held = 0
        self.sent = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def event(self) -> asyncio.Event:
        """Set (and replaced) whenever confirmations arrive: wakes held long polls."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def note(self, items: Iterable[tuple[bytes, Sequence[bytes]]]) -> None:
        """Record ``(blob id, [incarnation, ...])`` pairs (checked by the protocol)."""
        now = self._monotonic()
        keys = self._keys
        for blob_id, incs in items:
            key = bytes(blob_id)
            old = keys.pop(key, None)
            merged = tuple(self._intern(i) for i in incs)
            if old is not None and old[0] + self.ttl_s > now:
                merged = old[1] + tuple(i for i in merged if i not in old[1])
            keys[key] = (now, merged)
            self.noted += len(incs)
        while keys and (len(keys) > self.max_keys
                        or next(iter(keys.values()))[0] + self.ttl_s <= now):
            keys.popitem(last=False)
        if self._event is not None:
            self._event.set()
            self._event = None

    def _intern(self, inc: bytes) -> bytes:
        got = self._interned.get(inc)
        if got is None:
            if len(self._interned) >= _INCARNATIONS_MAX:
                self._interned.clear()
            got = self._interned[inc] = bytes(inc)
        return got

    def now(self) -> float:
        return self._monotonic()

    def first_held(self, blob_id: bytes) -> float:
        """When a long poll first held this record back (monotonic seconds; now, the first
        time it is asked): a hold counts from there, on this node's clock, whichever poll or
        peer holds it next (a poll answered for another partition must not restart it)."""
        t = self._held_since.get(blob_id)
        if t is None:
            t = self._held_since[blob_id] = self._monotonic()
            if len(self._held_since) > self.max_keys:
                self._held_since.popitem(last=False)
        return t

    def durable_on(self, blob_id: bytes, incarnation: bytes) -> bool:
        """A frontend saw ``blob_id`` acked durably by the replica of ``incarnation``."""
        row = self._keys.get(blob_id)
        return (row is not None and incarnation in row[1]
                and row[0] + self.ttl_s > self._monotonic())


@dataclass(frozen=True)
class PullFilter:
    """What a filtered puller asked for, one partition: skip the PUTs durable on
    ``incarnation`` (its replica's), hold young unconfirmed PUTs of blobs that originate in
    datacenter ``hold_dc`` (written through a frontend of this datacenter, so a confirmation
    may be coming) for up to ``hold_ms``."""

    incarnation: bytes
    hold_ms: int = 0
    hold_dc: int | None = None


class Decision(enum.Enum):
    SEND = "send"
    SKIP = "skip"
    HOLD = "hold"


def decide(f: PullFilter | None, e: Entry, now_s: float,
           durable_on: Callable[[bytes, bytes], bool],
           first_held: Callable[[bytes], float]) -> Decision:
    """What a long poll does with one record for a puller (pure, given what the callables
    answer). ``first_held(key)``: when this node first held the record back (the node's
    clock, not the record's creation time: under load a PUT's last ack comes long after
    the frontend stamped it, and a clock ahead would hold records at every poll)."""
    if f is None or e.type != RecordType.PUT:
        return Decision.SEND
    if durable_on(e.key, f.incarnation):
        return Decision.SKIP
    # only blobs written through a frontend of this datacenter may be confirmed here
    if (f.hold_ms > 0 and f.hold_dc is not None and len(e.key) == _BLOB_ID_BYTES
            and e.key[_ORIGIN_DC_OFFSET] == f.hold_dc
            and now_s - first_held(e.key) < f.hold_ms / 1000):
        return Decision.HOLD
    return Decision.SEND


@dataclass
class FilteredBatch:
    send: list[Entry]
    covered_seq: int | None  # every record up to this sequence was sent or skipped
    held: Entry | None       # the first record held (nothing after it is covered)
    consumed: int            # how many entries, from the first, are covered
    uncovered_bytes: int     # record bytes of the entries read but not covered
    skipped: int


def filter_batch(entries: Sequence[Entry], decision_of: Callable[[Entry], Decision],
                 budget_bytes: int, wire_bytes: Callable[[Entry], int],
                 take_one: bool = True) -> FilteredBatch:
    """Walk ``entries`` (in sequence order) and keep the prefix a reply may cover: sent
    entries up to ``budget_bytes`` of wire size (at least one when ``take_one``), skipped
    ones, and nothing from the first held entry on (pure)."""
    send: list[Entry] = []
    covered: int | None = None
    held: Entry | None = None
    used = 0
    skipped = 0
    stop = len(entries)
    for i, e in enumerate(entries):
        d = decision_of(e)
        if d is Decision.SKIP:
            covered = e.sequence
            skipped += 1
            continue
        if d is Decision.HOLD:
            held = e
            stop = i
            break
        n = wire_bytes(e)
        if used + n > budget_bytes and (send or not take_one):
            stop = i  # cut: the header stays bounded; the rest comes next time
            break
        used += n
        send.append(e)
        covered = e.sequence
    uncovered = sum(e.record_len for e in entries[stop:])
    return FilteredBatch(send, covered, held, stop, uncovered, skipped)
