"""Re-reading the cluster config in a running daemon (SIGHUP, or a changed file).

Owns *when* a daemon re-reads its config and what it tells the operator: a SIGHUP (or, with
``daemon.config_watch_interval_s`` > 0, a change of the file's mtime/size/inode) loads the file
off the event loop, hands the new :class:`ClusterConfig` to the daemon's ``apply`` coroutine,
and records the outcome: a file that does not load or validate, and a change ``apply``
refuses (``ambry.common.mapchange``), are logged as errors and the old config stays in force.
Reloads never overlap; signals that arrive during one coalesce into one more. The outcome is
exported as metrics (:class:`ReloadCollector`): ``ambry_config_reloads_total{result}``,
``ambry_config_reload_failed`` (1 while the newest attempt failed) and
``ambry_config_last_reload_timestamp_seconds``.

Does not own what a new map means to a daemon (the storage node opens new replicas, the
frontend's router picks up partitions and nodes) nor the safety rules (``mapchange``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import yaml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ambry.common.config import ClusterConfig
from ambry.common.errors import AmbryError
from ambry.common.mapchange import MapChange

__all__ = ["ConfigReloader", "ReloadCollector", "ReloadStatus"]

log = logging.getLogger(__name__)


@dataclass
class ReloadStatus:
    ok: int = 0                 # reloads applied (including "no change")
    failed: int = 0             # files that did not load, changes refused
    last_failed: bool = False
    last_error: str = ""
    last_attempt_s: float = 0.0
    last_success_s: float = 0.0
    last_change: str = ""


class ConfigReloader:
    """Loads the config with ``load`` (blocking; run on a thread) and applies it with
    ``apply`` (which raises an :class:`AmbryError` to refuse it)."""

    def __init__(self, load: Callable[[], ClusterConfig],
                 apply: Callable[[ClusterConfig], Awaitable[MapChange]], *,
                 path: str | os.PathLike[str] | None = None, watch_interval_s: float = 0.0,
                 ) -> None:
        self._load = load
        self._apply = apply
        self.path = path
        self.watch_interval_s = watch_interval_s
        self.status = ReloadStatus()
        self._lock = asyncio.Lock()
        self._pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._signature = self._file_signature()

    def _file_signature(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    # ------------------------------------------------------------------ triggers
    def trigger(self) -> None:
        """Ask for a reload (a signal handler calls this). Coalesces with a running one."""
        if self._lock.locked():
            self._pending = True
            return
        task = asyncio.get_running_loop().create_task(self._run(), name="config-reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        await self.reload()
        while self._pending:
            self._pending = False
            await self.reload()

    def start(self) -> None:
        """Start watching the file (when ``watch_interval_s`` > 0)."""
        if self.watch_interval_s > 0 and self.path is not None and self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_loop(),
                                                                 name="config-watch")

    async def stop(self) -> None:
        """Stop watching the file. A reload in progress runs to its end (a daemon that is
        stopping refuses it in ``apply``), so nothing it opened is left behind."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval_s)
            sig = await asyncio.to_thread(self._file_signature)
            if sig is not None and sig != self._signature:
                log.info("config file %s changed: reloading", self.path)
                await self.reload()

    # ------------------------------------------------------------------ the reload
    async def reload(self) -> bool:
        """Load and apply the config once. True if it is in force now."""
        async with self._lock:
            st = self.status
            st.last_attempt_s = time.time()
            # remembered before loading: a change written while we read is seen next time
            self._signature = await asyncio.to_thread(self._file_signature)
            try:
                cfg = await asyncio.to_thread(self._load)
                change = await self._apply(cfg)
            except (AmbryError, OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
                # a file that is not YAML, or YAML that is not a cluster map (a missing key,
                # a wrong type): the loader's errors are not all AmbryErrors
                msg = getattr(e, "message", None) or " ".join(str(e).split())
                st.failed += 1
                st.last_failed, st.last_error = True, msg
                log.error("cluster map reload refused, keeping the running map: %s", msg)
                return False
            except Exception as e:  # a bug in apply: keep serving with the old map
                st.failed += 1
                st.last_failed, st.last_error = True, f"{type(e).__name__}: {e}"
                log.exception("cluster map reload failed, keeping the running map")
                return False
            st.ok += 1
            st.last_failed, st.last_error = False, ""
            st.last_success_s = time.time()
            st.last_change = change.describe()
            if change.restart_needed:
                log.warning("config sections %s changed: they take effect at the next "
                            "restart", list(change.restart_needed))
            log.info("cluster map reloaded: %s", st.last_change)
            return True


class ReloadCollector:
    """Prometheus metrics of a :class:`ConfigReloader` (register it in a registry)."""

    def __init__(self, reloader: Callable[[], ConfigReloader | None]) -> None:
        self._reloader = reloader

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        r = self._reloader()
        st = r.status if r is not None else ReloadStatus()
        total = CounterMetricFamily("ambry_config_reloads", "Cluster config reloads",
                                    labels=["result"])
        total.add_metric(["ok"], st.ok)
        total.add_metric(["failed"], st.failed)
        yield total
        yield GaugeMetricFamily("ambry_config_reload_failed",
                                "1 while the newest reload attempt failed (old map in force)",
                                value=1.0 if st.last_failed else 0.0)
        yield GaugeMetricFamily("ambry_config_last_reload_timestamp_seconds",
                                "Unix time of the newest successful reload (0: none)",
                                value=st.last_success_s)
