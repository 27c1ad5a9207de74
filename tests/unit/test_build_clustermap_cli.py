"""`ambry admin build-clustermap` through the installed entry point (.venv/bin/ambry): the map
it writes loads with the config loader, and growing it (--from) moves no replica."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from ambry.common.config import load_config

AMBRY = Path(sys.executable).parent / "ambry"


def _ambry(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AMBRY), "admin", "build-clustermap", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_build_then_grow_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "cluster.yaml"
    r = _ambry("--dc", "dc1=host1,host2,host3", "--dc", "dc2=host4,host5,host6",
               "--partitions", "16", "--replicas-per-dc", "3", "--node-port", "6670",
               "--frontend", "dc1=fe1:1174", "--frontend", "dc2=fe2:1174",
               "--capacity", "20GiB", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "dc1-n1=16" in r.stderr  # 3 nodes per DC, 3 replicas per DC: all 16 each
    cfg = load_config(out)
    cm = cfg.cluster_map
    assert [n.host for n in cm.nodes] == [f"host{i}" for i in range(1, 7)]
    assert {n.port for n in cm.nodes} == {6670}
    assert len(cm.partitions) == 16
    for p in cm.partitions:
        assert len(cm.replicas_in(p.id, "dc1")) == 3 and len(cm.replicas_in(p.id, "dc2")) == 3
        assert p.capacity_bytes == 20 * 1024**3
    assert cfg.frontend_of("dc2").host == "fe2"
    assert out.read_text().startswith("# Cluster map written by `ambry admin build-clustermap")
    # daemons in containers run as another user: the map is readable like any new file
    # (it was 0600, from mkstemp, and no container could read config/docker.yaml)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask

    grown = tmp_path / "grown.yaml"
    r = _ambry("--from", str(out), "--add-node", "dc1=host7", "--add-node", "dc2=host8",
               "--add-partitions", "4", "-o", str(grown), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    new = load_config(grown).cluster_map
    assert new.partitions[:16] == cm.partitions
    assert {n.id for n in new.nodes} - {n.id for n in cm.nodes} == {"dc1-n4", "dc2-n4"}
    assert [len(new.partitions_of(n)) for n in ("dc1-n4", "dc2-n4")] == [4, 4]


def test_grow_keeps_the_sections_of_local_yaml(tmp_path: Path) -> None:
    local = Path(__file__).resolve().parents[2] / "config" / "local.yaml"
    out = tmp_path / "grown.yaml"
    r = _ambry("--from", str(local), "--add-partitions", "2", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = load_config(local)
    after = load_config(out)
    assert after.cluster_map.partitions[:16] == before.cluster_map.partitions
    assert len(after.cluster_map.partitions) == 18
    assert (after.storage, after.frontend, after.accounts, after.frontends) == \
        (before.storage, before.frontend, before.accounts, before.frontends)
    assert yaml.safe_load(out.read_text())["data_dir"] == "data"


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    r = _ambry("--dc", "dc1=a,b", "--partitions", "4", cwd=tmp_path)
    assert r.returncode != 0
    assert "needs at least 3" in r.stderr and "Traceback" not in r.stderr
    r = _ambry("--add-partitions", "2", cwd=tmp_path)
    assert r.returncode != 0 and "need --from" in r.stderr
