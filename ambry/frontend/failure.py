"""Failure handling decisions: which nodes to skip, which partitions to avoid, whom to ask first.

Owns
  * :class:`FailureDetector`: per storage node, N consecutive errors put it in backoff; after
    the backoff exactly one probe request is let through; a success clears the node;
  * :class:`ReadOnlyPartitions`: partitions that refused a put, avoided for a cool-down;
  * :func:`choose_partition`: the random pick of a writable partition for a PUT;
  * :func:`order_replicas_for_get`: the waves in which a GET asks replicas;
  * :class:`HedgeDelay`: how long a GET waits for one replica before asking the next too.

Does not own timeouts, sending requests, or the cluster map: callers pass node ids and partition
ids in, and must report every call's outcome back (``record_success``/``record_failure``). Time
comes from an injected ``clock`` (seconds, monotonic), randomness from an injected
``random.Random``; no globals. Not thread-safe: one instance per event loop.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Availability",
    "FailureDetector",
    "HedgeDelay",
    "NodeHealth",
    "ReadOnlyPartitions",
    "choose_partition",
    "order_replicas_for_get",
]


class NodeHealth(enum.Enum):
    HEALTHY = "healthy"        # fewer than threshold consecutive errors
    PROBE_DUE = "probe_due"    # backoff over: the next is_available() grants the probe
    DOWN = "down"              # in backoff, or its probe is still out


@dataclass(slots=True)
class _NodeState:
    errors: int = 0
    retry_at_s: float = 0.0  # when in backoff: the moment the next probe may go out


class FailureDetector:
    """Skips nodes after ``threshold_errors`` consecutive failures, probing one request later.

    Life of a node: HEALTHY -(threshold_errors consecutive failures)-> DOWN for ``backoff_s``
    -> PROBE_DUE -(is_available() returns True once)-> DOWN until the probe reports.
    The probe's success clears the node; its failure starts a new backoff. A probe that is
    granted but never reported (request cancelled, caller chose another replica) does not wedge
    the node: another probe is granted ``backoff_s`` after the first.

    Every ``record_failure`` of a node that is already down restarts its backoff (late errors
    of requests sent before it went down count as fresh evidence).
    """

    def __init__(self, clock: Callable[[], float], threshold_errors: int = 3,
                 backoff_s: float = 10.0) -> None:
        if threshold_errors < 1:
            raise ValueError(f"threshold_errors must be >= 1, not {threshold_errors}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, not {backoff_s}")
        self._clock = clock
        self.threshold_errors = threshold_errors
        self.backoff_s = backoff_s
        self._nodes: dict[str, _NodeState] = {}  # only nodes with >= 1 consecutive error

    def record_success(self, node_id: str) -> bool:
        """Clears the node. True if it was down (the caller may say it is back)."""
        st = self._nodes.pop(node_id, None)
        return st is not None and st.errors >= self.threshold_errors

    def record_failure(self, node_id: str) -> bool:
        """True if this failure took the node down: once per outage, so the caller can say
        so once (later failures of a down node only restart its backoff)."""
        st = self._nodes.setdefault(node_id, _NodeState())
        st.errors += 1
        if st.errors >= self.threshold_errors:
            st.retry_at_s = self._clock() + self.backoff_s
        return st.errors == self.threshold_errors

    def health(self, node_id: str) -> NodeHealth:
        """The node's state, without granting a probe (for metrics and tests)."""
        st = self._nodes.get(node_id)
        if st is None or st.errors < self.threshold_errors:
            return NodeHealth.HEALTHY
        return NodeHealth.PROBE_DUE if self._clock() >= st.retry_at_s else NodeHealth.DOWN

    def is_available(self, node_id: str) -> bool:
        """Whether to send a request to the node now. Grants the probe when one is due."""
        h = self.health(node_id)
        if h is NodeHealth.PROBE_DUE:
            self._nodes[node_id].retry_at_s = self._clock() + self.backoff_s
            return True
        return h is NodeHealth.HEALTHY

    def order(self, node_ids: Sequence[str]) -> list[str]:
        """Available nodes first in the given order, then unavailable ones in the given order.

        Asks :meth:`is_available` once per node, so a due probe is granted here: callers should
        try the available nodes they were given (an unused probe costs one more backoff).
        """
        up: list[str] = []
        down: list[str] = []
        for n in node_ids:
            (up if self.is_available(n) else down).append(n)
        return up + down


class ReadOnlyPartitions:
    """Partitions that answered PARTITION_READ_ONLY; each is avoided for ``cooldown_s``."""

    def __init__(self, clock: Callable[[], float], cooldown_s: float = 60) -> None:
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, not {cooldown_s}")
        self._clock = clock
        self.cooldown_s = cooldown_s
        self._until_s: dict[int, float] = {}

    def mark(self, partition_id: int) -> None:
        self._until_s[partition_id] = self._clock() + self.cooldown_s

    def is_read_only(self, partition_id: int) -> bool:
        until = self._until_s.get(partition_id)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until_s[partition_id]
            return False
        return True

    def current(self) -> frozenset[int]:
        """Partitions still in cool-down (drops the expired ones)."""
        return frozenset(p for p in list(self._until_s) if self.is_read_only(p))


def choose_partition(writable: Sequence[int], exclude: Collection[int],
                     rnd: random.Random) -> int | None:
    """A uniformly random partition of ``writable`` not in ``exclude``; ``None`` if none is left.

    ``writable`` is the local DC's writable partitions from the cluster map; ``exclude`` the
    partitions this request already tried plus :meth:`ReadOnlyPartitions.current`. Duplicates
    in ``writable`` are counted once, so the choice stays uniform.
    """
    candidates = sorted({p for p in writable if p not in exclude})
    if not candidates:
        return None
    return candidates[rnd.randrange(len(candidates))]


class Availability(Protocol):
    def is_available(self, node_id: str) -> bool: ...


def order_replicas_for_get(local: Sequence[str], remote_by_dc: Mapping[str, Sequence[str]],
                           origin_dc: str, detector: Availability) -> list[list[str]]:
    """The waves in which a GET asks replicas; the router sends one wave at a time, in parallel.

    ``local`` are the partition's replicas in this frontend's DC, ``remote_by_dc`` its replicas
    in every other DC (the local DC is not a key), ``origin_dc`` the blob id's origin DC.
    Waves, empty ones left out:

      1. the first 2 available local replicas;
      2. the remaining available local replicas (the 3rd);
      3. every available replica of the origin DC, when it is not the local DC (all at once:
         a 404 needs every origin replica's answer);
      4. the available replicas of each other DC, one wave per DC, DCs sorted by name;
      5. last resort: every unavailable replica (local, then origin, then the others), so a
         blob is still found when the detector is wrong, but only after the healthy nodes.

    Each replica appears exactly once; within a wave the given order is kept. Availability is
    asked once per replica, in the order local, origin, others (this grants due probes).
    ``ValueError`` if a replica id is listed twice.
    """
    origin = origin_dc if origin_dc in remote_by_dc else None
    groups: list[Sequence[str]] = [local]
    if origin is not None:
        groups.append(remote_by_dc[origin])
    groups.extend(remote_by_dc[dc] for dc in sorted(remote_by_dc) if dc != origin)

    seen: set[str] = set()
    up_groups: list[list[str]] = []
    down: list[str] = []
    for group in groups:
        up: list[str] = []
        for node in group:
            if node in seen:
                raise ValueError(f"replica {node!r} listed twice")
            seen.add(node)
            (up if detector.is_available(node) else down).append(node)
        up_groups.append(up)

    waves = [up_groups[0][:2], up_groups[0][2:], *up_groups[1:], down]
    return [w for w in waves if w]


class HedgeDelay:
    """How long a GET waits for the replica it asked before asking the next one as well (a
    hedged request, as in "The Tail at Scale"): the ``percentile`` of the last ``window``
    times a local replica took to answer a GET, within [``min_s``, ``max_s``]. Before
    ``min_samples`` answers are known it is ``min_s``.

    Asking two replicas at once for every GET doubles the node work and, for large blobs, the
    bytes read from the nodes (the losing reply must still be read off its connection);
    waiting a p95 first costs at most that delay on the ~5 % of GETs it fires for. Pure: the
    caller measures and feeds the samples (seconds). The percentile is recomputed every
    ``window // 8`` samples, not per request.
    """

    def __init__(self, percentile: float = 95.0, min_s: float = 0.005, max_s: float = 1.0,
                 window: int = 512, min_samples: int = 32) -> None:
        if not 0 < percentile <= 100 or not 0 <= min_s <= max_s or window < 8:
            raise ValueError("bad hedge settings")
        self.percentile = percentile
        self.min_s = min_s
        self.max_s = max_s
        self.window = window
        self.min_samples = min(min_samples, window)
        self._samples: list[float] = []
        self._next = 0  # ring position once the window is full
        self._since = 0
        self._delay = min_s

    def record(self, seconds: float) -> None:
        if len(self._samples) < self.window:
            self._samples.append(seconds)
        else:
            self._samples[self._next] = seconds
            self._next = (self._next + 1) % self.window
        self._since += 1
        if len(self._samples) >= self.min_samples and (
                self._since >= max(1, self.window // 8) or
                len(self._samples) == self.min_samples):
            self._since = 0
            ordered = sorted(self._samples)
            k = min(len(ordered) - 1, int(len(ordered) * self.percentile / 100))
            self._delay = min(self.max_s, max(self.min_s, ordered[k]))

    def delay(self) -> float:
        return self._delay
