"""The conflict rule is a semilattice merge: commutative, associative, idempotent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ambry.common.blobstate import BlobState, merge

states = st.builds(BlobState, life_version=st.integers(0, 4), deleted=st.booleans(),
                   permanent=st.booleans(), delete_time_ms=st.integers(0, 10))
maybe = st.one_of(st.none(), states)


@given(maybe, maybe)
def test_commutative(a: BlobState | None, b: BlobState | None) -> None:
    assert merge(a, b) == merge(b, a)


@given(maybe, maybe, maybe)
def test_associative(a: BlobState | None, b: BlobState | None, c: BlobState | None) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(maybe)
def test_idempotent(a: BlobState | None) -> None:
    assert merge(a, a) == a


@given(st.lists(states, min_size=1, max_size=8), st.randoms())
def test_any_order_of_delivery_converges(records: list[BlobState], rnd: object) -> None:
    def fold(rs: list[BlobState]) -> BlobState | None:
        acc = None
        for r in rs:
            acc = merge(acc, r)
        return acc

    shuffled = list(records)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert fold(records) == fold(shuffled + records[:2])  # order and duplicates don't matter


def test_rules() -> None:
    live1 = BlobState(1)
    dead0 = BlobState(0, deleted=True, delete_time_ms=5)
    assert merge(live1, dead0) == live1  # an undelete beats the older life's delete
    assert merge(BlobState(0, permanent=True), dead0) == BlobState(0, True, True, 5)
    assert merge(BlobState(0, deleted=False, delete_time_ms=9), None) == BlobState(0)
