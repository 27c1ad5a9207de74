"""frontend.workers (issue 16): the setting, the merged /metrics of several workers, and the
supervisor's start-up failure path (real processes, no cluster)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from ambry.common.config import MAX_FRONTEND_WORKERS, FrontendConfig
from ambry.common.errors import InvalidArgument
from ambry.frontend.supervisor import WorkerSpec, resolve_workers
from ambry.frontend.worker import WorkerMetrics, merge_families
from ambry.testing.cluster import REPO_ROOT
from ambry.testing.frontend import StoreCluster


def test_workers_setting_takes_a_count_or_auto_and_refuses_the_rest() -> None:
    assert FrontendConfig().workers == 1
    assert FrontendConfig(workers="auto").workers == 0  # type: ignore[arg-type]
    assert resolve_workers(0) == min(len(os.sched_getaffinity(0)), MAX_FRONTEND_WORKERS)
    assert resolve_workers(3) == 3
    for bad in (-1, MAX_FRONTEND_WORKERS + 1, "two", True, 1.5):
        with pytest.raises(InvalidArgument, match="frontend.workers"):
            FrontendConfig(workers=bad)  # type: ignore[arg-type]


def _worker_text(index: int, count: int, requests: int, tmp_path: Path) -> str:
    reg = CollectorRegistry()
    Counter("ambry_frontend_requests", "Requests", ["op"], registry=reg).labels(
        "GET /x").inc(requests)
    spec = WorkerSpec(index, count, 1, tmp_path, -1)
    return WorkerMetrics(reg, spec, lambda: True).own_text()


def test_a_scrape_of_the_shared_port_holds_every_worker_once_per_family(
        tmp_path: Path) -> None:
    # what could break: two workers' texts pasted together repeat # HELP/# TYPE and split a
    # family, which Prometheus refuses; or samples lose the label that tells them apart
    merged = merge_families([_worker_text(0, 2, 3, tmp_path), _worker_text(1, 2, 5, tmp_path)])
    text = merged.decode()
    assert text.count("# TYPE ambry_frontend_requests_total counter") == 1
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    got = {s.labels["worker"]: s.value for s in fams["ambry_frontend_requests"].samples
           if s.name == "ambry_frontend_requests_total"}
    assert got == {"0": 3.0, "1": 5.0}
    assert {s.labels["worker"] for s in fams["ambry_frontend_worker_pid"].samples} == {"0", "1"}
    assert {s.value for s in fams["ambry_frontend_worker_ready"].samples} == {1.0}


def test_a_worker_that_cannot_bind_its_port_stops_the_supervisor_with_exit_1(
        tmp_path: Path) -> None:
    # a start-up failure (here: the port held by another program, without SO_REUSEPORT)
    # must end `ambry frontend` as it ends a single frontend, not restart workers forever
    store = StoreCluster(tmp_path, datacenters=1, nodes_per_dc=3, partitions=2)  # not started
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ambry.cli", "frontend", "--config", str(store.config_path),
             "--datacenter", "dc1", "--host", "127.0.0.1", "--port", str(port),
             "--s3-port", "0", "--workers", "2"],
            check=False, capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO_ROOT))
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr[-3000:]
    assert "before it served" in done.stderr, done.stderr[-3000:]
    assert time.monotonic() - t0 < 100
