"""The router's one fan-out loop (``frontend.fanout``) and the verdict mappings it feeds.

``FanOut.fan_out`` serves the write quorum, the name reservation (stopped on the tally's
verdict, not on a count of successes) and deletes (stopped on ``enough`` successes): each
answer goes to the caller's decider in the order it comes, the loop returns the moment the
decider has decided, and the calls still running go on in the background (kept, never
cancelled by the loop, handed back for the caller to watch). No replica here: the calls are
plain coroutines that answer when the test says so.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.common.config import config_from_dict
from ambry.common.errors import (
    AmbryError,
    BadRequest,
    BlobNotFound,
    DataCorrupt,
    InvalidArgument,
    Unavailable,
)
from ambry.frontend.clusterview import ClusterView
from ambry.frontend.failure import FailureDetector
from ambry.frontend.fanout import FanOut
from ambry.frontend.namewrite import ReservationTally, Verdict
from ambry.frontend.quorum import DEFINITIVE, Outcome
from ambry.frontend.verdicts import outcome_of, raise_for

NODES = ["n0", "n1", "n2", "n3", "n4"]


def _fanout(threshold_errors: int = 3) -> FanOut:
    config = config_from_dict({
        "datacenters": [{"name": "dc1", "id": 1}],
        "nodes": [{"id": n, "datacenter": "dc1", "host": "127.0.0.1", "port": 1000 + i,
                   "http_port": 1} for i, n in enumerate(NODES)],
        "partitions": {"count": 1},
    })
    view = ClusterView(config, "dc1", bytes)
    return FanOut(config.frontend, view, FailureDetector(lambda: 0.0, threshold_errors),
                  None)


class Replicas:
    """Each node answers (a value, or raises an error) when the test releases it."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.gates = {n: asyncio.Event() for n in answers}
        self.finished: list[str] = []

    async def call(self, nid: str) -> object:
        await self.gates[nid].wait()
        self.finished.append(nid)
        a = self.answers[nid]
        if isinstance(a, BaseException):
            raise a
        return a


async def test_fan_out_returns_when_decided_and_stragglers_run_on() -> None:
    # the reservation loop broke out on the tally's verdict and left the rest running; the
    # shared loop must do the same: return at the decision, never cancel the others
    fo = _fanout()
    reps = Replicas({"n0": (True, None), "n1": (True, None), "n2": (True, None)})
    tally = ReservationTally(3)
    seen: list[str] = []

    def decided(nid: str, ans: object, exc: BaseException | None) -> bool:
        seen.append(nid)
        tally.record(nid, ans[0] if isinstance(ans, tuple) else None)
        return tally.verdict() is not Verdict.PENDING

    kept: list[asyncio.Task[object]] = []
    run = asyncio.ensure_future(fo.fan_out(["n0", "n1", "n2"], reps.call, decided, kept))
    for nid in ("n2", "n0"):  # one answer at a time: n2 answers first
        reps.gates[nid].set()
        while nid not in seen:
            await asyncio.sleep(0)
    late = await asyncio.wait_for(run, 10)
    assert seen == ["n2", "n0"] and tally.verdict() is Verdict.HELD
    assert [nid for nid, _ in late] == ["n1"] and len(kept) == 1
    assert kept[0] in fo.background  # kept alive, and awaited by close()
    reps.gates["n1"].set()
    await asyncio.wait_for(kept[0], 10)
    assert reps.finished == ["n2", "n0", "n1"]  # the straggler ran to its end
    assert not fo.background


async def test_fan_out_hands_typed_errors_to_the_decider_and_bugs_to_the_caller() -> None:
    # a node's typed error is an answer; anything else is a bug and must not become one
    fo = _fanout()
    reps = Replicas({"n0": BlobNotFound("no"), "n1": OSError("reset"), "n2": 7})
    got: dict[str, tuple[object, BaseException | None]] = {}

    def decided(nid: str, res: object, exc: BaseException | None) -> bool:
        got[nid] = (res, exc)
        return False

    for g in reps.gates.values():
        g.set()
    late = await asyncio.wait_for(fo.fan_out(["n0", "n1", "n2"], reps.call, decided), 10)
    assert late == []
    assert isinstance(got["n0"][1], BlobNotFound) and isinstance(got["n1"][1], OSError)
    assert got["n2"] == (7, None)

    bug = Replicas({"n0": KeyError("bug")})
    bug.gates["n0"].set()
    with pytest.raises(KeyError):
        await fo.fan_out(["n0"], bug.call, decided)


async def test_quorum_on_the_shared_loop_stops_at_w_and_watches_the_straggler() -> None:
    # the write quorum is the fan-out fed a QuorumTracker: 2 of 3 and it returns; the third
    # is cancelled after straggler_grace_ms and counted against its node
    fo = _fanout(threshold_errors=1)
    reps = Replicas({"n0": "ok", "n1": "ok", "n2": "ok"})
    calls: dict[object, str] = {}
    for nid in ("n0", "n1", "n2"):
        calls[fo.client(nid)] = nid

    async def call(c: object) -> object:
        return await reps.call(calls[c])

    reps.gates["n0"].set()
    reps.gates["n1"].set()
    kept: list[asyncio.Task[object]] = []
    verdict, results, errors = await asyncio.wait_for(
        fo.quorum(["n0", "n1", "n2"], "put", call, w=2, stragglers=kept), 10)
    assert verdict is Outcome.SUCCESS and set(results) == {"n0", "n1"} and not errors
    assert len(kept) == 1
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(kept[0], 10 + fo.fe.straggler_grace_ms / 1000)
    assert not fo.detector.is_available("n2")  # the straggler counted against its node
    await fo.close()


@settings(deadline=None, max_examples=60)
@given(st.permutations(NODES), st.integers(1, 5))
def test_fan_out_feeds_every_answer_once_in_arrival_order(order: list[str], stop_at: int
                                                          ) -> None:
    # property: the decider sees answers exactly in the order the replicas answered, each
    # once; it is not asked again after deciding; the undecided rest come back as stragglers
    async def main() -> None:
        fo = _fanout()
        reps = Replicas(dict.fromkeys(NODES, "ok"))
        seen: list[str] = []

        def decided(nid: str, res: object, exc: BaseException | None) -> bool:
            seen.append(nid)
            return len(seen) >= stop_at

        run = asyncio.ensure_future(fo.fan_out(NODES, reps.call, decided))
        for nid in order:  # one answer at a time, so arrival order is the release order
            reps.gates[nid].set()
            while nid not in seen:
                await asyncio.sleep(0)
            if len(seen) >= stop_at:
                break
        late = await asyncio.wait_for(run, 10)
        assert seen == order[:stop_at]
        assert sorted(nid for nid, _ in late) == sorted(order[stop_at:])
        for g in reps.gates.values():
            g.set()
        await fo.close()

    asyncio.run(main())


# ------------------------------------------------------------------ verdicts (pure)
@given(st.sampled_from(sorted(DEFINITIVE, key=lambda o: o.value)))
def test_a_definitive_verdict_raises_the_error_that_maps_back_to_it(verdict: Outcome) -> None:
    # the error table round-trips: a replica error counted as an outcome, and that outcome
    # raised as an error, are the same kind of answer
    if verdict is Outcome.READ_ONLY:
        return  # a read-only refusal is retried on another partition, never raised as such
    with pytest.raises(AmbryError) as info:
        raise_for(verdict, "blob x")
    assert outcome_of(info.value) is verdict


errors = st.lists(st.sampled_from([BlobNotFound("a"), Unavailable("b"), DataCorrupt("c"),
                                   InvalidArgument("d"), OSError("e"), TimeoutError()]),
                  max_size=4)


@given(st.sampled_from(list(Outcome)), errors)
def test_every_failed_verdict_raises_a_typed_error(verdict: Outcome,
                                                   errs: list[BaseException]) -> None:
    # never a bare exception (a 500): whatever the replicas said, the caller gets an
    # AmbryError; SUCCESS raises nothing; a client error the nodes found stays the client's
    if verdict is Outcome.SUCCESS:
        raise_for(verdict, "blob x", errs)
        return
    with pytest.raises(AmbryError) as info:
        raise_for(verdict, "blob x", errs)
    if verdict is Outcome.ERROR and any(isinstance(e, BadRequest) for e in errs):
        assert isinstance(info.value, BadRequest)
    if verdict is Outcome.UNAVAILABLE:
        assert isinstance(info.value, Unavailable)
