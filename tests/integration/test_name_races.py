"""Concurrent conditional writes of one name, on a real store with two frontends in dc1.

What broke: ten concurrent ``PUT /named/...`` of one new name without upsert all got 201 and
nine acknowledged creates were silently overwritten; ten concurrent S3 ``PutObject`` with
``If-None-Match: *`` all got 200. The check and the write were two separate steps at the
frontend. Now the decision is taken at the name's replicas under a majority reservation
(``ambry.storage.namelocks``), so exactly one writer of a datacenter wins, whichever frontend
each goes through; across datacenters, the guarantee is the one docs/security.md states.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
from fe_helpers import SERVICE, store_fixture
from s3_helpers import raw

from ambry.common.config import load_config
from ambry.frontend.router import name_partition
from ambry.protocol.client import NodeClient
from ambry.testing.frontend import FrontendProcess, StoreCluster

WRITERS = 10
_POOL = urllib3.PoolManager(maxsize=WRITERS, retries=False,
                            timeout=urllib3.Timeout(connect=5, read=60))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("name-races"), nodes_per_dc=3,
                             partitions=4)


@pytest.fixture(scope="module")
def second(store: StoreCluster) -> FrontendProcess:
    """A second frontend of dc1: the race must be decided where the name lives, not in one
    frontend's memory."""
    return store.add_frontend("dc1")


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call in its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(c: Callable[[], Any]) -> Any:
        barrier.wait()
        return c()

    with concurrent.futures.ThreadPoolExecutor(len(calls)) as ex:
        return list(ex.map(run, calls))


def _rest_put(base: str, path: str, body: bytes, upsert: bool = False) -> int:
    h = dict(SERVICE)
    if upsert:
        h["x-ambry-named-upsert"] = "true"
    return _POOL.request("PUT", base + path, body=body, headers=h).status


def _bases(store: StoreCluster, second: FrontendProcess) -> list[str]:
    return [store.frontends["dc1"].base_url, second.base_url]


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_rest_creates_of_one_name_have_exactly_one_winner(
        store: StoreCluster, second: FrontendProcess, round_: int) -> None:
    path = f"/named/default/default/race/{uuid.uuid4().hex}"
    bases = _bases(store, second)
    bodies = [f"writer {i} of round {round_}".encode() for i in range(WRITERS)]
    statuses = _at_once([lambda i=i: _rest_put(bases[i % 2], path, bodies[i])
                         for i in range(WRITERS)])
    assert sorted(statuses) == [201] + [409] * (WRITERS - 1), statuses
    winner = bodies[statuses.index(201)]
    for base in bases:  # the acknowledged create is what every frontend reads
        r = _POOL.request("GET", base + path)
        assert (r.status, r.data) == (200, winner)


def test_upserts_racing_a_create_never_lose_an_acknowledged_write(
        store: StoreCluster, second: FrontendProcess) -> None:
    path = f"/named/default/default/race/{uuid.uuid4().hex}"
    bases = _bases(store, second)
    bodies = [f"writer {i}".encode() for i in range(WRITERS)]
    # writer 0 creates, the others upsert: whichever order the replicas saw, the name ends
    # on one acknowledged body, and the create is 201 only if nobody had written before it
    statuses = _at_once([lambda i=i: _rest_put(bases[i % 2], path, bodies[i], upsert=i > 0)
                         for i in range(WRITERS)])
    assert all(s == 201 for s in statuses[1:]), statuses
    assert statuses[0] in (201, 409), statuses
    r = _POOL.request("GET", bases[0] + path)
    acked = {bodies[i] for i, s in enumerate(statuses) if s == 201}
    assert r.status == 200 and r.data in acked


def _s3_put(s3_base: str, bucket_key: str, body: bytes, headers: dict[str, str]) -> Any:
    return raw("PUT", f"{s3_base}/{bucket_key}", body, headers)


def _s3_bases(store: StoreCluster, second: FrontendProcess) -> list[str]:
    return [store.s3_url("dc1"), second.s3_url]


@pytest.fixture(scope="module")
def bucket(store: StoreCluster) -> str:
    name = f"races-{uuid.uuid4().hex[:12]}"
    assert raw("PUT", f"{store.s3_url('dc1')}/{name}").status == 200
    return name


def test_concurrent_s3_if_none_match_puts_have_exactly_one_winner(
        store: StoreCluster, second: FrontendProcess, bucket: str) -> None:
    key = f"{bucket}/inm/{uuid.uuid4().hex}"
    bases = _s3_bases(store, second)
    bodies = [f"s3 writer {i}".encode() for i in range(WRITERS)]
    replies = _at_once([lambda i=i: _s3_put(bases[i % 2], key, bodies[i],
                                            {"If-None-Match": "*"})
                        for i in range(WRITERS)])
    statuses = [r.status for r in replies]
    assert sorted(statuses) == [200] + [412] * (WRITERS - 1), statuses
    winner = bodies[statuses.index(200)]
    for base in bases:
        got = raw("GET", f"{base}/{key}")
        assert (got.status, got.body) == (200, winner)


def test_concurrent_s3_if_match_puts_have_exactly_one_winner(
        store: StoreCluster, second: FrontendProcess, bucket: str) -> None:
    key = f"{bucket}/im/{uuid.uuid4().hex}"
    bases = _s3_bases(store, second)
    first = raw("PUT", f"{bases[0]}/{key}", b"version 0")
    assert first.status == 200
    etag = first.headers["ETag"]
    bodies = [f"s3 if-match writer {i}".encode() for i in range(WRITERS)]
    replies = _at_once([lambda i=i: _s3_put(bases[i % 2], key, bodies[i], {"If-Match": etag})
                        for i in range(WRITERS)])
    statuses = [r.status for r in replies]
    # each writer swaps "version 0" for its own body: only one can, the rest see another ETag
    assert sorted(statuses) == [200] + [412] * (WRITERS - 1), statuses
    got = raw("GET", f"{bases[1]}/{key}")
    assert (got.status, got.body) == (200, bodies[statuses.index(200)])


def test_s3_if_match_on_a_missing_key_is_404_and_a_stale_etag_412(
        store: StoreCluster, bucket: str) -> None:
    base = store.s3_url("dc1")
    key = f"{bucket}/im-missing/{uuid.uuid4().hex}"
    assert raw("PUT", f"{base}/{key}", b"x", {"If-Match": '"abc"'}).status == 404
    assert raw("PUT", f"{base}/{key}", b"v1").status == 200
    assert raw("PUT", f"{base}/{key}", b"v2", {"If-Match": '"0123"'}).status == 412
    assert raw("GET", f"{base}/{key}").body == b"v1"


def test_a_writer_that_dies_holding_a_name_delays_others_by_at_most_a_lease(
        store: StoreCluster, second: FrontendProcess) -> None:
    """A frontend killed between reserving and writing leaves its lease on the replicas: the
    next writer of that name waits for the lease to end, never forever."""
    name = f"race/{uuid.uuid4().hex}"
    aid, cid, pid, replicas = _name_replicas(store, name)
    assert asyncio.run(_reserve_as_dead_frontend(replicas, pid, aid, cid, name)) == \
        len(replicas)
    t0 = time.monotonic()
    assert _rest_put(second.base_url, f"/named/default/default/{name}", b"after") == 201
    # it had to wait for the 2 s lease (not a timing assertion: a lower bound the protocol
    # guarantees), and it did not wait forever
    assert time.monotonic() - t0 >= 1.0


def _name_replicas(store: StoreCluster, name: str) -> tuple[int, int, int, list[Any]]:
    cfg = load_config(store.config_path)
    account = cfg.account("default")
    assert account is not None
    cid = next(c.id for c in account.containers if c.name == "default")
    pid = name_partition(cfg.cluster_map.name_partition_ids, account.id, cid)
    return account.id, cid, pid, list(cfg.cluster_map.replicas_in(pid, "dc1"))


async def _reserve_as_dead_frontend(replicas: list[Any], pid: int, aid: int, cid: int,
                                    name: str) -> int:
    """A frontend that reserves ``name`` on every replica (a 2 s lease) and then dies before
    it writes; how many replicas granted it."""
    held = 0
    for n in replicas:
        c = NodeClient(n.host, n.port)
        try:
            ok, _ = await c.name_reserve(pid, aid, cid, name, b"dead-frontend", 2000)
            held += ok
        finally:
            await c.close()
    return held


def _node_requests(store: StoreCluster, op: str) -> float:
    """``op`` requests the storage nodes served so far (their /metrics)."""
    total = 0.0
    for node in store.nodes.values():
        text = _POOL.request("GET", node.http_url("/metrics")).data.decode()
        for line in text.splitlines():
            if line.startswith(f'ambry_node_requests_total{{op="{op}"'):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_upsert_takes_one_name_round_and_frees_the_blob_it_replaced(
        store: StoreCluster, second: FrontendProcess) -> None:
    # What broke (cost): every upsert (each S3 PutObject) reserved the name on its replicas
    # and then wrote it: two rounds of node requests where one decided at the replicas
    # (name_claim) gives the same guarantees when nobody else is writing the name.
    path = f"/named/default/default/upsert/{uuid.uuid4().hex}"
    h = dict(SERVICE, **{"x-ambry-named-upsert": "true"})
    first = _POOL.request("PUT", store.frontends["dc1"].base_url + path, body=b"v1",
                          headers=h)
    assert first.status == 201
    reserves = _node_requests(store, "name_reserve")
    r = _POOL.request("PUT", second.base_url + path, body=b"v2", headers=h)
    assert r.status == 201
    assert _node_requests(store, "name_reserve") == reserves  # no reservation round
    for base in _bases(store, second):
        got = _POOL.request("GET", base + path)
        assert (got.status, got.data) == (200, b"v2")
    old = store.frontends["dc1"].base_url + first.headers["Location"]
    deadline = time.monotonic() + 30
    while _POOL.request("GET", old).status != 410:  # the replaced blob is freed
        assert time.monotonic() < deadline, "the replaced blob was not deleted"
        time.sleep(0.1)


def test_an_upsert_waits_for_a_reservation_holder_and_then_wins(
        store: StoreCluster, second: FrontendProcess) -> None:
    # a one-round upsert must never slip between a reservation holder's decision and its
    # write: while a (dead) frontend holds the name, the upsert takes the reservation path,
    # waits for the lease, and its entry is the one every frontend then reads
    name = f"race/{uuid.uuid4().hex}"
    aid, cid, pid, replicas = _name_replicas(store, name)
    assert asyncio.run(_reserve_as_dead_frontend(replicas, pid, aid, cid, name)) == \
        len(replicas)
    t0 = time.monotonic()
    assert _rest_put(second.base_url, f"/named/default/default/{name}", b"upsert",
                     upsert=True) == 201
    assert time.monotonic() - t0 >= 1.0  # the lease's lower bound, not a timing guess
    for base in _bases(store, second):
        got = _POOL.request("GET", base + f"/named/default/default/{name}")
        assert (got.status, got.data) == (200, b"upsert")


@pytest.mark.slow
def test_many_rounds_of_mixed_rest_and_s3_creates_each_have_one_winner(
        store: StoreCluster, second: FrontendProcess, bucket: str) -> None:
    """The soak of the races above (make faults): many names, 16 writers each, REST and S3
    through both frontends; every round exactly one create is acknowledged and survives."""
    writers = 16
    for round_ in range(40):
        path = f"/named/default/default/soak/{round_}-{uuid.uuid4().hex}"
        bases = _bases(store, second)
        bodies = [f"rest {i} {round_}".encode() for i in range(writers)]
        statuses = _at_once([lambda i=i, p=path, b=bases, d=bodies: _rest_put(b[i % 2], p, d[i])
                             for i in range(writers)])
        assert sorted(statuses) == [201] + [409] * (writers - 1), (round_, statuses)
        r = _POOL.request("GET", bases[round_ % 2] + path)
        assert r.data == bodies[statuses.index(201)]
        key = f"{bucket}/soak/{round_}-{uuid.uuid4().hex}"
        s3 = _s3_bases(store, second)
        replies = _at_once([lambda i=i, k=key, b=s3, d=bodies: _s3_put(
                                b[i % 2], k, d[i], {"If-None-Match": "*"})
                            for i in range(writers)])
        st = [x.status for x in replies]
        assert sorted(st) == [200] + [412] * (writers - 1), (round_, st)
        assert raw("GET", f"{s3[round_ % 2]}/{key}").body == bodies[st.index(200)]
