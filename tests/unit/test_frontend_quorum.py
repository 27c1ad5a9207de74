"""Quorum rules: writes need W successes; reads never turn an unreachable replica into a 404."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from ambry.frontend.quorum import (
    DEFINITIVE,
    Outcome,
    QuorumTracker,
    get_decided,
    get_verdict,
)

# Pure CPU work, but shared CI machines are loaded: no per-example deadline.
NO_DEADLINE = settings(deadline=None)

outcomes = st.sampled_from(list(Outcome))
S, NF, DEL, EXP, AE, CONF, RO, UNAV, ERR = (
    Outcome.SUCCESS, Outcome.NOT_FOUND, Outcome.DELETED, Outcome.EXPIRED,
    Outcome.ALREADY_EXISTS, Outcome.CONFLICT, Outcome.READ_ONLY, Outcome.UNAVAILABLE,
    Outcome.ERROR)


@st.composite
def quorum_case(draw: st.DrawFn) -> tuple[int, int, list[Outcome]]:
    n = draw(st.integers(1, 7))
    w = draw(st.integers(1, n))
    answers = draw(st.lists(outcomes, min_size=n, max_size=n))
    return n, w, answers


def run(n: int, w: int, answers: list[Outcome]) -> QuorumTracker:
    t = QuorumTracker(n, w)
    for i, o in enumerate(answers):
        t.record(f"r{i}", o)
    return t


# ---- writes ----------------------------------------------------------------------------------

@NO_DEADLINE
@given(quorum_case())
def test_write_never_succeeds_without_w_successes(case: tuple[int, int, list[Outcome]]) -> None:
    n, w, answers = case
    t = QuorumTracker(n, w)
    was_done = False
    verdict_at_done: bool | None = None
    for i, o in enumerate(answers):
        t.record(f"r{i}", o)
        successes = answers[:i + 1].count(S)
        assert t.succeeded == (successes >= w)
        # fails exactly when success became impossible
        assert t.done == (successes >= w or successes + (n - i - 1) < w)
        if t.done:
            assert t.result() is not S or successes >= w
            if verdict_at_done is None:
                verdict_at_done = t.succeeded
            assert t.succeeded == verdict_at_done  # success/failure never flips once done
        assert not (was_done and not t.done)
        was_done = t.done
    assert t.done and t.pending == 0


@NO_DEADLINE
@given(quorum_case(), st.randoms(use_true_random=False))
def test_write_verdict_does_not_depend_on_arrival_order(
        case: tuple[int, int, list[Outcome]], rnd: random.Random) -> None:
    n, w, answers = case
    shuffled = list(answers)
    rnd.shuffle(shuffled)
    note(f"n={n} w={w} answers={answers} shuffled={shuffled}")
    assert run(n, w, answers).result() is run(n, w, shuffled).result()


@NO_DEADLINE
@given(quorum_case())
def test_write_failure_verdict_is_definitive_only_with_enough_definitive_answers(
        case: tuple[int, int, list[Outcome]]) -> None:
    n, w, answers = case
    r = run(n, w, answers).result()
    if r in DEFINITIVE:
        assert sum(1 for o in answers if o in DEFINITIVE) >= n - w + 1
        assert r in answers
    if r is ERR:
        assert answers.count(ERR) >= n - w + 1
    if r is not S:
        assert answers.count(S) < w


def test_write_examples_n3_w2() -> None:
    assert run(3, 2, [S, S]).result() is S
    assert run(3, 2, [S, UNAV, S]).result() is S
    assert run(3, 2, [NF, NF]).result() is NF
    assert run(3, 2, [NF, UNAV]).result() is UNAV  # one not-found is not authoritative
    assert run(3, 2, [NF, S, UNAV]).result() is UNAV
    assert run(3, 2, [NF, DEL]).result() is DEL  # deleted outranks not-found
    assert run(3, 2, [RO, RO, S]).result() is RO
    assert run(3, 2, [ERR, ERR]).result() is ERR  # both refused: the router picks 4xx or 503
    assert run(3, 2, [ERR, NF]).result() is UNAV  # never pooled into a false 404
    assert run(3, 2, [ERR, UNAV]).result() is UNAV
    assert run(3, 2, [CONF, CONF]).result() is CONF
    assert run(3, 2, [AE, S, AE]).result() is AE


def test_tracker_decides_early_and_counts() -> None:
    t = QuorumTracker(3, 2)
    t.record("a", UNAV)
    assert not t.done
    t.record("b", RO)
    assert t.done and not t.succeeded and t.failed
    assert t.count(RO) == 1 and t.pending == 1
    t.record("c", S)  # a late answer is still accepted
    assert t.answers == {"a": UNAV, "b": RO, "c": S}
    assert t.result() is UNAV


def test_tracker_programmer_errors() -> None:
    t = QuorumTracker(2, 2)
    t.record("a", S)
    with pytest.raises(AssertionError):
        t.record("a", S)  # same replica twice
    with pytest.raises(AssertionError):
        t.result()  # not done yet
    t.record("b", S)
    with pytest.raises(AssertionError):
        t.record("c", S)  # more than n
    for n, w in ((3, 0), (3, 4), (0, 0)):
        with pytest.raises(ValueError):
            QuorumTracker(n, w)


# ---- reads -----------------------------------------------------------------------------------

@st.composite
def get_case(draw: st.DrawFn) -> tuple[dict[str, Outcome], int, dict[str, Outcome]]:
    count = draw(st.integers(1, 4))
    answered = draw(st.integers(0, count))
    origin = {f"o{i}": draw(outcomes) for i in range(answered)}
    others = draw(st.dictionaries(st.sampled_from([f"x{i}" for i in range(6)]), outcomes,
                                  max_size=6))
    return origin, count, others


@NO_DEADLINE
@given(get_case())
def test_get_is_never_a_false_404(case: tuple[dict[str, Outcome], int, dict[str, Outcome]]
                                  ) -> None:
    origin, count, others = case
    verdict = get_verdict(origin, count, others)
    note(f"origin={origin} count={count} others={others} -> {verdict}")
    if verdict is NF:
        assert len(origin) == count and all(o is NF for o in origin.values())
    if any(o in (UNAV, ERR) for o in origin.values()) or len(origin) < count:
        assert verdict is not NF
    assert verdict in (S, DEL, EXP, NF, UNAV)


@NO_DEADLINE
@given(get_case(), st.randoms(use_true_random=False))
def test_get_verdict_does_not_depend_on_answer_order(
        case: tuple[dict[str, Outcome], int, dict[str, Outcome]], rnd: random.Random) -> None:
    origin, count, others = case
    o_items, x_items = list(origin.items()), list(others.items())
    rnd.shuffle(o_items)
    rnd.shuffle(x_items)
    assert get_verdict(origin, count, others) is get_verdict(dict(o_items), count, dict(x_items))


@NO_DEADLINE
@given(get_case())
def test_get_rules(case: tuple[dict[str, Outcome], int, dict[str, Outcome]]) -> None:
    origin, count, others = case
    every = list(origin.values()) + list(others.values())
    verdict = get_verdict(origin, count, others)
    if DEL in every:
        assert verdict is DEL  # deletes win, even over a replica that still has the blob
    elif S in every:
        assert verdict is S
    elif EXP in every:
        assert verdict is EXP
    decided = get_decided(origin, count, others)
    if decided is not None:
        assert decided is verdict  # stopping early never changes the answer given those answers


def test_get_examples() -> None:
    assert get_verdict({"a": NF, "b": NF, "c": NF}, 3, {}) is NF
    assert get_verdict({"a": NF, "b": NF, "c": UNAV}, 3, {}) is UNAV
    assert get_verdict({"a": NF, "b": NF}, 3, {}) is UNAV  # one origin replica never answered
    assert get_verdict({"a": NF, "b": NF, "c": NF}, 3, {"x": UNAV}) is NF
    assert get_verdict({}, 3, {"x": NF, "y": NF, "z": NF}) is UNAV  # other DCs not authoritative
    assert get_verdict({"a": UNAV}, 3, {"x": S}) is S
    assert get_verdict({"a": S}, 3, {"x": DEL}) is DEL
    assert get_verdict({"a": EXP}, 3, {"x": S}) is S  # TTL update not yet replicated
    assert get_verdict({"a": EXP, "b": NF}, 3, {}) is EXP
    assert get_verdict({"a": ERR, "b": CONF, "c": NF}, 3, {}) is UNAV


def test_get_decided_stops_on_first_valid_reply_or_full_origin_not_found() -> None:
    assert get_decided({"a": NF}, 3, {}) is None
    assert get_decided({"a": NF, "b": UNAV}, 3, {}) is None
    assert get_decided({"a": UNAV}, 3, {"x": S}) is S
    assert get_decided({"a": NF}, 3, {"x": EXP}) is EXP
    assert get_decided({"a": NF, "b": NF, "c": NF}, 3, {}) is NF
    with pytest.raises(ValueError):
        get_verdict({"a": NF, "b": NF}, 1, {})
    with pytest.raises(ValueError):
        get_decided({}, 0, {})
