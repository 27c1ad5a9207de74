"""Fixtures shared by every test directory: real node processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from ambry.testing.cluster import LocalCluster

# Timings never decide pass/fail: hypothesis' per-example deadline (200 ms) failed a pure
# property test on a loaded 2-core machine (288 ms for one example, 0.4 ms on the rerun).
# Every property test runs without a deadline; a hang is still caught by pytest-timeout.
settings.register_profile("ambry", deadline=None)
settings.load_profile("ambry")


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """``make_cluster(**LocalCluster kwargs)`` -> a cluster (not started) under tmp_path. Every
    node still running at teardown is killed; node logs are printed (pytest shows them only
    when the test failed)."""
    made: list[LocalCluster] = []

    def make(**kw: Any) -> LocalCluster:
        c = LocalCluster(tmp_path / f"cluster{len(made)}", **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.kill_all()
        for n in c.nodes.values():
            print(f"==== log of {n.node_id} ====\n{n.log_tail(40)}")
