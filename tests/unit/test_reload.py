"""ConfigReloader: refused files keep the old map, a changed file is picked up by the watch."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from ambry.common.config import ClusterConfig, load_config
from ambry.common.mapchange import MapChange, plan_map_change
from ambry.runtime.reload import ConfigReloader, ReloadCollector

DOC = {"datacenters": [{"name": "dc1", "id": 1}],
       "nodes": [{"id": f"n{i}", "datacenter": "dc1", "host": "127.0.0.1", "port": 9000 + i,
                  "http_port": 9100 + i} for i in range(3)],
       "partitions": {"count": 2}}


class _Daemon:
    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.applied = 0

    async def apply(self, cfg: ClusterConfig) -> MapChange:
        change = plan_map_change(self.cfg, cfg, "n0")
        self.cfg = cfg
        self.applied += 1
        return change


async def test_bad_file_and_unsafe_change_keep_the_running_map(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    d = _Daemon(load_config(path))
    r = ConfigReloader(lambda: load_config(path), d.apply, path=path)
    registry = CollectorRegistry()
    registry.register(ReloadCollector(lambda: r))

    path.write_text("datacenters: [oops")
    assert not await r.reload()
    assert r.status.last_failed and "while parsing" in r.status.last_error
    assert b"ambry_config_reload_failed 1.0" in generate_latest(registry)

    moved = {**DOC, "partitions": [{"id": 0, "replicas": ["n1", "n2"]},
                                   {"id": 1, "replicas": ["n0", "n1"]}]}
    path.write_text(yaml.safe_dump(moved))
    assert not await r.reload()
    assert "partition 0 replicas changed" in r.status.last_error
    assert d.applied == 0 and r.status.failed == 2

    grown = {**DOC, "partitions": {"count": 4},
             "cluster": {"name_partitions": 2}}
    path.write_text(yaml.safe_dump(grown))
    assert await r.reload()
    assert d.applied == 1 and len(d.cfg.cluster_map.partitions) == 4
    text = generate_latest(registry)
    assert b"ambry_config_reload_failed 0.0" in text
    assert b'ambry_config_reloads_total{result="ok"} 1.0' in text


async def test_the_watch_reloads_a_changed_file_once(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    d = _Daemon(load_config(path))
    r = ConfigReloader(lambda: load_config(path), d.apply, path=path, watch_interval_s=0.02)
    r.start()
    try:
        await asyncio.sleep(0.1)
        assert d.applied == 0  # unchanged file: nothing to do
        tmp = tmp_path / "c.yaml.tmp"  # written the way build-clustermap does: a rename
        tmp.write_text(yaml.safe_dump({**DOC, "partitions": {"count": 3},
                                       "cluster": {"name_partitions": 2}}))
        os.replace(tmp, path)
        for _ in range(100):
            if d.applied:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert d.applied == 1 and len(d.cfg.cluster_map.partitions) == 3
    finally:
        await r.stop()


async def test_signals_during_a_reload_coalesce_into_one_more(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    d = _Daemon(load_config(path))
    gate = asyncio.Event()

    async def slow_apply(cfg: ClusterConfig) -> MapChange:
        await gate.wait()
        return await d.apply(cfg)

    r = ConfigReloader(lambda: load_config(path), slow_apply, path=path)
    r.trigger()
    await asyncio.sleep(0.05)  # the first reload is running (waits in apply)
    for _ in range(5):
        r.trigger()
    gate.set()
    for _ in range(100):
        await asyncio.sleep(0.02)
        if d.applied >= 2 and not r._tasks:
            break
    assert d.applied == 2
