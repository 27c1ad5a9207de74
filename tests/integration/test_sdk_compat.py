"""SDK, fsspec and REST rough edges of issue 14 against a real 1-DC store (3 nodes, one
frontend, 1 MiB chunks): unknown accounts and containers read as absent, unknown constructor
keywords raise, a failed bulk put leaves no un-awaited coroutine, large named uploads are
parallel chunks stitched into the name (and resume after a cut), and a directory is listed
one level at a time (delimiter listing)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fe_helpers import CHUNK, SERVICE, store_fixture

from ambry.client import (
    Client,
    ConnectionFailed,
    NamedEntry,
    NamedPrefix,
    NameExists,
    RequestEvent,
    RetryPolicy,
    Unavailable,
)
from ambry.client.fsspec import AmbryFileSystem
from ambry.testing.frontend import StoreCluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("sdk-compat"), datacenters=1,
                             nodes_per_dc=3, partitions=4)


@pytest.fixture
def fs(store: StoreCluster) -> AmbryFileSystem:
    return AmbryFileSystem(endpoint=store.url("dc1", ""), skip_instance_cache=True,
                           client_kwargs={"part_size_bytes": CHUNK})


@pytest.fixture
def events() -> list[RequestEvent]:
    return []


@pytest.fixture
def client(store: StoreCluster, tmp_path: Path, events: list[RequestEvent]
           ) -> Iterator[Client]:
    with Client(store.url("dc1", ""), part_size_bytes=CHUNK, resume_dir=tmp_path / "resume",
                progress=False, on_request=events.append) as c:
        yield c


def data_of(size: int, seed: str = "") -> bytes:
    return random.Random(f"{seed}-{size}").randbytes(size)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def chunk_posts(events: list[RequestEvent]) -> list[RequestEvent]:
    return [e for e in events if e.method == "POST" and e.path == "/" and e.status == 201
            and e.headers.get("x-ambry-chunk-upload") == "true"]


# ------------------------------------------------------------------ fsspec: what exists
def test_unknown_accounts_and_containers_read_as_absent(fs):
    # what broke: with a one-component root, exists("anything") was True (the REST API could
    # not list accounts), so tools skipped creating their root and every write then failed
    # with "unknown account"
    for path in ("nosuch-account", "nosuch-account/default", "nosuch-account/default/x",
                 "default/nosuch-container", "default/nosuch-container/x/y"):
        assert not fs.exists(path), path
        assert not fs.isdir(path), path
        with pytest.raises(FileNotFoundError):
            fs.info(path)
        with pytest.raises(FileNotFoundError):
            fs.ls(path)
    assert fs.exists("default") and fs.isdir("default")
    assert fs.exists("default/models") and fs.isdir("default/models")
    # an account lists its containers (GET /named/<account>)
    assert {"default/default", "default/models"} <= set(fs.ls("default", detail=False))


def test_mkdir_of_a_missing_container_says_how_to_create_it(fs):
    # what broke: mkdir/makedirs did nothing, so the failure came later, at the first write
    with pytest.raises(PermissionError, match="S3 bucket.*cluster config"):
        fs.makedirs("default/nosuch-container/run1", exist_ok=True)
    with pytest.raises(PermissionError, match="cluster config"):
        fs.mkdir("nosuch-account/models")
    fs.makedirs("default/models", exist_ok=True)        # an existing container: fine
    fs.makedirs("default/models/new/dir", exist_ok=True)  # implied directories: nothing to do
    fs.mkdir("default/models/another")
    with pytest.raises(FileExistsError):
        fs.makedirs("default/models", exist_ok=False)


def test_an_unknown_constructor_keyword_is_a_type_error(store):
    # what broke: url= (for endpoint=) was swallowed, and the filesystem then talked to the
    # default endpoint
    with pytest.raises(TypeError, match="url"):
        AmbryFileSystem(url=store.url("dc1", ""), skip_instance_cache=True)
    with pytest.raises(TypeError, match="url"):
        fsspec.filesystem("ambry", url=store.url("dc1", ""), skip_instance_cache=True)
    ok = fsspec.filesystem("ambry", endpoint=store.url("dc1", ""), use_listings_cache=False,
                           skip_instance_cache=True)
    assert ok.exists("default/models")


BULK_PUT = textwrap.dedent("""
    import gc, os, sys
    from ambry.client.fsspec import AmbryFileSystem
    fs = AmbryFileSystem(endpoint=sys.argv[1], skip_instance_cache=True, batch_size=4)
    files = []
    for i in range(24):
        p = os.path.join(sys.argv[2], f"f{i}")
        with open(p, "wb") as f:
            f.write(b"x" * 100)
        files.append(p)
    for target in ("nosuch-account/c", "default/nosuch-container"):
        try:
            fs.put(files, [f"{target}/f{i}" for i in range(24)])
        except FileNotFoundError:
            pass
        else:
            sys.exit("the put did not fail")
    try:
        fs.pipe({f"nosuch-account/c/p{i}": b"x" for i in range(24)})
    except FileNotFoundError:
        pass
    gc.collect()
    print("done", flush=True)
""")


def test_a_failed_bulk_put_leaves_no_coroutine_unawaited(store, tmp_path):
    # what broke: fsspec's runner raised at the first failed file and never awaited the
    # coroutines of the files it had not started ("coroutine '_put_file' was never awaited")
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", BULK_PUT,
                          store.url("dc1", ""), str(tmp_path)], check=False, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "done" in out.stdout, out.stderr
    assert "never awaited" not in out.stderr, out.stderr


def test_bulk_put_still_runs_batch_size_transfers_at_once(store, tmp_path):
    fs = AmbryFileSystem(endpoint=store.url("dc1", ""), skip_instance_cache=True,
                         batch_size=3)
    root = f"default/models/{unique('bulk')}"
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(data_of(1000 + i, "bulk"))
    active = peak = 0
    real = fs._put_one

    async def counting(*a: Any) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await real(*a)
        finally:
            active -= 1

    fs._put_one = counting  # type: ignore[method-assign]
    fs.put(str(src) + "/", root + "/", recursive=True)
    assert 1 <= peak <= 3
    assert sorted(fs.ls(root, detail=False)) == sorted(f"{root}/f{i}" for i in range(10))


# ------------------------------------------------------------------ delimiter listing
def _seed_tree(client: Client, base: str, per_dir: int) -> set[str]:
    names = {f"{base}/top.txt", f"{base}/z.bin"}
    for d in ("a", "b", "c"):
        names |= {f"{base}/{d}/{i:03d}" for i in range(per_dir)}
    names.add(f"{base}/b/deeper/x")
    for n in sorted(names):
        client.put_named(n, n.encode(), container="models", upsert=True)
    return names


def test_rest_delimiter_listing_pages_through_names_and_common_prefixes(store, client):
    # what broke: there was no delimiter: `ambry ls` and fsspec's ls of a directory read
    # every name below it
    base = unique("delim")
    _seed_tree(client, base, per_dir=12)
    url = store.url("dc1", "/named/default/models")
    seen: list[str] = []
    pages = 0
    token = ""
    while True:
        q = {"prefix": f"{base}/", "delimiter": "/", "maxResults": "2"}
        if token:
            q["page"] = token
        status, _, body = http("GET", f"{url}?{urllib.parse.urlencode(q)}")
        assert status == 200, body
        page = json.loads(body)
        assert len(page["entries"]) + len(page["commonPrefixes"]) <= 2
        seen += sorted([e["name"] for e in page["entries"]] + page["commonPrefixes"])
        pages += 1
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert seen == [f"{base}/a/", f"{base}/b/", f"{base}/c/", f"{base}/top.txt",
                    f"{base}/z.bin"]
    assert pages == 3
    # one level down, and the whole answer in one page
    status, _, body = http("GET", f"{url}?prefix={base}/b/&delimiter=/")
    page = json.loads(body)
    assert page["commonPrefixes"] == [f"{base}/b/deeper/"]
    assert [e["name"] for e in page["entries"]] == [f"{base}/b/{i:03d}" for i in range(12)]
    assert all(len(e["blobId"]) == 43 for e in page["entries"])
    # without a delimiter: as before, every name, and no commonPrefixes key
    status, _, body = http("GET", f"{url}?prefix={base}/b/")
    page = json.loads(body)
    assert "commonPrefixes" not in page and len(page["entries"]) == 13
    # a bad delimiter is a 400, not a 500
    status, headers, _ = http("GET", f"{url}?delimiter=" + "x" * 100)
    assert status == 400 and headers["x-ambry-error-code"] == "INVALID_ARGUMENT"


def test_sdk_list_dir_and_fsspec_ls_use_one_delimiter_listing(store, client, events):
    base = unique("lsdir")
    names = _seed_tree(client, base, per_dir=30)
    rows = list(client.list_dir(f"{base}/", container="models"))
    assert [type(r) for r in rows] == [NamedPrefix] * 3 + [NamedEntry] * 2
    assert [r.name for r in rows] == [f"{base}/a/", f"{base}/b/", f"{base}/c/",
                                      f"{base}/top.txt", f"{base}/z.bin"]
    fs_events: list[RequestEvent] = []
    fs = AmbryFileSystem(endpoint=store.url("dc1", ""), skip_instance_cache=True,
                         client_kwargs={"on_request": fs_events.append})
    listed = fs.ls(f"default/models/{base}", detail=True)
    assert [(e["name"], e["type"]) for e in listed] == [
        (f"default/models/{base}/a", "directory"), (f"default/models/{base}/b", "directory"),
        (f"default/models/{base}/c", "directory"), (f"default/models/{base}/top.txt", "file"),
        (f"default/models/{base}/z.bin", "file")]
    lists = [e for e in fs_events if e.method == "GET" and e.path.startswith("/named/")]
    assert len(lists) == 1, lists  # one page: the 91 names below were skipped, not read
    # find and walk still see everything
    assert set(fs.find(f"default/models/{base}")) == {f"default/models/{n}" for n in names}
    walked = {f"{root}/{f}" for root, _, files in fs.walk(f"default/models/{base}")
              for f in files}
    assert walked == {f"default/models/{n}" for n in names}


# ------------------------------------------------------------------ named stitch (REST)
def _chunks(store: StoreCluster, pieces: list[bytes]) -> list[str]:
    ids = []
    for p in pieces:
        status, headers, body = http("POST", store.url("dc1", "/"), p, {
            **SERVICE, "x-ambry-chunk-upload": "true",
            "x-ambry-target-account-name": "default",
            "x-ambry-target-container-name": "models"})
        assert status == 201, body
        ids.append(headers["Location"].lstrip("/"))
    return ids


def _stitch(store: StoreCluster, name: str, ids: list[str], upsert: bool | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    h = {**SERVICE, "Content-Type": "application/json"}
    if upsert is not None:
        h["x-ambry-named-upsert"] = "true" if upsert else "false"
    return http("POST", store.url("dc1", f"/named/default/models/{name}"),
                json.dumps({"chunkIds": ids}).encode(), h)


def _get_named(store: StoreCluster, name: str) -> tuple[int, bytes]:
    status, _, body = http("GET", store.url("dc1", f"/named/default/models/{name}"))
    return status, body


def test_stitch_into_a_name_follows_the_name_rules(store):
    # what broke: nothing could name a stitched blob, so large named uploads were one
    # streamed PUT that could not resume
    name = unique("stitched") + "/model.pt"
    pieces = [data_of(300_000, "p0"), data_of(5, "p1"), data_of(200_000, "p2")]
    ids = _chunks(store, pieces)
    status, headers, body = _stitch(store, name, ids)
    assert status == 201, body
    first = headers["Location"]
    assert _get_named(store, name) == (200, b"".join(pieces))
    # a retried stitch (its reply was lost) answers the same blob and changes nothing
    status, headers, _ = _stitch(store, name, ids)
    assert status == 201 and headers["Location"] == first
    # other chunks on a taken name without upsert: 409, the name keeps its blob
    other = _chunks(store, [b"other-0", b"other-1"])
    status, headers, _ = _stitch(store, name, other)
    assert status == 409 and headers["x-ambry-error-code"] == "NAME_ALREADY_EXISTS"
    assert _get_named(store, name) == (200, b"".join(pieces))
    # with upsert they replace it, and the old blob is deleted
    status, headers, _ = _stitch(store, name, other, upsert=True)
    assert status == 201 and headers["Location"] != first
    assert _get_named(store, name) == (200, b"other-0other-1")
    deadline = time.monotonic() + 30
    while http("GET", store.url("dc1", first))[0] != 410:
        assert time.monotonic() < deadline, "the replaced blob was never deleted"
        time.sleep(0.05)
    # bad bodies are 400s
    for bad in (b"not json", b'{"chunkIds": []}', b'{"chunkIds": ["nope"]}'):
        status, _, _ = http("POST", store.url("dc1", f"/named/default/models/{name}-bad"),
                            bad, {**SERVICE, "x-ambry-named-upsert": "true"})
        assert status == 400, bad


def test_replacing_a_stitch_with_one_of_the_same_chunks_keeps_them(store):
    # the liar: the same chunks stitched in another order replace the name; deleting the
    # replaced blob must not delete the chunks the new one still lists
    name = unique("restitch")
    pieces = [data_of(100_000, "r0"), data_of(70_000, "r1")]
    ids = _chunks(store, pieces)
    status, headers, _ = _stitch(store, name, ids)
    assert status == 201
    old = headers["Location"]
    status, headers, _ = _stitch(store, name, list(reversed(ids)), upsert=True)
    assert status == 201 and headers["Location"] != old
    deadline = time.monotonic() + 30
    while http("GET", store.url("dc1", old))[0] != 410:
        assert time.monotonic() < deadline, "the replaced blob was never deleted"
        time.sleep(0.05)
    # chunk deletes run in the background after the composite's: delete a marker
    # composite now, and once its chunks are gone, those spawned before them are too
    marker = _chunks(store, [b"m0", b"m1"])
    status, headers, _ = http("POST", store.url("dc1", "/stitch"),
                              json.dumps({"chunkIds": marker}).encode(), {
                                  **SERVICE, "x-ambry-target-account-name": "default",
                                  "x-ambry-target-container-name": "models"})
    assert status == 201
    assert http("DELETE", store.url("dc1", headers["Location"]))[0] == 202
    while any(http("HEAD", store.url("dc1", f"/{m}"))[0] != 410 for m in marker):
        assert time.monotonic() < deadline + 30, "the marker's chunks were never deleted"
        time.sleep(0.05)
    for cid in ids:
        status, _, _ = http("HEAD", store.url("dc1", f"/{cid}"))
        assert status == 200, f"chunk {cid} was deleted with the replaced blob"
    assert _get_named(store, name) == (200, pieces[1] + pieces[0])


# ------------------------------------------------------------------ named uploads (SDK)
def test_a_large_named_put_is_parallel_chunks_stitched_into_the_name(client, events, tmp_path):
    src = tmp_path / "ckpt.bin"
    data = data_of(5 * CHUNK + 11, "named-big")
    src.write_bytes(data)
    name = unique("ckpt") + "/model.pt"
    blob_id = client.put_named(name, src, container="models")
    sent = chunk_posts(events)
    assert len(sent) == 6
    stitch = [e for e in events if e.method == "POST" and e.path.startswith("/named/")]
    assert len(stitch) == 1 and stitch[0].status == 201
    assert not [e for e in events if e.method == "PUT"], "a streamed PUT was sent"
    assert client.get_named_bytes(name, container="models") == data
    assert client.head_named(name, container="models").blob_id == blob_id
    # a taken name is refused before any chunk is sent
    events.clear()
    with pytest.raises(NameExists):
        client.put_named(name, src, container="models")
    assert not chunk_posts(events)


def test_a_named_upload_cut_by_a_dead_frontend_resumes(store, tmp_path):
    # the straggler: the frontend dies (kill -9) after some chunks; the same call, once it
    # is back, sends only the chunks that were not stored and stitches the name
    src = tmp_path / "ckpt.bin"
    data = data_of(10 * CHUNK + 3, "named-resume")
    src.write_bytes(data)
    name = unique("resume") + "/model.pt"
    resume_dir = tmp_path / "resume"
    fe = store.frontends["dc1"]
    seen: list[RequestEvent] = []

    def kill_after_three(e: RequestEvent) -> None:
        seen.append(e)
        if len(chunk_posts(seen)) == 3 and fe.running:
            fe.kill()

    kw: dict[str, Any] = {"part_size_bytes": CHUNK, "parallelism": 1,
                          "resume_dir": resume_dir, "progress": False}
    try:
        with Client(store.url("dc1", ""), on_request=kill_after_three,
                    retry=RetryPolicy(attempts=1), **kw) as c, \
                pytest.raises((ConnectionFailed, Unavailable)):
            c.put_named(name, src, container="models")
    finally:
        if not fe.running:
            fe.start().wait_ready()
    journal = next(resume_dir.glob("*.jsonl")).read_text().splitlines()
    stored = len(journal) - 1
    assert stored == 3
    again: list[RequestEvent] = []
    with Client(store.url("dc1", ""), on_request=again.append, **kw) as c:
        blob_id = c.put_named(name, src, container="models", progress=True)
        assert c.get_named_bytes(name, container="models") == data
        assert c.head_named(name, container="models").blob_id == blob_id
    assert len(chunk_posts(again)) == 11 - stored, "stored chunks were sent again"
    assert not list(resume_dir.glob("*.jsonl")), "the journal outlived the upload"


def test_a_named_upload_from_a_generator_keeps_memory_flat(client):
    import tracemalloc

    size = 24 * CHUNK
    piece = data_of(CHUNK // 2, "gen")

    def gen() -> Iterator[bytes]:
        for _ in range(size // len(piece)):
            yield piece

    name = unique("gen")
    tracemalloc.start()
    try:
        client.put_named(name, gen(), container="models")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # (parallelism + 2) parts in flight, whatever the size: far below the 24 MiB uploaded
    assert peak < 10 * CHUNK, peak
    assert client.head_named(name, container="models").size == size
