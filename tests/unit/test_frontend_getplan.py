"""The GET wave/hedge plan (ambry/frontend/getplan.py): a model-checked state machine.

Hypothesis drives the plan as the router does, with any layout of replicas over DCs, any
answers and any interleaving of answers and hedge expiries, and checks the plan's promises:
each replica asked once, waves in order, a hedged wave widened only by a non-deciding answer
or an expired hedge, never stuck (undecided and nothing open means finished), and a verdict
equal to the read rule over the answers it saw.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.frontend.getplan import GetPlan
from ambry.frontend.quorum import Outcome, get_decided, get_verdict

OUTCOMES = [Outcome.SUCCESS, Outcome.NOT_FOUND, Outcome.DELETED, Outcome.EXPIRED,
            Outcome.UNAVAILABLE, Outcome.ERROR]


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[list[str]], dict[str, str], str, int, dict[str, Outcome]]:
    dcs = ["dc1", "dc2", "dc3"][: draw(st.integers(1, 3))]
    dc_of: dict[str, str] = {}
    for dc in dcs:
        for i in range(draw(st.integers(1, 4))):
            dc_of[f"{dc}-n{i}"] = dc
    replicas = list(dc_of)
    order = draw(st.permutations(replicas))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=4)))
    waves, last = [], 0
    for c in [*cuts, len(order)]:
        waves.append(list(order[last:c]))
        last = c
    origin = draw(st.sampled_from(dcs))
    origin_count = sum(1 for d in dc_of.values() if d == origin)
    answers = {r: draw(st.sampled_from(OUTCOMES)) for r in replicas}
    return waves, dc_of, origin, origin_count, answers


@settings(max_examples=400, deadline=None)
@given(layout=layouts(), hedge=st.booleans(), steps=st.lists(st.integers(0, 10), max_size=60))
def test_plan_asks_each_replica_once_in_wave_order_and_decides_by_the_read_rule(
        layout: tuple[list[list[str]], dict[str, str], str, int, dict[str, Outcome]],
        hedge: bool, steps: list[int]) -> None:
    waves, dc_of, origin, origin_count, truth = layout
    plan = GetPlan(waves, dc_of, origin, origin_count, "dc1", hedge=hedge)
    wave_of = {r: i for i, w in enumerate(waves) for r in w}
    asked: list[str] = []
    answered: dict[str, Outcome] = {}
    hedges = 0

    def take(nids: list[str]) -> None:
        for r in nids:
            assert r not in asked, f"{r} asked twice"
            # a replica of a later wave only once every replica asked before it answered
            assert all(x in answered for x in asked if wave_of[x] < wave_of[r])
            asked.append(r)

    take(plan.start())
    it = iter(steps)
    while not plan.finished:
        assert plan.open, "undecided, nothing open and not finished: the driver would hang"
        step = next(it, 0)
        if step == 10 and plan.hedge_pending:  # the hedge delay passed
            hedges += 1
            take(plan.hedge_expired())
            continue
        opened = sorted(plan.open)
        r = opened[step % len(opened)]
        answered[r] = truth[r]
        take(plan.answered(r, truth[r]))
        # a hedged wave has at most one replica open per hedge and per non-deciding answer
        if hedge:
            local_waves = [i for i, w in enumerate(waves)
                           if w and all(dc_of[x] == "dc1" for x in w)]
            for i in local_waves:
                open_in_wave = [x for x in plan.open if wave_of[x] == i]
                assert len(open_in_wave) <= 1 + hedges

    origin_ans = {r: o for r, o in answered.items() if dc_of[r] == origin}
    other_ans = {r: o for r, o in answered.items() if dc_of[r] != origin}
    if plan.decided is not None:
        assert plan.decided is get_decided(origin_ans, origin_count, other_ans)
        assert plan.verdict() is plan.decided
        assert plan.hedge_expired() == []  # decided: nobody more is asked
    else:
        assert sorted(asked) == sorted(dc_of)  # undecided only after asking everyone
        assert plan.verdict() is get_verdict(origin_ans, origin_count, other_ans)


def test_hedged_local_wave_starts_with_one_replica_and_unhedged_with_all() -> None:
    dc_of = {"a": "dc1", "b": "dc1", "x": "dc2", "y": "dc2"}
    hedged = GetPlan([["a", "b"], ["x", "y"]], dc_of, "dc1", 2, "dc1", hedge=True)
    assert hedged.start() == ["a"]
    assert hedged.hedge_pending
    assert hedged.hedge_expired() == ["b"]
    plain = GetPlan([["a", "b"], ["x", "y"]], dc_of, "dc1", 2, "dc1", hedge=False)
    assert plain.start() == ["a", "b"]
    assert not plain.hedge_pending


def test_remote_wave_is_asked_at_once_after_local_not_found() -> None:
    # blob from dc2, read in dc1: the local 404s are not authoritative, dc2's wave goes out whole
    dc_of = {"a": "dc1", "b": "dc1", "x": "dc2", "y": "dc2"}
    plan = GetPlan([["a", "b"], ["x", "y"]], dc_of, "dc2", 2, "dc1", hedge=True)
    assert plan.start() == ["a"]
    assert plan.answered("a", Outcome.NOT_FOUND) == ["b"]
    assert plan.answered("b", Outcome.NOT_FOUND) == ["x", "y"]
    assert plan.answered("x", Outcome.NOT_FOUND) == []
    assert not plan.finished
    assert plan.answered("y", Outcome.NOT_FOUND) == []
    assert plan.decided is Outcome.NOT_FOUND


def test_no_replicas_is_finished_and_unavailable() -> None:
    plan = GetPlan([], {}, "dc1", 1, "dc1", hedge=True)
    assert plan.start() == []
    assert plan.finished
    assert plan.verdict() is Outcome.UNAVAILABLE
