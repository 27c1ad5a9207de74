"""The docker-compose cluster for real (`make docker-test`; excluded from `make test`).

Builds the image with deploy/build-image.sh, starts docker-compose.yml (2 datacenters x 3
storage nodes + a frontend per datacenter) under a project name of its own with its frontends
on free loopback ports, and walks the operator's story: PUT in dc1, GET in dc2, `docker kill`
a storage node, reads and writes go on, restart it, it catches up (replication-status and
digests, run inside the compose network), `docker-compose down -v`.

Needs a reachable docker daemon and docker-compose (or `docker compose`). Without them the
tests are skipped, unless AMBRY_DOCKER_REQUIRED=1 (as `make docker-test` sets) makes that a
failure. AMBRY_DOCKER_SKIP_BUILD=1 reuses an existing ambry-py:latest image.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "/etc/ambry/docker.yaml"
NODES = [f"dc{d}-n{i}" for d in (1, 2) for i in (1, 2, 3)]
SERVICES = [*NODES, "frontend-dc1", "frontend-dc2"]
HEALTHY_TIMEOUT_S = 120
CATCH_UP_TIMEOUT_S = 180


def _unavailable(reason: str) -> None:
    if os.environ.get("AMBRY_DOCKER_REQUIRED") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _compose_command() -> list[str]:
    if shutil.which("docker") is None:
        _unavailable("no docker client on PATH (apt-get install docker.io)")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        _unavailable("the docker daemon is not reachable (start it: dockerd &)")
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True,
                      check=False).returncode == 0:
        return ["docker", "compose"]
    _unavailable("neither docker-compose nor `docker compose` is installed")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], *, timeout_s: float = 600, check: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                       env=env, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


@dataclass
class Compose:
    command: list[str]
    project: str
    env: dict[str, str]
    dc1_port: int
    dc2_port: int
    dc1_s3_port: int = 0
    dc2_s3_port: int = 0

    def __call__(self, *args: str, timeout_s: float = 600, check: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        return _run([*self.command, "-p", self.project, *args], timeout_s=timeout_s,
                    check=check, env=self.env)

    def container(self, service: str) -> str:
        return self("ps", "-q", service).stdout.strip()

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "missing"
        r = _run(["docker", "inspect", "--format",
                  "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}", cid],
                 check=False)
        return r.stdout.strip() or "missing"

    def wait_healthy(self, services: list[str], timeout_s: float = HEALTHY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            states = {s: self.health(s) for s in services}
            if all(v == "running/healthy" for v in states.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy in {timeout_s} s: {states}")
            time.sleep(1)

    def admin(self, *args: str, via: str = "dc2-n2") -> subprocess.CompletedProcess[str]:
        """`ambry admin ...` inside the compose network (node hostnames resolve there)."""
        return self("exec", "-T", via, "ambry", "admin", *args, "--config", CONFIG,
                    timeout_s=120, check=False)

    def url(self, dc: str, path: str) -> str:
        return f"http://127.0.0.1:{self.dc1_port if dc == 'dc1' else self.dc2_port}{path}"


@pytest.fixture(scope="module")
def compose() -> Iterator[Compose]:
    command = _compose_command()
    if os.environ.get("AMBRY_DOCKER_SKIP_BUILD") != "1":
        r = _run(["bash", "deploy/build-image.sh"], timeout_s=1500, check=False)
        print(r.stderr[-3000:])
        assert r.returncode == 0, f"deploy/build-image.sh failed:\n{r.stdout}\n{r.stderr}"
    env = dict(os.environ)
    c = Compose(command, f"ambrytest{uuid.uuid4().hex[:8]}", env, _free_port(), _free_port(),
                _free_port(), _free_port())
    env.update(AMBRY_DC1_PORT=str(c.dc1_port), AMBRY_DC2_PORT=str(c.dc2_port),
               AMBRY_DC1_S3_PORT=str(c.dc1_s3_port), AMBRY_DC2_S3_PORT=str(c.dc2_s3_port))
    # the frontends refuse to start without a signed-URL secret (docs/security.md)
    env.setdefault("AMBRY_SIGNED_URL_SECRET", secrets.token_urlsafe(32))
    print(f"compose project {c.project}: dc1 on {c.dc1_port}, dc2 on {c.dc2_port}")
    try:
        c("up", "-d", timeout_s=300)
        c.wait_healthy(SERVICES)
        yield c
    finally:
        logs = c("logs", "--no-color", "--tail", "40", check=False, timeout_s=60)
        print(logs.stdout[-20000:])
        down = c("down", "-v", "--remove-orphans", check=False, timeout_s=300)
        print(down.stdout, down.stderr)
        left = _run(["docker", "volume", "ls", "-q", "--filter", f"name={c.project}_"],
                    check=False).stdout.split()
        assert down.returncode == 0 and not left, f"down -v left volumes {left}"


def _request(method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _put(c: Compose, dc: str, payload: bytes) -> str:
    status, headers, body = _request("POST", c.url(dc, "/"), payload, {
        "x-ambry-service-id": "docker-test", "x-ambry-content-type": "application/octet-stream"})
    assert status == 201, (status, body)
    return headers["Location"]


def _get(c: Compose, dc: str, location: str) -> tuple[int, bytes]:
    status, _, body = _request("GET", c.url(dc, location))
    return status, body


def _node_metrics(c: Compose, node: str) -> str:
    r = c("exec", "-T", node, "python3", "-c",
          "import urllib.request; print(urllib.request.urlopen("
          f"'http://{node}:6680/metrics', timeout=5).read().decode())", timeout_s=60)
    return r.stdout


def _status(c: Compose) -> dict[str, Any]:
    r = c.admin("replication-status", "--json")
    return dict(json.loads(r.stdout)) if r.stdout.strip().startswith("{") else \
        {"rows": [], "unreachable": [r.stderr]}


def test_image_runs_as_non_root_and_every_daemon_reports_healthy(compose: Compose) -> None:
    for service in ("dc1-n1", "frontend-dc2"):
        r = compose("exec", "-T", service, "sh", "-c", "id -u; ambry-healthcheck",
                    timeout_s=60)
        uid, health = r.stdout.strip().splitlines()
        assert uid != "0"
        assert " 200 " in health and health.endswith("GOOD"), health
    status, _, body = _request("GET", compose.url("dc1", "/healthCheck"))
    assert (status, body) == (200, b"GOOD")


def test_put_in_dc1_get_in_dc2_survives_a_killed_node_which_then_catches_up(
        compose: Compose) -> None:
    c = compose
    # --- PUT in dc1, GET in dc2 (from its local replicas or the origin datacenter)
    before = {_put(c, "dc1", f"before kill {i}".encode() * 100): f"before kill {i}".encode()
              * 100 for i in range(8)}
    for loc, payload in before.items():
        assert _get(c, "dc2", loc) == (200, payload)

    # --- kill -9 one storage node of dc1: reads and writes go on with 2 of 3 replicas
    victim = "dc1-n1"
    _run(["docker", "kill", c.container(victim)])
    assert c.health(victim).startswith("exited")
    for loc, payload in before.items():
        assert _get(c, "dc1", loc) == (200, payload)
    during = {_put(c, "dc1", f"while {victim} was down {i}".encode() * 100):
              f"while {victim} was down {i}".encode() * 100 for i in range(12)}
    for loc, payload in during.items():
        assert _get(c, "dc1", loc) == (200, payload)
        assert _get(c, "dc2", loc) == (200, payload)
    assert any(u.startswith(victim) for u in _status(c)["unreachable"])

    # --- restart it (same volume): it pulls what it missed from its peers
    c("start", victim)
    c.wait_healthy([victim])
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while True:
        st = _status(c)
        mine = [r for r in st["rows"] if r["node"] == victim]
        caught_up = (not st["unreachable"] and mine
                     and all(r["lag_bytes"] == 0 and not r["rebuilding"] for r in mine))
        digests = c.admin("digests", "--json") if caught_up else None
        if digests is not None and digests.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{victim} did not catch up in {CATCH_UP_TIMEOUT_S} s: "
                                 f"unreachable={st['unreachable']} rows={mine} "
                                 f"digests={digests.stdout[-2000:] if digests else None}")
        time.sleep(2)
    # every replica of every partition is identical again, and the restarted node fetched
    # the blobs written while it was down (each of dc1's 3 nodes holds every partition)
    assert json.loads(digests.stdout)["converged"] is True
    fetched = sum(r["blobs_fetched"] for r in mine)
    assert fetched >= len(during), mine
    metrics = _node_metrics(c, victim)
    assert "ambry_replication_lag_bytes{" in metrics
    blobs = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                if line.startswith("ambry_replica_blobs{"))
    assert blobs >= len(before) + len(during)


def test_s3_admin_without_config_no_anonymous_volumes_and_a_cheap_idle_cluster(
        compose: Compose) -> None:
    """Operators' edges (issue 14): S3 is published, `ambry admin` finds its config through
    $AMBRY_CONFIG, frontends get no (anonymous) volume, and the idle cluster with its
    healthchecks costs little CPU (measured from the containers' own CPU counters)."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{compose.dc1_s3_port}",
                      aws_access_key_id="AMBRYLOCALDEVKEY0001",
                      aws_secret_access_key="ambry-local-development-secret-0001",
                      region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="dockertest")
    s3.put_object(Bucket="dockertest", Key="a/b.txt", Body=b"via s3 in compose")
    s3_dc2 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{compose.dc2_s3_port}",
                          aws_access_key_id="AMBRYLOCALDEVKEY0001",
                          aws_secret_access_key="ambry-local-development-secret-0001",
                          region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}))
    deadline = time.monotonic() + 60
    while True:  # dc2 reads it from its replicas or the origin datacenter
        try:
            got = s3_dc2.get_object(Bucket="dockertest", Key="a/b.txt")["Body"].read()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert got == b"via s3 in compose"

    r = compose("exec", "-T", "dc2-n1", "ambry", "admin", "digests", "--json", check=False,
                timeout_s=120)
    assert "does not exist" not in r.stderr, r.stderr  # found /etc/ambry/docker.yaml

    for service in ("frontend-dc1", "frontend-dc2"):
        mounts = json.loads(_run(["docker", "inspect", "--format", "{{json .Mounts}}",
                                  compose.container(service)]).stdout)
        assert [m["Type"] for m in mounts] == ["bind"], mounts

    # idle CPU of the whole cluster over 30 s, healthchecks included (every 5 s each)
    def cpu_ns() -> int:
        total = 0
        for service in SERVICES:
            cid = _run(["docker", "inspect", "--format", "{{.Id}}",
                        compose.container(service)]).stdout.strip()
            for path in (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat",
                         f"/sys/fs/cgroup/docker/{cid}/cpu.stat"):
                if os.path.exists(path):
                    with open(path) as f:
                        total += next(int(line.split()[1]) * 1000 for line in f
                                      if line.startswith("usage_usec"))
                    break
            else:
                pytest.skip("no cgroup v2 CPU counters of the containers on this host")
        return total

    t0, c0 = time.monotonic(), cpu_ns()
    time.sleep(30)  # a measurement window, not a wait for a condition
    cores = (cpu_ns() - c0) / 1e9 / (time.monotonic() - t0)
    print(f"idle cluster ({len(SERVICES)} containers): {cores:.3f} of a core")
    assert cores < 0.15, cores  # the Python healthcheck alone took ~0.2
