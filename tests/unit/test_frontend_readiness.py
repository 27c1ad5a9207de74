"""The readiness rule of a frontend (``ambry.frontend.readiness.short_partitions``).

What broke: /healthCheck said GOOD while no replica of the name partition could answer yet
(a fresh cluster's replicas were still rebuilding), so the first named PUT got 503.
"""

from __future__ import annotations

from ambry.frontend.readiness import short_partitions

LOCAL = {0: ["a", "b", "c"], 1: ["b", "c", "d"], 2: ["d"], 3: []}


def test_every_partition_needs_two_serving_local_replicas_or_all_if_fewer() -> None:
    everything = {n: [0, 1, 2] for n in "abcd"}
    assert short_partitions(LOCAL, everything) == {}
    # one replica down of three: still a quorum everywhere
    assert short_partitions(LOCAL, {**everything, "a": None}) == {}
    # a partition with one local replica needs that one
    assert short_partitions(LOCAL, {**everything, "d": None}) == {2: 0}


def test_rebuilding_replicas_do_not_count_until_they_serve() -> None:
    # a fresh cluster: every node answers, but each still rebuilds partition 0
    rebuilding = {"a": [1, 2], "b": [1, 2], "c": [1, 2], "d": [1, 2]}
    assert short_partitions(LOCAL, rebuilding) == {0: 0}
    rebuilding["a"] = [0, 1, 2]
    assert short_partitions(LOCAL, rebuilding) == {0: 1}
    rebuilding["c"] = [0, 1, 2]
    assert short_partitions(LOCAL, rebuilding) == {}


def test_no_answer_at_all_is_not_ready() -> None:
    assert short_partitions(LOCAL, {}) == {0: 0, 1: 0, 2: 0}
