"""Properties of the replication planner (``ambry.replication.planner``): who pulls from whom.

The rule (DESIGN.md section 7, issue 5): every replica pulls from all its peers in its own
datacenter; in each datacenter exactly one live replica of a partition (the first in
cluster-map order that has not been down for ``standby_wait_s``) pulls from the other
datacenters, so blob bytes cross the DC link once per datacenter, not once per replica.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.replication.planner import designated_puller, plan_pulls

STANDBY_S = 30.0


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
    down = {r: draw(st.sampled_from([0.0, 0.0, 1.0, STANDBY_S - 0.1, STANDBY_S, 500.0]))
            for r in replicas}
    return list(replicas), dc_of, down


def view_of(me: str, down: dict[str, float]) -> Callable[[str], float]:
    """What ``me`` observes: every other node's down time (``me`` itself is always up)."""
    return lambda n: 0.0 if n == me else down[n]


@given(layouts())
def test_every_replica_pulls_all_its_intra_dc_peers(layout) -> None:
    replicas, dc_of, down = layout
    for me in replicas:
        plan = plan_pulls(me, replicas, dc_of, view_of(me, down), STANDBY_S)
        assert plan.intra_dc == tuple(r for r in replicas
                                      if dc_of[r] == dc_of[me] and r != me)
        assert me not in plan.intra_dc and me not in plan.cross_dc


@given(layouts())
def test_the_designated_replica_pulls_every_remote_replica_and_others_none(layout) -> None:
    replicas, dc_of, down = layout
    for me in replicas:
        plan = plan_pulls(me, replicas, dc_of, view_of(me, down), STANDBY_S)
        if plan.designated == me:
            assert plan.cross_dc == tuple(r for r in replicas if dc_of[r] != dc_of[me])
        else:
            assert plan.cross_dc == ()


@given(layouts())
def test_exactly_one_live_cross_dc_puller_per_datacenter_once_standby_wait_passed(
        layout) -> None:
    replicas, dc_of, down = layout
    live = [r for r in replicas if down[r] == 0.0]
    for dc in sorted(set(dc_of.values())):
        live_here = [r for r in live if dc_of[r] == dc]
        pullers = [r for r in live_here
                   if plan_pulls(r, replicas, dc_of, view_of(r, down), STANDBY_S).designated == r]
        assert len(pullers) <= 1
        in_dc = [r for r in replicas if dc_of[r] == dc]
        waiting = any(0 < down[r] < STANDBY_S for r in
                      in_dc[:in_dc.index(live_here[0])]) if live_here else False
        if live_here and not waiting:
            # no earlier replica is within its standby wait: a live one pulls cross-DC
            assert pullers == [next(r for r in in_dc if down[r] < STANDBY_S)]
        if waiting:
            # an earlier replica went down less than standby_wait_s ago: nobody takes over yet
            assert pullers == []


@given(layouts())
def test_all_live_replicas_of_a_datacenter_agree_on_the_designated_one(layout) -> None:
    replicas, dc_of, down = layout
    for dc in sorted(set(dc_of.values())):
        live_here = [r for r in replicas if dc_of[r] == dc and down[r] == 0.0]
        views = {plan_pulls(r, replicas, dc_of, view_of(r, down), STANDBY_S).designated
                 for r in live_here}
        assert len(views) <= 1


@given(layouts())
def test_plans_are_deterministic(layout) -> None:
    replicas, dc_of, down = layout
    for me in replicas:
        a = plan_pulls(me, replicas, dc_of, view_of(me, down), STANDBY_S)
        b = plan_pulls(me, list(replicas), dict(dc_of), view_of(me, dict(down)), STANDBY_S)
        assert a == b


@settings(max_examples=200)
@given(st.integers(2, 4), st.floats(0, 100), st.floats(0.1, 60))
def test_next_replica_takes_over_only_after_the_standby_wait(n: int, down_s: float,
                                                            standby_s: float) -> None:
    replicas = [f"dc1-n{j}" for j in range(n)] + ["dc2-n0"]
    dc_of = {r: r.split("-")[0] for r in replicas}
    first, second = replicas[0], replicas[1]

    def seen_by_second(node: str) -> float:
        return down_s if node == first else 0.0

    plan = plan_pulls(second, replicas, dc_of, seen_by_second, standby_s)
    if down_s >= standby_s:
        assert plan.designated == second and plan.cross_dc == ("dc2-n0",)
    else:
        assert plan.designated == first and plan.cross_dc == ()
    # and hands back as soon as the first one answers again
    back = plan_pulls(second, replicas, dc_of, lambda _n: 0.0, standby_s)
    assert back.designated == first and back.cross_dc == ()


def test_every_replica_down_falls_back_to_the_first() -> None:
    assert designated_puller(["a", "b"], lambda _n: 1e9, 1.0) == "a"
    assert designated_puller([], lambda _n: 0.0, 1.0) is None


def test_a_node_without_a_replica_has_no_plan() -> None:
    with pytest.raises(ValueError):
        plan_pulls("x", ["a", "b"], {"a": "dc1", "b": "dc1", "x": "dc1"}, lambda _n: 0.0, 1.0)


def test_single_datacenter_has_no_cross_dc_pulls() -> None:
    replicas = ["a", "b", "c"]
    dc_of = dict.fromkeys(replicas, "dc1")
    for me in replicas:
        plan = plan_pulls(me, replicas, dc_of, lambda _n: 0.0, STANDBY_S)
        assert plan.cross_dc == ()
        assert plan.designated == "a"
