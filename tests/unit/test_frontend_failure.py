"""Failure detection, read-only cool-down, partition choice and the GET replica waves."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from ambry.frontend.failure import (
    FailureDetector,
    HedgeDelay,
    NodeHealth,
    ReadOnlyPartitions,
    choose_partition,
    order_replicas_for_get,
)

# Pure CPU work, but shared CI machines are loaded: no per-example deadline.
NO_DEADLINE = settings(deadline=None)


@dataclass
class FakeClock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


# ---- FailureDetector -------------------------------------------------------------------------

def test_node_is_skipped_after_threshold_errors_then_probed_once() -> None:
    clock = FakeClock()
    fd = FailureDetector(clock, threshold_errors=3, backoff_s=10)
    fd.record_failure("n")
    fd.record_failure("n")
    assert fd.is_available("n")  # 2 < 3
    fd.record_failure("n")
    assert not fd.is_available("n")
    clock.t += 9.9
    assert not fd.is_available("n")
    clock.t += 0.1
    assert fd.health("n") is NodeHealth.PROBE_DUE
    assert fd.is_available("n")  # the one probe
    assert not fd.is_available("n")
    assert not fd.is_available("n")
    fd.record_success("n")  # the probe came back
    assert fd.health("n") is NodeHealth.HEALTHY
    assert fd.is_available("n")


def test_failed_probe_starts_a_new_backoff() -> None:
    clock = FakeClock()
    fd = FailureDetector(clock, threshold_errors=2, backoff_s=5)
    fd.record_failure("n")
    fd.record_failure("n")
    clock.t += 5
    assert fd.is_available("n")
    clock.t += 1
    fd.record_failure("n")
    clock.t += 4.9
    assert not fd.is_available("n")
    clock.t += 0.1
    assert fd.is_available("n")


def test_lost_probe_is_granted_again_after_another_backoff() -> None:
    # A probe handed to a caller that never used it must not keep the node out forever.
    clock = FakeClock()
    fd = FailureDetector(clock, threshold_errors=1, backoff_s=5)
    fd.record_failure("n")
    clock.t += 5
    assert fd.is_available("n")
    clock.t += 4
    assert not fd.is_available("n")
    clock.t += 1
    assert fd.is_available("n")


def test_a_success_resets_the_consecutive_count() -> None:
    fd = FailureDetector(FakeClock(), threshold_errors=2, backoff_s=5)
    for _ in range(10):
        fd.record_failure("n")
        fd.record_success("n")
    assert fd.is_available("n")
    assert fd.is_available("other")


def test_detector_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        FailureDetector(FakeClock(), threshold_errors=0)
    with pytest.raises(ValueError):
        FailureDetector(FakeClock(), backoff_s=-1)


@dataclass
class Model:
    """The rule of DESIGN.md section 5, written from the spec, one node at a time."""

    threshold: int
    backoff: float
    errors: dict[str, int] = field(default_factory=dict)
    last_failure: dict[str, float] = field(default_factory=dict)
    last_grant: dict[str, float] = field(default_factory=dict)

    def fail(self, n: str, now: float) -> None:
        self.errors[n] = self.errors.get(n, 0) + 1
        self.last_failure[n] = now
        self.last_grant.pop(n, None)

    def succeed(self, n: str) -> None:
        self.errors.pop(n, None)
        self.last_grant.pop(n, None)

    def ask(self, n: str, now: float) -> bool:
        if self.errors.get(n, 0) < self.threshold:
            return True
        since = self.last_grant.get(n, self.last_failure[n])
        if now >= since + self.backoff:
            self.last_grant[n] = now
            return True
        return False


ops = st.lists(st.tuples(st.sampled_from(["fail", "ok", "ask", "tick"]),
                         st.sampled_from(["a", "b", "c"]),
                         st.floats(0, 7, allow_nan=False)), max_size=80)


@NO_DEADLINE
@given(st.integers(1, 4), st.sampled_from([0.0, 1.0, 5.0]), ops)
def test_detector_follows_the_rule(threshold: int, backoff: float,
                                   steps: list[tuple[str, str, float]]) -> None:
    clock = FakeClock()
    fd = FailureDetector(clock, threshold_errors=threshold, backoff_s=backoff)
    model = Model(threshold, backoff)
    for op, node, dt in steps:
        if op == "fail":
            fd.record_failure(node)
            model.fail(node, clock.t)
        elif op == "ok":
            fd.record_success(node)
            model.succeed(node)
        elif op == "tick":
            clock.t += dt
        else:
            assert fd.is_available(node) == model.ask(node, clock.t), (op, node, clock.t)


@NO_DEADLINE
@given(st.lists(st.sampled_from("abcdefg"), unique=True), st.sets(st.sampled_from("abcdefg")))
def test_order_puts_available_first_and_keeps_the_given_order(
        nodes: list[str], down: set[str]) -> None:
    fd = FailureDetector(FakeClock(), threshold_errors=1)
    for n in down:
        fd.record_failure(n)
    got = fd.order(nodes)
    assert sorted(got) == sorted(nodes)
    assert got == [n for n in nodes if n not in down] + [n for n in nodes if n in down]


# ---- ReadOnlyPartitions ----------------------------------------------------------------------

def test_read_only_partitions_expire_after_cooldown() -> None:
    clock = FakeClock()
    ro = ReadOnlyPartitions(clock, cooldown_s=60)
    ro.mark(7)
    assert ro.is_read_only(7) and not ro.is_read_only(8)
    assert ro.current() == {7}
    clock.t += 59.9
    assert ro.is_read_only(7)
    ro.mark(8)
    clock.t += 0.1
    assert not ro.is_read_only(7)
    assert ro.current() == {8}
    ro.mark(8)  # marking again extends the cool-down
    clock.t += 59
    assert ro.is_read_only(8)


# ---- choose_partition ------------------------------------------------------------------------

@NO_DEADLINE
@given(st.lists(st.integers(0, 20), max_size=15), st.sets(st.integers(0, 20)),
       st.integers(0, 2**32))
def test_choose_partition_picks_an_allowed_one(writable: list[int], exclude: set[int],
                                               seed: int) -> None:
    got = choose_partition(writable, exclude, random.Random(seed))
    allowed = set(writable) - exclude
    if not allowed:
        assert got is None
    else:
        assert got in allowed
        assert got == choose_partition(list(writable), exclude, random.Random(seed))


def test_choose_partition_is_roughly_uniform() -> None:
    rnd = random.Random(42)
    counts = {p: 0 for p in (1, 2, 3)}
    for _ in range(3000):
        p = choose_partition([1, 2, 2, 3, 4], {4}, rnd)
        assert p is not None
        counts[p] += 1
    assert all(800 < c < 1200 for c in counts.values()), counts


# ---- order_replicas_for_get ------------------------------------------------------------------

class Down:
    def __init__(self, down: set[str]) -> None:
        self.down = down

    def is_available(self, node_id: str) -> bool:
        return node_id not in self.down


def test_get_waves_examples() -> None:
    local = ["l1", "l2", "l3"]
    remote = {"east": ["e1", "e2", "e3"], "north": ["n1", "n2", "n3"],
              "west": ["w1", "w2", "w3"]}
    assert order_replicas_for_get(local, remote, "local", Down(set())) == [
        ["l1", "l2"], ["l3"], ["e1", "e2", "e3"], ["n1", "n2", "n3"], ["w1", "w2", "w3"]]
    # origin DC goes right after the local replicas
    assert order_replicas_for_get(local, remote, "west", Down(set())) == [
        ["l1", "l2"], ["l3"], ["w1", "w2", "w3"], ["e1", "e2", "e3"], ["n1", "n2", "n3"]]
    # unavailable nodes are a last-resort wave, after every healthy one
    assert order_replicas_for_get(local, remote, "west", Down({"l1", "w2", "e1"})) == [
        ["l2", "l3"], ["w1", "w3"], ["e2", "e3"], ["n1", "n2", "n3"], ["l1", "w2", "e1"]]
    assert order_replicas_for_get([], {"east": ["e1"]}, "east", Down(set())) == [["e1"]]
    with pytest.raises(ValueError):
        order_replicas_for_get(["a", "a"], {}, "x", Down(set()))


@st.composite
def topology(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]], str, set[str]]:
    local = [f"l{i}" for i in range(draw(st.integers(0, 4)))]
    dcs = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4))
    remote = {dc: [f"{dc}{i}" for i in range(draw(st.integers(0, 4)))] for dc in dcs}
    origin = draw(st.sampled_from(["local", "a", "b", "c", "d"]))
    every = local + [n for ns in remote.values() for n in ns]
    down = draw(st.sets(st.sampled_from(every))) if every else set()
    return local, remote, origin, down


@NO_DEADLINE
@given(topology())
def test_get_waves_cover_every_replica_once_healthy_first(
        case: tuple[list[str], dict[str, list[str]], str, set[str]]) -> None:
    local, remote, origin, down = case
    waves = order_replicas_for_get(local, remote, origin, Down(down))
    note(f"local={local} remote={remote} origin={origin} down={down} waves={waves}")
    flat = [n for w in waves for n in w]
    every = local + [n for ns in remote.values() for n in ns]
    assert sorted(flat) == sorted(every)
    assert all(waves)
    healthy_local = [n for n in local if n not in down]
    if healthy_local:
        assert waves[0] == healthy_local[:2]
    if down:
        assert set(waves[-1]) == down  # down nodes only in the last wave
    if origin in remote and origin != "local" and any(n not in down for n in remote[origin]):
        origin_wave = [n for n in remote[origin] if n not in down]
        assert origin_wave in waves
        before = [n for w in waves[:waves.index(origin_wave)] for n in w]
        assert set(before) <= set(healthy_local)  # origin right after the local replicas


def test_get_waves_grant_probes_through_the_detector() -> None:
    clock = FakeClock()
    fd = FailureDetector(clock, threshold_errors=1, backoff_s=5)
    fd.record_failure("l1")
    assert order_replicas_for_get(["l1", "l2", "l3"], {}, "local", fd) == [["l2", "l3"], ["l1"]]
    clock.t += 5
    assert order_replicas_for_get(["l1", "l2", "l3"], {}, "local", fd) == [["l1", "l2"], ["l3"]]
    assert order_replicas_for_get(["l1", "l2", "l3"], {}, "local", fd) == [["l2", "l3"], ["l1"]]


# ------------------------------------------------------------------------------- HedgeDelay
@NO_DEADLINE
@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=600),
       st.floats(min_value=1, max_value=100), st.sampled_from([8, 64, 512]))
def test_hedge_delay_stays_within_its_bounds(samples, percentile, window):
    h = HedgeDelay(percentile=percentile, min_s=0.005, max_s=2.0, window=window,
                   min_samples=8)
    assert h.delay() == 0.005
    for x in samples:
        h.record(x)
        assert 0.005 <= h.delay() <= 2.0


@NO_DEADLINE
@given(st.floats(min_value=0, max_value=3, allow_nan=False), st.integers(32, 300))
def test_hedge_delay_of_steady_answers_is_their_time(x, n):
    h = HedgeDelay(min_s=0.005, max_s=1.0, window=64, min_samples=32)
    for _ in range(n):
        h.record(x)
    assert h.delay() == min(1.0, max(0.005, x))


def test_hedge_delay_follows_the_p95_not_the_outliers_and_forgets_old_times():
    h = HedgeDelay(percentile=95, min_s=0.001, max_s=10.0, window=100, min_samples=10)
    for i in range(100):
        h.record(5.0 if i % 50 == 0 else 0.010)  # 2 % slow answers
    assert h.delay() == 0.010
    for _ in range(100):  # the replicas got slower: the whole window is now 30 ms
        h.record(0.030)
    assert h.delay() == 0.030


def test_hedge_delay_rejects_bad_settings():
    for kw in ({"percentile": 0}, {"percentile": 101}, {"min_s": 2, "max_s": 1},
               {"window": 4}):
        with pytest.raises(ValueError):
            HedgeDelay(**kw)
