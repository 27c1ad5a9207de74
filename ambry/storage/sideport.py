"""The node's HTTP side port: ``/healthCheck``, ``/metrics`` and ``/replication``.

Owns the small aiohttp app beside the node protocol port: health (BAD while the node drains),
the Prometheus text of the node's registry (``metrics``; replication rows and usage rows are
refreshed at scrape time) and the replication status as JSON (``ambry admin
replication-status``). Does not own the metric names (``metrics``) nor what they count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from ambry.storage.api import ReplicaStats, ReplicaStore, Replicator, RunIO
from ambry.storage.metrics import CONTENT_TYPE, NodeMetrics

__all__ = ["SidePort", "replica_stats"]

UsageRows = tuple[list[tuple[str, str, int, int]], list[tuple[int, bool]]]


class SidePort:
    def __init__(self, node_id: str, datacenter: str, replicas: Mapping[int, ReplicaStore], *,
                 metrics: NodeMetrics, replication: Callable[[], Replicator | None],
                 usage_rows: Callable[[], UsageRows], run_io: RunIO,
                 draining: Callable[[], bool],
                 warm_rows: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.node_id = node_id
        self.datacenter = datacenter
        self.replicas = replicas
        self.metrics = metrics
        self._replication = replication
        self._usage_rows = usage_rows  # blocking: run on the I/O threads
        self._warm_rows = warm_rows  # blocking too (erasure coding: it stats files)
        self._run = run_io
        self._is_draining = draining
        self._http: web.AppRunner | None = None

    @property
    def _draining(self) -> bool:
        return self._is_draining()

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthCheck", self._http_health)
        app.router.add_get("/metrics", self._http_metrics)
        app.router.add_get("/replication", self._http_replication)
        self._http = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._http.setup()
        site = web.TCPSite(self._http, host, port, reuse_address=True)
        await site.start()

    async def cleanup(self) -> None:
        if self._http is not None:
            await self._http.cleanup()

    async def _http_health(self, _request: web.Request) -> web.Response:
        if self._draining:
            return web.Response(status=503, text="BAD")
        return web.Response(status=200, text="GOOD")

    async def _http_replication(self, _request: web.Request) -> web.Response:
        replication = self._replication()
        rows = replication.status() if replication is not None else []
        rebuilding = sorted(pid for pid, r in self.replicas.items() if r.rebuilding)
        return web.json_response({"node": self.node_id, "datacenter": self.datacenter,
                                  "rebuilding": rebuilding, "peers": rows})

    async def _http_metrics(self, _request: web.Request) -> web.Response:
        replication = self._replication()
        if replication is not None:
            self.metrics.set_replication(replication.status())
        self.metrics.set_usage(*await self._run(self._usage_rows))
        if self._warm_rows is not None:
            self.metrics.set_warm_tier(await self._run(self._warm_rows))
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE})


def replica_stats(replicas: Mapping[int, ReplicaStore]) -> list[ReplicaStats]:
    """Each replica's stats, for the gauges ``/metrics`` reads at scrape time."""
    out = []
    for r in list(replicas.values()):
        try:
            out.append(r.stats())
        except Exception:  # noqa: BLE001,S112 -- a replica closing at shutdown: best effort
            continue
    return out
