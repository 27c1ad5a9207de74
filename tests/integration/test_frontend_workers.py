"""Several frontend worker processes on one port (issue 16, ``frontend.workers``), with real
processes: both workers serve the REST and the S3 port, /metrics answers for all of them
whichever one a scrape lands on, a worker killed -9 is replaced while the port keeps
answering, SIGHUP reaches every worker, SIGTERM drains every worker, and workers: 1 is the
single process it always was."""

from __future__ import annotations

import http.client
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import psutil
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from fe_helpers import port_refused, store_fixture

from ambry.testing.frontend import TEST_S3, FrontendProcess, StoreCluster

pytestmark = pytest.mark.timeout(300)

SERVICE = {"x-ambry-service-id": "workers-test", "x-ambry-content-type": "text/plain"}


def _wait(cond: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s} s")
        time.sleep(0.1)


def _get(url: str) -> tuple[int, bytes]:
    """One request on a connection of its own (so the kernel picks a worker for each)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def _samples(text: str, name: str) -> dict[str, float]:
    """worker label -> value of the samples of ``name`` whose labels match (a regex on the
    rest of the label set, e.g. 'op="GET /healthCheck",status="200"')."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            w = re.search(r'worker="(\d+)"', labels)
            if w is not None:
                out[w.group(1)] = out.get(w.group(1), 0.0) + float(value)
    return out


def _metrics(fe: FrontendProcess) -> str:
    return _get(fe.url("/metrics"))[1].decode()


def _s3(store: StoreCluster, access_key: str, secret_key: str) -> Any:
    return boto3.client("s3", endpoint_url=store.s3_url("dc1"), aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("fe-workers"), datacenters=1,
                             nodes_per_dc=3, partitions=4,
                             frontend={"workers": 2, "access_log": True})


def test_two_workers_share_the_rest_and_s3_ports_and_metrics_show_each(
        store: StoreCluster) -> None:
    # new: one frontend process per port was all a host could run
    fe = store.frontends["dc1"]
    status = fe.wait_workers()
    children = {c.pid for c in psutil.Process(fe.pid).children()}
    assert {pid for pid, _ready in status.values()} == children and len(children) == 2
    for _ in range(40):  # a connection each: the kernel spreads them over the workers
        assert _get(fe.url("/healthCheck"))[0] == 200
    ak = TEST_S3["access_keys"][0]
    for _ in range(30):
        _s3(store, ak["access_key"], ak["secret_key"]).list_buckets()
    text = _metrics(fe)
    rest = _samples(text, "ambry_frontend_requests_total")
    s3 = _samples(text, "ambry_s3_requests_total")
    assert set(rest) == {"0", "1"} and min(rest.values()) >= 1, rest
    assert set(s3) == {"0", "1"} and min(s3.values()) >= 1, s3
    # a scrape of the shared port holds both workers' series, process CPU included
    assert set(_samples(text, "process_cpu_seconds_total")) == {"0", "1"}
    assert _samples(text, "ambry_frontend_worker_pid") == \
        {str(i): float(pid) for i, (pid, _r) in status.items()}
    # the data path works through both
    for i in range(6):
        conn = http.client.HTTPConnection(fe.host, fe.port, timeout=10)
        conn.request("POST", "/", body=f"blob {i}".encode(), headers=SERVICE)
        r = conn.getresponse()
        r.read()
        assert r.status == 201
        loc = r.getheader("Location")
        assert _get(fe.url(loc or "/")) == (200, f"blob {i}".encode())
    # the access log says which worker
    log = fe.log_tail(2000)
    assert re.search(r'rest .*"GET /healthCheck HTTP/1.1" 200 .* worker=0', log)
    assert re.search(r'rest .*"GET /healthCheck HTTP/1.1" 200 .* worker=1', log)
    assert re.search(r"s3 .* 200 .* worker=1", log) and re.search(r"s3 .* 200 .* worker=0", log)


def test_sighup_key_reload_reaches_every_worker(store: StoreCluster) -> None:
    # broke without forwarding: SIGHUP to `ambry frontend` reached only the supervisor, and
    # a new S3 key worked on no worker (or on the one that was signalled, by luck of the port)
    fe = store.frontends["dc1"]
    assert fe.proc is not None
    cfg_path = store.config_path
    original = cfg_path.read_text()
    doc = yaml.safe_load(original)
    new_key = {"access_key": "AKIDWORKERS000000001", "secret_key": "workers-secret-0001",
               "account": "default"}
    doc["s3"]["access_keys"].append(new_key)
    before = _samples(_metrics(fe), 'ambry_config_reloads_total')
    try:
        cfg_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        fe.proc.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            ok = _samples(_metrics(fe), 'ambry_config_reloads_total')
            return len(ok) == 2 and all(ok[w] > before.get(w, 0.0) for w in ok)

        _wait(reloaded, "a reload on both workers")
        for _ in range(20):  # a fresh connection (and so any worker) each time
            _s3(store, new_key["access_key"], new_key["secret_key"]).list_buckets()
    finally:
        cfg_path.write_text(original)
        fe.proc.send_signal(signal.SIGHUP)
    # the other way round: once reverted, no worker takes the removed key (each of 20
    # connections is refused, whichever worker it lands on)
    _wait(lambda: len(_samples(_metrics(fe), "ambry_config_reloads_total")) == 2 and all(
        v >= before.get(w, 0.0) + 2 for w, v in
        _samples(_metrics(fe), "ambry_config_reloads_total").items()), "revert on both")
    for _ in range(20):
        with pytest.raises(ClientError):
            _s3(store, new_key["access_key"], new_key["secret_key"]).list_buckets()


def test_worker_killed_9_is_restarted_while_the_port_keeps_answering(
        store: StoreCluster) -> None:
    # new: the supervisor replaces a dead worker; the other serves meanwhile
    fe = store.frontends["dc1"]
    status = fe.wait_workers()
    victim_pid = status[0][0]
    os.kill(victim_pid, signal.SIGKILL)
    victim = psutil.Process(victim_pid)
    # reaped by the supervisor: only then is every thread of it gone, and its sockets (a
    # zombie leader's threads may still hold them: a connection queued there is reset)
    _wait(lambda: not victim.is_running(), "the worker reaped", 10)
    # every new connection is answered, by the surviving worker
    for _ in range(30):
        assert _get(fe.url("/healthCheck"))[0] == 200
    after = fe.wait_workers(60)
    assert after[0][0] != victim_pid and after[1][0] == status[1][0]
    assert {c.pid for c in psutil.Process(fe.pid).children()} == {after[0][0], after[1][0]}
    starts = _samples(_metrics(fe), "ambry_frontend_worker_starts")
    assert starts == {"0": 2.0, "1": 1.0}, starts
    log = fe.log_tail(4000)
    assert f"worker 0 (pid {victim_pid}) died (signal SIGKILL)" in log
    assert f"worker 0 started (pid {after[0][0]}, start #2)" in log
    # the new worker serves too
    def new_one_served() -> bool:
        for _ in range(10):
            _get(fe.url("/healthCheck"))
        got = _samples(_metrics(fe), "ambry_frontend_requests_total")
        return got.get("0", 0.0) >= 1
    _wait(new_one_served, "a request on the restarted worker", 30)


@pytest.fixture
def drained_store(tmp_path: Any) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path / "drain", datacenters=1, nodes_per_dc=3, partitions=4,
                             frontend={"workers": 2})


def _open_upload(fe: FrontendProcess) -> http.client.HTTPConnection:
    """A chunked POST whose body has begun and not ended."""
    conn = http.client.HTTPConnection(fe.host, fe.port, timeout=60)
    conn.putrequest("POST", "/")
    for k, v in {**SERVICE, "Transfer-Encoding": "chunked"}.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(b"5\r\nfirst\r\n")
    return conn


def test_sigterm_drains_every_worker_then_the_supervisor_exits_0(
        drained_store: StoreCluster) -> None:
    # new: SIGTERM to the supervisor reaches every worker, and each lets its uploads finish
    fe = drained_store.frontends["dc1"]
    workers = fe.wait_workers()
    uploads: list[http.client.HTTPConnection] = []

    def each_worker_has_an_upload() -> bool:
        # a scrape counts itself in flight on the worker that answers it: >= 2 on both
        # means at least one upload on each
        if len(uploads) < 64:
            uploads.append(_open_upload(fe))
        inflight = _samples(_metrics(fe), "ambry_frontend_inflight_requests")
        return len(inflight) == 2 and min(inflight.values()) >= 2

    _wait(each_worker_has_an_upload, "an upload in flight on each worker")
    assert fe.proc is not None
    fe.proc.send_signal(signal.SIGTERM)
    _wait(lambda: port_refused(fe.host, fe.port), "the port closed", 20)
    for conn in uploads:  # every upload still finishes after SIGTERM
        conn.send(b"4\r\nlast\r\n0\r\n\r\n")
        r = conn.getresponse()
        r.read()
        assert r.status == 201, r.status
        conn.close()
    assert fe.proc.wait(60) == 0, fe.log_tail()
    for pid, _r in workers.values():
        assert not psutil.pid_exists(pid) or \
            psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    log = fe.log_tail(400)
    assert "all 2 workers stopped" in log and "exit codes [0, 0]" in log, log
    assert log.count("draining:") == 2


def test_one_worker_is_the_single_process_it_always_was(tmp_path: Any) -> None:
    # workers: 1 (the default): no supervisor, no worker label, no worker in the access log
    for store in store_fixture(tmp_path / "one", datacenters=1, nodes_per_dc=3, partitions=4,
                               frontend={"access_log": True}):
        fe = store.frontends["dc1"]
        assert fe.workers == 1
        assert psutil.Process(fe.pid).children() == []
        assert _get(fe.url("/healthCheck"))[0] == 200
        text = _metrics(fe)
        assert 'worker="' not in text and "ambry_frontend_worker_pid" not in text
        assert 'ambry_frontend_requests_total{op="GET /healthCheck",status="200"}' in text
        log = fe.log_tail(400)
        assert '"GET /healthCheck HTTP/1.1" 200' in log and "worker=" not in log
