"""Which peer replicas a local replica pulls from, and when it fetches a remote blob itself:
pure decisions, property-tested.

Owns the rule of DESIGN.md section 7 that keeps blob bytes from crossing the DC link once per
replica, without leaving a datacenter unprotected while one of its nodes is dead or stopped:

* every replica pulls the records of all its peers in its own datacenter;
* every replica also lists the records of the other datacenters, but only its datacenter's
  *designated* replica (rank 0) fetches a missing remote blob at once. The others rank after
  it and fetch a missing blob only once the record is ``rank x standby_fetch_delay_s`` old and
  the blob has still not reached them from their own datacenter. The designated replica pulls
  every remote replica; a standby lists one per remote datacenter (the first it does not see
  down), which bounds the extra cross-DC traffic to one more listing of each record's
  metadata (tens of bytes), never a second copy of the blob while the designated one works.
* rank = position among the replicas of my datacenter, in cluster-map order, that I do not
  see down (I never see myself down). A dead designated replica (connection refused) is seen
  down after one failed request, so the next one fetches at once; a stopped or merely stuck
  one (SIGSTOP, a broken cross-DC link, a backlog) is never detected at all, and the next
  one's delay bounds the damage instead. Either way a blob reaches the datacenter within
  about ``standby_fetch_delay_s`` while any one of its nodes fails, with no failure detector
  in the path.

Does not own liveness detection (the caller passes what it observed) nor any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PullPlan", "designated_puller", "fetch_wait_s", "plan_pulls"]


@dataclass(frozen=True)
class PullPlan:
    intra_dc: tuple[str, ...]   # peers in my datacenter
    cross_dc: tuple[str, ...]   # peers in other datacenters whose records I list
    designated: str | None      # who fetches remote blobs at once for my datacenter (my view)
    fetch_delay_s: float        # a remote blob waits this long (record age) for a copy from my
    #                             datacenter before I fetch it cross-DC; 0 when designated


def designated_puller(replicas_in_dc: Sequence[str], down_for_s: Callable[[str], float]
                      ) -> str | None:
    """The first replica (cluster-map order) not seen down; the first of all when every one
    is."""
    for node in replicas_in_dc:
        if not down_for_s(node):
            return node
    return replicas_in_dc[0] if replicas_in_dc else None


def plan_pulls(me: str, replicas: Sequence[str], datacenter_of: Mapping[str, str],
               down_for_s: Callable[[str], float], standby_fetch_delay_s: float) -> PullPlan:
    """The peers ``me`` pulls one partition from, and how long it lets a remote blob wait.

    ``replicas`` lists the partition's replicas in cluster-map order (``me`` among them),
    ``datacenter_of`` their datacenters, ``down_for_s(node)`` how long ``me`` has seen that
    node unreachable (0 when it answers; ``me`` itself is always up).
    """
    if me not in replicas:
        raise ValueError(f"{me} does not hold a replica of this partition")
    my_dc = datacenter_of[me]

    def down(node: str) -> float:
        return 0.0 if node == me else down_for_s(node)

    local = [r for r in replicas if datacenter_of[r] == my_dc]
    ranked = [r for r in local if not down(r)]
    rank = ranked.index(me)
    intra = tuple(r for r in local if r != me)
    remote = [r for r in replicas if datacenter_of[r] != my_dc]
    if rank == 0:
        cross = tuple(remote)
    else:
        first: dict[str, str] = {}
        for dc in dict.fromkeys(datacenter_of[r] for r in remote):
            in_dc = [r for r in remote if datacenter_of[r] == dc]
            first[dc] = designated_puller(in_dc, down) or in_dc[0]
        cross = tuple(r for r in remote if first[datacenter_of[r]] == r)
    return PullPlan(intra, cross, ranked[0], rank * standby_fetch_delay_s)


def fetch_wait_s(fetch_delay_s: float, record_age_s: float) -> float:
    """How much longer a standby waits before fetching a remote blob it lacks: until the
    record is ``fetch_delay_s`` old. Counting from the record's time, not from when it was
    listed, keeps a standby's lag near the delay under sustained load (a batch that waited
    does not push the next batch's wait back). Never negative, and never more than
    ``fetch_delay_s`` whatever the clocks say (a remote clock ahead of ours cannot stall)."""
    return min(fetch_delay_s, max(0.0, fetch_delay_s - record_age_s))
