"""Fan-out to storage-node replicas: the one loop every operation sends its node calls through.

Owns
  * the node connections of this frontend (one ``NodeClient`` pool per node, made on first use);
  * noting every answer in the failure detector (:meth:`FanOut.note`), naming a node once per
    outage;
  * :meth:`FanOut.fan_out`: send one call to many replicas at once, feed each answer, in the
    order they come, to a caller's decider, and return as soon as it has decided; the calls
    still running (stragglers) go on in the background, kept by this object;
  * :meth:`FanOut.quorum`, the write quorum on top of it (``quorum.QuorumTracker``), whose
    stragglers get ``straggler_grace_ms`` and then count as failures of their node;
  * the per-frontend in-flight byte budget and what stragglers still hold of it
    (:meth:`FanOut.release_when_done`);
  * background tasks (:meth:`FanOut.spawn`), awaited (up to 5 s) at :meth:`FanOut.close`.

Does not own which replicas are asked (the operations and ``failure``), the decisions
(``quorum``, ``namewrite``: pure objects fed here), nor the GET's waves (``reads`` drives
``getplan``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ambry.common.config import FrontendConfig
from ambry.common.errors import AmbryError
from ambry.frontend.clusterview import ClusterView
from ambry.frontend.failure import FailureDetector
from ambry.frontend.quorum import Outcome, QuorumTracker
from ambry.frontend.verdicts import outcome_of, reason
from ambry.protocol.client import NodeClient
from ambry.runtime.budget import ByteBudget

__all__ = ["Answer", "FanOut", "NodeErrorHook"]

log = logging.getLogger(__name__)

T = TypeVar("T")
NodeErrorHook = Callable[[str, str], None]  # (node id, op): counts a node error
#: One replica's answer: (node id, result, None) or (node id, None, the typed error it raised).
Answer = tuple[str, T | None, BaseException | None]
#: Errors a node call may end with that are the node's answer (anything else is a bug).
NODE_ERRORS = (TimeoutError, AmbryError, OSError)


class FanOut:
    def __init__(self, fe: FrontendConfig, view: ClusterView, detector: FailureDetector,
                 on_node_error: NodeErrorHook | None = None) -> None:
        self.fe = fe
        self.view = view
        self.detector = detector
        self.on_node_error = on_node_error
        self.budget = ByteBudget(fe.inflight_budget_bytes)
        self.straggler_bytes = 0  # payloads held only by stragglers (release_when_done)
        self.background: set[asyncio.Future[Any]] = set()
        self._clients: dict[str, NodeClient] = {}

    # ------------------------------------------------------------------ connections, tasks
    def client(self, node_id: str) -> NodeClient:
        c = self._clients.get(node_id)
        if c is None:
            host, port = self.view.address_of(node_id)
            c = self._clients[node_id] = NodeClient(
                host, port, pool_size=self.fe.node_pool_size,
                connect_timeout_ms=self.fe.node_connect_timeout_ms,
                request_timeout_ms=self.fe.node_timeout_ms)
        return c

    async def close(self) -> None:
        if self.background:
            await asyncio.wait(list(self.background), timeout=5)
        for c in self._clients.values():
            await c.close()
        self._clients.clear()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background (it may outlive the request); failures are logged."""
        task = asyncio.ensure_future(coro)
        self.keep(task)
        task.add_done_callback(_log_failure)

    def keep(self, task: asyncio.Future[Any]) -> None:
        """Hold a reference to a running task until it ends (and let ``close`` wait for it)."""
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def note(self, node_id: str, op: str, exc: BaseException | None) -> Outcome:
        """Tell the failure detector (and the node-error hook) how a call of ``op`` ended."""
        out = outcome_of(exc)
        if out is Outcome.UNAVAILABLE:
            if self.detector.record_failure(node_id):  # once per outage, naming the node
                log.warning("node %s (%s) is down: %d failures in a row, the last on %s: %s; "
                            "skipped for %.0f s, then probed", node_id,
                            self.view.address_text(node_id), self.detector.threshold_errors,
                            op, reason(exc), self.detector.backoff_s)
            if self.on_node_error:
                self.on_node_error(node_id, op)
        elif out is Outcome.ERROR:
            log.warning("node %s %s: %r", node_id, op, exc)
            if self.on_node_error:
                self.on_node_error(node_id, op)
        elif self.detector.record_success(node_id):
            log.info("node %s (%s) answers again", node_id, self.view.address_text(node_id))
        return out

    # ------------------------------------------------------------------ the fan-out
    async def fan_out(self, node_ids: Sequence[str], call: Callable[[str], Awaitable[T]],
                      decided: Callable[[str, T | None, BaseException | None], bool],
                      stragglers: list[asyncio.Task[Any]] | None = None
                      ) -> list[tuple[str, asyncio.Task[Any]]]:
        """Send ``call(node_id)`` to every node at once; feed each answer to ``decided(node,
        result, error)`` in the order they come (``error`` is the typed error the call raised,
        result None then) and return once it says True, or every node answered. Calls still
        running go on in the background (also added to ``stragglers`` when given, so a caller
        can keep what they hold accounted for until they end); they are returned, with their
        node, for the caller to watch. Whoever should see a straggler's late answer is the
        caller's ``call`` (this loop has returned by then)."""

        # One task per replica call, and the answers fed to ``decided`` from the tasks' done
        # callbacks; the caller waits on one future. (A wrapper coroutine per call plus
        # ``asyncio.as_completed`` cost a queue, a callback and a waiter task per answer:
        # ~5 % of a frontend's CPU on small PUTs.)
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        left = [len(node_ids)]

        def answered(nid: str, t: asyncio.Task[Any]) -> None:
            if t.cancelled():
                if not finished.done():
                    finished.cancel()  # as the awaited call itself raising CancelledError
                return
            exc = t.exception()
            left[0] -= 1
            if finished.done():
                return  # a straggler: its ``call`` saw whatever it needs to
            if exc is not None and not isinstance(exc, NODE_ERRORS):
                finished.set_exception(exc)  # a bug, or a call cancelled under us
                return
            try:
                stop = decided(nid, None if exc is not None else t.result(), exc)
            except BaseException as e:  # noqa: BLE001 - the decider's error is the caller's
                finished.set_exception(e)
                return
            if stop or left[0] == 0:
                finished.set_result(None)

        tasks: list[asyncio.Task[Any]] = []
        for nid in node_ids:
            task = asyncio.ensure_future(call(nid))
            task.add_done_callback(functools.partial(answered, nid))
            tasks.append(task)
        try:
            if tasks:
                await finished
        finally:
            for t in tasks:
                if not t.done():
                    self.keep(t)
                    if stragglers is not None:
                        stragglers.append(t)
        return [(nid, t) for nid, t in zip(node_ids, tasks, strict=True) if not t.done()]

    async def quorum(self, node_ids: Sequence[str], op: str,
                     call: Callable[[NodeClient], Awaitable[Any]], w: int = 2,
                     stragglers: list[asyncio.Task[Any]] | None = None,
                     ) -> tuple[Outcome, dict[str, Any], list[BaseException]]:
        """Send ``call`` to every node at once; return when ``w`` succeeded or that became
        impossible: the verdict, the results by node and the errors. The stragglers go on for
        ``straggler_grace_ms`` (:meth:`watch_stragglers`); see :meth:`fan_out` for
        ``stragglers``."""
        n = len(node_ids)
        if n == 0:
            return Outcome.UNAVAILABLE, {}, []
        tracker = QuorumTracker(n, min(w, n))
        results: dict[str, Any] = {}
        errors: list[BaseException] = []

        def decided(nid: str, res: Any, exc: BaseException | None) -> bool:
            tracker.record(nid, self.note(nid, op, exc))
            if exc is None:
                results[nid] = res
            else:
                errors.append(exc)
            return tracker.done

        late = await self.fan_out(node_ids, lambda nid: call(self.client(nid)), decided,
                                  stragglers)
        # (only once decided: calls of a request cancelled mid-quorum keep their full timeout)
        self.watch_stragglers(late)
        return tracker.result(), results, errors

    def watch_stragglers(self, late: Sequence[tuple[str, asyncio.Future[Any]]]) -> None:
        """Replica calls still running once their quorum is decided get ``straggler_grace_ms``
        more; then each counts as a failure of its node (it did not answer within a bound:
        a stopped node is skipped after ``failure_threshold_errors`` of them, not after as
        many node timeouts) and is cancelled, dropping the payload it held (NodeClient closes
        a connection that still holds an unsent payload). The copy a cancelled write misses
        is brought by intra-DC replication."""
        if not late:
            return

        def expire() -> None:
            for nid, t in late:
                if not t.done():
                    self.detector.record_failure(nid)
                    if self.on_node_error:
                        self.on_node_error(nid, "straggler")
                    t.cancel()

        timer = asyncio.get_running_loop().call_later(self.fe.straggler_grace_ms / 1000,
                                                      expire)
        left = [len(late)]

        def one_done(_t: asyncio.Future[Any]) -> None:
            left[0] -= 1
            if left[0] == 0:
                timer.cancel()

        for _nid, t in late:
            t.add_done_callback(one_done)

    def write_targets(self, node_ids: Sequence[str], w: int = 2) -> list[str]:
        """The replicas a write goes to: those the failure detector has not given up on (a
        due probe is granted here), or all of them when fewer than ``w`` are left. A node in
        backoff would only straggle: its copy comes by replication."""
        up = [n for n in node_ids if self.detector.is_available(n)]
        return up if len(up) >= min(w, len(node_ids)) else list(node_ids)

    # ------------------------------------------------------------------ the byte budget
    def release_when_done(self, tasks: list[asyncio.Task[Any]], n: int) -> None:
        """Give ``n`` bytes back to the budget now that the quorum is decided, though
        stragglers in ``tasks`` still hold the payload: they are counted in
        ``straggler_bytes`` instead, up to a quarter of the budget, for at most
        ``straggler_grace_ms``. (Holding the budget until they ended made every upload wait
        for a stopped replica's node timeout: PUT p50 went from 150 ms to 9.3 s.) Beyond that
        quarter, they keep the reservation until they end, as before, so memory stays
        bounded by the budget and a quarter of it."""
        pending = [t for t in tasks if not t.done()]
        if not pending:
            self.budget.release(n)
            return
        left = [len(pending)]
        apart = self.straggler_bytes + n <= self.fe.inflight_budget_bytes // 4
        if apart:
            self.budget.release(n)
            self.straggler_bytes += n

        def one_done(_t: asyncio.Task[Any]) -> None:
            left[0] -= 1
            if left[0] == 0:
                if apart:
                    self.straggler_bytes -= n
                else:
                    self.budget.release(n)

        for t in pending:
            t.add_done_callback(one_done)


def _log_failure(t: asyncio.Future[Any]) -> None:
    if not t.cancelled() and t.exception() is not None:
        log.warning("background task failed: %r", t.exception())
