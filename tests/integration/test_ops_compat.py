"""Operators' edges on real processes (issue 14, "docker/ops"): S3 keys re-read on SIGHUP,
the process_* metrics family, the optional access log, a node whose hostname does not
resolve, the container healthcheck probe, $AMBRY_CONFIG, and the README's quick start pasted
as it is."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import uvloop
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from fe_helpers import FAST_STORAGE, store_fixture

from ambry.common.config import FrontendConfig, config_from_dict
from ambry.common.errors import Unavailable
from ambry.common.mapchange import plan_map_change
from ambry.frontend.accesslog import access_log_options
from ambry.frontend.failure import FailureDetector
from ambry.protocol.client import NodeClient
from ambry.testing.cluster import REPO_ROOT, free_ports
from ambry.testing.frontend import TEST_S3, StoreCluster

pytestmark = pytest.mark.timeout(300)

#: A hostname that never resolves (RFC 2606 reserves .invalid).
UNRESOLVABLE = "dc1-n3.ambry-test.invalid"


def _wait(cond: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s} s")
        time.sleep(0.1)


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("ops-compat"), datacenters=1,
                             nodes_per_dc=3, partitions=4, frontend={"access_log": True})


# ====================================================================== S3 keys on SIGHUP
def _s3(store: StoreCluster, access_key: str, secret_key: str) -> Any:
    return boto3.client("s3", endpoint_url=store.s3_url("dc1"), aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))


def _s3_code(client: Any) -> str:
    """"OK", or the S3 error code of ListBuckets with this client's key."""
    try:
        client.list_buckets()
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    return "OK"


def test_sighup_reloads_s3_keys_and_a_broken_config_keeps_the_running_ones(
        store: StoreCluster) -> None:
    # broke: the frontend read s3.access_keys only at start; SIGHUP re-read the cluster map
    # and said "reloaded" while a new key stayed 403 and a removed key kept working
    fe = store.frontends["dc1"]
    assert fe.proc is not None
    metrics = fe.url("/metrics")
    cfg_path = store.config_path
    original = cfg_path.read_text()
    doc = yaml.safe_load(original)
    new_key = {"access_key": "AKIDRELOADED00000001", "secret_key": "reloaded-secret-0001",
               "account": "default"}
    team = next(k for k in TEST_S3["access_keys"] if k["account"] == "team")
    added = _s3(store, new_key["access_key"], new_key["secret_key"])
    team_client = _s3(store, team["access_key"], team["secret_key"])
    assert _s3_code(added) == "InvalidAccessKeyId"
    assert _s3_code(team_client) == "OK"

    def reload(document: dict[str, Any], result: str, count: float) -> None:
        cfg_path.write_text(yaml.safe_dump(document, sort_keys=False))
        fe.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        _wait(lambda: _sample(_metrics(metrics),
                              f'ambry_config_reloads_total{{result="{result}"}}') == count,
              f"reload {result} #{count}")

    try:
        # a key added to the file works after SIGHUP, without a restart
        doc["s3"]["access_keys"].append(new_key)
        reload(doc, "ok", 1)
        assert _s3_code(added) == "OK"
        added.put_object(Bucket="default", Key="reloaded/key.txt", Body=b"new key works")
        got = added.get_object(Bucket="default", Key="reloaded/key.txt")["Body"].read()
        assert got == b"new key works"
        log = fe.log_tail(400)
        assert "S3 access keys reloaded: added ['AKIDRELOADED00000001']" in log
        assert "reloaded-secret-0001" not in log  # the keys are named, secrets never

        # a key removed from the file is refused after SIGHUP
        doc["s3"]["access_keys"] = [k for k in doc["s3"]["access_keys"] if k is not team
                                    and k["access_key"] != team["access_key"]]
        reload(doc, "ok", 2)
        assert _s3_code(team_client) == "InvalidAccessKeyId"
        assert _s3_code(added) == "OK"

        # a broken s3: section is refused as a whole and says why; the running keys stay
        broken = yaml.safe_load(yaml.safe_dump(doc))
        broken["s3"]["access_keys"].append({"access_key": "AKIDBROKEN0000000001",
                                            "secret_key": "x" * 20, "account": "nobody"})
        broken["s3"]["access_keys"] = [k for k in broken["s3"]["access_keys"]
                                       if k["access_key"] != new_key["access_key"]]
        reload(broken, "failed", 1)
        assert _sample(_metrics(metrics), "ambry_config_reload_failed") == 1.0
        assert "names unknown account 'nobody'" in fe.log_tail(400)
        assert _s3_code(added) == "OK"
        assert _s3_code(team_client) == "InvalidAccessKeyId"
    finally:
        cfg_path.write_text(original)
        fe.proc.send_signal(signal.SIGHUP)
        _wait(lambda: _sample(_metrics(metrics), "ambry_config_reload_failed") == 0.0,
              "the original config back in force")
    assert _s3_code(team_client) == "OK"
    assert _s3_code(added) == "InvalidAccessKeyId"


def test_s3_section_change_is_reloaded_by_a_frontend_and_ignored_by_a_node(
        store: StoreCluster) -> None:
    # broke: a changed s3: section was "restart needed" everywhere (storage nodes, which
    # never read it, warned about it too)
    old = config_from_dict(store.config)
    doc = yaml.safe_load(yaml.safe_dump(store.config))
    doc["s3"]["access_keys"] = doc["s3"]["access_keys"][:1]
    new = config_from_dict(doc)
    fe_change = plan_map_change(old, new, live_sections={"s3"})
    assert fe_change.reloaded == ("s3",) and not fe_change.restart_needed
    assert not fe_change.empty and "sections ['s3'] re-read" in fe_change.describe()
    node_change = plan_map_change(old, new, "dc1-n1")
    assert node_change.empty and not node_change.restart_needed


def test_failure_detector_says_when_a_node_goes_down_and_comes_back_once() -> None:
    now = [0.0]
    fd = FailureDetector(lambda: now[0], threshold_errors=3, backoff_s=10)
    assert [fd.record_failure("n") for _ in range(5)] == [False, False, True, False, False]
    now[0] = 11.0
    assert fd.is_available("n")  # the probe
    assert fd.record_failure("n") is False  # still the same outage
    assert fd.record_success("n") is True  # back
    assert fd.record_success("n") is False
    assert fd.record_failure("n") is False  # one error is not an outage


# ====================================================================== metrics, access log
def test_metrics_have_the_process_family_on_frontend_and_node(store: StoreCluster) -> None:
    # broke: /metrics had no process_* family (memory, CPU, open files) on any daemon
    node = store.nodes["dc1-n1"]
    for url, pid in ((store.url("dc1", "/metrics"), store.frontends["dc1"].pid),
                     (node.http_url("/metrics"), node.pid)):
        text = _metrics(url)
        for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                     "process_open_fds", "process_max_fds", "process_start_time_seconds"):
            value = _sample(text, name)
            assert value is not None and value > 0, (url, name)
        rss = _sample(text, "process_resident_memory_bytes")
        with open(f"/proc/{pid}/status") as f:
            vmrss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
        assert rss is not None and 0.5 * vmrss < rss < 2 * vmrss, (url, rss, vmrss)


def test_access_log_has_one_line_per_request_with_status_duration_and_request_id(
        store: StoreCluster) -> None:
    # broke: there was no access log option at all (the runners had access_log=None)
    fe = store.frontends["dc1"]
    req = urllib.request.Request(fe.url("/healthCheck"),
                                 headers={"x-ambry-request-id": "acclog-rest-1",
                                          "User-Agent": "ops-compat-test"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:  # unsigned S3 request: 403
        urllib.request.urlopen(store.s3_url("dc1") + "/", timeout=5)
    assert e.value.code == 403
    rest = re.compile(r'ambry\.access: rest 127\.0\.0\.1 "GET /healthCheck HTTP/1\.1" 200 '
                      r'\d+ \d+\.\d{6}s rid=acclog-rest-1 "ops-compat-test"')
    s3 = re.compile(r'ambry\.access: s3 127\.0\.0\.1 "GET / HTTP/1\.1" 403 \d+ '
                    r'\d+\.\d{6}s rid=[0-9A-F]{16} ')
    _wait(lambda: bool(rest.search(fe.log_tail(400)) and s3.search(fe.log_tail(400))),
          "both access log lines")


def test_access_log_is_off_unless_configured() -> None:
    assert access_log_options(FrontendConfig(), "rest") == {"access_log": None}
    on = access_log_options(FrontendConfig(access_log=True), "s3")
    assert on["access_log"].name == "ambry.access"
    assert "%{x-amz-request-id}o" in on["access_log_format"]


# ====================================================================== a node that does not resolve
def test_node_client_timed_out_during_name_lookup_leaves_no_unretrieved_future() -> None:
    # broke: under uvloop, a connect timeout that fired while the node's name was being
    # resolved left the lookup's gaierror in a future nobody read: asyncio logged
    # "Future exception was never retrieved ... gaierror" as an ERROR naming no node
    unretrieved: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: unretrieved.append(
            f"{ctx.get('message')}: {ctx.get('exception')!r}"))
        async with NodeClient(UNRESOLVABLE, 6670, connect_timeout_ms=0) as c:
            for _ in range(5):
                with pytest.raises(Unavailable):
                    await c.ping()
        # the abandoned lookups finish in the resolver's threads; one more lookup of the
        # same name (the pool runs them in order of submission) marks when they are done
        for _ in range(2):
            with pytest.raises(OSError):
                await loop.getaddrinfo(UNRESOLVABLE, 6670)
        deadline = time.monotonic() + 2.0
        while not unretrieved and time.monotonic() < deadline:
            gc.collect()
            await asyncio.sleep(0.05)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert unretrieved == []


def test_unresolvable_node_is_named_in_one_warning_and_writes_go_on(tmp_path: Path) -> None:
    # broke: a frontend whose node did not resolve logged an anonymous "Future exception was
    # never retrieved ... gaierror" ERROR per attempt, never which node it was
    store = StoreCluster(tmp_path, datacenters=1, nodes_per_dc=3, partitions=2,
                         storage=FAST_STORAGE)
    for n in store.config["nodes"]:
        if n["id"] == "dc1-n3":
            n["host"] = UNRESOLVABLE
            port = n["port"]
    store.config_path.write_text(yaml.safe_dump(store.config, sort_keys=False))
    up = [store.nodes["dc1-n1"], store.nodes["dc1-n2"]]
    fe = store.frontends["dc1"]
    try:
        for n in up:
            n.start()
        fe.start()
        for n in up:
            n.wait_ready()
        fe.wait_ready(timeout_s=60)
        ids = []
        for i in range(12):
            req = urllib.request.Request(fe.url("/"), data=b"blob %d" % i, method="POST",
                                         headers={"x-ambry-service-id": "t",
                                                  "x-ambry-content-type": "text/plain"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 201
                ids.append(r.headers["Location"])
        for i, loc in enumerate(ids):
            with urllib.request.urlopen(fe.url(loc), timeout=30) as r:
                assert r.read() == b"blob %d" % i
        down = f"node dc1-n3 ({UNRESOLVABLE}:{port}) is down"
        _wait(lambda: down in fe.log_tail(400), "the warning naming dc1-n3")
        log = fe.log_tail(2000)
        warnings = [line for line in log.splitlines() if down in line]
        assert len(warnings) == 1, warnings  # once per outage, not once per request
        assert " WARNING " in warnings[0] and f"connect to {UNRESOLVABLE}" in warnings[0]
        assert "never retrieved" not in log
        assert not [line for line in log.splitlines() if " ERROR " in line]
        assert "ambry.access" not in log  # the access log is off by default
    finally:
        print(store.logs(60))
        store.stop()


# ====================================================================== the docker healthcheck
HEALTHCHECK = REPO_ROOT / "deploy" / "healthcheck.sh"


def _probe(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(HEALTHCHECK)], capture_output=True, text=True,
                          timeout=30, env={"PATH": os.environ["PATH"], **env}, check=False)


def test_container_healthcheck_probe_is_cheap_and_says_good_only_for_a_serving_daemon(
        store: StoreCluster) -> None:
    # broke: the image's HEALTHCHECK started Python and re-read the whole cluster YAML every
    # 5 s in each of 8 containers (~0.2 core with the cluster idle)
    fe, node = store.frontends["dc1"], store.nodes["dc1-n1"]
    ok = _probe(AMBRY_HEALTH_HOST="127.0.0.1", AMBRY_HEALTH_PORT=str(fe.port))
    assert ok.returncode == 0 and ok.stdout.strip().endswith("200 OK GOOD"), ok
    ok = _probe(AMBRY_HEALTH_URL=f"http://127.0.0.1:{node.http_port}/healthCheck")
    assert ok.returncode == 0, ok
    closed = free_ports(1)[0]
    bad = _probe(AMBRY_HEALTH_HOST="127.0.0.1", AMBRY_HEALTH_PORT=str(closed))
    assert bad.returncode == 1 and "cannot connect" in bad.stdout, bad
    # a reply that is not 200 (a missing path: 404) is unhealthy too
    bad = _probe(AMBRY_HEALTH_URL=f"http://127.0.0.1:{fe.port}/no-such-path")
    assert bad.returncode == 1, bad
    # CPU per probe (user + system of the child): bash alone, a few ms; the Python probe it
    # replaces took ~150 ms (interpreter start + yaml + the cluster config)
    runs = 20
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        assert _probe(AMBRY_HEALTH_HOST="127.0.0.1",
                      AMBRY_HEALTH_PORT=str(fe.port)).returncode == 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    per_probe_ms = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                    ) / runs * 1000
    print(f"healthcheck probe: {per_probe_ms:.1f} ms CPU each")
    assert per_probe_ms < 40, per_probe_ms


# ====================================================================== $AMBRY_CONFIG
def _ambry(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "AMBRY_CONFIG"}
    full.update(PYTHONPATH=str(REPO_ROOT), **env)
    return subprocess.run([sys.executable, "-m", "ambry.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=full, check=False)


def test_admin_commands_take_the_config_from_AMBRY_CONFIG(store: StoreCluster,
                                                          tmp_path: Path) -> None:
    # broke: `ambry admin ...` in a container fell back to config/local.yaml, which is not
    # there; the image now sets AMBRY_CONFIG to its config
    r = _ambry("admin", "usage", "--json", cwd=tmp_path, AMBRY_CONFIG=str(store.config_path))
    assert r.returncode == 0, r.stderr
    r = _ambry("admin", "replication-status", "--json", cwd=tmp_path,
               AMBRY_CONFIG=str(store.config_path))
    assert r.returncode == 0, r.stderr
    # without a config: one clear line, no traceback
    r = _ambry("cluster", "status", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot read the config config/local.yaml" in r.stderr


# ====================================================================== the README's quick start
def _quick_start_block() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("In another terminal:\n\n```\n") + len("In another terminal:\n\n```\n")
    return text[start:text.index("\n```", start)]


def test_readme_quick_start_pasted_line_by_line_works(store: StoreCluster,
                                                      tmp_path: Path) -> None:
    # broke: `curl -T big.bin http://127.0.0.1:1174/` uploads to /big.bin (curl appends the
    # file name to a URL ending in "/"): 405, and the quick start's large upload failed
    if shutil.which("curl") is None:
        pytest.skip("no curl on PATH")
    script = _quick_start_block()
    assert not [line for line in script.splitlines()
                if "-T big.bin" in line.split("#", 1)[0]]
    base = store.url("dc1").rstrip("/")
    # the store's port; a smaller "large" file (still 5 chunks of the test store's 1 MiB)
    script = script.replace("http://127.0.0.1:1174", base).replace("64M", "5M")
    shutil.copy(REPO_ROOT / "README.md", tmp_path / "README.md")
    r = subprocess.run(["bash", "-eu", "-c", script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = r.stdout
    assert "201 Created" in out and "Location: /" in out
    # the status codes the comments promise, in order
    promised = re.findall(r"-w '%\{http_code\}\\n'.*# (\d{3})", script)
    assert promised == ["202", "410", "201"], promised
    got = [line for line in out.splitlines() if re.fullmatch(r"\d{3}", line)]
    assert got == promised, out
    assert "hello, blob" in out
    assert '"name": "runs/42/model.pt"' in out
    assert out.rstrip().endswith("same bytes")
