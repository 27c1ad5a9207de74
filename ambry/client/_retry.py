"""When to try a request again, after how long, and on which frontend: pure decisions.

Owns the retry policy (attempts, exponential backoff with full jitter), the classification of
a failed attempt into a :class:`Failure` kind, the rule of which kinds may be retried for
idempotent and non-idempotent steps, and the endpoint list with failover. Does not own I/O:
``_transport`` runs the loop, sleeps and sends.

Why a small policy instead of a retry library: the loop must also pick the endpoint of every
attempt (fail over from dc1 to dc2 without sleeping, sleep only after a full round of
endpoints failed) and must know whether a failed attempt may have reached the server; those
two rules are the whole policy, and as pure functions they are easy to property-test.

A non-idempotent step (a whole ``POST /`` of a small blob, a named put without upsert) is
retried only when the outcome is certain: the connection was never made (``CONNECT``), or
the frontend answered 503, which by contract (DESIGN.md section 5) leaves no reachable blob.
A timeout or a connection cut after the request was sent is ambiguous: the blob may exist,
so only idempotent steps (GET, HEAD, range GET, DELETE, TTL update, undelete, chunk upload,
stitch) retry those.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "Endpoints",
    "Failure",
    "RetryPolicy",
    "backoff_s",
    "endpoint_for_attempt",
    "may_retry",
]

#: Exponent cap: beyond 2**64 every delay is the cap anyway, and floats would overflow.
_MAX_EXPONENT = 64


class Failure(enum.Enum):
    """How one attempt failed."""

    CONNECT = "connect"          # no connection was made: the server never saw the request
    UNAVAILABLE = "unavailable"  # the server answered 502/503/504: nothing was stored
    TIMEOUT = "timeout"          # sent (maybe partly), no reply in time: outcome unknown
    CUT = "cut"                  # the connection broke mid-request or mid-reply
    FINAL = "final"              # any other error reply: retrying cannot help


def may_retry(kind: Failure, idempotent: bool) -> bool:
    """Whether an attempt that failed with ``kind`` may be made again."""
    if kind is Failure.FINAL:
        return False
    if idempotent:
        return True
    return kind in (Failure.CONNECT, Failure.UNAVAILABLE)


def backoff_s(retry: int, base_s: float, cap_s: float, u: float) -> float:
    """Delay before round ``retry`` (0 = the first wait): "full jitter", uniform in
    ``[0, min(cap_s, base_s * 2**retry)]``, with ``u`` in ``[0, 1)`` the random draw.

    Full jitter spreads the clients that failed together (a frontend restart) over the
    whole window instead of waking them in lockstep.
    """
    if retry < 0 or base_s < 0 or cap_s < 0 or not 0.0 <= u <= 1.0:
        raise ValueError(f"bad backoff arguments {retry=} {base_s=} {cap_s=} {u=}")
    ceiling = min(cap_s, base_s * 2.0 ** min(retry, _MAX_EXPONENT))
    return ceiling * u


def endpoint_for_attempt(attempt: int, n_endpoints: int) -> tuple[int, int | None]:
    """``(endpoint index, backoff round or None)`` of attempt number ``attempt`` (0-based)
    over ``n_endpoints`` endpoints in preference order: each round tries every endpoint once
    without waiting, and a new round starts after a backoff (round 0, 1, ... of
    :func:`backoff_s`)."""
    if attempt < 0 or n_endpoints < 1:
        raise ValueError(f"bad attempt {attempt} or endpoint count {n_endpoints}")
    index = attempt % n_endpoints
    if attempt == 0 or index != 0:
        return index, None
    return index, attempt // n_endpoints - 1


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request tries.

    ``attempts`` counts every try over all endpoints (so 6 with two endpoints is three
    rounds); waits between rounds follow :func:`backoff_s` with ``base_delay_s`` and
    ``max_delay_s``; ``endpoint_cooldown_s`` is how long an endpoint that refused connections
    or timed out is moved to the back of the order.
    """

    attempts: int = 6
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    endpoint_cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.endpoint_cooldown_s < 0:
            raise ValueError("RetryPolicy delays must be >= 0")

    def delay_s(self, round_: int, rnd: random.Random) -> float:
        return backoff_s(round_, self.base_delay_s, self.max_delay_s, rnd.random())


class Endpoints:
    """Frontend base URLs in preference order (e.g. the local datacenter first), with the
    ones that failed recently moved to the back until their cooldown ends. Thread-unsafe:
    used from one event loop. ``now`` is injectable for tests (monotonic seconds)."""

    def __init__(self, urls: Sequence[str], cooldown_s: float,
                 now: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("at least one endpoint URL is needed")
        self.urls = [u.rstrip("/") for u in urls]
        if len(set(self.urls)) != len(self.urls):
            raise ValueError(f"duplicate endpoint URLs in {list(urls)}")
        self.cooldown_s = cooldown_s
        self._now = now
        self._down_until: dict[str, float] = {}

    def order(self) -> list[str]:
        """Healthy endpoints in preference order, then the cooling-down ones (soonest back
        first), so a request always has somewhere to go."""
        t = self._now()
        healthy = [u for u in self.urls if self._down_until.get(u, 0.0) <= t]
        down = sorted((u for u in self.urls if u not in healthy),
                      key=lambda u: self._down_until[u])
        return healthy + down

    def mark_failed(self, url: str) -> None:
        self._down_until[url] = self._now() + self.cooldown_s

    def mark_ok(self, url: str) -> None:
        self._down_until.pop(url, None)
