"""Creates of one name in two datacenters at the same instant (a real 2-DC store).

Reservations are taken in one datacenter only (a cross-DC lock would make every named write
wait for the slowest link). What a 201 guarantees across datacenters is written in
docs/security.md ("Conditional writes and names"), and this module tests exactly that:
each datacenter acknowledges at most one create of a name; once the datacenters have
exchanged their records, every datacenter reads the same entry, and it is one of the
acknowledged creates; a create after the name has replicated is a 409 everywhere.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import urllib3
from fe_helpers import SERVICE, store_fixture

from ambry.testing.frontend import StoreCluster

NAMES = 8
_POOL = urllib3.PoolManager(maxsize=2 * NAMES, retries=False,
                            timeout=urllib3.Timeout(connect=5, read=60))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("name-races-2dc"), datacenters=2,
                             nodes_per_dc=3, partitions=4)


def _put(base: str, path: str, body: bytes) -> int:
    return _POOL.request("PUT", base + path, body=body, headers=SERVICE).status


def _get(base: str, path: str) -> tuple[int, bytes]:
    r = _POOL.request("GET", base + path)
    return r.status, r.data


def _eventually_equal(store: StoreCluster, path: str, timeout_s: float = 30.0
                      ) -> bytes:
    """Wait until both datacenters read the same live body for ``path``; that body."""
    deadline = time.monotonic() + timeout_s
    while True:
        a, b = _get(store.frontends["dc1"].base_url, path), _get(store.frontends["dc2"].base_url, path)
        if a == b and a[0] == 200:
            return a[1]
        assert time.monotonic() < deadline, (path, a, b)
        time.sleep(0.1)


def test_simultaneous_creates_in_two_datacenters_converge_on_one_acknowledged_body(
        store: StoreCluster) -> None:
    paths = [f"/named/default/default/dc-race/{uuid.uuid4().hex}" for _ in range(NAMES)]
    barrier = threading.Barrier(2 * NAMES)

    def create(dc: str, path: str) -> tuple[str, str, int]:
        barrier.wait()
        return dc, path, _put(store.frontends[dc].base_url, path, f"{dc} {path}".encode())

    with concurrent.futures.ThreadPoolExecutor(2 * NAMES) as ex:
        results = list(ex.map(lambda a: create(*a),
                              [(dc, p) for p in paths for dc in ("dc1", "dc2")]))
    for path in paths:
        acked = {f"{dc} {path}".encode() for dc, p, s in results if p == path and s == 201}
        statuses = sorted(s for _, p, s in results if p == path)
        assert statuses in ([201, 201], [201, 409]), statuses  # at most one per datacenter
        assert _eventually_equal(store, path) in acked


def test_a_create_after_the_name_replicated_is_a_conflict_in_the_other_datacenter(
        store: StoreCluster) -> None:
    path = f"/named/default/default/dc-race/{uuid.uuid4().hex}"
    assert _put(store.frontends["dc1"].base_url, path, b"first") == 201
    assert _eventually_equal(store, path) == b"first"
    assert _put(store.frontends["dc2"].base_url, path, b"second") == 409
