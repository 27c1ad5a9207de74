"""How a name read asks the replicas of the name partition (``Names._name_read``): 2 of 3,
the 3rd when one fails or both are slower than the hedge delay; answers from done callbacks.
The node clients are stand-ins that answer, fail or hang on command; the rest is real."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import pytest

from ambry.common.errors import Unavailable
from ambry.frontend.failure import HedgeDelay
from ambry.frontend.names import Names

_NODES = ["n1", "n2", "n3"]


class _Fanout:
    def __init__(self) -> None:
        self.detector = SimpleNamespace(order=lambda nids: list(nids))
        self.notes: list[tuple[str, bool]] = []
        self.stragglers: list[str] = []

    def client(self, nid: str) -> str:
        return nid

    def note(self, nid: str, _op: str, exc: BaseException | None) -> None:
        self.notes.append((nid, exc is None))

    def watch_stragglers(self, late: list[tuple[str, asyncio.Future[Any]]]) -> None:
        for nid, t in late:
            self.stragglers.append(nid)
            t.cancel()


def _names(hedge_s: float) -> tuple[Names, _Fanout]:
    n = Names.__new__(Names)
    fan = _Fanout()
    n.fanout = fan  # type: ignore[assignment]
    n.view = SimpleNamespace(  # type: ignore[assignment]
        cmap=SimpleNamespace(name_partition_ids=[5]),
        local_replicas=lambda pid: [SimpleNamespace(id=x) for x in _NODES])
    n.rnd = random.Random(1)
    n.hedge = HedgeDelay(min_s=hedge_s, max_s=hedge_s)
    return n, fan


def _read(n: Names, behaviour: dict[str, str]) -> list[Any]:
    asked: list[str] = []

    async def call(nid: str, pid: int) -> str:
        asked.append(nid)
        how = behaviour[nid]
        if how == "fail":
            raise Unavailable(f"{nid} down")
        if how == "bug":
            raise KeyError(nid)
        if how == "hang":
            await asyncio.sleep(3600)
        return nid

    async def main() -> list[Any]:
        return await n._name_read(1, 2, call, "rid")  # type: ignore[arg-type]

    return [sorted(asyncio.run(main())), sorted(asked)]


def test_a_name_read_takes_two_answers_and_asks_no_third() -> None:
    n, _ = _names(hedge_s=5.0)
    answers, asked = _read(n, {"n1": "ok", "n2": "ok", "n3": "ok"})
    assert len(answers) == 2 and len(asked) == 2


def test_a_failed_replica_makes_the_read_ask_the_third() -> None:
    n, fan = _names(hedge_s=5.0)
    failing = _first_two(n)[0]
    answers, asked = _read(n, {**{x: "ok" for x in _NODES}, failing: "fail"})
    assert len(answers) == 2 and asked == sorted(_NODES)
    assert failing not in answers and (failing, False) in fan.notes


def test_a_hanging_replica_is_hedged_not_waited_for() -> None:
    # waiting for both made every name read wait for a stopped replica's node timeout
    n, fan = _names(hedge_s=0.01)
    hang = _first_two(n)[1]
    answers, asked = _read(n, {**{x: "ok" for x in _NODES}, hang: "hang"})
    assert hang not in answers and len(answers) == 2 and asked == sorted(_NODES)
    assert fan.stragglers == [hang]


def test_too_few_answers_is_unavailable_never_a_hang() -> None:
    n, _ = _names(hedge_s=0.01)
    with pytest.raises(Unavailable):
        _read(n, {"n1": "fail", "n2": "fail", "n3": "ok"})
    with pytest.raises(Unavailable):
        _read(n, {"n1": "fail", "n2": "fail", "n3": "fail"})


def test_an_unexpected_error_is_raised_not_counted_as_a_node_failure() -> None:
    n, _ = _names(hedge_s=5.0)
    with pytest.raises(KeyError):
        _read(n, {x: "bug" for x in _NODES})


def _first_two(n: Names) -> list[str]:
    """The two replicas the next read of ``n`` asks first (its random order, replayed)."""
    state = n.rnd.getstate()
    order = list(_NODES)
    n.rnd.shuffle(order)
    n.rnd.setstate(state)
    return order[:2]
