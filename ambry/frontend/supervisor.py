"""The frontend supervisor: ``frontend.workers`` processes serving one REST and one S3 port.

Owns the process that ``ambry frontend`` becomes when ``frontend.workers`` is not 1: it
serves nothing itself; it starts N worker processes (each a whole frontend: its own event
loop, router, node connections and byte budget) that all listen on the same ports with
``SO_REUSEPORT``, so the kernel spreads new connections over them. It

- waits until every worker of the first start serves (each says so on a pipe); a worker that
  dies before that is a start-up failure (a port taken, a bad secret): everything stops and
  the supervisor exits 1, as a single frontend would;
- restarts a worker that dies later, after a backoff (``RESTART_BACKOFF_S`` doubling to
  ``RESTART_BACKOFF_MAX_S``; back to the start once a worker has run ``STABLE_AFTER_S``),
  and logs each death and restart; the other workers keep serving meanwhile (a connection
  the dead one had accepted is lost with it, as with any frontend killed -9);
- passes SIGHUP (re-read the config: cluster map, S3 keys) to every worker;
- on SIGTERM / SIGINT passes SIGTERM to every worker (each drains as a single frontend does,
  ``daemon.shutdown_grace_s``), SIGKILLs one still running ``KILL_MARGIN_S`` after that,
  and exits 0.

Does not own what a worker serves or how it drains (``ambry.frontend.server``), nor how a
worker reports its metrics (``ambry.frontend.worker``); the worker's command line is built by
the caller (``ambry.cli``). Plain asyncio on the default loop: the supervisor does no I/O
beyond pipes and signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ambry.common.config import MAX_FRONTEND_WORKERS

__all__ = ["KILL_MARGIN_S", "RESTART_BACKOFF_MAX_S", "RESTART_BACKOFF_S", "STABLE_AFTER_S",
           "Supervisor", "WorkerSpec", "resolve_workers"]

log = logging.getLogger(__name__)

#: First wait before restarting a worker that died; doubles per quick death.
RESTART_BACKOFF_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
#: A worker that ran this long before it died is restarted after RESTART_BACKOFF_S again.
STABLE_AFTER_S = 60.0
#: On SIGTERM, a worker still running this long after ``shutdown_grace_s`` is killed.
KILL_MARGIN_S = 10.0


def resolve_workers(configured: int) -> int:
    """``frontend.workers`` as a count: 0 ("auto") is one per core this process may run on,
    at most MAX_FRONTEND_WORKERS."""
    if configured > 0:
        return configured
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_FRONTEND_WORKERS))


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is told about itself (``ambry frontend --worker``)."""

    index: int      # 0 .. count-1: the ``worker`` label of its metrics and log lines
    count: int
    start: int      # 1 for the first start of this slot, then one more per restart
    control_dir: Path  # where every worker's metrics socket lives (ambry.frontend.worker)
    ready_fd: int   # write end of the pipe the worker writes one byte to once it serves


@dataclass
class _Slot:
    index: int
    starts: int = 0
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    backoff_s: float = RESTART_BACKOFF_S
    served: bool = False


class Supervisor:
    """Runs ``workers`` worker processes until SIGTERM / SIGINT. ``command(spec)`` is the
    worker's command line (it must pass ``spec`` on, ``ready_fd`` included)."""

    def __init__(self, command: Callable[[WorkerSpec], list[str]], workers: int,
                 grace_s: float, *, name: str = "frontend") -> None:
        if workers < 2:
            raise ValueError("a supervisor runs at least 2 workers")
        self.command = command
        self.workers = workers
        self.grace_s = grace_s
        self.name = name
        self.slots = [_Slot(i) for i in range(workers)]
        self.control_dir = Path(tempfile.mkdtemp(prefix="ambry-fe-workers-"))
        self._stop = asyncio.Event()
        self._failed: str | None = None

    # ------------------------------------------------------------------ one worker
    async def _spawn(self, slot: _Slot) -> asyncio.Future[bool]:
        """Start the slot's worker; a future that says True once it serves, False if it
        exited first."""
        slot.starts += 1
        r, w = os.pipe()
        spec = WorkerSpec(slot.index, self.workers, slot.starts, self.control_dir, w)
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                *self.command(spec), pass_fds=(w,), stdin=subprocess.DEVNULL)
        finally:
            os.close(w)
        if self._stop.is_set():  # SIGTERM came while it was being started
            slot.proc.send_signal(signal.SIGTERM)
        slot.started_at = time.monotonic()
        log.info("%s worker %d started (pid %d, start #%d)", self.name, slot.index,
                 slot.proc.pid, slot.starts)
        loop = asyncio.get_running_loop()
        served: asyncio.Future[bool] = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(r, 1)
            except BlockingIOError:  # pragma: no cover - woken without data
                return
            loop.remove_reader(r)
            os.close(r)
            if not served.done():
                served.set_result(bool(data))  # b"" = the pipe closed: it exited first

        os.set_blocking(r, False)
        loop.add_reader(r, readable)
        return served

    async def _run_slot(self, slot: _Slot, first: asyncio.Future[None]) -> None:
        """Keep the slot's worker running until stop; ``first`` resolves once the first
        start served (or fails the whole supervisor if it did not)."""
        while not self._stop.is_set():
            served = await self._spawn(slot)
            proc = slot.proc
            assert proc is not None
            if not await served:
                code = await proc.wait()
                if not slot.served and not self._stop.is_set():  # a start-up failure
                    self._fail(f"{self.name} worker {slot.index} exited with {code} before "
                               f"it served")
                    if not first.done():
                        first.set_result(None)
                    return
            else:
                slot.served = True
                if not first.done():
                    first.set_result(None)
                code = await proc.wait()
            if self._stop.is_set():
                return
            ran_s = time.monotonic() - slot.started_at
            if ran_s >= STABLE_AFTER_S:
                slot.backoff_s = RESTART_BACKOFF_S
            log.warning("%s worker %d (pid %d) died (%s) after %.1f s; restarting it in "
                        "%.1f s", self.name, slot.index, proc.pid, _exit_text(code), ran_s,
                        slot.backoff_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), slot.backoff_s)
            slot.backoff_s = min(RESTART_BACKOFF_MAX_S, slot.backoff_s * 2)

    def _fail(self, why: str) -> None:
        if self._failed is None:
            self._failed = why
            log.error("%s", why)
        self._stop.set()

    # ------------------------------------------------------------------ signals
    def _signal_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    def _hangup(self) -> None:
        log.info("%s: SIGHUP passed to %d workers", self.name, self.workers)
        self._signal_all(signal.SIGHUP)

    # ------------------------------------------------------------------ run
    async def run(self) -> int:
        """Serve until SIGTERM / SIGINT; the process's exit code (0, or 1 when a worker
        could not start)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        firsts = [loop.create_future() for _ in self.slots]
        tasks = [asyncio.ensure_future(self._run_slot(s, f))
                 for s, f in zip(self.slots, firsts, strict=True)]
        try:
            all_serve: asyncio.Future[list[None]] = asyncio.gather(*firsts)
            stopped: asyncio.Future[bool] = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([all_serve, stopped],  # type: ignore[type-var]
                               return_when=asyncio.FIRST_COMPLETED)
            if not self._stop.is_set():
                log.info("%s: %d workers serving", self.name, self.workers)
            await self._stop.wait()
            await self._drain(tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            shutil.rmtree(self.control_dir, ignore_errors=True)
        return 1 if self._failed else 0

    async def _drain(self, tasks: Sequence[asyncio.Future[None]]) -> None:
        """SIGTERM every worker; a slot's task ends once its worker has exited."""
        t0 = time.monotonic()
        self._signal_all(signal.SIGTERM)
        _done, late = await asyncio.wait(tasks, timeout=self.grace_s + KILL_MARGIN_S)
        if late:
            log.warning("%s: %d workers still running %.1f s after SIGTERM; killing them",
                        self.name, len(late), time.monotonic() - t0)
            self._signal_all(signal.SIGKILL)
            await asyncio.wait(tasks)
        procs = [s.proc for s in self.slots if s.proc is not None]
        codes = [p.returncode for p in procs]
        log.info("%s: all %d workers stopped in %.2f s (exit codes %s)", self.name,
                 len(procs), time.monotonic() - t0, codes)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:  # pragma: no cover
            return f"signal {-code}"
    return f"exit code {code}"
