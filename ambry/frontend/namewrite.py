"""Decisions of a conditional name write: the reservation tally, the retry backoff, and
whether a create looks the name up before its upload (:func:`worth_an_early_409`).

Owns the pure part of writing a name under a majority reservation (see
``ambry.storage.namelocks`` for the replica side): counting the replicas' answers to
``name_reserve``, deciding when the writer holds a majority, lost the race (retry), or cannot
reach enough replicas (503), and which current entry the decision is based on. Does not own any
I/O: the router sends the requests and feeds the answers in.

The guarantee it gives, with the replica rules: within one datacenter, two writers can never
both hold a majority of a name's replicas at once, so of concurrent conditional writes of one
name (create-if-absent, S3 ``If-Match``, REST without upsert) exactly one is decided against
any given entry. Across datacenters nothing is locked: see docs/security.md ("Conditional
writes and names").
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from ambry.protocol.messages import NameRecord

__all__ = ["ClaimTally", "ReservationTally", "Verdict", "backoff_s", "name_version",
           "superseded", "worth_an_early_409"]


def name_version(e: NameRecord) -> tuple[int, int, bytes]:
    """Last-writer-wins order of name entries (the same on every replica)."""
    return (e.ts_ms, e.dc_id, e.blob_id)


class Verdict(enum.Enum):
    PENDING = "pending"
    HELD = "held"          # a majority granted: go on and write
    BUSY = "busy"          # someone else holds enough replicas: release, back off, retry
    UNAVAILABLE = "unavailable"  # too few replicas answered at all


@dataclass
class ReservationTally:
    """Answers of ``n`` replicas to one round of ``name_reserve``."""

    n: int
    granted: set[str] = field(default_factory=set)
    denied: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    current: NameRecord | None = None
    #: every entry a replica answered with (granted or not), for :func:`superseded`
    seen: list[NameRecord] = field(default_factory=list)

    @property
    def need(self) -> int:
        return self.n // 2 + 1

    def record(self, node: str, granted: bool | None, entry: NameRecord | None = None) -> None:
        """``granted`` None: the replica did not answer (error or timeout)."""
        assert node not in self.granted | self.denied | self.failed, "answer counted twice"
        if granted is None:
            self.failed.add(node)
            return
        (self.granted if granted else self.denied).add(node)
        if entry is not None:
            self.seen.append(entry)
        if entry is not None and (self.current is None
                                  or name_version(entry) > name_version(self.current)):
            self.current = entry

    def verdict(self) -> Verdict:
        if len(self.granted) >= self.need:
            return Verdict.HELD
        outstanding = self.n - len(self.granted) - len(self.denied) - len(self.failed)
        if len(self.granted) + outstanding >= self.need:
            return Verdict.PENDING
        if len(self.failed) > self.n - self.need:
            return Verdict.UNAVAILABLE
        return Verdict.BUSY


@dataclass
class ClaimTally:
    """Answers of ``n`` replicas to one ``name_claim``: an unconditional write (an upsert)
    decided at each replica in one step, without the reservation round. A replica takes it
    only while nobody holds or is writing the name there and its entry there is older; it
    answers with the entry it replaced.

    HELD: a majority took it; it is then newer than every acknowledged write (each is on a
    majority, which shares a replica with this one, and that replica's entry was older), so
    it is acknowledged as is. BUSY: a replica refused (a reservation holder, another write in
    flight, or a newer entry) or did not answer, so a majority is out of reach: the writer
    takes the reservation path, which decides on the current entry (and copes with an
    unreachable replica as every write does). The replicas that took the claim keep it; the
    reservation path then writes a newer entry for the same blob over it."""

    n: int
    took: dict[str, NameRecord | None] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)

    @property
    def need(self) -> int:
        return self.n // 2 + 1

    def record(self, node: str, took: bool, prev: NameRecord | None = None) -> None:
        """``took`` False: refused or no answer (NameBusy, an error, a timeout)."""
        assert node not in self.took and node not in self.refused, "answer counted twice"
        if took:
            self.took[node] = prev
        else:
            self.refused.add(node)

    def verdict(self) -> Verdict:
        if len(self.took) >= self.need:
            return Verdict.HELD
        if self.n - len(self.refused) >= self.need:
            return Verdict.PENDING
        return Verdict.BUSY


def superseded(entries: Iterable[NameRecord | None], ours: bytes) -> NameRecord | None:
    """The entry a write of a name pointing at blob ``ours`` replaced, whose blob is to be
    freed: the newest live entry seen that points elsewhere. (Every entry seen is older than
    the write once it is acknowledged; entries older than the newest were replaced, and
    freed, by whoever wrote the newest. The write's own earlier copies, a claim that some
    replicas took before the reservation path wrote over it, are not a predecessor.)"""
    best: NameRecord | None = None
    for e in entries:
        if e is None or e.blob_id == ours:
            continue
        if best is None or name_version(e) > name_version(best):
            best = e
    return None if best is None or best.deleted else best


def backoff_s(attempt: int, rnd: random.Random, base_s: float = 0.005,
              cap_s: float = 0.25) -> float:
    """Full-jitter exponential backoff between reservation rounds: writers that collided
    spread out, so one of them soon holds a majority alone."""
    return rnd.uniform(0, min(cap_s, base_s * (2 ** min(attempt, 16))))


def worth_an_early_409(body_bytes: int | None, chunk_size_bytes: int) -> bool:
    """Whether a create (no upsert) should look the name up before it uploads the body, to
    fail fast with 409 when the name exists (the decision itself is taken again, at the
    name's replicas, when the name is written). Worth it for a body of more than one chunk
    or of unknown size; for one chunk or less the lookup (2 node requests) costs every
    create more than uploading and then deleting the body costs the rare conflict."""
    return body_bytes is None or body_bytes > chunk_size_bytes
