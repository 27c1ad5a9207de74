"""Two datacenters (3 storage nodes and a frontend each), started once for this module, with
replication switched off: a blob lives only in the datacenter that took its PUT (its origin),
and every other frontend reaches it through the router's fall-through to the origin DC. Reads,
deletes, TTL updates and undeletes through the other DC; 404 only when the origin says so;
the origin DC down gives 503, never a false 404."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fe_helpers import (
    CHUNK,
    SERVICE,
    blob_bytes,
    call,
    node_records,
    post_blob,
    store_fixture,
    until,
)

from ambry.common.blobid import BlobType, new_blob_id
from ambry.testing.frontend import StoreCluster


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    # Replication off: these tests are about the router reaching the origin DC, which must
    # work before a blob has been replicated (and when it never will be).
    yield from store_fixture(tmp_path_factory.mktemp("fe-2dc"), datacenters=2,
                             nodes_per_dc=3, partitions=4,
                             extra={"replication": {"enabled": False}})


@pytest.fixture
def dc1(store: StoreCluster) -> str:
    return store.url("dc1", "")


@pytest.fixture
def dc2(store: StoreCluster) -> str:
    return store.url("dc2", "")


@pytest.mark.parametrize("size", [1000, 2 * CHUNK + 5], ids=["simple", "composite"])
@pytest.mark.parametrize("origin", ["dc1", "dc2"])
async def test_blob_is_readable_through_the_other_datacenter(http, store, size, origin):
    other = "dc2" if origin == "dc1" else "dc1"
    data = blob_bytes(size, f"x-dc-{origin}-{size}")
    bid = await post_blob(http, store.url(origin, ""), data, {"x-ambry-um-from": origin})
    url = store.url(other, f"/{bid}")
    got = (await call(http, "GET", url)).expect(200)
    assert got.body == data and got.headers["x-ambry-um-from"] == origin
    head = (await call(http, "HEAD", url)).expect(200)
    assert head.headers["Content-Length"] == str(size)
    info = (await call(http, "GET", url + "/BlobInfo")).expect(200)
    assert info.headers["x-ambry-blob-size"] == str(size)
    start = CHUNK - 3 if size > CHUNK else 10
    r = (await call(http, "GET", url, {"Range": f"bytes={start}-{start + 5}"})).expect(206)
    assert r.body == data[start:start + 6]


async def test_ids_that_never_existed_are_404_from_either_datacenter(http, dc1, dc2):
    # 404 needs every replica of the origin DC to say not-found, wherever the frontend is
    for origin_dc in (1, 2):
        bid = new_blob_id(origin_dc, 1, 1, 2).to_str()
        for base in (dc1, dc2):
            assert (await call(http, "GET", f"{base}/{bid}")).status == 404
            assert (await call(http, "DELETE", f"{base}/{bid}")).status == 404
    composite = new_blob_id(1, 1, 1, 3, BlobType.METADATA).to_str()
    assert (await call(http, "GET", f"{dc2}/{composite}")).status == 404


async def on_every_origin_replica(store: StoreCluster, bid: str, record: str) -> None:
    """Until every dc1 replica of ``bid`` holds a ``record`` (PUT, DELETE) for it. A write is
    acknowledged at 2 of 3 replicas; the 3rd one's may still be in flight, and with
    replication off here nothing else brings it."""
    async def there() -> bool:
        recs = await node_records(store, "dc1")
        return all(record in recs.get((n.node_id, bid), set()) for n in store.nodes_in("dc1"))

    await until(there, what=f"{record} of {bid} on every dc1 replica")


async def test_delete_through_the_other_datacenter(http, store, dc1, dc2):
    before = await node_records(store, "dc1")
    for size in (500, 2 * CHUNK + 1):
        bid = await post_blob(http, dc1, blob_bytes(size, "del-x"))
        # the PUT on all 3 origin replicas first: before, the 3rd one's PUT (still in flight
        # after the 201) could land after the DELETE had found nothing there, and a GET in dc1
        # then read the blob from it (200, not 410) whenever the PUT was slow
        await on_every_origin_replica(store, bid, "PUT")
        (await call(http, "DELETE", f"{dc2}/{bid}")).expect(202)
        assert (await call(http, "GET", f"{dc1}/{bid}")).status == 410
        assert (await call(http, "GET", f"{dc2}/{bid}")).status == 410
        (await call(http, "DELETE", f"{dc2}/{bid}")).expect(202)  # deleted already: 202
        (await call(http, "DELETE", f"{dc1}/{bid}")).expect(202)

    # the composite's chunks, which live only in dc1, are deleted there too
    async def all_deleted() -> bool:
        new = {k: v for k, v in (await node_records(store, "dc1")).items() if k not in before}
        assert new
        return all("DELETE" in kinds for kinds in new.values())

    await until(all_deleted, what="the composite's chunks deleted in their origin DC")


async def test_ttl_update_through_the_other_datacenter(http, dc1, dc2):
    for size in (300, 2 * CHUNK + 7):
        data = blob_bytes(size, "ttl-x")
        bid = await post_blob(http, dc1, data, {"x-ambry-ttl": "3600"})
        hdrs = {"x-ambry-blob-id": bid, "x-ambry-service-id": "itest"}
        (await call(http, "PUT", dc2 + "/updateTtl", hdrs)).expect(200)
        # the update reached the blob's only copies, in dc1
        assert (await call(http, "HEAD", f"{dc1}/{bid}")).headers["x-ambry-ttl"] == "-1"
        assert (await call(http, "HEAD", f"{dc2}/{bid}")).headers["x-ambry-ttl"] == "-1"
        (await call(http, "PUT", dc2 + "/updateTtl", hdrs)).expect(200)  # already: 200
    missing = {"x-ambry-blob-id": new_blob_id(1, 1, 1, 1).to_str(),
               "x-ambry-service-id": "itest"}
    assert (await call(http, "PUT", dc2 + "/updateTtl", missing)).status in (404, 503)


async def test_undelete_through_the_other_datacenter(http, store, dc1, dc2):
    data = blob_bytes(2 * CHUNK + 7, "undelete-x")
    bid = await post_blob(http, dc1, data)
    hdrs = {"x-ambry-blob-id": bid, "x-ambry-service-id": "itest"}
    await on_every_origin_replica(store, bid, "PUT")
    (await call(http, "DELETE", f"{dc1}/{bid}")).expect(202)
    # the delete is acknowledged at 2 of 3: the 3rd one's may land after the undelete
    await on_every_origin_replica(store, bid, "DELETE")
    (await call(http, "PUT", dc2 + "/undelete", hdrs)).expect(200)
    assert (await call(http, "GET", f"{dc1}/{bid}")).expect(200).body == data
    assert (await call(http, "GET", f"{dc2}/{bid}")).expect(200).body == data


async def test_origin_datacenter_down(http, store, dc1, dc2):
    """Last in the module: stops every node of dc1 (and starts them again)."""
    data = blob_bytes(800, "origin-down")
    bid = await post_blob(http, dc1, data)
    to_delete = await post_blob(http, dc1, b"delete me while dc1 is down")
    for n in store.nodes_in("dc1"):
        n.kill()
    try:
        for _ in range(2):  # before and after the failure detector marks them
            got = await call(http, "GET", f"{dc2}/{bid}")
            assert got.status == 503, got.status  # never a false 404
            assert (await call(http, "HEAD", f"{dc2}/{bid}")).status == 503
        # DELETE still answers 202 with local tombstones; TTL update and undelete cannot
        (await call(http, "DELETE", f"{dc2}/{to_delete}")).expect(202)
        assert (await call(http, "GET", f"{dc2}/{to_delete}")).status == 410
        hdrs = {"x-ambry-blob-id": bid, "x-ambry-service-id": "itest"}
        assert (await call(http, "PUT", dc2 + "/updateTtl", hdrs)).status == 503
        assert (await call(http, "PUT", dc2 + "/undelete", hdrs)).status == 503
        # dc2 still takes and serves its own blobs
        own = await post_blob(http, dc2, b"dc2 keeps working")
        assert (await call(http, "GET", f"{dc2}/{own}")).body == b"dc2 keeps working"
        # dc1's frontend has no replica to ask: 503
        assert (await call(http, "POST", dc1 + "/", SERVICE, b"x")).status == 503
    finally:
        for n in store.nodes_in("dc1"):
            if not n.running:
                n.start()
        for n in store.nodes_in("dc1"):
            n.wait_ready()
    assert (await call(http, "GET", f"{dc2}/{bid}")).status in (200, 503)
