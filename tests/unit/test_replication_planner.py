"""Properties of the replication planner (``ambry.replication.planner``): who pulls from whom,
and how long a replica lets a remote blob wait for a copy from its own datacenter.

The rule (DESIGN.md section 7, issues 5 and 13): every replica pulls all its peers in its own
datacenter and lists the records of the other datacenters; the first replica of a datacenter
it does not see down (rank 0, the designated one) fetches remote blobs at once, the replica of
rank r only once the record is r x delay old and the blob has not come from its own
datacenter. Healthy: blob bytes cross the DC link once per datacenter. One node dead or
stopped (detected or not): a blob still reaches the datacenter within about one delay (before
issue 13, the standby took over only after ``standby_wait_s`` = 30 s of detected failure).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.replication.planner import designated_puller, fetch_wait_s, plan_pulls

DELAY_S = 1.0


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[str], dict[str, str], dict[str, float]]:
    """A partition's replicas in cluster-map order, their datacenters, and how long each has
    been down as everyone sees it (0 = up)."""
    n_dcs = draw(st.integers(1, 3))
    replicas: list[str] = []
    dc_of: dict[str, str] = {}
    for d in range(n_dcs):
        for j in range(draw(st.integers(1, 4))):
            nid = f"dc{d}-n{j}"
            replicas.append(nid)
            dc_of[nid] = f"dc{d}"
    replicas = draw(st.permutations(replicas))  # cluster-map order is arbitrary
    down = {r: draw(st.sampled_from([0.0, 0.0, 0.0, 0.5, 30.0, 500.0])) for r in replicas}
    return list(replicas), dc_of, down


def view_of(me: str, down: dict[str, float]) -> Callable[[str], float]:
    """What ``me`` observes: every other node's down time (``me`` itself is always up)."""
    return lambda n: 0.0 if n == me else down[n]


@given(layouts())
def test_every_replica_pulls_all_its_intra_dc_peers(layout) -> None:
    replicas, dc_of, down = layout
    for me in replicas:
        plan = plan_pulls(me, replicas, dc_of, view_of(me, down), DELAY_S)
        assert plan.intra_dc == tuple(r for r in replicas
                                      if dc_of[r] == dc_of[me] and r != me)
        assert me not in plan.intra_dc and me not in plan.cross_dc


@given(layouts())
def test_the_designated_replica_lists_every_remote_replica_and_fetches_at_once(layout) -> None:
    replicas, dc_of, down = layout
    for me in replicas:
        plan = plan_pulls(me, replicas, dc_of, view_of(me, down), DELAY_S)
        remote = [r for r in replicas if dc_of[r] != dc_of[me]]
        if plan.designated == me:
            assert plan.cross_dc == tuple(remote) and plan.fetch_delay_s == 0
        else:
            # a standby lists one replica per remote datacenter (the first it does not see
            # down, if any): one more listing of the metadata, never a second copy of a blob
            assert plan.fetch_delay_s > 0
            for dc in {dc_of[r] for r in remote}:
                in_dc = [r for r in remote if dc_of[r] == dc]
                mine = [r for r in plan.cross_dc if dc_of[r] == dc]
                up = [r for r in in_dc if not down[r]]
                assert mine == [up[0] if up else in_dc[0]]
            assert len(plan.cross_dc) == len({dc_of[r] for r in remote})


@given(layouts())
def test_with_accurate_views_each_datacenter_has_one_immediate_fetcher_and_distinct_delays(
        layout) -> None:
    replicas, dc_of, down = layout
    for dc in sorted(set(dc_of.values())):
        live = [r for r in replicas if dc_of[r] == dc and down[r] == 0.0]
        delays = [plan_pulls(r, replicas, dc_of, view_of(r, down), DELAY_S).fetch_delay_s
                  for r in live]
        # in cluster-map order: 0, 1, 2 delays (the failed ones are skipped)
        assert delays == [i * DELAY_S for i in range(len(live))]
        designated = {plan_pulls(r, replicas, dc_of, view_of(r, down), DELAY_S).designated
                      for r in live}
        assert designated == ({live[0]} if live else set())


@st.composite
def partial_views(draw: st.DrawFn) -> tuple[list[str], dict[str, str], set[str],
                                            dict[str, set[str]]]:
    """A layout where some nodes have really failed, and each live node has noticed an
    arbitrary subset of the failures (a SIGSTOPped node is never noticed, a dead one after a
    request) and may even wrongly suspect a live node."""
    replicas, dc_of, _ = draw(layouts())
    failed = set(draw(st.lists(st.sampled_from(replicas), unique=True,
                               max_size=len(replicas) - 1)))
    views = {r: set(draw(st.lists(st.sampled_from(replicas), unique=True)))
             for r in replicas if r not in failed}
    return replicas, dc_of, failed, views


@settings(max_examples=300)
@given(partial_views())
def test_a_remote_blob_reaches_a_datacenter_within_one_delay_per_failed_node_before_it(
        layout) -> None:
    # the issue-13 bound: whatever the failure detector has noticed, the first live replica
    # of a datacenter fetches a remote blob at most (failed replicas ahead of it) x delay
    # after it was written; with any one node of the datacenter dead or stopped, one delay.
    replicas, dc_of, failed, views = layout
    for dc in sorted(set(dc_of.values())):
        in_dc = [r for r in replicas if dc_of[r] == dc]
        live = [r for r in in_dc if r not in failed]
        if not live:
            continue
        first_live = live[0]
        failed_ahead = in_dc.index(first_live)
        delays = [plan_pulls(r, replicas, dc_of,
                             lambda n, r=r: 10.0 if n in views[r] else 0.0,
                             DELAY_S).fetch_delay_s for r in live]
        assert min(delays) <= failed_ahead * DELAY_S
        if len(failed & set(in_dc)) <= 1:
            assert min(delays) <= DELAY_S


@given(layouts())
def test_plans_are_deterministic(layout) -> None:
    replicas, dc_of, down = layout
    for me in replicas:
        a = plan_pulls(me, replicas, dc_of, view_of(me, down), DELAY_S)
        b = plan_pulls(me, list(replicas), dict(dc_of), view_of(me, dict(down)), DELAY_S)
        assert a == b


@settings(max_examples=200)
@given(st.integers(2, 4), st.floats(0, 100), st.floats(0.1, 5))
def test_the_next_replica_fetches_at_once_while_it_sees_the_first_down_and_hands_back(
        n: int, down_s: float, delay_s: float) -> None:
    replicas = [f"dc1-n{j}" for j in range(n)] + ["dc2-n0"]
    dc_of = {r: r.split("-")[0] for r in replicas}
    first, second = replicas[0], replicas[1]
    plan = plan_pulls(second, replicas, dc_of, lambda nd: down_s if nd == first else 0.0,
                      delay_s)
    if down_s > 0:
        assert plan.designated == second and plan.fetch_delay_s == 0
    else:
        assert plan.designated == first and plan.fetch_delay_s == delay_s
    assert plan.cross_dc == ("dc2-n0",)
    back = plan_pulls(second, replicas, dc_of, lambda _n: 0.0, delay_s)
    assert back.designated == first and back.fetch_delay_s == delay_s


@given(st.floats(0, 10), st.floats(-1e6, 1e6))
def test_a_standby_waits_until_the_record_is_delay_old_never_longer_than_the_delay(
        delay_s: float, age_s: float) -> None:
    w = fetch_wait_s(delay_s, age_s)
    assert 0.0 <= w <= delay_s
    if 0 <= age_s <= delay_s:
        assert w == pytest.approx(delay_s - age_s)
    if age_s >= delay_s:
        assert w == 0.0
    assert fetch_wait_s(0.0, age_s) == 0.0


@given(st.floats(0, 10), st.floats(-100, 100), st.floats(0, 100))
def test_an_older_record_never_waits_longer(delay_s: float, age_s: float, more_s: float) -> None:
    assert fetch_wait_s(delay_s, age_s + more_s) <= fetch_wait_s(delay_s, age_s)


def test_every_replica_seen_down_falls_back_to_the_first() -> None:
    assert designated_puller(["a", "b"], lambda _n: 1e9) == "a"
    assert designated_puller([], lambda _n: 0.0) is None


def test_a_node_without_a_replica_has_no_plan() -> None:
    with pytest.raises(ValueError):
        plan_pulls("x", ["a", "b"], {"a": "dc1", "b": "dc1", "x": "dc1"}, lambda _n: 0.0, 1.0)


def test_single_datacenter_has_no_cross_dc_pulls() -> None:
    replicas = ["a", "b", "c"]
    dc_of = dict.fromkeys(replicas, "dc1")
    for i, me in enumerate(replicas):
        plan = plan_pulls(me, replicas, dc_of, lambda _n: 0.0, DELAY_S)
        assert plan.cross_dc == ()
        assert plan.designated == "a" and plan.fetch_delay_s == i * DELAY_S
