"""The SDK's retry policy (ambry.client._retry): backoff bounds, which failures may be
retried for idempotent and non-idempotent steps, the endpoint order of attempts, and
endpoint cooldown. Pure functions, so property tests."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambry.client._retry import (
    Endpoints,
    Failure,
    RetryPolicy,
    backoff_s,
    endpoint_for_attempt,
    may_retry,
)

delays = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
draws = st.floats(min_value=0, max_value=1, exclude_max=True)


@given(st.integers(0, 10_000), delays, delays, draws)
def test_backoff_is_within_zero_and_the_capped_exponential(retry, base, cap, u):
    d = backoff_s(retry, base, cap, u)
    assert 0 <= d <= cap
    assert d <= base * 2.0 ** min(retry, 64)


@given(st.integers(0, 200), delays, delays)
def test_backoff_ceiling_never_shrinks_as_retries_grow(retry, base, cap):
    # u just below 1 draws the ceiling of the window
    assert backoff_s(retry, base, cap, 0.999999) <= backoff_s(retry + 1, base, cap, 0.999999)


@given(st.integers(0, 60), st.floats(0.001, 10), st.floats(0.001, 100))
def test_backoff_full_jitter_spans_the_whole_window(retry, base, cap):
    ceiling = min(cap, base * 2.0 ** retry)
    assert backoff_s(retry, base, cap, 0.0) == 0.0
    assert backoff_s(retry, base, cap, 1.0) == pytest.approx(ceiling)


@pytest.mark.parametrize("args", [(-1, 1, 1, 0.5), (0, -1, 1, 0.5), (0, 1, -1, 0.5),
                                  (0, 1, 1, 1.5), (0, 1, 1, -0.1)])
def test_backoff_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        backoff_s(*args)


@given(st.integers(1, 8), st.integers(1, 60))
def test_every_round_tries_every_endpoint_once_and_waits_only_between_rounds(n, attempts):
    seen: list[int] = []
    for a in range(attempts):
        index, backoff_round = endpoint_for_attempt(a, n)
        assert 0 <= index < n
        if a % n == 0 and a > 0:
            assert backoff_round == a // n - 1  # rounds 0, 1, 2, ... in order
        else:
            assert backoff_round is None  # failing over costs no sleep
        seen.append(index)
    for start in range(0, attempts - n + 1, n):
        assert sorted(seen[start:start + n]) == list(range(n))


def test_first_attempt_goes_to_the_preferred_endpoint_without_waiting():
    assert endpoint_for_attempt(0, 3) == (0, None)
    assert endpoint_for_attempt(1, 3) == (1, None)
    assert endpoint_for_attempt(3, 3) == (0, 0)
    assert endpoint_for_attempt(1, 1) == (0, 0)
    assert endpoint_for_attempt(2, 1) == (0, 1)


@pytest.mark.parametrize("kind,idempotent,expected", [
    (Failure.CONNECT, False, True),      # never reached the server: nothing to duplicate
    (Failure.UNAVAILABLE, False, True),  # 503: the frontend stored nothing reachable
    (Failure.TIMEOUT, False, False),     # may have been stored: a retry could duplicate it
    (Failure.CUT, False, False),
    (Failure.FINAL, False, False),
    (Failure.CONNECT, True, True),
    (Failure.UNAVAILABLE, True, True),
    (Failure.TIMEOUT, True, True),
    (Failure.CUT, True, True),
    (Failure.FINAL, True, False),        # 404, 400, ...: asking again cannot help
])
def test_which_failures_are_retried(kind, idempotent, expected):
    assert may_retry(kind, idempotent) is expected


@given(st.sampled_from(list(Failure)))
def test_a_non_idempotent_step_retries_no_more_than_an_idempotent_one(kind):
    assert not may_retry(kind, False) or may_retry(kind, True)


def test_retry_policy_delays_come_from_the_backoff():
    p = RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=2)
    rnd = random.Random(1)
    for r in range(10):
        assert 0 <= p.delay_s(r, rnd) <= min(2, 0.5 * 2**r)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=-1)


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_failed_endpoint_moves_to_the_back_until_its_cooldown_ends():
    now = FakeTime()
    eps = Endpoints(["http://dc1/", "http://dc2", "http://dc3"], cooldown_s=10, now=now)
    assert eps.order() == ["http://dc1", "http://dc2", "http://dc3"]
    eps.mark_failed("http://dc1")
    assert eps.order() == ["http://dc2", "http://dc3", "http://dc1"]
    now.t += 5
    eps.mark_failed("http://dc2")
    # both down: the one back soonest comes first among them, so a request always has a target
    assert eps.order() == ["http://dc3", "http://dc1", "http://dc2"]
    now.t += 5.5
    assert eps.order() == ["http://dc1", "http://dc3", "http://dc2"]
    eps.mark_ok("http://dc2")
    assert eps.order() == ["http://dc1", "http://dc2", "http://dc3"]


@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=20))
def test_endpoint_order_is_always_a_permutation(failed):
    now = FakeTime()
    eps = Endpoints(["http://a", "http://b", "http://c", "http://d"], cooldown_s=3, now=now)
    for f in failed:
        eps.mark_failed("http://" + f)
        now.t += 1
        assert sorted(eps.order()) == sorted(eps.urls)


def test_endpoints_need_at_least_one_distinct_url():
    with pytest.raises(ValueError):
        Endpoints([], cooldown_s=1)
    with pytest.raises(ValueError):
        Endpoints(["http://a", "http://a/"], cooldown_s=1)
