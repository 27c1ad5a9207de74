"""S3 across two datacenters (a real store: 3 storage nodes and a frontend per datacenter,
replication on): a bucket made in dc1 exists in dc2, and two datacenters creating the same
bucket at once end up with one bucket holding the objects written through either."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from fe_helpers import store_fixture
from s3_helpers import eventually, s3_client

from ambry.testing.frontend import StoreCluster


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("s3-2dc"), datacenters=2,
                             nodes_per_dc=3, partitions=4)



def test_a_bucket_made_in_dc1_exists_in_dc2(store: StoreCluster) -> None:
    dc1, dc2 = s3_client(store, "dc1"), s3_client(store, "dc2")
    dc1.create_bucket(Bucket="made-in-dc1")
    dc1.put_object(Bucket="made-in-dc1", Key="from/dc1", Body=b"written in dc1")

    def visible_in_dc2() -> None:
        assert dc2.head_bucket(Bucket="made-in-dc1")["ResponseMetadata"][
            "HTTPStatusCode"] == 200
        assert dc2.get_object(Bucket="made-in-dc1", Key="from/dc1")["Body"].read() == \
            b"written in dc1"

    eventually(visible_in_dc2)
    assert "made-in-dc1" in [b["Name"] for b in dc2.list_buckets()["Buckets"]]
    dc2.create_bucket(Bucket="made-in-dc1")  # it exists there: 200 in us-east-1, as AWS ...
    assert [b["Name"] for b in dc2.list_buckets()["Buckets"]].count("made-in-dc1") == 1
    assert _keys(dc2, "made-in-dc1") == ["from/dc1"]  # ... and still the one bucket
    dc2.put_object(Bucket="made-in-dc1", Key="from/dc2", Body=b"written in dc2")
    eventually(lambda: _keys(dc1, "made-in-dc1") == ["from/dc1", "from/dc2"])
    # deleted through dc2 once empty: gone in dc1 as well
    dc2.delete_objects(Bucket="made-in-dc1", Delete={"Objects": [{"Key": "from/dc1"},
                                                                 {"Key": "from/dc2"}]})
    eventually(lambda: _keys(dc2, "made-in-dc1") == [])
    dc2.delete_bucket(Bucket="made-in-dc1")

    def gone_in_dc1() -> None:
        assert "made-in-dc1" not in [b["Name"] for b in dc1.list_buckets()["Buckets"]]

    eventually(gone_in_dc1)


def _keys(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_the_same_bucket_created_in_both_datacenters_at_once(store: StoreCluster) -> None:
    dc1, dc2 = s3_client(store, "dc1"), s3_client(store, "dc2")

    def create(client: Any) -> str:
        try:
            client.create_bucket(Bucket="raced")
            return "created"
        except ClientError as e:
            return str(e.response["Error"]["Code"])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(create, [dc1, dc2]))
    assert "created" in results and set(results) <= {"created", "BucketAlreadyOwnedByYou"}
    # each datacenter writes into the bucket it sees right now
    dc1.put_object(Bucket="raced", Key="one", Body=b"1")
    dc2.put_object(Bucket="raced", Key="two", Body=b"2")

    def converged() -> None:
        # one bucket, with one creation date and both objects, seen from either side
        dates = {c.list_buckets()["Buckets"][_index(c, "raced")]["CreationDate"]
                 for c in (dc1, dc2)}
        assert len(dates) == 1
        assert _keys(dc1, "raced") == _keys(dc2, "raced") == ["one", "two"]

    eventually(converged)


def _index(client: Any, name: str) -> int:
    return [b["Name"] for b in client.list_buckets()["Buckets"]].index(name)
