"""The node's batch reader: GETs located and read a batch at a time, one thread trip per batch.

A GET used to cost a task, a ``run_in_executor`` (an executor future, an asyncio future
chained to it, a worker wake) and a ``call_soon_threadsafe`` back: by the py-spy profile of a
4 KiB GET, ~60 % of a node's Python CPU (``_chain_future`` 44 %, ``ThreadPoolExecutor.submit``
17 %). Now the frame loop hands every GET it parsed in one loop step (from every connection)
to :class:`BatchReader`, which runs them on ONE trip to a reader thread and completes
them on the loop with ONE ``call_soon_threadsafe``; the server writes the replies to one
connection in one write (as for the batch writer's replies)::

  event loop                               a reader thread (up to storage.io_threads, 4)
  ----------                               ---------------------------------------------
  GETs parsed in one loop step  --+
                                  |  submit(): job appended to `_pending`;
                                  |  the first one schedules `_flush` (call_soon)
                                  v
  _flush: <= _BATCH_MAX_JOBS per   ----->  each job: locate, read and verify a small
  SimpleQueue.put                          payload (or take the file span to sendfile)
  _complete(batch, outcomes)   <---------  call_soon_threadsafe, once per batch
  each job's `done(outcome)`: the reply

Several reader threads take batches from one ``SimpleQueue`` (a C queue: one put, one wake),
so a slow disk read holds up at most the other GETs of its batch (at most
``_BATCH_MAX_JOBS``), never the other threads. What a GET reads
and verifies, and what it answers, is the op handler's (``ops``); this file only moves jobs
to a thread and back. The event loop never blocks here: ``submit`` appends to a list,
``_flush`` puts to a ``SimpleQueue`` (never full).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["BatchReader"]

log = logging.getLogger(__name__)

#: at most this many jobs per I/O-thread trip (a slow read delays only its own batch)
_BATCH_MAX_JOBS = 16

# one job: (the blocking function, run on an I/O thread; done, called on the loop with what
# it returned or the exception it raised)
_Job = tuple[Callable[[], Any], Callable[[Any], None]]


class BatchReader:
    """Runs blocking read jobs a batch at a time on ``threads`` reader threads of its own
    (a ``SimpleQueue`` hand-off: no executor future, no idle-semaphore, per batch)."""

    def __init__(self, name: str, threads: int = 4,
                 on_batch: Callable[[int], None] = lambda n: None) -> None:
        self.name = name
        self._nthreads = max(1, threads)
        self._on_batch = on_batch  # on the loop after each batch: its job count (metrics)
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._pending: list[_Job] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        # for stats and tests: trips to the reader threads and the jobs they carried
        self.batches = 0
        self.jobs = 0

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for i in range(self._nthreads):
            t = threading.Thread(target=self._run, args=(loop,), daemon=True,
                                 name=f"batch-reader:{self.name}:{i}")
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Take no more jobs (``submit`` callers fall back to their own path); what is
        queued still runs, then the threads end."""
        if self._loop is None:
            return
        self._flush()
        self._loop = None
        for _ in self._threads:
            self._queue.put(None)
        self._threads = []

    def submit(self, fn: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Queue ``fn()`` (blocking; run on a reader thread); ``done(result or exception)``
        runs on the loop. Call on the event loop, only while ``running``."""
        assert self._loop is not None
        self._pending.append((fn, done))
        if len(self._pending) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        for i in range(0, len(batch), _BATCH_MAX_JOBS):
            self._queue.put(batch[i:i + _BATCH_MAX_JOBS])

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        q = self._queue
        while True:
            batch = q.get()
            if batch is None:
                return
            outcomes: list[Any] = []
            for fn, _done in batch:
                try:
                    outcomes.append(fn())
                except Exception as e:  # noqa: BLE001 -- the job's error is its reply
                    outcomes.append(e)
            self.batches += 1
            self.jobs += len(batch)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._complete, batch, outcomes)
            # hold nothing while waiting for the next batch (a reply's file descriptor)
            del batch, outcomes

    def _complete(self, batch: list[_Job], outcomes: list[Any]) -> None:
        for (_fn, done), outcome in zip(batch, outcomes):
            try:
                done(outcome)
            except Exception:  # one reply's failure must not lose the others
                log.exception("batch reader %s: completing a request failed", self.name)
        self._on_batch(len(batch))
