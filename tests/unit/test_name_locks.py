"""Conditional name writes: the replica's reservation rules (``ambry.storage.namelocks``),
the writer's tally (``ambry.frontend.namewrite``), and a model of several writers racing
through both under any interleaving that hypothesis can find.

What broke: concurrent creates of one name all succeeded, because the "does it exist" check
and the write were separate steps at the frontend. The property that must hold: of concurrent
create-if-absent writes of one name in a datacenter, at most one succeeds, and the name then
holds exactly that writer's entry on every replica after the entries merge.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.frontend.namewrite import ClaimTally, ReservationTally, Verdict, backoff_s
from ambry.protocol.messages import NameRecord
from ambry.storage.namelocks import MAX_LEASE_MS, NameLocks

K = b"name-key"


def test_one_holder_at_a_time_until_the_lease_ends() -> None:
    locks = NameLocks()
    assert locks.reserve(K, b"a", 1000, now_ms=0)
    assert not locks.reserve(K, b"b", 1000, now_ms=999)
    assert locks.reserve(K, b"a", 1000, now_ms=999)  # renewal by the holder
    assert locks.reserve(K, b"b", 1000, now_ms=2000)  # a's lease ended
    assert locks.holder(K) == b"b"


def test_a_write_in_flight_blocks_reservations_until_durable() -> None:
    locks = NameLocks()
    assert locks.reserve(K, b"a", 1000, 0)
    assert locks.begin_write(K, b"a", based_on_current=False)
    assert locks.holder(K) is None  # the lease ended with the write...
    assert not locks.reserve(K, b"b", 1000, 1)  # ...but the record is not durable yet
    locks.end_write(K)
    assert locks.reserve(K, b"b", 1000, 2)


def test_tokened_writes_need_the_lease_or_an_unchanged_entry() -> None:
    locks = NameLocks()
    assert locks.reserve(K, b"b", 1000, 0)
    assert not locks.begin_write(K, b"a", based_on_current=True)  # b holds it
    locks.release(K, b"b")
    assert not locks.begin_write(K, b"a", based_on_current=False)  # entry moved on
    assert locks.begin_write(K, b"a", based_on_current=True)  # replica lost its leases
    locks.end_write(K)
    assert locks.begin_write(K, None, based_on_current=False)  # unconditional: always
    locks.end_write(K)


def test_an_expired_lease_still_refuses_other_tokens_until_someone_reserves() -> None:
    # the stale holder may still write where nobody replaced it; another token may not
    locks = NameLocks()
    assert locks.reserve(K, b"a", 10, 0)
    assert not locks.begin_write(K, b"b", based_on_current=True)
    assert locks.begin_write(K, b"a", based_on_current=False)
    locks.end_write(K)


def test_leases_are_capped() -> None:
    locks = NameLocks()
    assert locks.reserve(K, b"a", 10**9, 0)
    assert locks.reserve(K, b"b", 1000, MAX_LEASE_MS)


def test_expired_leases_are_swept_so_the_table_stays_bounded() -> None:
    locks = NameLocks()
    for i in range(10_000):
        locks.reserve(b"k%d" % i, b"t", 10, now_ms=i * 100)
    assert locks.counts()[0] < 5000


def _rec(ts: int, blob: bytes = b"x" * 32) -> NameRecord:
    return NameRecord(1, 2, "n", blob, ts, 1)


@given(st.integers(1, 7), st.data())
def test_tally_holds_only_with_a_majority_and_never_both_ways(n: int, data: st.DataObject
                                                              ) -> None:
    tally = ReservationTally(n)
    answers = data.draw(st.lists(st.sampled_from([True, False, None]), min_size=n,
                                 max_size=n))
    verdicts = []
    for i, a in enumerate(answers):
        tally.record(f"n{i}", a, _rec(i) if a is not None else None)
        verdicts.append(tally.verdict())
    final = verdicts[-1]
    grants = answers.count(True)
    assert (final is Verdict.HELD) == (grants > n // 2)
    assert final is not Verdict.PENDING
    if final is Verdict.UNAVAILABLE:
        assert answers.count(None) > n - (n // 2 + 1)
    # once decided, more answers never flip HELD into something else
    first = next(i for i, v in enumerate(verdicts) if v is not Verdict.PENDING)
    if verdicts[first] is Verdict.HELD:
        assert all(v is Verdict.HELD for v in verdicts[first:])
    if tally.current is not None:  # the newest entry any replica showed
        assert tally.current.ts_ms == max(i for i, a in enumerate(answers) if a is not None)


@given(st.integers(0, 40))
def test_backoff_is_bounded_and_non_negative(attempt: int) -> None:
    w = backoff_s(attempt, random.Random(attempt))
    assert 0 <= w <= 0.25


# ------------------------------------------------------------------ a model of the race
@dataclass
class _Replica:
    locks: NameLocks = field(default_factory=NameLocks)
    view: NameRecord | None = None  # the durable entry
    pending: list[NameRecord] = field(default_factory=list)  # appended, not yet durable
    log: list[NameRecord] = field(default_factory=list)

    def reserve(self, token: bytes) -> tuple[bool, NameRecord | None]:
        return self.locks.reserve(K, token, 10_000, 0), self.view

    def put(self, rec: NameRecord, token: bytes, base: NameRecord | None) -> bool:
        based = self.view == base if self.locks.holder(K) is None else True
        if not self.locks.begin_write(K, token, based):
            return False
        self.pending.append(rec)
        self.log.append(rec)
        return True

    def flush(self) -> None:
        for rec in self.pending:
            if self.view is None or (rec.ts_ms, rec.blob_id) > (self.view.ts_ms,
                                                               self.view.blob_id):
                self.view = rec
            self.locks.end_write(K)
        self.pending.clear()


@dataclass
class _Writer:
    wid: int
    token: bytes
    phase: str = "reserve"  # reserve -> write -> done
    tally: ReservationTally | None = None
    asked: int = 0
    base: NameRecord | None = None
    record: NameRecord | None = None
    acks: int = 0
    answered: int = 0
    result: str = ""
    attempts: int = 0


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 5), st.lists(st.integers(0, 100), min_size=1, max_size=400))
def test_racing_creates_have_at_most_one_winner_and_it_survives_the_merge(
        writers_n: int, schedule: list[int]) -> None:
    replicas = [_Replica() for _ in range(3)]
    writers = [_Writer(i, b"token-%d" % i) for i in range(writers_n)]
    clock = [1]

    def step(w: _Writer) -> None:
        if w.phase == "reserve":
            if w.tally is None:
                w.tally, w.asked = ReservationTally(3), 0
            granted, cur = replicas[w.asked].reserve(w.token)
            w.tally.record(str(w.asked), granted, cur)
            w.asked += 1
            v = w.tally.verdict()
            if v is Verdict.PENDING:
                return
            if v is Verdict.HELD:
                cur = w.tally.current
                if cur is not None and not cur.deleted:
                    w.phase, w.result = "done", "conflict"
                else:
                    clock[0] += 1
                    w.base = cur
                    w.record = NameRecord(1, 2, "n", bytes([w.wid]) * 32, clock[0], 1)
                    w.phase = "write"
                for r in replicas:  # a held reservation the write does not reach ends
                    if w.phase == "done":
                        r.locks.release(K, w.token)
                return
            for r in replicas:  # busy: release, retry (bounded; then it gives up: 503)
                r.locks.release(K, w.token)
            w.tally, w.attempts = None, w.attempts + 1
            if w.attempts > 50:
                w.phase, w.result = "done", "unavailable"
            return
        if w.phase == "write":
            assert w.record is not None
            w.acks += replicas[w.answered].put(w.record, w.token, w.base)
            w.answered += 1
            if w.answered == 3:
                w.phase, w.result = "done", "created" if w.acks >= 2 else "unavailable"
                for r in replicas:
                    r.locks.release(K, w.token)

    for s in schedule:
        live = [w for w in writers if w.phase != "done"]
        if s % 7 == 0:  # the group commit makes a replica's appended records durable
            replicas[s % 3].flush()
        elif live:
            step(live[s % len(live)])
    # drain: flush, and let every writer finish (round robin)
    for _ in range(10_000):
        for r in replicas:
            r.flush()
        live = [w for w in writers if w.phase != "done"]
        if not live:
            break
        for w in live:
            step(w)
    for r in replicas:
        r.flush()
    created = [w for w in writers if w.result == "created"]
    assert len(created) <= 1, [w.result for w in writers]
    everything = [rec for r in replicas for rec in r.log]
    if created:
        # after replication merges every record, the name holds the winner's entry
        merged = max(everything, key=lambda rec: (rec.ts_ms, rec.blob_id))
        assert merged == created[0].record


# ------------------------------------------------------------------ upserts in one round
def test_a_claim_needs_no_holder_and_no_write_in_flight() -> None:
    # an upsert decided at the replica in one step must never slip between a reservation
    # holder's check and its write, nor run beside another write of the name
    locks = NameLocks()
    assert locks.reserve(K, b"a", 10, 0)
    assert not locks.claim(K)  # a holds it
    locks.release(K, b"a")
    assert locks.claim(K)
    assert not locks.claim(K) and not locks.reserve(K, b"b", 10, 1)  # in flight
    locks.end_write(K)
    assert locks.reserve(K, b"b", 10, 2)
    assert not locks.claim(K)  # an expired lease: its holder may still write
    assert locks.reserve(K, b"c", 10, 100)


def _version(rec: NameRecord) -> tuple[int, bytes]:
    return rec.ts_ms, rec.blob_id


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 5), st.lists(st.booleans(), min_size=5, max_size=5),
       st.lists(st.integers(0, 3), min_size=5, max_size=5),
       st.lists(st.integers(0, 100), min_size=1, max_size=400))
def test_claimed_upserts_racing_creates_never_lose_an_acknowledged_write(
        writers_n: int, upserts: list[bool], skews: list[int], schedule: list[int]) -> None:
    # What broke (would break): an upsert acknowledged in one claim round that is older than
    # a write acknowledged before it started (invisible: reads return the older blob), or
    # two creates both acknowledged. Writers are creates (reservation path) or upserts
    # (one claim round; the reservation path when a majority did not take it). Frontend
    # clocks may lag (``skews``): a claim stamps its own clock's time.
    replicas = [_Replica() for _ in range(3)]
    clock = [1]
    acks: list[tuple[int, NameRecord]] = []  # (step of the ack, record)
    starts: dict[int, int] = {}
    decided: dict[int, int] = {}  # step at which a reservation holder decided
    results: dict[int, str] = {}

    def claim(r: _Replica, rec: NameRecord) -> bool:
        if not r.locks.claim(K):
            return False
        if r.view is not None and _version(r.view) >= _version(rec):
            r.locks.end_write(K)
            return False
        r.pending.append(rec)
        r.log.append(rec)
        return True

    def writer(wid: int, upsert: bool):  # a generator: one replica request per step
        token = b"token-%d" % wid
        if upsert:
            clock[0] += 1
            rec = NameRecord(1, 2, "n", bytes([wid]) * 32, clock[0] - skews[wid], 1)
            tally = ClaimTally(3)
            for i, r in enumerate(replicas):
                tally.record(str(i), claim(r, rec))
                yield
                if tally.verdict() is not Verdict.PENDING:
                    break
            if tally.verdict() is Verdict.HELD:
                results[wid] = "ok"
                acks.append((now[0], rec))
                return
        for _attempt in range(50):
            rt = ReservationTally(3)
            for i, r in enumerate(replicas):
                granted, cur = r.reserve(token)
                rt.record(str(i), granted, cur)
                yield
                if rt.verdict() is not Verdict.PENDING:
                    break
            if rt.verdict() is Verdict.HELD:
                break
            for r in replicas:
                r.locks.release(K, token)
        else:
            results[wid] = "unavailable"
            return
        cur = rt.current
        decided[wid] = now[0]
        if not upsert and cur is not None and not cur.deleted:
            results[wid] = "conflict"
            for r in replicas:
                r.locks.release(K, token)
            return
        clock[0] = max(clock[0], cur.ts_ms if cur is not None else 0) + 1
        rec = NameRecord(1, 2, "n", bytes([wid]) * 32, clock[0], 1)
        ok = 0
        for r in replicas:  # acknowledged at the 2nd success; the 3rd is a straggler
            ok += r.put(rec, token, cur)
            if ok == 2 and wid not in results:
                results[wid] = "ok"
                acks.append((now[0], rec))
            yield
        for r in replicas:
            r.locks.release(K, token)
        results.setdefault(wid, "unavailable")

    now = [0]
    gens = {i: writer(i, upserts[i]) for i in range(writers_n)}

    def step(wid: int) -> None:
        starts.setdefault(wid, now[0])
        try:
            next(gens[wid])
        except StopIteration:
            del gens[wid]

    for s in schedule:
        now[0] += 1
        if s % 7 == 0:
            replicas[s % 3].flush()
        elif gens:
            step(sorted(gens)[s % len(gens)])
    for _ in range(10_000):
        for r in replicas:
            r.flush()
        if not gens:
            break
        for wid in sorted(gens):
            now[0] += 1
            step(wid)
    creates = [w for w in range(writers_n) if not upserts[w] and results.get(w) == "ok"]
    assert len(creates) <= 1, results
    for w in creates:  # no write was acknowledged between a create's decision and its ack
        t_ack = next(t for t, r in acks if r.blob_id == bytes([w]) * 32)
        assert not [r for t, r in acks if decided[w] < t < t_ack], (results, acks)
    for t_ack, rec in acks:  # a write that started after an ack is newer than it
        for wid, t_start in starts.items():
            if t_start > t_ack:
                later = [r for _t, r in acks if r.blob_id == bytes([wid]) * 32]
                assert all(_version(r) > _version(rec) for r in later), (rec, later)
