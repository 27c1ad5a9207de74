"""The fragment reader's blocking entry point (``FragmentFetcher.read_encoded``, called on a
node's I/O thread) gives up after its limit; the read it started on the event loop must stop
then too (it ran on for a caller that was gone, holding its window reads), and the caller gets
a clean ``Unavailable``, not a bare TimeoutError."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from ambry.common.errors import Unavailable
from ambry.warm.fetch import FragmentFetcher


def test_a_read_that_outlives_its_caller_is_cancelled_on_the_loop() -> None:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    started, cancelled = threading.Event(), threading.Event()

    async def never_answers(*_a: Any, **_k: Any) -> bytes:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    try:
        f = FragmentFetcher(loop, client=lambda _n: None, timeout_ms=1)  # type: ignore[arg-type,return-value]
        f.read = never_answers  # type: ignore[method-assign]
        with pytest.raises(Unavailable):
            f.read_encoded(7, type("Rec", (), {"segment": 3})(), 0, 10)  # type: ignore[arg-type]
        assert started.is_set()
        # the loop-side read is cancelled, not left running
        assert cancelled.wait(timeout=30)
        assert f.fragment_read_errors[(7, "unavailable")] == 1
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(timeout=10)
        loop.close()
