"""The GET wave and hedge plan: which replicas a GET asks, when, and when it may stop.

Owns
  * :class:`GetPlan`, a pure state machine over one blob read. The router drives it: it sends
    the replicas the plan names, tells the plan each answer (as an :class:`Outcome`) and when
    the hedge delay passed without one, and stops when the plan is :attr:`~GetPlan.finished`.

Does not own the wave order (``failure.order_replicas_for_get``), the read rule
(``quorum.get_decided`` / ``quorum.get_verdict``, which the plan applies), the hedge delay
itself (``failure.HedgeDelay`` or the configured ``get_hedge_ms``), replies and their payloads,
or any I/O. No clock, no randomness: values in, replica ids out.

The plan
  * Waves are asked one after the other; a wave starts only when every replica of the one
    before answered without a decision.
  * A *hedged* wave (hedging on and every replica of the wave in the local DC) starts with its
    first replica alone. The next one is asked when an answer does not decide (a 404, an
    error) and nothing else is open, or when the hedge delay passes with no answer.
  * Other waves (remote ones, or hedging off) are asked all at once: the hedge delay is learnt
    from local replicas, and a 404 needs every origin replica's answer.
  * The plan is decided on the first answer after which ``get_decided`` holds; then it asks
    nobody more. Run out of replicas undecided, the verdict is ``get_verdict`` over every
    answer.
  * Each replica is asked at most once; answers from replicas not asked, or twice, are a
    programmer error (``AssertionError``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ambry.frontend.quorum import Outcome, get_decided, get_verdict

__all__ = ["GetPlan"]


class GetPlan:
    """One GET's plan over ``waves`` (see the module docstring).

    ``dc_of`` maps every replica id in the waves to its DC, ``origin_dc`` is the blob id's
    origin DC and ``origin_count`` how many replicas of the partition it has; ``local_dc`` is
    this frontend's DC; ``hedge`` whether local waves are hedged.
    """

    __slots__ = ("_asked", "_dc_of", "_decided", "_hedge", "_hedged_wave", "_local_dc",
                 "_open", "_origin_count", "_origin_dc", "_waiting", "_wave", "_waves",
                 "origin_answers", "other_answers")

    def __init__(self, waves: Sequence[Sequence[str]], dc_of: Mapping[str, str],
                 origin_dc: str, origin_count: int, local_dc: str, *, hedge: bool) -> None:
        self._waves = [list(w) for w in waves if w]
        self._dc_of = dict(dc_of)
        self._origin_dc = origin_dc
        self._origin_count = origin_count
        self._local_dc = local_dc
        self._hedge = hedge
        self._wave = -1
        self._waiting: list[str] = []
        self._hedged_wave = False
        self._open: set[str] = set()
        self._asked: set[str] = set()
        self._decided: Outcome | None = None
        self.origin_answers: dict[str, Outcome] = {}
        self.other_answers: dict[str, Outcome] = {}

    # -- what the driver calls ----------------------------------------------------------

    def start(self) -> list[str]:
        """The replicas to ask first."""
        assert self._wave == -1, "start() called twice"
        return self._next_wave()

    def answered(self, replica: str, outcome: Outcome) -> list[str]:
        """Record ``replica``'s answer; the replicas to ask now (often none)."""
        assert replica in self._open, f"answer from {replica!r}, which is not being asked"
        self._open.discard(replica)
        if self._decided is not None:
            return []  # a straggler of a decided plan: nothing changes
        side = self.origin_answers if self._dc_of[replica] == self._origin_dc \
            else self.other_answers
        side[replica] = outcome
        self._decided = get_decided(self.origin_answers, self._origin_count,
                                    self.other_answers)
        if self._decided is not None or self._open:
            return []
        if self._waiting:
            return self._ask(1)  # an answer that did not decide: the next one, at once
        return self._next_wave()

    def hedge_expired(self) -> list[str]:
        """The hedge delay passed with no answer: the replicas to ask as well."""
        if self._decided is not None or not self._waiting:
            return []
        return self._ask(1)

    # -- what the driver reads ------------------------------------------------------------

    @property
    def hedge_pending(self) -> bool:
        """Whether the driver should wait with the hedge delay (else without a timeout)."""
        return self._decided is None and bool(self._waiting)

    @property
    def decided(self) -> Outcome | None:
        """The verdict once the read rule decided, else ``None``."""
        return self._decided

    @property
    def finished(self) -> bool:
        """Decided, or every replica of every wave answered."""
        return self._decided is not None or (not self._open and not self._waiting
                                             and self._wave >= len(self._waves) - 1)

    @property
    def open(self) -> frozenset[str]:
        """Replicas asked that have not answered."""
        return frozenset(self._open)

    def verdict(self) -> Outcome:
        """The decision, or the read rule over every answer so far."""
        if self._decided is not None:
            return self._decided
        return get_verdict(self.origin_answers, self._origin_count, self.other_answers)

    # -- inside ---------------------------------------------------------------------------

    def _next_wave(self) -> list[str]:
        if self._wave + 1 >= len(self._waves):
            self._wave = len(self._waves)
            return []
        self._wave += 1
        wave = self._waves[self._wave]
        self._waiting = list(wave)
        self._hedged_wave = self._hedge and all(self._dc_of[n] == self._local_dc for n in wave)
        return self._ask(1 if self._hedged_wave else len(wave))

    def _ask(self, k: int) -> list[str]:
        picked, self._waiting = self._waiting[:k], self._waiting[k:]
        for r in picked:
            assert r not in self._asked, f"replica {r!r} asked twice"
            self._asked.add(r)
            self._open.add(r)
        return picked

    def __repr__(self) -> str:
        return (f"GetPlan(wave={self._wave}/{len(self._waves)}, open={sorted(self._open)}, "
                f"waiting={self._waiting}, decided={self._decided})")
