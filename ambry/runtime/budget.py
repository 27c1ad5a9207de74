"""A byte budget for asyncio code: bounds the request bytes a process holds in memory.

Shared by the storage node (put payloads read off sockets) and the frontend (upload chunks in
flight). ``release`` never blocks, so it is safe in ``finally`` blocks of cancelled tasks. A
request larger than the whole budget waits until it has all of it.

Waits are served in order, so one large request is not starved by a stream of small ones.
The order is FIFO, except for callers that *grow* a unit piece by piece as its bytes arrive
(the frontend reserves a chunk's bytes only once the client has sent them, so a client that
sends nothing holds nothing): ``acquire(n, held=k)`` says the caller already holds ``k`` bytes
of the unit it is completing. Such a wait goes before waits holding less (most held first,
then FIFO), so the units nearest to completion finish first and free their bytes. And when
every byte of the budget is held by callers that are themselves waiting, the one holding the
most is granted its bytes over the limit: partial units filling the budget between them would
otherwise wait for each other forever. Normal grants never take the budget over its limit and
an over-limit grant goes to the largest waiter only, which then stays the largest until its
unit is complete; so ``used`` exceeds ``limit`` by less than one unit (one chunk). Callers
that never pass ``held`` (the storage node) get plain FIFO and never go over the limit.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["ByteBudget"]


class ByteBudget:
    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError("a byte budget needs a limit >= 1")
        self.limit = limit_bytes
        self.used = 0
        # (-held, arrival, n, held, future): the head is the waiter holding most, then FIFO.
        # Cancelled waits stay in the heap until they reach its head (lazy removal).
        self._waiters: list[tuple[int, int, int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()
        self._waiting_held = 0  # bytes held by the callers now waiting (part of ``used``)

    @property
    def waiting(self) -> int:
        """Callers waiting for bytes now."""
        return sum(1 for w in self._waiters if not w[4].done())

    async def acquire(self, n: int, *, held: int = 0) -> int:
        """Wait for ``n`` bytes (capped at the limit); returns what to pass to release.
        ``held``: bytes of the same unit the caller holds already (see the module doc)."""
        n = min(n, self.limit)
        assert 0 <= held <= self.used, "held bytes must have been acquired"
        if self.used + n <= self.limit and (
                not self._live_head() or -self._waiters[0][0] < held):
            self.used += n
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-held, next(self._arrival), n, held, fut))
        self._waiting_held += held
        self._wake()  # everything may be held by waiters now: the largest goes over the limit
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            else:
                fut.cancel()
                self._waiting_held -= held
                self._wake()
            raise
        return n

    def release(self, n: int) -> None:
        self.used -= min(n, self.limit)
        assert self.used >= 0, "byte budget released more than acquired"
        self._wake()

    def _live_head(self) -> bool:
        while self._waiters and self._waiters[0][4].done():
            heapq.heappop(self._waiters)  # a cancelled wait
        return bool(self._waiters)

    def _wake(self) -> None:
        while self._live_head():
            _key, _arrival, n, held, fut = self._waiters[0]
            # the second case: every byte in use is held by a waiter, so nothing would ever
            # be released; the head holds the most of them
            if self.used + n > self.limit and self.used != self._waiting_held:
                return
            heapq.heappop(self._waiters)
            self._waiting_held -= held
            self.used += n
            fut.set_result(None)
