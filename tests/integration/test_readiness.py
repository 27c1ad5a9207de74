"""Healthy means ready: right after ``ambry cluster up`` says the cluster is up (every
/healthCheck answered 200), every operation works, named PUTs and S3 PUTs included.

What broke: a frontend said GOOD as soon as it listened, while the replicas of a fresh cluster
were still "rebuilding" (they cannot say "not found" until they have caught up with their
peers once), so for the first seconds the first named PUT got 503 "too few replicas of the
name partition answered", and so did S3 PUTs and bucket creation. Also covers the generated
signed-URL secret of a development config (``signed_url_secret_generate``): ``cluster up``
on a fresh data dir must work and sign URLs with a secret of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from fe_helpers import FAST_STORAGE, SERVICE, stop_gracefully
from s3_helpers import raw

from ambry.common.urlsecret import ENV_VAR
from ambry.testing.cluster import REPO_ROOT, free_ports, write_config
from ambry.testing.frontend import TEST_ACCOUNTS, TEST_FRONTEND, TEST_S3

UP_TIMEOUT_S = 120.0


def _request(method: str, url: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode(errors="replace"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), dict(e.headers)


class ClusterUp:
    """``ambry cluster up`` of a fresh 2 DC x 3 node config under ``root``, as a user runs it."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        ports = free_ports(4)
        self.urls = {"dc1": f"http://127.0.0.1:{ports[0]}", "dc2": f"http://127.0.0.1:{ports[1]}"}
        self.s3_urls = {"dc1": f"http://127.0.0.1:{ports[2]}",
                        "dc2": f"http://127.0.0.1:{ports[3]}"}
        self.config_path = root / "cluster.yaml"
        write_config(self.config_path, root / "data", datacenters=2, nodes_per_dc=3,
                     partitions=4, storage=FAST_STORAGE, extra={
                         "frontends": [
                             {"datacenter": "dc1", "host": "127.0.0.1", "port": ports[0],
                              "s3_port": ports[2]},
                             {"datacenter": "dc2", "host": "127.0.0.1", "port": ports[1],
                              "s3_port": ports[3]}],
                         "frontend": {**TEST_FRONTEND,
                                      "signed_url_secret_file": "signed-url-secret",
                                      "signed_url_secret_generate": True},
                         "s3": TEST_S3, "accounts": TEST_ACCOUNTS})
        self.out_path = root / "cluster-up.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def up(self) -> float:
        """Start it and return once it says the cluster is up; seconds that took."""
        env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
        env["PYTHONPATH"] = str(REPO_ROOT)
        t0 = time.monotonic()
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ambry.cli", "cluster", "up", "--config",
                 str(self.config_path), "--timeout", str(UP_TIMEOUT_S)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=str(REPO_ROOT))
        while "is up" not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"cluster up exited {self.proc.returncode}:\n"
                                     f"{self.output()}")
            if time.monotonic() - t0 > UP_TIMEOUT_S + 30:
                raise AssertionError(f"cluster up did not finish:\n{self.output()}")
            time.sleep(0.02)
        return time.monotonic() - t0

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def logs(self) -> str:
        out = []
        for p in sorted((self.root / "data" / "logs").glob("*.log")):
            out.append(f"==== {p.name} ====\n" + "\n".join(
                p.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(out)

    def down(self) -> None:
        assert stop_gracefully(self.proc), "cluster up did not stop on SIGTERM within 90 s"


def _writes_work_at_once(c: ClusterUp) -> None:
    """The first requests after "is up", with no retry: every kind of write succeeds."""
    name = f"first/{uuid.uuid4().hex}"
    for dc in ("dc1", "dc2"):
        status, body, _ = _request("PUT", f"{c.urls[dc]}/named/default/models/{name}-{dc}",
                                   b"first write", SERVICE)
        assert status == 201, (dc, status, body)
    r = raw("PUT", f"{c.s3_urls['dc1']}/models/{name}", b"first s3 write")
    assert r.status == 200, (r.status, r.body)
    bucket = f"fresh-{uuid.uuid4().hex[:12]}"
    r = raw("PUT", f"{c.s3_urls['dc1']}/{bucket}")
    assert r.status == 200, (r.status, r.body)
    r = raw("PUT", f"{c.s3_urls['dc1']}/{bucket}/obj", b"into a bucket made just now")
    assert r.status == 200, (r.status, r.body)
    # ... and read back: a name listing needs every replica of the name partition serving
    status, body, _ = _request("GET", f"{c.urls['dc1']}/named/default/models?prefix=first/")
    assert status == 200 and f"{name}-dc1" in body, (status, body)
    # the generated signed-URL secret works, and is this cluster's own
    status, body, headers = _request("GET", f"{c.urls['dc1']}/signedUrl", headers={
        "x-ambry-url-type": "POST", **SERVICE})
    assert status == 200, (status, body)
    status, body, _ = _request("POST", headers["x-ambry-signed-url"], b"signed upload")
    assert status == 201, (status, body)
    secret = (c.root / "data" / "signed-url-secret").read_text().strip()
    assert len(secret) >= 32


def _fresh_clusters(tmp_path: Path, rounds: int) -> None:
    secrets_seen = set()
    for i in range(rounds):
        c = ClusterUp(tmp_path / f"cluster{i}")
        try:
            took = c.up()
            _writes_work_at_once(c)
            print(f"cluster {i}: up after {took:.1f} s; first writes succeeded")
            secrets_seen.add((c.root / "data" / "signed-url-secret").read_text())
        except BaseException:
            print(c.output())
            print(c.logs())
            raise
        finally:
            c.down()
    assert len(secrets_seen) == rounds  # every fresh cluster made a secret of its own


def test_first_writes_succeed_right_after_cluster_up_says_healthy(tmp_path: Path) -> None:
    _fresh_clusters(tmp_path, rounds=1)


@pytest.mark.slow
def test_first_writes_succeed_right_after_cluster_up_on_many_fresh_clusters(
        tmp_path: Path) -> None:
    _fresh_clusters(tmp_path, rounds=6)
