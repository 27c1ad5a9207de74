"""Which peer replicas a local replica pulls from: a pure decision, property-tested.

Owns the rule of DESIGN.md section 7 / issue 5 that keeps blob bytes from crossing the DC link
once per replica: every replica pulls from all its peers in its own datacenter; only the
*designated* replica of a partition in each datacenter (the first live one in cluster-map
order) pulls from the other datacenters. Another replica of that datacenter starts pulling
cross-DC itself once the designated one has been unreachable for ``standby_wait_s`` (it then
stops again as soon as the designated one is back). The others catch up intra-DC.

Does not own liveness detection (the caller passes what it observed) nor any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PullPlan", "designated_puller", "plan_pulls"]


@dataclass(frozen=True)
class PullPlan:
    intra_dc: tuple[str, ...]   # peers in my datacenter
    cross_dc: tuple[str, ...]   # peers in other datacenters (empty unless I am designated)
    designated: str | None      # who pulls cross-DC for my datacenter


def designated_puller(replicas_in_dc: Sequence[str], down_for_s: Callable[[str], float],
                      standby_wait_s: float) -> str | None:
    """The first replica (cluster-map order) that has not been down for ``standby_wait_s``."""
    for node in replicas_in_dc:
        if down_for_s(node) < standby_wait_s:
            return node
    return replicas_in_dc[0] if replicas_in_dc else None


def plan_pulls(me: str, replicas: Sequence[str], datacenter_of: Mapping[str, str],
               down_for_s: Callable[[str], float], standby_wait_s: float) -> PullPlan:
    """The peers ``me`` pulls one partition from.

    ``replicas`` lists the partition's replicas in cluster-map order (``me`` among them),
    ``datacenter_of`` their datacenters, ``down_for_s(node)`` how long ``me`` has seen that
    node unreachable (0 when it answers; ``me`` itself is always 0).
    """
    if me not in replicas:
        raise ValueError(f"{me} does not hold a replica of this partition")
    my_dc = datacenter_of[me]
    local = [r for r in replicas if datacenter_of[r] == my_dc]
    designated = designated_puller(local, lambda n: 0.0 if n == me else down_for_s(n),
                                   standby_wait_s)
    intra = tuple(r for r in local if r != me)
    cross: tuple[str, ...] = ()
    if designated == me:
        cross = tuple(r for r in replicas if datacenter_of[r] != my_dc)
    return PullPlan(intra, cross, designated)
