"""A FIFO byte budget for asyncio code: bounds the request bytes a process holds in memory.

Shared by the storage node (put payloads read off sockets) and the frontend (upload chunks in
flight). FIFO, so one large request is not starved by a stream of small ones; ``release``
never blocks, so it is safe in ``finally`` blocks of cancelled tasks. A request larger than
the whole budget waits until it has all of it.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["ByteBudget"]


class ByteBudget:
    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError("a byte budget needs a limit >= 1")
        self.limit = limit_bytes
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = \
            collections.deque()

    async def acquire(self, n: int) -> int:
        """Wait for ``n`` bytes (capped at the limit); returns what to pass to release."""
        n = min(n, self.limit)
        if not self._waiters and self.used + n <= self.limit:
            self.used += n
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._wake()
            raise
        return n

    def release(self, n: int) -> None:
        self.used -= min(n, self.limit)
        assert self.used >= 0, "byte budget released more than acquired"
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self.used += n
                fut.set_result(None)
