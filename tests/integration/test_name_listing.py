"""Name listings after a delete that one replica missed.

A delete is acknowledged by 2 of 3 replicas; the third gets it from intra-DC replication, or
not yet (a straggler cancelled at the quorum, a replica that was stopped). A listing merges 2
replicas' answers. When replicas answered with live names only, a replica that still had the
name live brought it back into the listing, though a read of the name said 404 (the S3 test
suite saw a deleted bucket still listed). Replication is off here, so the missed delete stays
missed for the whole test and the answer never depends on timing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from fe_helpers import SERVICE, call, store_fixture

from ambry.common.config import load_config
from ambry.frontend.names import name_partition
from ambry.protocol.client import NodeClient
from ambry.testing.frontend import StoreCluster


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    # 3 nodes, 3 replicas of every partition: each node holds the name partition
    yield from store_fixture(tmp_path_factory.mktemp("name-listing"), datacenters=1,
                             nodes_per_dc=3, partitions=2,
                             extra={"replication": {"enabled": False}})


async def test_a_delete_one_replica_missed_never_shows_in_a_listing(http, store):
    base = store.frontends["dc1"].base_url
    named = f"{base}/named/default/models"
    for name in ("listing/kept", "listing/gone"):
        (await call(http, "PUT", f"{named}/{name}", SERVICE, b"x")).expect(201)
    # one replica (the partition's first) will miss the delete; name reads ask 2 of the 3
    # replicas at random, so the listings below read it about 2 times in 3
    cfg = load_config(store.config_path)
    account = cfg.account("default")
    assert account is not None
    container = account.container("models")
    assert container is not None
    pid = name_partition(cfg.cluster_map.name_partition_ids, account.id, container.id)
    first = cfg.cluster_map.replicas_in(pid, "dc1")[0].id
    # every replica gets the live entry (the PUT's third copy may have been a straggler),
    # then the delete, as 2 replicas acknowledged it and the first one missed it (its copy
    # lost with a cancelled straggler; replication, which would bring it, is off here)
    async def delete_on_all_but_first() -> None:
        clients = {n.id: NodeClient(n.host, n.port)
                   for n in cfg.cluster_map.replicas_in(pid, "dc1")}
        try:
            seen = [await c.name_get(pid, account.id, container.id, "listing/gone")
                    for c in clients.values()]
            live = max((e for e in seen if e is not None), key=lambda e: e.ts_ms)
            assert not live.deleted
            gone = dataclasses.replace(live, deleted=True, blob_id=b"", ts_ms=live.ts_ms + 1)
            for nid, c in clients.items():
                await c.name_put(pid, live if nid == first else gone)
        finally:
            for c in clients.values():
                await c.close()

    await delete_on_all_but_first()
    # the first replica still has listing/gone live; 12 listings read it (all but one run in
    # 500,000: (1/3)**12), and none may show the name
    for _ in range(12):
        got = json.loads((await call(http, "GET", named, params={"prefix": "listing/"}))
                         .expect(200).body)
        assert [e["name"] for e in got["entries"]] == ["listing/kept"]
        assert (await call(http, "GET", f"{named}/listing/gone")).status in (404, 410)


async def test_a_page_of_deleted_names_is_read_past(http, store):
    # more deleted names than one page holds, then a live one: the listing still finds it
    base = store.frontends["dc1"].base_url
    named = f"{base}/named/default/models"
    for i in range(7):
        (await call(http, "PUT", f"{named}/past/{i:02d}", SERVICE, b"x")).expect(201)
        (await call(http, "DELETE", f"{named}/past/{i:02d}")).expect(202)
    (await call(http, "PUT", f"{named}/past/zz", SERVICE, b"x")).expect(201)
    got = json.loads((await call(http, "GET", named,
                                 params={"prefix": "past/", "maxResults": "3"})).expect(200).body)
    assert [e["name"] for e in got["entries"]] == ["past/zz"]
    assert "nextPageToken" not in got
