"""`ambry put | get | head | rm | ls | cp` through the real entry point (``.venv/bin/ambry``
in a subprocess) against a real 1-DC store started once for this module: round trips by id
and by name, listings, directory copies both ways, and the one-line errors with their exit
codes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fe_helpers import CHUNK, store_fixture

from ambry.testing.cluster import free_ports
from ambry.testing.frontend import StoreCluster

AMBRY = str(Path(sys.executable).with_name("ambry"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("cli"), datacenters=1, nodes_per_dc=3,
                             partitions=4)


@dataclass
class Run:
    code: int
    out: str
    err: str
    raw: bytes


@pytest.fixture
def ambry(store: StoreCluster, tmp_path: Path):
    env = {**os.environ, "AMBRY_ENDPOINT": store.url("dc1", ""),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def run(*args: str, stdin: bytes | None = None, **env_over: str) -> Run:
        p = subprocess.run([AMBRY, *args], input=stdin, capture_output=True, timeout=120, check=False,
                           env={**env, **env_over})
        return Run(p.returncode, p.stdout.decode(errors="replace"),
                   p.stderr.decode(errors="replace"), p.stdout)

    return run


@pytest.fixture
def prefix() -> str:
    """A fresh directory of the ``models`` container for one test."""
    return f"t-{uuid.uuid4().hex[:10]}"


def data_of(size: int, seed: str = "") -> bytes:
    return random.Random(f"{seed}-{size}").randbytes(size)


def ok(r: Run) -> Run:
    assert r.code == 0, f"exit {r.code}: {r.err}"
    return r


def test_put_and_get_by_id(ambry, tmp_path):
    data = data_of(2 * CHUNK + 77, "id")  # parallel chunks + stitch, parallel range GETs
    (tmp_path / "in.bin").write_bytes(data)
    blob_id = ok(ambry("put", str(tmp_path / "in.bin"), "-m", "run=42")).out.strip()
    assert len(blob_id) == 43
    ok(ambry("get", blob_id, "-o", str(tmp_path / "out.bin")))
    assert (tmp_path / "out.bin").read_bytes() == data
    assert ok(ambry("get", blob_id, "-o", "-")).raw == data
    (tmp_path / "d").mkdir()
    ok(ambry("get", "/" + blob_id, "-o", str(tmp_path / "d")))  # as Location says it
    assert (tmp_path / "d" / blob_id).read_bytes() == data
    head = json.loads(ok(ambry("head", blob_id, "--json")).out)
    assert head["size"] == len(data) and head["user_metadata"] == {"run": "42"}
    assert head["filename"] == "in.bin" and head["service_id"] == "ambry-cli"
    assert head["content_type"] == "application/octet-stream" and head["ttl_s"] is None
    # stdin
    blob2 = ok(ambry("put", "-", stdin=b"from stdin")).out.strip()
    assert ok(ambry("get", blob2, "-o", "-")).raw == b"from stdin"


def test_put_and_get_by_name(ambry, tmp_path, prefix):
    (tmp_path / "notes.txt").write_text("hello\n")
    name = f"default/models/{prefix}/notes.txt"
    r = ok(ambry("put", str(tmp_path / "notes.txt"), "--name", name, "--ttl", "1d",
                 "-m", "step=1000", "-m", "Owner=me"))
    assert r.out.strip() == f"ambry://{name}"
    for ref in (name, f"ambry://{name}"):
        assert ok(ambry("get", ref, "-o", "-")).out == "hello\n"
    head = json.loads(ok(ambry("head", f"ambry://{name}", "--json")).out)
    assert head["ttl_s"] == 86400 and head["content_type"] == "text/plain"
    assert head["user_metadata"] == {"step": "1000", "owner": "me"}
    assert head["name"] == f"ambry://{name}" and len(head["blob_id"]) == 43
    lines = [line.split() for line in ok(ambry("head", name)).out.splitlines()]
    assert ["metadata", "step=1000"] in lines and ["size", "6", "(6", "B)"] in lines
    assert ["ttl", "86400", "s"] in lines and ["content_type", "text/plain"] in lines
    # an existing name is a conflict (3) unless --force
    r = ambry("put", str(tmp_path / "notes.txt"), "-n", name)
    assert r.code == 3 and r.err.strip() == \
        f"ambry: error: name exists: ambry://{name} (--force overwrites it)"
    (tmp_path / "notes.txt").write_text("v2\n")
    ok(ambry("put", str(tmp_path / "notes.txt"), "-n", name, "--force", "-t", "text/x-v2"))
    assert ok(ambry("get", name, "-o", "-")).out == "v2\n"
    assert json.loads(ok(ambry("head", name, "--json")).out)["content_type"] == "text/x-v2"
    # into a directory: the name's last part
    ok(ambry("get", name, "-o", str(tmp_path)))
    assert (tmp_path / "notes.txt").read_text() == "v2\n"


def test_ls_with_a_prefix_recursive_or_by_level(ambry, tmp_path, prefix):
    files = {"a.txt": b"a", "runs/1/model.pt": b"m1", "runs/1/opt.pt": b"o1",
             "runs/2/model.pt": b"m22", "runs-old.txt": b"old"}
    for rel, data in files.items():
        (tmp_path / "f").write_bytes(data)
        ok(ambry("put", str(tmp_path / "f"), "-n", f"default/models/{prefix}/{rel}"))
    level = ok(ambry("ls", f"default/models/{prefix}/")).out.splitlines()
    assert [line.split()[-1] for line in level] == [
        f"{prefix}/a.txt", f"{prefix}/runs-old.txt", f"{prefix}/runs/"]
    assert level[-1].split()[0] == "DIR"
    assert level[0].split()[-2] == "1"  # the size
    # a prefix that is not a directory matches as S3 does
    assert [line.split()[-1] for line in ok(ambry("ls", f"default/models/{prefix}/runs"))
            .out.splitlines()] == [f"{prefix}/runs-old.txt", f"{prefix}/runs/"]
    rec = ok(ambry("ls", "-r", f"ambry://default/models/{prefix}/runs/")).out.splitlines()
    assert [line.split()[-1] for line in rec] == [
        f"{prefix}/runs/1/model.pt", f"{prefix}/runs/1/opt.pt", f"{prefix}/runs/2/model.pt"]
    rows = json.loads(ok(ambry("ls", "--json", f"default/models/{prefix}/runs/")).out)
    assert rows == [{"name": f"{prefix}/runs/1/", "type": "directory"},
                    {"name": f"{prefix}/runs/2/", "type": "directory"}]
    rows = json.loads(ok(ambry("ls", "-r", "--json", f"default/models/{prefix}/")).out)
    assert {r["name"]: r["size"] for r in rows} == {
        f"{prefix}/{k}": len(v) for k, v in files.items()}
    assert all(len(r["blob_id"]) == 43 and r["created"].endswith("Z") for r in rows)
    assert ok(ambry("ls", f"default/models/{prefix}/nothing/")).out == ""
    r = ambry("ls", "default/nosuch")
    assert r.code == 2 and "unknown container" in r.err


def make_tree(root: Path) -> dict[str, bytes]:
    tree = {"model.safetensors": data_of(3 * CHUNK + 5, "model"),
            "config.json": b'{"layers": 2}', "empty.bin": b"",
            "optimizer/state-0.pt": data_of(100_000, "s0"),
            "optimizer/state-1.pt": data_of(CHUNK + 1, "s1"),
            "optimizer/deep/er/x.bin": b"x"}
    for rel, data in tree.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return tree


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*") if p.is_file()}


def test_cp_a_checkpoint_directory_up_and_down(ambry, tmp_path, prefix):
    tree = make_tree(tmp_path / "ckpt")
    dst = f"ambry://default/models/{prefix}/run42/"
    r = ok(ambry("cp", "-r", str(tmp_path / "ckpt"), dst, "-j", "3"))
    assert f"copied {len(tree)} files" in r.err
    listed = json.loads(ok(ambry("ls", "-r", "--json", dst)).out)
    assert {e["name"]: e["size"] for e in listed} == {
        f"{prefix}/run42/{k}": len(v) for k, v in tree.items()}
    ok(ambry("cp", "-r", dst, str(tmp_path / "back")))
    assert read_tree(tmp_path / "back") == tree
    # again with --skip-existing: nothing moves, either way
    r = ok(ambry("cp", "-r", "--skip-existing", str(tmp_path / "ckpt"), dst))
    assert f"copied 0 files (0 B), skipped {len(tree)} unchanged" in r.err
    (tmp_path / "ckpt" / "config.json").write_bytes(b'{"layers": 24}')
    r = ok(ambry("cp", "-r", "--skip-existing", str(tmp_path / "ckpt"), dst))
    assert f"copied 1 files (14 B), skipped {len(tree) - 1} unchanged" in r.err
    r = ok(ambry("cp", "-r", "--skip-existing", dst, str(tmp_path / "back")))
    assert "copied 1 files" in r.err
    assert (tmp_path / "back" / "config.json").read_bytes() == b'{"layers": 24}'
    # single files, both ways, and remote to remote
    ok(ambry("cp", str(tmp_path / "ckpt" / "config.json"), f"ambry://default/models/{prefix}/"))
    ok(ambry("cp", f"ambry://default/models/{prefix}/config.json", str(tmp_path / "c.json")))
    assert (tmp_path / "c.json").read_bytes() == b'{"layers": 24}'
    ok(ambry("cp", f"{dst}model.safetensors", f"ambry://default/default/{prefix}/best"))
    assert ok(ambry("get", f"default/default/{prefix}/best", "-o", "-")).raw == \
        tree["model.safetensors"]
    ok(ambry("cp", "-r", dst, f"ambry://default/default/{prefix}/copy/"))
    ok(ambry("cp", "-r", f"ambry://default/default/{prefix}/copy", str(tmp_path / "copy")))
    assert read_tree(tmp_path / "copy") == {**tree, "config.json": b'{"layers": 24}'}
    r = ambry("cp", str(tmp_path / "ckpt"), dst)
    assert r.code == 1 and "is a directory: use -r" in r.err
    r = ambry("cp", dst, str(tmp_path / "x"))
    assert r.code == 1 and "is a directory: use -r" in r.err


def test_rm_by_id_name_and_directory(ambry, tmp_path, prefix):
    (tmp_path / "f").write_bytes(b"bytes")
    blob_id = ok(ambry("put", str(tmp_path / "f"))).out.strip()
    ok(ambry("rm", blob_id))
    r = ambry("get", blob_id, "-o", "-")
    assert r.code == 2 and r.err.strip() == f"ambry: error: blob deleted: {blob_id}"
    base = f"default/models/{prefix}"
    for rel in ("keep.txt", "d/one", "d/two", "d/sub/three", "d.txt"):
        ok(ambry("put", str(tmp_path / "f"), "-n", f"{base}/{rel}"))
    ok(ambry("rm", f"{base}/keep.txt"))
    r = ambry("get", f"{base}/keep.txt", "-o", "-")
    assert r.code == 2 and r.err.strip() == f"ambry: error: name deleted: ambry://{base}/keep.txt"
    r = ambry("rm", f"{base}/d")
    assert r.code == 1 and r.err.strip() == f"ambry: error: ambry://{base}/d is a directory: use -r"
    r = ok(ambry("rm", "-r", "-v", f"ambry://{base}/d"))
    assert sorted(r.out.split()) == sorted(["deleted"] * 3 + [
        f"ambry://{base}/d/one", f"ambry://{base}/d/sub/three", f"ambry://{base}/d/two"])
    assert [line.split()[-1] for line in ok(ambry("ls", "-r", base + "/")).out.splitlines()] \
        == [f"{prefix}/d.txt"]
    r = ambry("rm", "-r", f"{base}/d")
    assert r.code == 2 and "no names under" in r.err


def test_errors_are_one_line_with_distinct_exit_codes(ambry, store, tmp_path):
    from ambry.common.blobid import new_blob_id

    unknown = new_blob_id(1, 1, 1, 1).to_str()
    r = ambry("get", unknown, "-o", "-")
    assert (r.code, r.err) == (2, f"ambry: error: blob not found: {unknown}\n")
    r = ambry("head", unknown)
    assert (r.code, r.err) == (2, f"ambry: error: blob not found: {unknown}\n")
    r = ambry("head", "default/nosuch/x")
    assert r.code == 2 and r.err.startswith("ambry: error: unknown container")
    # usage errors exit 1 (click's own default would be 2, "not found" here)
    for args in (["get", "not-an-id", "-o", "-"], ["get", unknown],
                 ["put", "-", "--ttl", "soon"], ["cp", "a", "b"]):
        r = ambry(*args)
        assert r.code == 1, (args, r)
    # nothing listening: unavailable (4) after the retries, not "not found"
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    r = ambry("get", unknown, "-o", "-", "--endpoint", dead)
    assert r.code == 4 and r.err.startswith("ambry: error: unavailable: ")
    assert len(r.err.strip().splitlines()) == 1
    r = ambry("ls", "default/models", AMBRY_ENDPOINT=dead)
    assert r.code == 4


def test_endpoints_fail_over_in_order(ambry, store, tmp_path):
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    r = ok(ambry("put", "-", stdin=b"failover",
                 AMBRY_ENDPOINT=f"{dead},{store.url('dc1', '')}"))
    blob_id = r.out.strip()
    assert ok(ambry("get", blob_id, "-o", "-", "-e", dead, "-e", store.url("dc1", ""))).raw \
        == b"failover"
