"""The ``ambry`` command as users run it (issue 14, SDK/CLI rough edges): ``ambry admin
verify`` of the data directory ``ambry cluster up --data-dir`` writes, and ``ambry ls`` of a
directory through the delimiter listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from click.testing import CliRunner
from fe_helpers import FAST_STORAGE, SERVICE, stop_gracefully, store_fixture

from ambry.cli.admin import admin
from ambry.cli.main import main as ambry_main
from ambry.client import AsyncClient, Client
from ambry.storage import filenames
from ambry.testing.cluster import REPO_ROOT, free_ports, write_config
from ambry.testing.frontend import TEST_ACCOUNTS, TEST_FRONTEND, StoreCluster

UP_TIMEOUT_S = 120.0


def _request(method: str, url: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class ClusterUp:
    """``ambry cluster up --config CFG --data-dir DIR`` of a 1 DC x 3 node config."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "data"
        port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = root / "cluster.yaml"
        # the config names another data_dir: --data-dir must win
        write_config(self.config_path, root / "not-here", datacenters=1, nodes_per_dc=3,
                     partitions=3, storage=FAST_STORAGE, extra={
                         "frontends": [{"datacenter": "dc1", "host": "127.0.0.1",
                                        "port": port}],
                         "frontend": {**TEST_FRONTEND,
                                      "signed_url_secret_file": "signed-url-secret",
                                      "signed_url_secret_generate": True},
                         "accounts": TEST_ACCOUNTS})
        self.out_path = root / "cluster-up.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ambry.cli", "cluster", "up", "--config",
                 str(self.config_path), "--data-dir", str(self.data_dir),
                 "--timeout", str(UP_TIMEOUT_S)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=str(REPO_ROOT))
        deadline = time.monotonic() + UP_TIMEOUT_S + 30
        while "is up" not in self.out_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.down()
                raise AssertionError("cluster up failed:\n" + self.out_path.read_text())
            time.sleep(0.05)
        return self

    def down(self) -> None:
        stop_gracefully(self.proc)

    def __exit__(self, *exc: object) -> None:
        self.down()


def test_admin_verify_walks_every_node_of_a_cluster_up_data_dir(tmp_path: Path) -> None:
    # what broke: `ambry admin verify DIR` on the DIR of `ambry cluster up --data-dir DIR`
    # said "no replicas under DIR": it only understood one node's directory
    blobs = [os.urandom(20_000) for _ in range(12)]
    with ClusterUp(tmp_path) as c:
        for i, data in enumerate(blobs):
            status, body = _request("PUT", f"{c.url}/named/default/models/verify/{i}", data,
                                    SERVICE)
            assert status == 201, (status, body)
    assert c.proc is not None and c.proc.returncode is not None  # stopped: files are quiet
    nodes = sorted(p.name for p in c.data_dir.iterdir()
                   if p.is_dir() and any(filenames.parse_replica_dir_name(q.name) is not None
                                         for q in p.iterdir()))
    assert nodes == ["dc1-n1", "dc1-n2", "dc1-n3"]

    res = CliRunner().invoke(admin, ["verify", str(c.data_dir)])
    assert res.exit_code == 0, res.output
    for node in nodes:
        assert f"node {node}: 3 replica(s), OK" in res.output, res.output
    res = CliRunner().invoke(admin, ["verify", "--json", str(c.data_dir)])
    reports = json.loads(res.output)
    assert res.exit_code == 0 and len(reports) == 9
    assert len({(r["node"], r["replica"]) for r in reports}) == 9
    assert {r["node"] for r in reports} == set(nodes)

    # rot: flip one byte inside a stored blob that is not the last record of its segment
    target = None
    for seg in sorted(c.data_dir.glob("*/p*/*.log")):
        raw = seg.read_bytes()
        for data in blobs:
            at = raw.find(data)
            if at >= 0 and at + len(data) + 64 < len(raw):
                target = (seg, at + len(data) // 2)
                break
        if target:
            break
    assert target is not None, "no blob payload found in any segment"
    seg, offset = target
    with open(seg, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))
    node, replica = seg.parent.parent.name, seg.parent.name
    res = CliRunner().invoke(admin, ["verify", str(c.data_dir)])
    assert res.exit_code == 1, res.output
    assert f"node {node}: 3 replica(s), 1 DAMAGED" in res.output, res.output
    damaged = [line for line in res.output.splitlines() if "checksum" in line]
    assert damaged and f"node {node} {replica} segment" in damaged[0], res.output
    others = [n for n in nodes if n != node]
    for n in others:
        assert f"node {n}: 3 replica(s), OK" in res.output


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("cli-compat"), datacenters=1,
                             nodes_per_dc=3, partitions=2)


def test_ls_of_a_directory_lists_one_level_without_reading_the_tree(store, monkeypatch):
    # what broke: `ambry ls DIR/` paged through every name below DIR and rolled them up on
    # the client; now it asks for one level (delimiter listing) and never walks the tree
    base = f"cli-ls-{uuid.uuid4().hex[:8]}"
    with Client(store.url("dc1", ""), progress=False) as c:
        for n in ["a.txt", "runs/1/model.pt", "runs/1/opt.pt", "runs/2/model.pt",
                  "runs-old.txt"]:
            c.put_named(f"{base}/{n}", n.encode(), container="models")

    def no_walk(*a: Any, **kw: Any) -> Any:
        raise AssertionError("ls of one level read the whole tree")

    env = {"AMBRY_ENDPOINT": store.url("dc1", "")}
    runner = CliRunner()
    with monkeypatch.context() as m:
        m.setattr(AsyncClient, "list_named", no_walk)
        res = runner.invoke(ambry_main, ["ls", "--json", f"default/models/{base}/"], env=env)
        assert res.exit_code == 0, res.output
        assert json.loads(res.output) == [
            {"name": f"{base}/a.txt", "type": "file", **_row(res.output, f"{base}/a.txt")},
            {"name": f"{base}/runs-old.txt", "type": "file",
             **_row(res.output, f"{base}/runs-old.txt")},
            {"name": f"{base}/runs/", "type": "directory"}]
        res = runner.invoke(ambry_main, ["ls", f"default/models/{base}/runs"], env=env)
        assert [line.split()[-1] for line in res.output.splitlines()] == [
            f"{base}/runs-old.txt", f"{base}/runs/"]
    # -r still walks every name
    res = runner.invoke(ambry_main, ["ls", "-r", f"default/models/{base}/runs/"], env=env)
    assert [line.split()[-1] for line in res.output.splitlines()] == [
        f"{base}/runs/1/model.pt", f"{base}/runs/1/opt.pt", f"{base}/runs/2/model.pt"]


def _row(output: str, name: str) -> dict[str, Any]:
    """The file fields of ``name`` in an ``ls --json`` output (sizes, ids and times)."""
    row = next(r for r in json.loads(output) if r["name"] == name)
    return {k: v for k, v in row.items() if k not in ("name", "type")}
