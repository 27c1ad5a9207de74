"""Quorum decisions: when a fan-out to replicas has succeeded or failed, and with what verdict.

Owns
  * :class:`Outcome`, the router's summary of one replica's answer;
  * :class:`QuorumTracker`, the write rule (PUT, DELETE, TTL update, undelete: W of N local
    replicas, DESIGN.md section 5);
  * :func:`get_verdict` / :func:`get_decided`, the read rule (GET, HEAD, BlobInfo).

Does not own which replicas are asked or in which order (``failure.order_replicas_for_get``),
timeouts, or the mapping from a verdict to an HTTP status (the router's error table). Pure: values
in, values out; a tracker is a small mutable accumulator with no I/O and no clock.

Write rule (:class:`QuorumTracker`)
  * succeeds as soon as ``w`` replicas answered SUCCESS; once succeeded it stays succeeded;
  * fails as soon as success is impossible (``successes + not yet answered < w``);
  * the failure verdict is *definitive* (one of :data:`DEFINITIVE`) only when the definitive
    answers alone make the quorum impossible (at least ``n - w + 1`` of them); it is then the
    highest-precedence definitive answer received (:data:`PRECEDENCE`: DELETED > EXPIRED >
    CONFLICT > ALREADY_EXISTS > READ_ONLY > NOT_FOUND). Else, when ERROR answers alone make
    the quorum impossible (at least ``n - w + 1`` of them: the replicas answered, and refused),
    the verdict is ERROR, so the router can pass on a client error the nodes found and answer
    503 otherwise. Else unreachable replicas share the blame and the verdict is UNAVAILABLE
    (503, retryable). Definitive and ERROR answers are never pooled: one NOT_FOUND plus one
    ERROR is UNAVAILABLE, never a 404.
  * :meth:`QuorumTracker.result` is a function of the *multiset* of answers recorded so far, so
    it does not depend on arrival order. Late answers (after ``done``) may still be recorded and
    can sharpen a failure verdict; the router normally replies at ``done``.

Read rule (:func:`get_verdict`), given every answer collected when the router stops asking:
  1. DELETED from any replica, in any DC, wins, even over a replica that returned the blob.
     A delete is acknowledged by 2 replicas before its 202, so a live copy elsewhere is a lagging
     replica, and serving deleted data is the worse mistake. (The rare opposite case, an
     undelete not yet replicated, heals when replication catches up.)
  2. else SUCCESS from any replica (a TTL update not yet replicated makes a stale replica say
     EXPIRED while another correctly returns the blob, so SUCCESS beats EXPIRED);
  3. else EXPIRED from any replica;
  4. else NOT_FOUND only when *every* replica of the blob's origin DC answered NOT_FOUND
     (other DCs' not-found answers are never authoritative);
  5. else UNAVAILABLE: never a false 404 while an origin replica was unreachable or erred.
:func:`get_decided` tells the router when it may stop asking: on the first valid reply (SUCCESS,
DELETED or EXPIRED: "first valid reply wins", DESIGN.md section 5) or once every origin replica
said NOT_FOUND.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping

__all__ = [
    "DEFINITIVE",
    "PRECEDENCE",
    "Outcome",
    "QuorumTracker",
    "get_decided",
    "get_verdict",
]


class Outcome(enum.Enum):
    """One replica's answer, as the router classifies it (and the verdict of an operation)."""

    SUCCESS = "success"
    NOT_FOUND = "not_found"
    DELETED = "deleted"
    EXPIRED = "expired"
    ALREADY_EXISTS = "already_exists"
    CONFLICT = "conflict"          # e.g. undelete of a live blob, stale life version
    READ_ONLY = "read_only"        # partition refuses puts (full, ENOSPC, I/O error)
    UNAVAILABLE = "unavailable"    # timeout, connection refused, replica not hosted/stopped
    ERROR = "error"                # any other error the replica reported


#: Definitive failure answers, strongest first. Ties between different definitive answers
#: resolve to the first one listed that was received at all.
PRECEDENCE: tuple[Outcome, ...] = (
    Outcome.DELETED,
    Outcome.EXPIRED,
    Outcome.CONFLICT,
    Outcome.ALREADY_EXISTS,
    Outcome.READ_ONLY,
    Outcome.NOT_FOUND,
)
DEFINITIVE: frozenset[Outcome] = frozenset(PRECEDENCE)


class QuorumTracker:
    """Tracks one write-like operation sent to ``n`` replicas that needs ``w`` successes.

    Recording more than ``n`` answers, or the same replica twice, is a programmer error and
    raises ``AssertionError``. :meth:`result` before :attr:`done` also asserts: on a timeout,
    record UNAVAILABLE for each replica that has not answered, which always ends the operation.
    """

    __slots__ = ("_answers", "_counts", "n", "w")

    def __init__(self, n: int, w: int) -> None:
        if not 1 <= w <= n:
            raise ValueError(f"quorum needs 1 <= w <= n, got n={n} w={w}")
        self.n = n
        self.w = w
        self._answers: dict[str, Outcome] = {}
        self._counts: Counter[Outcome] = Counter()

    def record(self, replica_id: str, outcome: Outcome) -> None:
        if replica_id in self._answers:
            raise AssertionError(f"replica {replica_id!r} recorded twice")
        if len(self._answers) >= self.n:
            raise AssertionError(f"more than n={self.n} answers recorded")
        self._answers[replica_id] = outcome
        self._counts[outcome] += 1

    @property
    def answers(self) -> Mapping[str, Outcome]:
        """Every answer recorded so far (read-only view), e.g. to mark a partition read-only."""
        return dict(self._answers)

    def count(self, outcome: Outcome) -> int:
        return self._counts[outcome]

    @property
    def pending(self) -> int:
        """Replicas that have not answered yet."""
        return self.n - len(self._answers)

    @property
    def succeeded(self) -> bool:
        return self._counts[Outcome.SUCCESS] >= self.w

    @property
    def failed(self) -> bool:
        return self._counts[Outcome.SUCCESS] + self.pending < self.w

    @property
    def done(self) -> bool:
        return self.succeeded or self.failed

    def result(self) -> Outcome:
        """SUCCESS, a definitive failure, ERROR or UNAVAILABLE (see the module docstring)."""
        if not self.done:
            raise AssertionError("result() before the quorum is decided")
        if self.succeeded:
            return Outcome.SUCCESS
        blocking = self.n - self.w + 1  # this many failures alone rule out w successes
        if sum(self._counts[o] for o in PRECEDENCE) >= blocking:
            for o in PRECEDENCE:
                if self._counts[o]:
                    return o
        if self._counts[Outcome.ERROR] >= blocking:
            return Outcome.ERROR
        return Outcome.UNAVAILABLE

    def __repr__(self) -> str:
        return (f"QuorumTracker(n={self.n}, w={self.w}, "
                f"answers={ {k: v.name for k, v in self._answers.items()} })")


def _check_origin(origin_dc_answers: Mapping[str, Outcome], origin_replica_count: int) -> None:
    if origin_replica_count < 1:
        raise ValueError("the origin DC must have at least one replica of the partition")
    if len(origin_dc_answers) > origin_replica_count:
        raise ValueError(f"{len(origin_dc_answers)} origin answers for "
                         f"{origin_replica_count} origin replicas")


def get_verdict(origin_dc_answers: Mapping[str, Outcome], origin_replica_count: int,
                other_answers: Mapping[str, Outcome]) -> Outcome:
    """The GET/HEAD verdict from every answer collected (see the module docstring's read rule).

    ``origin_dc_answers`` holds the answers of replicas in the blob id's origin DC (whether or
    not it is the local DC), ``origin_replica_count`` how many replicas of the partition that DC
    has, ``other_answers`` the answers of replicas in every other DC. Returns SUCCESS, DELETED,
    EXPIRED, NOT_FOUND or UNAVAILABLE.
    """
    _check_origin(origin_dc_answers, origin_replica_count)
    seen = set(origin_dc_answers.values()) | set(other_answers.values())
    for valid in (Outcome.DELETED, Outcome.SUCCESS, Outcome.EXPIRED):
        if valid in seen:
            return valid
    not_found = sum(1 for o in origin_dc_answers.values() if o is Outcome.NOT_FOUND)
    if not_found == origin_replica_count:
        return Outcome.NOT_FOUND
    return Outcome.UNAVAILABLE


def get_decided(origin_dc_answers: Mapping[str, Outcome], origin_replica_count: int,
                other_answers: Mapping[str, Outcome]) -> Outcome | None:
    """The verdict if the router may stop asking replicas now, else ``None``.

    Stops on the first valid reply (any SUCCESS, DELETED or EXPIRED; when several are already
    in hand :func:`get_verdict` breaks the tie) or when every origin replica said NOT_FOUND.
    When the router runs out of replicas or time without a decision, :func:`get_verdict` on the
    answers so far is the reply (UNAVAILABLE unless something authoritative arrived).
    """
    _check_origin(origin_dc_answers, origin_replica_count)
    valid = {Outcome.SUCCESS, Outcome.DELETED, Outcome.EXPIRED}
    if any(o in valid for o in origin_dc_answers.values()) or any(
            o in valid for o in other_answers.values()):
        return get_verdict(origin_dc_answers, origin_replica_count, other_answers)
    if (len(origin_dc_answers) == origin_replica_count
            and all(o is Outcome.NOT_FOUND for o in origin_dc_answers.values())):
        return Outcome.NOT_FOUND
    return None
