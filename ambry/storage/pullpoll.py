"""The long poll of one ``replicate`` request: a peer's batched pull of every partition.

Owns what one request does from arrival to reply: read the durable records after each
partition's token (every partition that has new records in one trip to the I/O threads),
filter them for a peer that asked for it (``confirms``: skip the PUTs a frontend confirmed
durable on the peer's replica, hold young unconfirmed ones a moment), cut the reply to keep
its header bounded, and hold the request while there is nothing to send: until a record is
appended (then a short coalescing wait, so one answer carries a batch), a held record's
confirmation arrives or its hold ends, or ``wait_ms`` passes. A filtered peer's poll answers
only when there is something to send or at its deadline (with its tokens moved past what was
skipped): records every peer already has cost the peers no round trip at all.

Does not own the records (``feed`` through ``api.ReplicaStore``), the confirmations
(``confirms``), the request's schema (``ambry.protocol.messages``) nor the other ops (``ops``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ambry.common.errors import InvalidArgument
from ambry.protocol.messages import MAX_ENTRIES_BATCH, MAX_ENTRIES_BYTES
from ambry.storage.api import Entry, ReplicaStore, RunIO, Token
from ambry.storage.confirms import (
    ConfirmationBook,
    Decision,
    PullFilter,
    decide,
    filter_batch,
)

__all__ = ["ENTRY_WIRE_FIXED_BYTES", "entry_wire_bytes", "parse_token", "serve_replicate"]

COALESCE_S = 0.02  # a woken (unfiltered) long poll waits this long for more writes
MAX_HOLD_MS = 10_000
#: the approximate wire size of ``Entry.to_wire()`` without its key and props (the 11 field
#: names, 10 bytes of value and framing each, and 16 for the map): as ``ops`` counts replies
ENTRY_WIRE_FIXED_BYTES = 16 + sum(len(k) + 10 for k in
                                  ("seq", "t", "k", "lv", "sf", "tm", "ex", "bf", "pl", "rl", "p"))


def entry_wire_bytes(e: Entry) -> int:
    return ENTRY_WIRE_FIXED_BYTES + len(e.key) + len(e.props)


def parse_token(tok: Any) -> Token | None:
    if tok is None:
        return None
    if (not isinstance(tok, (list, tuple)) or len(tok) != 2
            or not isinstance(tok[0], (bytes, bytearray))
            or not isinstance(tok[1], int) or isinstance(tok[1], bool) or tok[1] < 0):
        raise InvalidArgument("token must be [incarnation bytes, sequence >= 0]")
    return (bytes(tok[0]), int(tok[1]))


@dataclass
class _Cursor:
    """One partition of one poll."""

    pid: int
    replica: ReplicaStore
    token: Token | None           # what the peer is told: covers all it was sent or skipped
    filter: PullFilter | None
    scan_token: Token | None = None   # after the last record read
    pending: list[Entry] = field(default_factory=list)  # read, not covered yet
    remaining: int = 0                # durable bytes after scan_token
    scanned: bool = False

    def __post_init__(self) -> None:
        self.scan_token = self.token

    def pending_bytes(self) -> int:
        return sum(e.record_len for e in self.pending)


def _read(cursors: Sequence[_Cursor], max_entries: int, max_bytes: int
          ) -> list[tuple[list[Entry], Token, int]]:
    """On an I/O thread: the next records of each cursor's partition."""
    return [c.replica.entries_since(c.scan_token, max_entries - len(c.pending),
                                    max(1, max_bytes - c.pending_bytes())) for c in cursors]


async def serve_replicate(args: Mapping[str, Any], replicas: Callable[[int], ReplicaStore], *,
                          changed: Callable[[], asyncio.Event], book: ConfirmationBook,
                          run_io: RunIO, draining: Callable[[], bool],
                          reply_budget_bytes: int) -> dict[str, Any]:
    reqs = args["requests"]
    if len(reqs) > 100_000 or not all(isinstance(x, (list, tuple)) and len(x) == 2
                                      and isinstance(x[0], int) for x in reqs):
        raise InvalidArgument("requests must be [[partition, token], ...]")
    filters = _filters(args)
    wait_s = max(0, min(args["wait_ms"], 60_000)) / 1000
    deadline = time.monotonic() + wait_s
    max_entries = max(1, min(args["max_entries"], MAX_ENTRIES_BATCH))
    per_bytes = max(1, min(args["max_bytes"], MAX_ENTRIES_BYTES) // max(1, len(reqs)))
    cursors = [_Cursor(pid, replicas(pid), parse_token(tok), filters.get(pid))
               for pid, tok in reqs]
    if filters and wait_s > 0:
        # a filtered peer needs nothing promptly but what it lacks; waiting up to the hold
        # lets the confirmations of the records just written arrive (and batches the reads)
        cap_ms = min(MAX_HOLD_MS, int(wait_s * 500))
        hold_ms = min(max(f.hold_ms for f in filters.values()), cap_ms)
        filters = {pid: PullFilter(f.incarnation, min(f.hold_ms, cap_ms), f.hold_dc)
                   for pid, f in filters.items()}
        for c in cursors:
            c.filter = filters.get(c.pid)
        coalesce_s = max(COALESCE_S, hold_ms / 1000)
    else:
        # no wait, no hold: a peer that must not wait (a first pass) is never held back
        filters = {pid: PullFilter(f.incarnation) for pid, f in filters.items()}
        for c in cursors:
            c.filter = filters.get(c.pid)
        coalesce_s = COALESCE_S
    scan = True
    while True:
        change = changed()
        if scan:
            need = [c for c in cursors if len(c.pending) < max_entries
                    and c.pending_bytes() < per_bytes
                    and not (c.scan_token is not None and c.replica.caught_up(c.scan_token))]
            if need:
                for c, (entries, tok, remaining) in zip(
                        need, await run_io(_read, need, max_entries, per_bytes), strict=True):
                    if c.token is None or c.token[0] != tok[0]:
                        c.token = (tok[0], 0)  # a new incarnation starts over
                        c.pending = []
                    c.pending += entries
                    c.scan_token, c.remaining, c.scanned = tok, remaining, True
        now_s = book.now()
        results: list[list[Any]] = []
        any_entries = False
        more = False
        budget = reply_budget_bytes
        held: list[tuple[_Cursor, Entry]] = []
        for c in cursors:
            f = c.filter
            b = filter_batch(c.pending, functools.partial(_decide, f, now_s, book), budget,
                             entry_wire_bytes, take_one=not any_entries)
            if b.covered_seq is not None:
                assert c.token is not None
                c.token = (c.token[0], b.covered_seq)
            c.pending = c.pending[b.consumed:]
            if f is not None:
                book.skipped += b.skipped
                book.sent += len(b.send)
                book.held += b.held is not None
            wire = [e.to_wire() for e in b.send]
            if wire:
                any_entries = True
                budget -= sum(entry_wire_bytes(e) for e in b.send)
            if b.held is not None:
                held.append((c, b.held))
            elif not c.pending and c.remaining:
                more = True  # everything read was skipped and more is durable: read on
            tok = c.token
            assert tok is not None  # a partition without a token is always read
            results.append([c.pid, wire, [tok[0], tok[1]], c.remaining + b.uncovered_bytes])
        left = deadline - time.monotonic()
        if any_entries or left <= 0 or draining():
            return {"results": results}
        if more:
            scan = True
            continue
        if held:
            # wait for a held record's confirmation or the end of its hold; what else
            # arrives meanwhile waits too (a hold is short, and this peer gets no round trip)
            release_s = min(max(0.0, book.first_held(e.key) + c.filter.hold_ms / 1000 - now_s)
                            for c, e in held if c.filter is not None)
            until = time.monotonic() + min(left, release_s)
            while True:
                noted = book.event
                wait = until - time.monotonic()
                if wait <= 0 or any(c.filter is not None
                                    and book.durable_on(e.key, c.filter.incarnation)
                                    for c, e in held):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(noted.wait(), wait)
            scan = False  # re-decide what was read; new records are read at the next change
            if not change.is_set():
                continue
        try:
            await asyncio.wait_for(change.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return {"results": results}
        # Something changed: let a few more writes land before answering, so one round
        # carries a batch, not one record per write per peer (each round costs both sides a
        # scan per partition; lag grows by at most this much).
        await asyncio.sleep(min(coalesce_s, max(0.0, deadline - time.monotonic())))
        scan = True


def _decide(f: PullFilter | None, now_s: float, book: ConfirmationBook, e: Entry) -> Decision:
    return decide(f, e, now_s, book.durable_on, book.first_held)


def _filters(args: Mapping[str, Any]) -> dict[int, PullFilter]:
    """The ``confirmed_on`` pairs of a filtered peer: partition -> its replica's
    incarnation."""
    raw = args.get("confirmed_on")
    if not raw:
        return {}
    if not isinstance(raw, (list, tuple)) or len(raw) > 100_000 or not all(
            isinstance(x, (list, tuple)) and len(x) == 2
            and isinstance(x[0], int) and not isinstance(x[0], bool)
            and isinstance(x[1], (bytes, bytearray)) and 1 <= len(x[1]) <= 64 for x in raw):
        raise InvalidArgument("confirmed_on must be [[partition, incarnation bytes], ...]")
    hold_ms = args.get("hold_ms") or 0
    hold_dc = args.get("hold_dc")
    if not 0 <= hold_ms <= MAX_HOLD_MS:
        raise InvalidArgument(f"hold_ms must be in [0, {MAX_HOLD_MS}]")
    if hold_dc is not None and not 0 <= hold_dc <= 0xFF:
        raise InvalidArgument("hold_dc must be a datacenter id in [0, 255]")
    return {pid: PullFilter(bytes(inc), hold_ms, hold_dc) for pid, inc in raw}
