"""The pure parts of skipping what an intra-DC peer already has (``ambry.storage.confirms``):
the filter decision of a ``replicate`` long poll, the batch it may cover, the node's bounded
book of confirmations, their wire checks, and the frontend's per-node queue.

Before: every PUT a frontend wrote to all three replicas was pulled by both peers of each
replica and checked there (a third of a node's CPU per small PUT). The safety rules these
tests pin: only a PUT is ever skipped, only when confirmed on the puller's *own* replica
incarnation; nothing after a held record is covered; a hold never outlives ``hold_ms``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.protocol.client import MAX_CONFIRMS_QUEUED, NodeClient
from ambry.protocol.messages import (
    MAX_CONFIRMS_PER_REQUEST,
    BadRequestFrame,
    parse_request,
)
from ambry.storage.api import Entry, RecordType
from ambry.storage.confirms import (
    ConfirmationBook,
    Decision,
    PullFilter,
    decide,
    filter_batch,
)
from ambry.storage.ops import _approx_wire_bytes
from ambry.storage.pullpoll import entry_wire_bytes

NOW_MS = 1_700_000_000_000  # creation times of the records (the frontend's clock)
MY_DC = 1
INC_ME, INC_OTHER = b"m" * 16, b"o" * 16


def blob_key(dc: int = MY_DC, tag: int = 0) -> bytes:
    return bytes([0, 1, 0, dc]) + b"\0" * 12 + tag.to_bytes(16, "big")


def entry(seq: int, rtype: RecordType = RecordType.PUT, key: bytes | None = None,
          age_ms: int = 10_000, record_len: int = 100) -> Entry:
    return Entry(seq, rtype, key if key is not None else blob_key(tag=seq), 0, 0,
                 NOW_MS - age_ms, 0, 0, 10, record_len)


# ------------------------------------------------------------------------ decide
NOW_S = 5_000.0


def never(_key: bytes, _inc: bytes) -> bool:
    return False


def held_for(seconds: float) -> Callable[[bytes], float]:
    return lambda _key: NOW_S - seconds


@settings(deadline=None)
@given(rtype=st.sampled_from(list(RecordType)), confirmed=st.booleans(),
       held_s=st.floats(0, 5), hold_ms=st.integers(0, 2_000), dc=st.integers(0, 3),
       creation_age_ms=st.integers(-10_000, 10_000))
def test_decide_skips_only_puts_confirmed_on_the_pullers_incarnation(
        rtype: RecordType, confirmed: bool, held_s: float, hold_ms: int, dc: int,
        creation_age_ms: int) -> None:
    # what broke without this rule: a delete or a name record skipped would never reach
    # the peer (the frontend confirms PUT acks only)
    e = entry(5, rtype, blob_key(dc, 5), creation_age_ms)
    seen: list[tuple[bytes, bytes]] = []

    def durable_on(key: bytes, inc: bytes) -> bool:
        seen.append((key, inc))
        return confirmed and inc == INC_ME

    f = PullFilter(INC_ME, hold_ms, MY_DC)
    d = decide(f, e, NOW_S, durable_on, held_for(held_s))
    if rtype != RecordType.PUT:
        assert d is Decision.SEND and not seen
        return
    assert seen == [(e.key, INC_ME)]  # asked about the puller's own incarnation only
    if confirmed:
        assert d is Decision.SKIP
    else:  # held only from this datacenter, and never beyond hold_ms after the first hold
        # (whatever the record's creation time says: clocks may be off)
        assert (d is Decision.HOLD) == (dc == MY_DC and held_s < hold_ms / 1000)


def test_decide_without_a_filter_sends_everything() -> None:
    # a cross-DC puller asks for no filter: nothing is skipped, whatever was confirmed
    assert decide(None, entry(1), NOW_S, lambda k, i: True, held_for(0)) is Decision.SEND


def test_decide_a_confirmation_naming_another_incarnation_changes_nothing() -> None:
    # a wiped replica pulls with a new incarnation: what its old one acked is sent again
    f = PullFilter(INC_ME, 0, None)
    assert decide(f, entry(1), NOW_S, lambda k, i: i == INC_OTHER,
                  held_for(0)) is Decision.SEND


def test_decide_never_holds_a_blob_from_another_datacenter() -> None:
    # a blob fetched from another DC is never confirmed here: holding it only adds lag
    f = PullFilter(INC_ME, 500, MY_DC)
    assert decide(f, entry(1, key=blob_key(dc=2)), NOW_S, never, held_for(0)) is Decision.SEND
    assert decide(f, entry(1), NOW_S, never, held_for(0.1)) is Decision.HOLD
    assert decide(f, entry(1), NOW_S, never, held_for(0.5)) is Decision.SEND


def test_book_hold_counts_from_the_first_hold_on_the_nodes_clock() -> None:
    # before: a hold counted from the record's creation time, so under load (a PUT's last
    # ack 100+ ms after the frontend stamped it) a fifth of the records were sent anyway
    clock = FakeMonotonic()
    book = ConfirmationBook(monotonic=clock)
    assert book.first_held(b"k") == 100.0
    clock.t += 3
    assert book.first_held(b"k") == 100.0 and book.first_held(b"j") == 103.0


# ------------------------------------------------------------------------ filter_batch
@settings(max_examples=300, deadline=None)  # a busy 2-core box: no timing
@given(decisions=st.lists(st.sampled_from(list(Decision)), max_size=30),
       budget=st.integers(0, 3000), take_one=st.booleans())
def test_filter_batch_covers_only_a_prefix_of_sent_or_skipped_records(
        decisions: list[Decision], budget: int, take_one: bool) -> None:
    # the token moves to covered_seq: a record below it that was neither sent nor skipped
    # would be lost to the puller for good
    entries = [entry(10 + i, record_len=50 + i) for i in range(len(decisions))]
    by_seq = {e.sequence: d for e, d in zip(entries, decisions, strict=True)}
    b = filter_batch(entries, lambda e: by_seq[e.sequence], budget, lambda e: 100, take_one)
    covered = entries[:b.consumed]
    assert all(by_seq[e.sequence] is not Decision.HOLD for e in covered)
    assert b.send == [e for e in covered if by_seq[e.sequence] is Decision.SEND]
    assert b.skipped == sum(by_seq[e.sequence] is Decision.SKIP for e in covered)
    assert b.covered_seq == (covered[-1].sequence if covered else None)
    assert b.uncovered_bytes == sum(e.record_len for e in entries[b.consumed:])
    if Decision.HOLD in decisions:
        first = decisions.index(Decision.HOLD)
        assert b.consumed <= first
        assert b.held is (entries[first] if b.consumed == first else None)
    else:
        assert b.held is None
    # the reply stays bounded, and a sendable record is never stuck behind an empty reply
    assert 100 * len(b.send) <= max(budget, 100 if take_one else 0)
    if b.consumed < len(entries) and b.held is None:
        assert b.send or not take_one


def test_filter_batch_all_skipped_advances_past_everything() -> None:
    entries = [entry(s) for s in (3, 4, 5)]
    b = filter_batch(entries, lambda e: Decision.SKIP, 10_000, entry_wire_bytes)
    assert (b.send, b.covered_seq, b.consumed, b.skipped) == ([], 5, 3, 3)


def test_entry_wire_bytes_is_the_reply_budget_arithmetic_of_ops() -> None:
    # the long poll cuts replies by this; it must count as the old per-entry estimate did
    for props in (b"", b"x" * 77):
        e = Entry(9, RecordType.NAME_PUT, os.urandom(40), 1, 2, 3, 4, 5, 6, 7, props)
        assert entry_wire_bytes(e) == _approx_wire_bytes(e.to_wire())


# ------------------------------------------------------------------------ the book
class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_book_is_bounded_in_count_and_age() -> None:
    clock = FakeMonotonic()
    book = ConfirmationBook(max_keys=3, ttl_s=10.0, monotonic=clock)
    keys = [blob_key(tag=i) for i in range(5)]
    book.note([(k, [INC_ME]) for k in keys])
    assert len(book) == 3 and not book.durable_on(keys[0], INC_ME)
    assert book.durable_on(keys[4], INC_ME) and not book.durable_on(keys[4], INC_OTHER)
    clock.t += 10.0  # too old: ignored, then dropped at the next note
    assert not book.durable_on(keys[4], INC_ME)
    book.note([(keys[0], [INC_OTHER])])
    assert len(book) == 1 and book.durable_on(keys[0], INC_OTHER)


def test_book_merges_incarnations_of_one_blob_and_wakes_held_polls() -> None:
    async def run() -> None:
        book = ConfirmationBook()
        ev = book.event
        book.note([(blob_key(), [INC_ME])])
        assert ev.is_set() and book.event is not ev
        book.note([(blob_key(), [INC_OTHER])])
        assert book.durable_on(blob_key(), INC_ME) and book.durable_on(blob_key(), INC_OTHER)
    asyncio.run(run())


# ------------------------------------------------------------------------ the wire
def _header(confirms: object) -> dict[str, object]:
    return {"op": "ping", "corr": 7, "rid": "r", "confirms": confirms}


@pytest.mark.parametrize("bad", [
    "nope", [[b"k" * 32]], [[b"short", [INC_ME]]], [[b"k" * 32, []]],
    [[b"k" * 32, [INC_ME] * 9]], [[b"k" * 32, ["text"]]],
    [[b"k" * 32, [INC_ME]]] * (MAX_CONFIRMS_PER_REQUEST + 1)])
def test_malformed_confirms_are_a_clear_bad_request(bad: object) -> None:
    # a node must answer a broken piggyback with INVALID_ARGUMENT, never store garbage
    with pytest.raises(BadRequestFrame) as ei:
        parse_request(_header(bad))
    assert ei.value.corr == 7 and not ei.value.fatal


def test_confirms_ride_on_any_request() -> None:
    req = parse_request(_header([[b"k" * 32, [INC_ME, INC_OTHER]]]))
    assert req.confirms == ((b"k" * 32, (INC_ME, INC_OTHER)),)
    assert parse_request({"op": "ping", "corr": 1}).confirms == ()


def test_node_client_queue_is_bounded_and_drained_a_request_at_a_time() -> None:
    c = NodeClient("127.0.0.1", 1)
    assert c.confirm(b"a" * 32, INC_ME) is True      # the first: a flush may be scheduled
    assert c.confirm(b"a" * 32, INC_OTHER) is False  # merged into the same blob
    for i in range(MAX_CONFIRMS_QUEUED + 10):
        c.confirm(i.to_bytes(32, "big"), INC_ME)
    assert c.confirms_queued == MAX_CONFIRMS_QUEUED
    first = c._take_confirms()
    assert len(first) == MAX_CONFIRMS_PER_REQUEST and first[0] == [b"a" * 32,
                                                                    [INC_ME, INC_OTHER]]
    assert c.confirms_queued == MAX_CONFIRMS_QUEUED - MAX_CONFIRMS_PER_REQUEST
