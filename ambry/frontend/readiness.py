"""Frontend readiness: ``/healthCheck`` answers 200 only once this frontend can serve every
operation, so a script (or ``ambry cluster up``, a load balancer, the test kit) that waits for
it can write at once.

Why: the frontend said GOOD as soon as it listened. On a fresh cluster every replica starts
"rebuilding" (it cannot yet say "not found", so it answers unavailable) until it has caught up
with its peers once, and for the first seconds after ``ambry cluster up`` reported the cluster
healthy a named PUT got 503 "too few replicas of the name partition answered".

Owns the readiness rule (:func:`short_partitions`, pure: a partition is ready when at least
``min(2, local replicas)`` of its replicas in this datacenter are serving, the quorum every
write and the name checks need) and the probe (:class:`Readiness`): ping every local node
(the reply lists the partitions it serves, see ``StorageNode._op_ping``) until every
partition is ready, then load the container registry of every configured account (a real
read through the name path), then latch: readiness is a start-up gate. A node lost later
makes requests fail over or answer 503 as before; it does not take a serving frontend out of
its load balancer. Does not own HTTP (``app`` answers /healthCheck from :attr:`ready`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ambry.common.errors import AmbryError

if TYPE_CHECKING:
    from ambry.frontend.router import Router

__all__ = ["PROBE_INTERVAL_S", "Readiness", "short_partitions"]

log = logging.getLogger(__name__)

#: Between probe rounds while not ready (a round is one ping per local node).
PROBE_INTERVAL_S = 0.1


def short_partitions(local: Mapping[int, Sequence[str]],
                     serving: Mapping[str, Iterable[int] | None]) -> dict[int, int]:
    """Partitions (of ``local``: partition -> its replica nodes in this datacenter) with
    fewer than ``min(2, replicas)`` replicas serving, each with how many serve. ``serving``:
    node -> the partitions it said it serves, None for a node that did not answer."""
    sets = {n: frozenset(s) for n, s in serving.items() if s is not None}
    short = {}
    for pid, nodes in local.items():
        if not nodes:
            continue
        ok = sum(1 for n in nodes if pid in sets.get(n, ()))
        if ok < min(2, len(nodes)):
            short[pid] = ok
    return short


class Readiness:
    """Probes the local nodes until the frontend can serve every operation; then
    :attr:`ready` stays True."""

    def __init__(self, router: Router, *, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.router = router
        self.interval_s = interval_s
        self.ready = False
        self.reason = "not probed yet"
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    def start(self) -> None:
        if self._task is None and not self.ready:
            self._t0 = time.monotonic()
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while not self.ready:
            try:
                self.ready = await self.probe()
            except Exception:  # a bug here must not leave the frontend unready silently
                log.exception("readiness probe failed")
            if not self.ready:
                await asyncio.sleep(self.interval_s)
        log.info("frontend ready after %.2f s: every partition has a quorum of serving "
                 "replicas in %s", time.monotonic() - self._t0, self.router.dc.name)

    async def probe(self) -> bool:
        """One round: True when every partition is ready and the registry loaded."""
        router = self.router
        local = {pid: [n.id for n in router.local_replicas(pid)]
                 for pid in sorted(router.partition_ids)}
        nodes = sorted({n for ns in local.values() for n in ns})
        timeout_s = router.fe.node_connect_timeout_ms / 1000

        async def ask(nid: str) -> list[int] | None:
            try:
                reply = await asyncio.wait_for(router.client(nid).ping(), timeout_s)
            except (AmbryError, OSError, TimeoutError):
                return None
            if "serving" not in reply:  # a node older than this rule: it cannot tell
                return sorted(router.partition_ids)
            return [int(p) for p in reply["serving"]]

        answers = await asyncio.gather(*(ask(n) for n in nodes))
        short = short_partitions(local, dict(zip(nodes, answers, strict=True)))
        if short:
            down = [n for n, a in zip(nodes, answers, strict=True) if a is None]
            self.reason = (f"{len(short)} partitions have too few serving replicas in "
                           f"{router.dc.name} (e.g. partition {min(short)}: "
                           f"{short[min(short)]} serving)"
                           + (f"; no answer from {', '.join(down)}" if down else ""))
            return False
        for account in router.config.accounts:
            try:
                await router.containers.list(account)
            except AmbryError as e:
                self.reason = f"container registry of account {account.name}: {e.message}"
                return False
        self.reason = ""
        return True
