"""The Python SDK (ambry.client) against real processes: a 1-DC store (3 storage nodes, one
frontend) started once for this module, and a 2-DC store for failover, started only for the
tests that need it. Frontend chunks are 1 MiB here (TEST_FRONTEND), so a few MiB already
make parallel chunk uploads, composite blobs and parallel range downloads."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash
from fe_helpers import CHUNK, KIB, MIB, SERVICE, store_fixture

from ambry.client import (
    AsyncClient,
    BadRequest,
    BlobDeleted,
    BlobExpired,
    BlobInfo,
    BlobNotDeleted,
    BlobNotFound,
    Client,
    Conflict,
    Gone,
    IntegrityError,
    InvalidBlobId,
    NameExists,
    RequestEvent,
    RetryPolicy,
    TtlUpdateTooLate,
    Unauthorized,
)
from ambry.client._errors import error_from_reply
from ambry.common.blobid import new_blob_id
from ambry.testing.frontend import StoreCluster

SIZES = [0, 1, 4 * KIB, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("sdk"), datacenters=1, nodes_per_dc=3,
                             partitions=4)


@pytest.fixture(scope="module")
def store2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("sdk-2dc"), datacenters=2,
                             nodes_per_dc=3, partitions=4)


@pytest.fixture
def events() -> list[RequestEvent]:
    return []


@pytest.fixture
def client(store: StoreCluster, tmp_path: Path, events: list[RequestEvent]
           ) -> Iterator[Client]:
    with Client(store.url("dc1", ""), part_size_bytes=CHUNK, service_id="sdk-test",
                resume_dir=tmp_path / "resume", progress=False,
                on_request=events.append) as c:
        yield c


def data_of(size: int, seed: int | str = 0) -> bytes:
    return random.Random(f"{seed}-{size}").randbytes(size)


def metric(store: StoreCluster, name: str) -> float:
    with urllib.request.urlopen(store.url("dc1", "/metrics"), timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


POSTS_201 = 'ambry_frontend_requests_total{op="POST /",status="201"}'


def chunk_posts(events: list[RequestEvent]) -> list[RequestEvent]:
    return [e for e in events if e.method == "POST" and e.path == "/" and e.status == 201
            and e.headers.get("x-ambry-chunk-upload") == "true"]


# ------------------------------------------------------------------ round trips
def upload(client: Client, kind: str, data: bytes, tmp_path: Path, **kw) -> str:
    if kind == "bytes":
        return client.put(data, **kw)
    if kind == "path":
        p = tmp_path / "src.bin"
        p.write_bytes(data)
        return client.put(p, **kw)
    if kind == "file":
        return client.put(io.BytesIO(data), **kw)
    # an iterator of uneven pieces, none aligned with the parts
    return client.put((data[i:i + 300_001] for i in range(0, len(data), 300_001)), **kw)


@pytest.mark.parametrize("kind", ["bytes", "path", "file", "iterator"])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_every_size_class(client, tmp_path, kind, size):
    data = data_of(size, kind)
    blob_id = upload(client, kind, data, tmp_path, content_type="application/x-test",
                     user_metadata={"kind": kind})
    assert client.get_bytes(blob_id) == data
    info = client.download(blob_id, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".ambry-part")]
    with client.get(blob_id) as f:
        assert f.read() == data
    assert info.size == size and info.content_type == "application/x-test"
    assert info.user_metadata == {"kind": kind}
    # the xxh3 of the whole blob travels with it, however it was uploaded
    assert info.content_xxh3 == xxhash.xxh3_64_hexdigest(data)


def test_multi_chunk_uploads_are_parallel_chunks_plus_a_stitch(client, events, tmp_path):
    data = data_of(5 * CHUNK + 3)
    blob_id = client.put(data)
    chunks = chunk_posts(events)
    assert len(chunks) == 6
    assert all(int(e.headers["x-ambry-blob-size"]) <= CHUNK for e in chunks)
    assert [e.path for e in events if e.method == "POST"][-1] == "/stitch"
    events.clear()
    assert client.get_bytes(blob_id) == data
    # ranges of two chunks (the default range size is two parts), fetched in parallel: the
    # events come in completion order, so compare them in offset order
    ranges = sorted((e.headers["Range"] for e in events if e.method == "GET"),
                    key=lambda r: int(r.removeprefix("bytes=").split("-")[0]))
    assert ranges == [f"bytes=0-{2 * CHUNK - 1}", f"bytes={2 * CHUNK}-{4 * CHUNK - 1}",
                      f"bytes={4 * CHUNK}-{5 * CHUNK + 2}"]


async def test_async_client_round_trips(store, tmp_path):
    async def chunks(data: bytes):
        for i in range(0, len(data), 100_000):
            await asyncio.sleep(0)
            yield data[i:i + 100_000]

    async with AsyncClient(store.url("dc1", ""), part_size_bytes=CHUNK, progress=False,
                           resume_dir=tmp_path) as c:
        for size in (0, 10, 2 * CHUNK + 5):
            data = data_of(size, "async")
            blob_id = await c.put(chunks(data))
            assert await c.get_bytes(blob_id) == data
            async with await c.open(blob_id) as r:
                got = b"".join([piece async for piece in r])
            assert got == data
            assert (await c.head(blob_id)).size == size


def test_copy_a_blob_by_uploading_its_reader(client):
    # the sync reader is read on the client's I/O thread while the upload runs on its loop
    data = data_of(3 * CHUNK + 11, "copy")
    src = client.put(data)
    with client.open(src) as f:
        copy = client.put(f)
    assert copy != src and client.get_bytes(copy) == data


async def test_async_copy_through_an_async_reader(store, tmp_path):
    data = data_of(2 * CHUNK + 3, "acopy")
    async with AsyncClient(store.url("dc1", ""), part_size_bytes=CHUNK, progress=False,
                           resume_dir=tmp_path) as c:
        src = await c.put(data)
        async with await c.open(src) as r:
            copy = await c.put(r)
        assert await c.get_bytes(copy) == data


def test_properties_round_trip(client):
    blob_id = client.put(b"props", content_type="text/plain", ttl_s=3600,
                         user_metadata={"Run": "42", "note": "a b\tc"}, owner_id="alice",
                         filename="p.txt")
    for info in (client.head(blob_id), client.info(blob_id)):
        assert isinstance(info, BlobInfo) and info.blob_id == blob_id
        assert info.size == 5 and info.content_type == "text/plain"
        assert info.service_id == "sdk-test" and info.owner_id == "alice"
        assert info.filename == "p.txt" and info.ttl_s == 3600
        assert info.user_metadata == {"run": "42", "note": "a b\tc"}
        assert info.account == "default" and info.container == "default"
        assert abs(info.created.timestamp() - time.time()) < 60


def test_a_path_upload_names_the_file(client, tmp_path):
    p = tmp_path / "weights.bin"
    p.write_bytes(b"w" * 10)
    assert client.head(client.put(p)).filename == "weights.bin"


def test_a_frontend_with_smaller_chunks_makes_the_client_shrink_its_parts(store, tmp_path):
    # the client's default 4 MiB parts are too big for this store's 1 MiB chunks: the first
    # chunked upload learns that from the 413 and re-splits what it holds
    data = data_of(6 * MIB, "shrink")
    with Client(store.url("dc1", ""), resume_dir=tmp_path, progress=False) as c:
        assert c.part_size_bytes == 4 * MIB
        blob_id = c.put(iter([data]))
        assert c.part_size_bytes == CHUNK
        assert c.get_bytes(blob_id) == data


def test_sync_client_shared_by_threads(client):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            data = data_of(i * 50_000 + 1, "thread")
            assert client.get_bytes(client.put(data)) == data
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_progress_bar_when_asked(client, capsys):
    client.put(data_of(2 * CHUNK + 1), progress=True)
    assert "put blob" in capsys.readouterr().err


# ------------------------------------------------------------------ resumable uploads
UPLOADER = textwrap.dedent("""
    import sys, time
    from ambry.client import Client

    def slow(event):  # a slow link: every finished chunk takes a while
        if event.method == "POST" and event.status == 201:
            time.sleep(0.15)

    with Client(sys.argv[1], part_size_bytes=int(sys.argv[4]), parallelism=1,
                resume_dir=sys.argv[2], on_request=slow, progress=False) as c:
        print(c.put(sys.argv[3]), flush=True)
""")


def test_an_upload_killed_mid_way_resumes_without_resending_finished_chunks(
        store, client, events, tmp_path):
    src = tmp_path / "big.bin"
    data = data_of(24 * CHUNK + 5, "resume")
    src.write_bytes(data)
    parts = 25
    resume_dir = tmp_path / "resume"
    proc = subprocess.Popen([sys.executable, "-c", UPLOADER, store.url("dc1", ""),
                             str(resume_dir), str(src), str(CHUNK)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            journals = list(resume_dir.glob("*.jsonl")) if resume_dir.exists() else []
            if journals and len(journals[0].read_text().splitlines()) >= 1 + 5:
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the uploader made no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    finished = len(journals[0].read_text().splitlines()) - 1  # read once the writer is dead
    assert 5 <= finished < parts
    # a chunk the killed process had sent may still be completing: count the 201s once the
    # frontend serves nothing but this /metrics request (before: a fixed 0.5 s, and on a busy
    # machine a chunk finishing later was counted as sent again by the resumed upload)
    deadline = time.monotonic() + 30
    while metric(store, "ambry_frontend_inflight_requests") > 1:
        assert time.monotonic() < deadline, "the killed upload's requests never finished"
        time.sleep(0.05)
    posts_before = metric(store, POSTS_201)

    blob_id = client.put(src)

    sent = chunk_posts(events)
    assert len(sent) == parts - finished, "finished chunks were sent again"
    assert metric(store, POSTS_201) - posts_before == parts - finished  # the frontend agrees
    assert min(int(e.headers["x-ambry-blob-size"]) for e in sent) in (5, CHUNK)
    assert client.get_bytes(blob_id) == data
    assert not list(resume_dir.glob("*.jsonl")), "the journal outlived the upload"


def test_an_upload_that_failed_after_some_chunks_resumes(store, tmp_path):
    src = tmp_path / "f.bin"
    data = data_of(8 * CHUNK, "fail")
    src.write_bytes(data)
    seen: list[RequestEvent] = []

    def fail_after_three(e: RequestEvent) -> None:
        seen.append(e)
        if len(chunk_posts(seen)) == 3:
            raise ConnectionResetError("injected: the network went away")

    kw = {"part_size_bytes": CHUNK, "parallelism": 1, "resume_dir": tmp_path / "r",
          "progress": False}
    with Client(store.url("dc1", ""), on_request=fail_after_three,
                retry=RetryPolicy(attempts=1), **kw) as c, \
            pytest.raises(Exception, match="injected|network"):
        c.put(src)
    again: list[RequestEvent] = []
    with Client(store.url("dc1", ""), on_request=again.append, **kw) as c:
        blob_id = c.put(src)
        assert c.get_bytes(blob_id) == data
    # two chunks were journaled; the third was stored but its reply "lost": sent again
    assert len(chunk_posts(again)) == 8 - 2


def test_a_changed_file_is_uploaded_afresh(client, events, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(data_of(3 * CHUNK, "v1"))
    client.put(src)
    v2 = data_of(3 * CHUNK, "v2")
    src.write_bytes(v2)
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    events.clear()
    blob_id = client.put(src)
    assert len(chunk_posts(events)) == 3 and client.get_bytes(blob_id) == v2


def test_a_resume_whose_chunks_are_gone_starts_over(client, events, tmp_path):
    # the chunks of an old try were deleted (or expired): the stitch refuses them and the
    # client uploads everything again instead of failing
    src = tmp_path / "f.bin"
    data = data_of(4 * CHUNK, "stale")
    src.write_bytes(data)
    seen: list[RequestEvent] = []

    def fail_on_stitch(e: RequestEvent) -> None:
        seen.append(e)
        if e.path == "/stitch":
            raise ConnectionResetError("injected before the stitch")

    with Client(client.endpoints, on_request=fail_on_stitch, part_size_bytes=CHUNK,
                resume_dir=tmp_path / "resume", progress=False,
                retry=RetryPolicy(attempts=1)) as c, pytest.raises(Exception, match="injected"):
        c.put(src)
    assert len(chunk_posts(seen)) == 4
    journal = next((tmp_path / "resume").glob("*.jsonl")).read_text().splitlines()[1:]
    for line in journal:
        client.delete(json.loads(line)["id"])
    events.clear()
    blob_id = client.put(src)
    assert client.get_bytes(blob_id) == data
    assert len(chunk_posts(events)) == 4  # every chunk again, after one refused stitch


# ------------------------------------------------------------------ seekable readers
def test_zipfile_reads_one_member_without_downloading_the_archive(client):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("big1.bin", data_of(4 * MIB, "z1"))
        z.writestr("small.txt", b"the member we want")
        z.writestr("big2.bin", data_of(4 * MIB, "z2"))
    archive = buf.getvalue()
    blob_id = client.put(archive, content_type="application/zip")
    with client.open(blob_id) as f, zipfile.ZipFile(f) as z:
        assert z.namelist() == ["big1.bin", "small.txt", "big2.bin"]
        assert z.read("small.txt") == b"the member we want"
        assert f.bytes_requested < len(archive) // 10, f.bytes_requested
    with client.open(blob_id) as f, zipfile.ZipFile(f) as z:
        assert z.read("big2.bin") == data_of(4 * MIB, "z2")  # and a large member in full


def test_tarfile_seeks_to_a_member(client):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in [("a.bin", data_of(3 * MIB, "ta")), ("b.txt", b"bee")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    blob_id = client.put(buf.getvalue())
    with client.open(blob_id) as f, tarfile.open(fileobj=f, mode="r:") as t:
        member = t.getmember("b.txt")
        assert t.extractfile(member).read() == b"bee"  # type: ignore[union-attr]
        assert f.bytes_requested < MIB


def test_numpy_load_from_a_reader(client):
    np = pytest.importorskip("numpy")
    arr = np.arange(1_000_000, dtype=np.float64)
    buf = io.BytesIO()
    np.save(buf, arr)
    with client.open(client.put(buf.getvalue())) as f:
        assert np.array_equal(np.load(f), arr)
    npz = io.BytesIO()
    np.savez(npz, big=arr, small=np.array([1, 2, 3]))
    with client.open(client.put(npz.getvalue())) as f:
        with np.load(f) as z:
            assert list(z["small"]) == [1, 2, 3]
        assert f.bytes_requested < len(npz.getvalue()) // 10


def test_reader_seeks_and_reads_like_a_file(client):
    data = data_of(3 * CHUNK + 100, "seek")
    with client.open(client.put(data)) as f:
        assert f.seekable() and f.size == len(data)
        f.seek(-10, io.SEEK_END)
        assert f.read() == data[-10:]
        f.seek(CHUNK - 5)
        assert f.read(10) == data[CHUNK - 5:CHUNK + 5]
        assert f.tell() == CHUNK + 5
        f.seek(len(data) + 10)
        assert f.read(5) == b""
        f.seek(0)
        assert f.readline() == data[:data.index(b"\n") + 1]


def test_a_reader_verifies_the_whole_blob_when_read_through(client, store):
    # a blob whose stored xxh3 does not match its bytes (as if damaged on the way in)
    bad = {**SERVICE, "x-ambry-um-ambry-content-xxh3": "0123456789abcdef"}
    req = urllib.request.Request(store.url("dc1", "/"), data=b"x" * 3 * CHUNK, headers=bad,
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        blob_id = r.headers["Location"][1:]
    with client.open(blob_id) as f:
        assert f.read(100) == b"x" * 100
        with pytest.raises(IntegrityError):
            f.read()
    with pytest.raises(IntegrityError):
        client.get_bytes(blob_id)
    with pytest.raises(IntegrityError):
        client.download(blob_id, store.root / "never.bin")
    assert not (store.root / "never.bin").exists()


# ------------------------------------------------------------------ named blobs
def test_named_blobs(client, tmp_path):
    blob_id = client.put_named("runs/1/model.pt", b"v1", container="models")
    assert client.get_named_bytes("runs/1/model.pt", container="models") == b"v1"
    with pytest.raises(NameExists):
        client.put_named("runs/1/model.pt", b"v2", container="models")
    new_id = client.put_named("runs/1/model.pt", b"v2", container="models", upsert=True)
    assert new_id != blob_id
    info = client.head_named("runs/1/model.pt", container="models")
    assert info.blob_id == new_id and info.size == 2
    with client.open_named("runs/1/model.pt", container="models") as f:
        assert f.read() == b"v2" and f.blob_id == new_id
    client.download_named("runs/1/model.pt", tmp_path / "m.pt", container="models")
    assert (tmp_path / "m.pt").read_bytes() == b"v2"
    client.delete_named("runs/1/model.pt", container="models")
    with pytest.raises(BlobDeleted):  # as for ids: a deleted name is 410, not 404
        client.get_named_bytes("runs/1/model.pt", container="models")


def test_named_blob_names_with_odd_characters(client):
    for name in ["a b/c d.txt", "percent%20sign", "q?uery#frag", "ünï/cödé", "x+y=z&w"]:
        client.put_named(name, name.encode(), upsert=True)
        assert client.get_named_bytes(name) == name.encode()
    names = {e.name for e in client.list_named()}
    assert {"a b/c d.txt", "percent%20sign", "q?uery#frag", "ünï/cödé"} <= names


def test_list_named_iterates_every_page(client):
    for i in range(7):
        client.put_named(f"list/{i:02d}", bytes([i]) * (i + 1), upsert=True)
    entries = list(client.list_named("list/", page_size=2))
    assert [e.name for e in entries] == [f"list/{i:02d}" for i in range(7)]
    assert [e.size for e in entries] == list(range(1, 8))
    assert all(len(e.blob_id) == 43 for e in entries)


@pytest.mark.parametrize("kind", ["path", "iterator"])
def test_large_named_puts_are_chunks_stitched_into_the_name(client, tmp_path, kind):
    data = data_of(3 * CHUNK + 7, kind)
    src = tmp_path / "n.bin"
    src.write_bytes(data)
    body = src if kind == "path" else iter([data[:CHUNK + 1], data[CHUNK + 1:]])
    blob_id = client.put_named(f"large/{kind}", body, upsert=True)
    assert client.get_named_bytes(f"large/{kind}") == data
    info = client.head(blob_id)
    assert info.size == len(data)
    # chunks are hashed as they are read, so the stitched blob carries the xxh3 of either
    # (a streamed PUT only knew it for a path, which could be read twice)
    assert info.content_xxh3 == xxhash.xxh3_64_hexdigest(data)


def test_a_large_named_put_onto_a_taken_name_is_a_conflict(client, tmp_path):
    # the frontend answers 409 before it reads the streamed body
    client.put_named("taken/big", b"first", upsert=True)
    src = tmp_path / "big.bin"
    src.write_bytes(data_of(3 * CHUNK, "taken"))
    for body in (src, iter([data_of(3 * CHUNK, "taken")])):
        with pytest.raises(NameExists):
            client.put_named("taken/big", body)
    assert client.get_named_bytes("taken/big") == b"first"


# ------------------------------------------------------------------ lifecycle
def test_delete_undelete_and_update_ttl(client):
    blob_id = client.put(b"life", ttl_s=3600)
    client.delete(blob_id)
    client.delete(blob_id)  # again: still fine
    with pytest.raises(BlobDeleted):
        client.get_bytes(blob_id)
    assert client.get_bytes(blob_id, include_deleted=True) == b"life"
    assert client.head(blob_id, include_deleted=True).deleted
    client.undelete(blob_id)
    assert client.get_bytes(blob_id) == b"life"
    with pytest.raises(BlobNotDeleted):
        client.undelete(blob_id)
    client.update_ttl(blob_id)
    assert client.head(blob_id).ttl_s is None


def test_signed_urls(client):
    blob_id = client.put(b"signed")
    url = client.signed_url("GET", blob_id, expires_in_s=60)
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"signed"
    post = client.signed_url("POST", content_type="text/plain", user_metadata={"via": "url"})
    with urllib.request.urlopen(urllib.request.Request(post, data=b"posted", method="POST"),
                                timeout=10) as r:
        new_id = r.headers["Location"][1:]
    assert client.get_bytes(new_id) == b"posted"
    assert client.head(new_id).user_metadata == {"via": "url"}


# ------------------------------------------------------------------ typed errors
def test_typed_errors(client):
    never = new_blob_id(1, 1, 1, 1).to_str()
    with pytest.raises(BlobNotFound) as nf:
        client.get_bytes(never)
    assert nf.value.status == 404 and nf.value.request_id
    with pytest.raises(BlobNotFound):
        client.head(never)
    with pytest.raises(BlobNotFound):
        client.open(never)
    with pytest.raises(InvalidBlobId):  # decodes to nothing: the frontend says 400
        client.get_bytes("A" * 43)
    with pytest.raises(BadRequest):
        client.head("not-an-id")
    with pytest.raises(InvalidBlobId):  # not even a path segment: refused before sending
        client.get_bytes("../healthCheck")
    with pytest.raises(BlobNotDeleted) as conflict:
        client.undelete(client.put(b"live"))
    assert isinstance(conflict.value, Conflict) and conflict.value.status == 409
    doomed = client.put(b"soon gone", ttl_s=1)
    with pytest.raises(TtlUpdateTooLate):  # within ttl_update_buffer_s (1 s) of expiry
        client.update_ttl(doomed)
    time.sleep(1.2)
    with pytest.raises(BlobExpired) as gone:
        client.get_bytes(doomed)
    assert isinstance(gone.value, Gone)


def test_a_tampered_signed_url_is_refused_with_the_unauthorized_code(client):
    # the SDK does not send signed URLs itself (any HTTP client does); its one error table
    # still turns the frontend's answer into Unauthorized
    url = client.signed_url("GET", client.put(b"s"), expires_in_s=60)
    bad = url.replace("x-ambry-expires=", "x-ambry-expires=9")
    with pytest.raises(urllib.error.HTTPError) as reply:
        urllib.request.urlopen(bad, timeout=10)
    err = error_from_reply(reply.value.code, reply.value.headers, reply.value.read().decode())
    assert isinstance(err, Unauthorized) and err.status == 401


# ------------------------------------------------------------------ failover (2 DCs)
def test_failover_to_the_second_datacenter_when_the_first_frontend_dies(store2, tmp_path):
    events: list[RequestEvent] = []
    dc1, dc2 = store2.url("dc1", ""), store2.url("dc2", "")
    with Client([dc1, dc2], part_size_bytes=CHUNK, resume_dir=tmp_path, progress=False,
                on_request=events.append) as c:
        small, large = data_of(1000, "fo"), data_of(3 * CHUNK + 1, "fo")
        ids = [c.put(small), c.put(large)]
        assert {e.endpoint for e in events} == {dc1}
        store2.frontends["dc1"].kill()
        try:
            events.clear()
            # blobs written in dc1 are read through dc2 (which asks dc1's storage nodes)
            assert c.get_bytes(ids[0]) == small
            assert c.get_bytes(ids[1]) == large
            assert events[0].endpoint == dc1 and events[0].status == 0
            assert events[1].endpoint == dc2
            # and new writes go to dc2, chunked ones included; dc1 is now skipped at once
            events.clear()
            new_small, new_large = c.put(small), c.put(large)
            assert {e.endpoint for e in events} == {dc2}
            assert c.get_bytes(new_small) == small and c.get_bytes(new_large) == large
            with c.open(new_large) as f:
                f.seek(CHUNK)
                assert f.read(10) == large[CHUNK:CHUNK + 10]
        finally:
            store2.frontends["dc1"].start()
            store2.frontends["dc1"].wait_ready()
