"""The node's batch writer: small mutations appended and made durable a batch at a time.

Owns the write path of small requests (``put`` of a small payload, ``delete``,
``ttl_update``, ``undelete``): the event loop hands them over a batch at a time, one thread
appends every record of the batch through the replica's own methods (so duplicates,
``BlobAlreadyExists``, tombstones, life versions and ``PartitionReadOnly`` on a full disk or
an I/O error are exactly what ``Replica`` says), runs ONE ``fdatasync`` per replica log the
batch touched (``Log.commit``: under the ``fsync`` policy; the ``page-cache`` policy needs
none), and completes the whole batch on the loop with ONE ``call_soon_threadsafe``. Before,
each request cost a ``ThreadPoolExecutor.submit`` (a future, a condition, a worker wake), a
durability waiter and a wake of the group-commit thread.

How a batch forms (nothing waits on a timer to make one)::

  event loop                              writer thread
  ----------                              -------------
  frames parsed in one loop step  --+
  (every connection whose bytes     |  submit(): job appended to `_pending`;
  came in together)                 |  the first one schedules `_flush` (call_soon)
                                    v
  _flush: `_pending` -> SimpleQueue ----> get(); + everything queued meanwhile
                                          for each job: replica method (appends)
                                          Log.commit(end) once per touched log
  _complete(batch, outcomes) <----------- call_soon_threadsafe, once per batch
  each job's `done(outcome)`: the reply

While the thread writes one batch, the next gathers in the queue: the group commit follows
the load. A batch is bounded by what may be in flight (``max_inflight_per_connection`` per
connection, and the node's payload budget, held until the reply). Puts of every size up to
``BATCH_MAX_PAYLOAD_BYTES`` come here (issue 16: large puts too, since their payload is
already received; their checksum and pwritev run with the GIL released and hold up the
small requests of a batch by about what the batch's fdatasync costs anyway).

The event loop never blocks here: ``submit`` appends to a list, ``_flush`` puts to a
``queue.SimpleQueue`` (never full). Does not own what a mutation means (``replica``), nor
replies and budgets (``server``), nor which request goes here (``ops``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ambry.common.errors import StorageError
from ambry.storage.api import MutationResult
from ambry.storage.log import Position

__all__ = ["BATCH_MAX_PAYLOAD_BYTES", "BatchWriter", "Committable", "Done", "Outcome"]

log = logging.getLogger(__name__)

#: a put with a payload of at most this many bytes goes through the batch writer (the
#: default max_record_bytes: every put the frontend sends)
BATCH_MAX_PAYLOAD_BYTES = 64 * 1024**2

#: what a job ends with: the replica's result, or the exception its method raised
Outcome = MutationResult | BaseException
#: called on the event loop with the job's outcome
Done = Callable[[Outcome], None]


class Committable(Protocol):
    """What the writer needs of a replica besides the method it calls (``ReplicaStore``)."""

    def commit(self, end: Position) -> StorageError | None: ...


# one job: (replica, its blocking method, the method's arguments, done callback)
_Job = tuple[Committable, Callable[..., MutationResult], tuple[Any, ...], Done]


class BatchWriter:
    """One writer thread per node. ``on_batch`` runs on the loop after each batch's
    callbacks (the node wakes replication's long polls there, once per batch)."""

    def __init__(self, name: str, on_batch: Callable[[], None] = lambda: None) -> None:
        self.name = name
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._pending: list[_Job] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        # for stats and tests: batches written and the jobs in them
        self.batches = 0
        self.jobs = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._closed

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"batch-writer:{self.name}")
        self._thread.start()

    def submit(self, replica: Committable, fn: Callable[..., MutationResult],
               args: tuple[Any, ...], done: Done) -> None:
        """Queue ``fn(*args)`` (a mutation of ``replica``, called on the writer thread);
        ``done(outcome)`` runs on the loop once the record is durable, or with the error.
        Call on the event loop, only while ``running``."""
        assert self._loop is not None and not self._closed
        self._pending.append((replica, fn, args, done))
        if len(self._pending) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._queue.put(batch)

    async def close(self) -> None:
        """Write what is queued, then stop the thread (call after the requests finished)."""
        if self._thread is None or self._closed:
            self._closed = True
            return
        self._flush()
        self._closed = True
        self._queue.put(None)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._thread.join, 30)

    # ------------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        q = self._queue
        stop = False
        while not stop:
            batch = q.get()
            if batch is None:
                return
            while True:  # what came in while the last batch was written joins this one
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            try:
                outcomes = self.write(batch)
            except BaseException as e:  # a bug: fail the batch, keep serving
                log.exception("batch writer %s: a batch of %d failed", self.name, len(batch))
                outcomes = [e] * len(batch)
            loop = self._loop
            assert loop is not None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._complete, batch, outcomes)

    def write(self, batch: list[_Job]) -> list[Outcome]:
        """Append every job of ``batch`` in order, then make them durable: one
        ``Log.commit`` per log touched, to the furthest end any job must wait for (a
        duplicate's record may be another writer's, not yet synced). Runs on the writer
        thread (tests call it directly)."""
        outcomes: list[Outcome] = []
        ends: dict[int, tuple[Committable, Position]] = {}
        for replica, fn, args, _done in batch:
            try:
                res = fn(*args)
            except Exception as e:  # noqa: BLE001 -- the job's error is its reply
                outcomes.append(e)
                continue
            outcomes.append(res)
            cur = ends.get(id(replica))
            if cur is None or res.end > cur[1]:
                ends[id(replica)] = (replica, res.end)
        failed = False
        for replica, end in ends.values():
            failed = replica.commit(end) is not None or failed
        if failed:  # a failed sync: what it should have covered is never acked
            for i, (replica, _fn, _args, _done) in enumerate(batch):
                done_as = outcomes[i]
                if isinstance(done_as, MutationResult):
                    err = replica.commit(done_as.end)  # None for what is durable already
                    if err is not None:
                        outcomes[i] = err
        self.batches += 1
        self.jobs += len(batch)
        return outcomes

    # ------------------------------------------------------------------ back on the loop
    def _complete(self, batch: list[_Job], outcomes: list[Outcome]) -> None:
        for (_r, _fn, _args, done), outcome in zip(batch, outcomes):
            try:
                done(outcome)
            except Exception:  # one reply's failure must not lose the others
                log.exception("batch writer %s: completing a request failed", self.name)
        self._on_batch()
