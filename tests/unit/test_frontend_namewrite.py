"""Pure decisions of the named-write path (ambry/frontend/namewrite.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ambry.frontend.namewrite import (
    ClaimTally,
    Verdict,
    name_version,
    superseded,
    worth_an_early_409,
)
from ambry.protocol.messages import NameRecord

CHUNK = 4 * 1024 * 1024


@given(size=st.integers(0, 4 * CHUNK), chunk=st.integers(1024, 2 * CHUNK))
def test_an_early_409_lookup_only_for_bodies_of_more_than_one_chunk(size: int,
                                                                    chunk: int) -> None:
    # a create looked the name up before every upload (2 node requests on each named
    # create); for a body of one chunk or less that cost more than the rare conflict saves
    assert worth_an_early_409(size, chunk) is (size > chunk)


def test_an_early_409_lookup_when_the_size_is_unknown() -> None:
    assert worth_an_early_409(None, CHUNK)  # chunked transfer: may be any size


@given(n=st.integers(1, 5), answers=st.lists(st.booleans(), max_size=5))
def test_a_claim_is_held_only_with_a_majority_and_falls_back_once_out_of_reach(
        n: int, answers: list[bool]) -> None:
    # an upsert acknowledged in one claim round without a majority would not be newer than
    # every acknowledged write; one that waits on when a majority is out of reach would
    # wait for a stopped replica instead of taking the reservation path
    t = ClaimTally(n)
    for i, took in enumerate(answers[:n]):
        t.record(str(i), took)
    took, refused = sum(answers[:n]), len(answers[:n]) - sum(answers[:n])
    v = t.verdict()
    assert (v is Verdict.HELD) == (took > n // 2)
    assert (v is Verdict.BUSY) == (took <= n // 2 and n - refused <= n // 2)


def _rec(ts: int, blob: int, deleted: bool = False) -> NameRecord:
    return NameRecord(1, 2, "n", b"" if deleted else bytes([blob]) * 32, ts, 1, deleted)


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 3), st.booleans()), max_size=6))
def test_the_superseded_entry_is_the_newest_other_one_and_only_if_live(
        entries: list[tuple[int, int, bool]]) -> None:
    # an overwrite frees the blob of the entry it replaced: never its own blob (a claim some
    # replicas took before the reservation path wrote over it), never a blob of an older
    # entry (freed by whoever replaced it), nothing when the newest other entry is a delete
    ours = bytes([0]) * 32
    recs = [_rec(ts, blob, deleted) for ts, blob, deleted in entries]
    got = superseded([None, *recs], ours)
    others = [e for e in recs if e.blob_id != ours]
    if not others:
        assert got is None
        return
    newest = max(others, key=name_version)
    assert got == (None if newest.deleted else newest)
