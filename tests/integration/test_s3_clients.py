"""Other S3 tools, unchanged, against a real store (started once for this module): s3fs
(fsspec, over aiobotocore), minio-py (a second, independent SigV4 client) and MLflow logging
and downloading artifacts with ``MLFLOW_S3_ENDPOINT_URL`` pointed at the store."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fe_helpers import store_fixture
from s3_helpers import KEYS, get_url, s3_client

from ambry.testing.frontend import TEST_S3, StoreCluster

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    # anonymous requests act (read-only) as the "team" account in this store
    yield from store_fixture(tmp_path_factory.mktemp("s3-clients"), datacenters=1,
                             nodes_per_dc=3, partitions=4,
                             extra={"s3": {**TEST_S3, "anonymous_account": "team"}})


# ------------------------------------------------------------------ s3fs
@pytest.fixture
def fs(store: StoreCluster) -> Any:
    import s3fs

    ak, sk = KEYS["default"]
    return s3fs.S3FileSystem(key=ak, secret=sk, endpoint_url=store.s3_url(),
                             client_kwargs={"region_name": "us-east-1"},
                             skip_instance_cache=True, use_listings_cache=False)


def test_s3fs_files_and_directories(fs: Any, tmp_path: Path) -> None:
    fs.mkdir("fsspec-bucket")
    assert fs.exists("fsspec-bucket")
    fs.pipe("fsspec-bucket/data/a.txt", b"alpha")
    fs.pipe({"fsspec-bucket/data/sub/b.txt": b"beta", "fsspec-bucket/data/c.txt": b"gamma"})
    assert fs.cat("fsspec-bucket/data/a.txt") == b"alpha"
    assert sorted(fs.ls("fsspec-bucket/data", detail=False)) == [
        "fsspec-bucket/data/a.txt", "fsspec-bucket/data/c.txt", "fsspec-bucket/data/sub"]
    assert fs.find("fsspec-bucket/data") == [
        "fsspec-bucket/data/a.txt", "fsspec-bucket/data/c.txt", "fsspec-bucket/data/sub/b.txt"]
    info = fs.info("fsspec-bucket/data/a.txt")
    assert info["size"] == 5 and info["type"] == "file"
    assert fs.info("fsspec-bucket/data/sub")["type"] == "directory"
    assert fs.du("fsspec-bucket/data") == 14
    # put / get of a local tree
    (tmp_path / "up" / "deep").mkdir(parents=True)
    (tmp_path / "up" / "x.bin").write_bytes(b"x" * 1000)
    (tmp_path / "up" / "deep" / "y.bin").write_bytes(b"y" * 2000)
    fs.put(str(tmp_path / "up"), "fsspec-bucket/tree", recursive=True)
    fs.get("fsspec-bucket/tree", str(tmp_path / "down"), recursive=True)
    assert (tmp_path / "down" / "deep" / "y.bin").read_bytes() == b"y" * 2000
    fs.copy("fsspec-bucket/data/a.txt", "fsspec-bucket/copied.txt")
    assert fs.cat("fsspec-bucket/copied.txt") == b"alpha"
    fs.rm("fsspec-bucket/data", recursive=True)
    assert not fs.exists("fsspec-bucket/data/a.txt")


def test_s3fs_multipart_write_and_random_reads(fs: Any) -> None:
    fs.mkdir("fsspec-big")
    data = os.urandom(12 * MIB + 5)
    with fs.open("fsspec-big/blob.bin", "wb", block_size=5 * MIB) as f:  # 3 parts
        for i in range(0, len(data), 1_000_000):
            f.write(data[i:i + 1_000_000])
    assert fs.info("fsspec-big/blob.bin")["size"] == len(data)
    with fs.open("fsspec-big/blob.bin", "rb", block_size=MIB) as f:
        f.seek(7 * MIB - 3)
        assert f.read(10) == data[7 * MIB - 3:7 * MIB + 7]
        f.seek(-5, 2)
        assert f.read() == data[-5:]
    assert hashlib.sha256(fs.cat("fsspec-big/blob.bin")).digest() == \
        hashlib.sha256(data).digest()


# ------------------------------------------------------------------ minio-py
@pytest.fixture
def mc(store: StoreCluster) -> Any:
    from minio import Minio

    ak, sk = KEYS["default"]
    return Minio(urlsplit(store.s3_url()).netloc, access_key=ak, secret_key=sk, secure=False,
                 region="us-east-1")


def test_minio_client(mc: Any, tmp_path: Path) -> None:
    from minio.commonconfig import CopySource
    from minio.deleteobjects import DeleteObject
    from minio.error import S3Error

    mc.make_bucket("minio-bucket")
    assert mc.bucket_exists("minio-bucket") and not mc.bucket_exists("nope-bucket")
    mc.put_object("minio-bucket", "m/one.txt", io.BytesIO(b"one"), 3,
                  content_type="text/plain", metadata={"x-amz-meta-k": "v"})
    st = mc.stat_object("minio-bucket", "m/one.txt")
    assert (st.size, st.content_type, st.etag) == (3, "text/plain",
                                                   hashlib.md5(b"one").hexdigest())
    assert st.metadata["x-amz-meta-k"] == "v"
    r = mc.get_object("minio-bucket", "m/one.txt")
    try:
        assert r.read() == b"one"
    finally:
        r.close()
        r.release_conn()
    # a stream of unknown length: minio-py uploads it as a multipart upload
    data = os.urandom(11 * MIB)
    mc.put_object("minio-bucket", "m/stream.bin", io.BytesIO(data), -1, part_size=5 * MIB)
    assert mc.stat_object("minio-bucket", "m/stream.bin").etag.endswith("-3")
    mc.fget_object("minio-bucket", "m/stream.bin", str(tmp_path / "s.bin"))
    assert (tmp_path / "s.bin").read_bytes() == data
    part = mc.get_object("minio-bucket", "m/stream.bin", offset=5 * MIB - 2, length=4)
    try:
        assert part.read() == data[5 * MIB - 2:5 * MIB + 2]
    finally:
        part.close()
        part.release_conn()
    mc.copy_object("minio-bucket", "m/two.txt", CopySource("minio-bucket", "m/one.txt"))
    names = [o.object_name for o in mc.list_objects("minio-bucket", prefix="m/",
                                                    recursive=True)]
    assert names == ["m/one.txt", "m/stream.bin", "m/two.txt"]
    assert [o.object_name for o in mc.list_objects("minio-bucket")] == ["m/"]
    url = mc.presigned_get_object("minio-bucket", "m/one.txt", expires=timedelta(minutes=5))
    assert get_url(url).expect(200).body == b"one"
    errors = list(mc.remove_objects("minio-bucket", [DeleteObject(n) for n in names]))
    assert errors == []
    with pytest.raises(S3Error) as e:
        mc.stat_object("minio-bucket", "m/one.txt")
    assert e.value.code in ("NoSuchKey", "ResponseError") or e.value.response.status == 404
    mc.remove_bucket("minio-bucket")
    assert not mc.bucket_exists("minio-bucket")


# ------------------------------------------------------------------ MLflow
def test_mlflow_logs_and_downloads_artifacts(store: StoreCluster, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ak, sk = KEYS["default"]
    s3_client(store).create_bucket(Bucket="mlflow-artifacts")
    for k, v in {"MLFLOW_S3_ENDPOINT_URL": store.s3_url(), "AWS_ACCESS_KEY_ID": ak,
                 "AWS_SECRET_ACCESS_KEY": sk, "AWS_DEFAULT_REGION": "us-east-1",
                 "MLFLOW_ALLOW_FILE_STORE": "true"}.items():
        monkeypatch.setenv(k, v)
    import mlflow

    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    exp = mlflow.create_experiment("s3-test", artifact_location="s3://mlflow-artifacts/exp")
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(9 * MIB))  # over boto3's 8 MiB multipart threshold
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "params.yaml").write_text("lr: 0.1\n")
    (tmp_path / "cfg" / "notes.txt").write_text("notes\n")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_param("lr", 0.1)
        mlflow.log_artifact(str(model), artifact_path="weights")
        mlflow.log_artifacts(str(tmp_path / "cfg"), artifact_path="config")
        mlflow.log_text("hello from mlflow", "notes/hello.txt")
    run_id = run.info.run_id
    listed = {a.path for a in mlflow.artifacts.list_artifacts(run_id=run_id)}
    assert listed == {"weights", "config", "notes"}
    out = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "dl"))
    assert (Path(out) / "weights" / "model.bin").read_bytes() == model.read_bytes()
    assert (Path(out) / "config" / "params.yaml").read_text() == "lr: 0.1\n"
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/hello.txt") == \
        "hello from mlflow"
    keys = [o["Key"] for o in s3_client(store).list_objects_v2(
        Bucket="mlflow-artifacts", Prefix="exp/")["Contents"]]
    assert f"exp/{run_id}/artifacts/weights/model.bin" in keys


# ------------------------------------------------------------------ anonymous access
def test_anonymous_access_is_read_only_as_the_configured_account(store: StoreCluster) -> None:
    team = s3_client(store, account="team")
    team.create_bucket(Bucket="public-data")
    team.put_object(Bucket="public-data", Key="readme.txt", Body=b"open to all")
    base = store.s3_url()
    assert get_url(f"{base}/public-data/readme.txt").expect(200).body == b"open to all"
    assert b"readme.txt" in get_url(f"{base}/public-data?list-type=2").expect(200).body
    for method in ("PUT", "DELETE"):
        r = get_url(f"{base}/public-data/readme.txt", method=method, body=b"x")
        assert (r.status, r.code) == (403, "AccessDenied")
    # buckets of other accounts are not the anonymous account's
    s3_client(store).create_bucket(Bucket="private-data")
    assert get_url(f"{base}/private-data?list-type=2").status == 404
