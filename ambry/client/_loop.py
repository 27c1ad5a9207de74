"""The private event loop thread behind the sync :class:`~ambry.client.Client`.

Owns one asyncio loop running on a daemon thread and :meth:`LoopThread.call`, which runs a
coroutine there and blocks the calling thread until it finishes, so the sync client is the
async client (one code path) and any number of threads may call it at once. Interrupting the
waiting thread (Ctrl-C) cancels the coroutine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "ambry-client") -> None:
        self.loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and return its result (or raise its error)."""
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync Client method was called from its own event loop "
                               "thread (from an on_request hook?); use the AsyncClient there")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # Ctrl-C in the caller: stop the work too
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()
