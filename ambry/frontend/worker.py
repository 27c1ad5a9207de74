"""One worker of a supervised frontend (``frontend.workers`` > 1): its metrics and its signal
to the supervisor.

Owns how N processes behind one port still give one right ``/metrics``: every series of a
worker carries a ``worker`` label (its index, 0 .. N-1); each worker also serves its own
labelled series on a Unix socket in the supervisor's control directory, and whichever worker
a scrape of the shared port lands on answers with its own series plus every sibling's
(fetched over those sockets, ``SIBLING_TIMEOUT_S`` each). So a scraper of the port sees all
workers at once (``sum without (worker) (...)`` for the frontend as a whole), counters never
jump back when a scrape lands on another worker, and ``process_*`` gives CPU and memory per
worker. ``ambry_frontend_worker_pid`` says which process a worker is and
``ambry_frontend_worker_starts`` how often its slot was (re)started,
``ambry_frontend_worker_ready`` whether its ``/healthCheck`` says GOOD;
``ambry_frontend_workers_scraped`` how many workers one scrape holds (fewer than
``frontend.workers`` while one restarts).

Readiness stays per worker (``/healthCheck`` answers for the worker it lands on); a worker the
supervisor restarted listens only once it is ready itself (``ambry.frontend.server``), so a
health check never finds a half-started worker beside serving ones. Does not own starting,
restarting or signalling workers (``ambry.frontend.supervisor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from ambry.frontend.supervisor import WorkerSpec

__all__ = ["SIBLING_TIMEOUT_S", "WORKER_LABEL", "WorkerMetrics", "merge_families",
           "socket_path", "tell_serving"]

log = logging.getLogger(__name__)

WORKER_LABEL = "worker"
#: How long a scrape waits for one sibling's series (a restarting worker is left out).
SIBLING_TIMEOUT_S = 2.0
_LOCAL_PATH = "/metrics/worker"


def socket_path(control_dir: Path, index: int) -> Path:
    """Where worker ``index`` serves its own series."""
    return control_dir / f"w{index}.sock"


def _labelled_text(registry: CollectorRegistry, worker: str) -> str:
    out = []
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        fam.samples = [s._replace(labels={**s.labels, WORKER_LABEL: worker})
                       for s in fam.samples]
        out.append(fam)
    return generate_latest(_Families(out)).decode()


class _Families:
    """A collector of ready-made families (what ``generate_latest`` needs)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_families(texts: Iterable[str]) -> bytes:
    """Prometheus text of several workers as one exposition: each family once, with every
    worker's samples (they differ by their ``worker`` label)."""
    merged: dict[str, Metric] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            have = merged.get(fam.name)
            if have is None:
                merged[fam.name] = fam
            else:
                have.samples.extend(fam.samples)
    return generate_latest(_Families(merged.values()))


class WorkerMetrics:
    """The metrics side of one worker: labels its registry, serves it to siblings, answers a
    scrape of the shared port for all of them."""

    def __init__(self, registry: CollectorRegistry, spec: WorkerSpec,
                 ready: Callable[[], bool]) -> None:
        self.registry = registry
        self.spec = spec
        self.label = str(spec.index)
        self._runner: web.AppRunner | None = None
        self._scraped = 1
        Gauge("ambry_frontend_worker_pid", "Process id of this frontend worker",
              registry=registry).set(os.getpid())
        Gauge("ambry_frontend_worker_starts",
              "Times the supervisor started this worker slot (1 = never restarted)",
              registry=registry).set(spec.start)
        Gauge("ambry_frontend_worker_ready",
              "1 once this worker's /healthCheck says GOOD (every partition servable)",
              registry=registry).set_function(lambda: 1 if ready() else 0)
        Gauge("ambry_frontend_workers_scraped",
              "Workers whose series the last scrape of the shared port held",
              registry=registry).set_function(lambda: self._scraped)

    def own_text(self) -> str:
        return _labelled_text(self.registry, self.label)

    async def start(self) -> None:
        """Serve this worker's own series on its control socket."""
        app = web.Application()

        async def own(_request: web.Request) -> web.Response:
            return web.Response(text=self.own_text())

        app.router.add_get(_LOCAL_PATH, own)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        path = socket_path(self.spec.control_dir, self.spec.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by this slot's previous worker (killed -9)
        await web.UnixSite(self._runner, str(path)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _sibling(self, index: int) -> str | None:
        path = socket_path(self.spec.control_dir, index)
        try:
            async with aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=str(path)),
                    timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S)) as s, \
                    s.get(f"http://worker{index}{_LOCAL_PATH}") as r:
                if r.status != 200:
                    return None
                return await r.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            log.debug("metrics of worker %d not available: %s", index, e)
            return None

    async def scrape(self) -> bytes:
        """Every worker's series, as the shared port's ``/metrics`` answers."""
        others = [i for i in range(self.spec.count) if i != self.spec.index]
        texts = await asyncio.gather(*(self._sibling(i) for i in others))
        found = [t for t in texts if t is not None]
        self._scraped = 1 + len(found)
        return merge_families([self.own_text(), *found])

    async def handle(self, _request: web.Request) -> web.Response:
        resp = web.Response(body=await self.scrape())
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp


def tell_serving(spec: WorkerSpec) -> None:
    """Tell the supervisor this worker serves (one byte on its pipe)."""
    try:
        os.write(spec.ready_fd, b"s")
    finally:
        os.close(spec.ready_fd)
