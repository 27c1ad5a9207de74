"""The storage node's snapshot choice (pure): regular snapshots per replica, and a node-wide
bound on the records a kill -9 would make the restart replay."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ambry.storage.maintenance import replicas_to_snapshot

TAILS = st.dictionaries(st.integers(0, 31), st.integers(0, 200_000), max_size=32)


@given(TAILS, st.booleans(), st.integers(1, 100_000))
def test_what_is_left_unsnapshotted_fits_the_node_bound(tails: dict[int, int], regular: bool,
                                                        bound: int) -> None:
    chosen = replicas_to_snapshot(tails, {}, regular=regular, min_records=10_000,
                                  idle_after_s=600, node_tail_records=bound)
    assert len(chosen) == len(set(chosen))
    assert all(tails[p] > 0 for p in chosen)  # never a snapshot of nothing
    left = sum(n for p, n in tails.items() if p not in chosen)
    assert left <= bound
    # minimal for the bound: taking back the smallest bound-driven choice would exceed it
    if not regular and chosen:
        smallest = min(chosen, key=lambda p: tails[p])
        assert left + tails[smallest] > bound


def test_regular_round_takes_big_and_idle_tails_only() -> None:
    tails = {0: 12_000, 1: 5, 2: 5, 3: 0}
    idle = {0: 10.0, 1: 10.0, 2: 900.0, 3: 900.0}
    got = replicas_to_snapshot(tails, idle, regular=True, min_records=10_000,
                               idle_after_s=600, node_tail_records=10**9)
    assert sorted(got) == [0, 2]
    assert replicas_to_snapshot(tails, idle, regular=False, min_records=10_000,
                                idle_after_s=600, node_tail_records=10**9) == []


def test_bound_takes_the_largest_tails_first() -> None:
    tails = {0: 9_000, 1: 9_500, 2: 100, 3: 9_000}
    got = replicas_to_snapshot(tails, {}, regular=False, min_records=10_000,
                               idle_after_s=600, node_tail_records=10_000)
    assert got == [1, 0]  # 27,600 -> 18,100 -> 9,100
