"""The fsspec filesystem (``ambry://``, ambry.client.fsspec) against a real 1-DC store started
once for this module: fsspec's own abstract test suite (copy, get, put, open, pipe) with
implied directories, then what pandas, zipfile and fsspec.open users rely on."""

from __future__ import annotations

import io
import random
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fsspec
import pytest
from fe_helpers import CHUNK, store_fixture
from fsspec.tests import abstract

from ambry.client import Client, Unavailable
from ambry.client.fsspec import AmbryFileSystem, AmbryReadFile
from ambry.testing.cluster import free_ports
from ambry.testing.frontend import StoreCluster


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("fsspec"), datacenters=1, nodes_per_dc=3,
                             partitions=4)


def make_fs(store: StoreCluster, **kw: Any) -> AmbryFileSystem:
    kw.setdefault("client_kwargs", {"part_size_bytes": CHUNK})
    return AmbryFileSystem(endpoint=store.url("dc1", ""), skip_instance_cache=True, **kw)


@pytest.fixture(scope="module")
def afs(store: StoreCluster) -> AmbryFileSystem:
    return make_fs(store)


@pytest.fixture
def root() -> str:
    """A fresh directory of the ``models`` container for one test."""
    return f"default/models/t-{uuid.uuid4().hex[:12]}"


def data_of(size: int, seed: str = "") -> bytes:
    return random.Random(f"{seed}-{size}").randbytes(size)


# ------------------------------------------------------------------ fsspec's abstract suite
class AmbryFixtures(abstract.AbstractFixtures):  # type: ignore[misc]
    """Wires fsspec's abstract tests to a store, as s3fs does: paths join with "/", every
    test gets its own directory, and directories are implied (no empty ones)."""

    @pytest.fixture
    def fs(self, afs: AmbryFileSystem) -> AmbryFileSystem:
        afs.invalidate_cache()
        return afs

    @pytest.fixture
    def fs_join(self) -> Any:
        return lambda *parts: "/".join(parts)

    @pytest.fixture
    def fs_path(self, root: str) -> str:
        return root

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False


class TestAmbryCopy(abstract.AbstractCopyTests, AmbryFixtures):  # type: ignore[misc]
    pass


class TestAmbryGet(abstract.AbstractGetTests, AmbryFixtures):  # type: ignore[misc]
    pass


class TestAmbryPut(abstract.AbstractPutTests, AmbryFixtures):  # type: ignore[misc]
    pass


class TestAmbryOpen(abstract.AbstractOpenTests, AmbryFixtures):  # type: ignore[misc]
    pass


class TestAmbryPipe(abstract.AbstractPipeTests, AmbryFixtures):  # type: ignore[misc]
    pass


# ------------------------------------------------------------------ ambry's own behaviour
def test_the_entry_point_registers_the_protocol(store, root, monkeypatch):
    assert fsspec.get_filesystem_class("ambry") is AmbryFileSystem
    monkeypatch.setenv("AMBRY_ENDPOINT", store.url("dc1", ""))
    with fsspec.open(f"ambry://{root}/hello.txt", "wt") as f:
        f.write("hello, fsspec\n")
    with fsspec.open(f"ambry://{root}/hello.txt", "rt") as f:
        assert f.read() == "hello, fsspec\n"
    fs, path = fsspec.core.url_to_fs(f"ambry://{root}/hello.txt", skip_instance_cache=True)
    assert isinstance(fs, AmbryFileSystem) and path == f"{root}/hello.txt"
    assert fs.client.endpoints == [store.url("dc1", "")]


def test_endpoints_fail_over_in_order(store, root):
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    fs = AmbryFileSystem(endpoints=[dead, store.url("dc1", "")], skip_instance_cache=True)
    fs.pipe(f"{root}/x", b"x")
    assert fs.cat(f"{root}/x") == b"x"
    down = AmbryFileSystem(endpoint=dead, skip_instance_cache=True,
                           client_kwargs={"retry": __import__("ambry.client").client.RetryPolicy(
                               attempts=2, base_delay_s=0.01)})
    with pytest.raises(Unavailable):
        down.exists(f"{root}/x")  # unreachable is not "does not exist"


def test_directories_are_implied_by_names(afs, root):
    afs.pipe({f"{root}/a/b/c.bin": b"abc", f"{root}/a/d.txt": b"d", f"{root}/a.txt": b"top"})
    # in name order ("a.txt" sorts before "a/b/c.bin")
    assert afs.ls(root, detail=False) == [f"{root}/a.txt", f"{root}/a"]
    listing = {e["name"]: e for e in afs.ls(f"{root}/a")}
    assert listing[f"{root}/a/b"]["type"] == "directory"
    d = listing[f"{root}/a/d.txt"]
    assert d["type"] == "file" and d["size"] == 1 and d["content_type"] == "text/plain"
    assert afs.isdir(f"{root}/a") and afs.isdir(f"{root}/a/b") and afs.isdir("default/models")
    assert afs.isfile(f"{root}/a/b/c.bin") and not afs.isdir(f"{root}/a/b/c.bin")
    assert not afs.exists(f"{root}/a/b/c") and not afs.exists(f"{root}/nothing")
    assert afs.find(root) == sorted([f"{root}/a/b/c.bin", f"{root}/a/d.txt", f"{root}/a.txt"])
    assert afs.find(root, maxdepth=1, withdirs=True) == [root, f"{root}/a", f"{root}/a.txt"]
    assert afs.find(root, maxdepth=2) == [f"{root}/a.txt", f"{root}/a/d.txt"]
    assert afs.du(root) == 7 and afs.du(root, total=False)[f"{root}/a.txt"] == 3
    assert sorted(afs.glob(f"{root}/**/*.txt")) == [f"{root}/a.txt", f"{root}/a/d.txt"]
    # mkdir is a no-op: a directory appears with its first name and goes with its last
    afs.makedirs(f"{root}/empty")
    afs.mkdir(f"{root}/empty/deeper")
    assert not afs.exists(f"{root}/empty")
    afs.rm(f"{root}/a", recursive=True)
    assert not afs.exists(f"{root}/a") and afs.ls(root, detail=False) == [f"{root}/a.txt"]
    with pytest.raises(FileNotFoundError):
        afs.ls(f"{root}/a")
    afs.rm(f"{root}/a/d.txt")  # deleted already: DELETE is idempotent, as in s3fs
    with pytest.raises(FileNotFoundError):
        afs.rm(f"{root}/never")
    with pytest.raises(FileNotFoundError):
        afs.rm(f"{root}/never", recursive=True)


def test_a_name_can_be_a_file_and_a_directory(afs, root):
    afs.pipe({f"{root}/x": b"file", f"{root}/x/y": b"below"})
    assert afs.info(f"{root}/x")["type"] == "file"  # as s3fs: the object wins
    assert afs.ls(f"{root}/x", detail=False) == [f"{root}/x/y"]
    assert afs.cat(f"{root}/x") == b"file"


def test_unknown_container_is_file_not_found(afs):
    for path in ("default/nosuch", "default/nosuch/x", "nobody/default/x"):
        assert not afs.exists(path)
        with pytest.raises(FileNotFoundError):
            afs.ls(path)
    with pytest.raises(FileNotFoundError):
        afs.cat("default/nosuch/x")


def test_cat_file_reads_only_the_range(afs, root):
    data = data_of(3 * CHUNK + 5)
    afs.pipe_file(f"{root}/big.bin", data)
    assert afs.cat_file(f"{root}/big.bin") == data
    for start, end in [(0, 10), (CHUNK - 3, CHUNK + 3), (-7, None), (5, -5), (None, 4),
                       (len(data) - 1, len(data) + 10), (10, 5), (len(data) + 1, None)]:
        assert afs.cat_file(f"{root}/big.bin", start=start, end=end) == data[start:end]
    assert afs.cat_ranges([f"{root}/big.bin"] * 2, [0, CHUNK], [3, CHUNK + 2]) == \
        [data[:3], data[CHUNK:CHUNK + 2]]
    assert afs.head(f"{root}/big.bin", 4) == data[:4]
    assert afs.tail(f"{root}/big.bin", 4) == data[-4:]


def test_open_read_is_a_seekable_range_reader(afs, root):
    buf = io.BytesIO()
    members = {f"m{i}.bin": data_of(200_000 + i, "zip") for i in range(8)}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for n, d in members.items():
            z.writestr(n, d)
    afs.pipe(f"{root}/archive.zip", buf.getvalue())
    with afs.open(f"{root}/archive.zip") as f:
        assert isinstance(f, AmbryReadFile) and f.size == len(buf.getvalue())
        assert f.path == f"{root}/archive.zip" and f.fs is afs
        with zipfile.ZipFile(f) as z:
            assert z.read("m6.bin") == members["m6.bin"]
        # the central directory and one member, not the whole archive
        assert f.bytes_requested < len(buf.getvalue()) // 2
    with pytest.raises(FileNotFoundError):
        afs.open(f"{root}/missing.zip")


def test_open_write_uploads_on_close_only(afs, root):
    path = f"{root}/ckpt.bin"
    data = data_of(2 * CHUNK + 1, "w")
    f = afs.open(path, "wb", spool_bytes=0)
    f.write(data[:100])
    f.seek(0)
    f.write(b"X" * 10)  # writers such as zipfile patch headers afterwards
    f.seek(100)
    f.write(data[100:])
    assert not afs.exists(path)
    f.close()
    assert afs.cat(path) == b"X" * 10 + data[10:]
    assert afs.info(path)["size"] == len(data)
    # overwrite (upsert), then "xb" refuses an existing name
    with afs.open(path, "wb") as f:
        f.write(b"v2")
    assert afs.cat(path) == b"v2"
    with pytest.raises(FileExistsError):
        afs.open(path, "xb")
    with pytest.raises(ValueError, match="immutable"):
        afs.open(path, "ab")


def test_a_write_interrupted_by_an_exception_uploads_nothing(afs, root):
    afs.pipe(f"{root}/good", b"good")
    with pytest.raises(RuntimeError), afs.open(f"{root}/good", "wb") as f:
        f.write(b"half a checkpoint")
        raise RuntimeError("training crashed")
    with pytest.raises(RuntimeError), afs.open(f"{root}/new", "wb") as f:
        f.write(b"x")
        raise RuntimeError
    assert afs.cat(f"{root}/good") == b"good" and not afs.exists(f"{root}/new")


def test_a_transaction_uploads_at_its_end(afs, root):
    with afs.transaction:
        with afs.open(f"{root}/t1", "wb") as f:
            f.write(b"one")
        assert not afs.exists(f"{root}/t1")
    assert afs.cat(f"{root}/t1") == b"one"


def test_cp_file_streams_a_multi_chunk_blob_with_its_properties(afs, store, root):
    data = data_of(3 * CHUNK + 7, "cp")
    with Client(store.url("dc1", ""), part_size_bytes=CHUNK, progress=False) as c:
        c.put_named(f"{root[len('default/models/'):]}/src.bin", data, container="models",
                    content_type="application/x-model", user_metadata={"step": "1000"})
        afs.cp_file(f"{root}/src.bin", f"{root}/copy/dst.bin")
        info = c.head_named(f"{root[len('default/models/'):]}/copy/dst.bin",
                            container="models")
    assert afs.cat(f"{root}/copy/dst.bin") == data
    assert info.content_type == "application/x-model" and info.user_metadata == {"step": "1000"}
    afs.cp(f"{root}/copy", "default/default/" + root.rsplit("/", 1)[1], recursive=True)
    assert afs.cat("default/default/" + root.rsplit("/", 1)[1] + "/dst.bin") == data


def test_put_get_file_report_progress(afs, root, tmp_path):
    data = data_of(CHUNK + 99, "pg")
    (tmp_path / "in.bin").write_bytes(data)
    sizes: list[int] = []
    cb = fsspec.callbacks.Callback(hooks={"h": lambda size, value, **_: sizes.append(value)})
    afs.put_file(str(tmp_path / "in.bin"), f"{root}/pg.bin", callback=cb)
    assert cb.size == len(data) and cb.value == len(data) and len(sizes) > 1
    afs.get_file(f"{root}/pg.bin", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == data
    out = io.BytesIO()
    afs.get_file(f"{root}/pg.bin", out)
    assert out.getvalue() == data


def test_timestamps_ukey_and_signed_url(afs, root):
    before = datetime.now(UTC).replace(microsecond=0)
    afs.pipe(f"{root}/ts", b"one")
    first = afs.ukey(f"{root}/ts")
    assert before.timestamp() - 1 <= afs.modified(f"{root}/ts").timestamp() \
        <= datetime.now(UTC).timestamp() + 1
    assert afs.created(f"{root}/ts") == afs.modified(f"{root}/ts")
    with urllib.request.urlopen(afs.sign(f"{root}/ts", expiration=60), timeout=10) as r:
        assert r.read() == b"one"
    afs.pipe(f"{root}/ts", b"two")
    assert afs.ukey(f"{root}/ts") != first  # a new blob behind the name
    afs.pipe(f"{root}/dir/f", b"")
    with pytest.raises(IsADirectoryError):
        afs.modified(f"{root}/dir")


def test_listings_are_cached_until_invalidated(afs, store, root):
    other = make_fs(store)
    afs.pipe(f"{root}/one", b"1")
    assert afs.ls(root, detail=False) == [f"{root}/one"]
    other.pipe(f"{root}/two", b"2")
    assert afs.ls(root, detail=False) == [f"{root}/one"]  # cached
    assert not afs.exists(f"{root}/two")                  # answered from the listing
    assert afs.ls(root, detail=False, refresh=True) == [f"{root}/one", f"{root}/two"]
    other.rm(f"{root}/two")
    afs.invalidate_cache(f"{root}/two")
    assert afs.ls(root, detail=False) == [f"{root}/one"]
    # writes through the same instance are seen at once
    afs.pipe(f"{root}/three", b"3")
    assert afs.ls(root, detail=False) == [f"{root}/one", f"{root}/three"]


def test_pandas_reads_and_writes_parquet(store, root):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    opts = {"endpoint": store.url("dc1", "")}
    df = pd.DataFrame({"step": range(5000), "loss": [1.0 / (i + 1) for i in range(5000)],
                       "tag": [f"run-{i % 7}" for i in range(5000)]})
    url = f"ambry://{root}/metrics.parquet"
    df.to_parquet(url, storage_options=opts, row_group_size=1000)
    back = pd.read_parquet(url, storage_options=opts)
    pd.testing.assert_frame_equal(back, df)
    cols = pd.read_parquet(url, storage_options=opts, columns=["loss"])
    assert list(cols.columns) == ["loss"] and len(cols) == 5000
    df.to_csv(f"ambry://{root}/metrics.csv", storage_options=opts, index=False)
    assert len(pd.read_csv(f"ambry://{root}/metrics.csv", storage_options=opts)) == 5000
