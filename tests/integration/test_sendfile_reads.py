"""GETs whose payload a node sends unread, with sendfile, and the frontend verifies (issue 16).

A node hands a whole payload of at least ``storage.sendfile_min_bytes`` from the page cache to
the socket without hashing it when the reader says it verifies the record checksum itself
(``client_verifies``); the frontend checks it before the last byte goes on. What must hold:
the bytes arrive intact, whole and in ranges, for simple and composite blobs; a bit flipped in
one replica's segment never reaches a client as a wrong body (another replica serves it, and
the damaged node is made to find and report its damage); a copy rotten on every replica ends
in a clear error or a short body, never wrong bytes; a client that stops reading holds no node
thread and leaks no descriptor. Real processes on loopback (:mod:`ambry.testing.frontend`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from fe_helpers import (
    CHUNK,
    MIB,
    TIMEOUT,
    blob_bytes,
    call,
    on_every_replica,
    post_blob,
    store_fixture,
)

from ambry.common.blobid import BlobId, BlobType, decode
from ambry.common.properties import BlobProperties
from ambry.testing.cluster import NodeProcess
from ambry.testing.frontend import StoreCluster
from ambry.testing.rot import flip_payload_bytes


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("sendfile"), datacenters=1,
                             nodes_per_dc=3, partitions=4)


async def _metric(http: aiohttp.ClientSession, node: NodeProcess, name: str) -> float:
    got = await call(http, "GET", node.http_url("/metrics"))
    for line in got.text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _sendfile_bytes(http: aiohttp.ClientSession, store: StoreCluster) -> float:
    return sum([await _metric(http, n, "ambry_node_payload_bytes_sendfile_total")
                for n in store.nodes_in("dc1")])


async def _chunk_ids(store: StoreCluster, blob_id: str) -> list[str]:
    from ambry.frontend.chunking import decode_metadata
    await on_every_replica(store, blob_id)  # acked by 2 of 3: node 0 may not have it yet
    client = store.nodes_in("dc1")[0].client()
    try:
        _, data = await client.get_bytes(decode(blob_id))
    finally:
        await client.close()
    return [c.blob_id for c in decode_metadata(data)[1]]


async def _flip_on_one_replica(store: StoreCluster, blob_id: str, at: int) -> NodeProcess:
    """Flip payload bytes of ``blob_id`` on the first node; that node. Once every replica
    holds it: a copy still on its way could come from the damaged one."""
    await on_every_replica(store, blob_id)
    for node in store.nodes_in("dc1"):
        if flip_payload_bytes([node.data_dir], blob_id, at=at) == 1:
            return node
    raise AssertionError(f"no replica of {blob_id} found")


#: /proc/net/tcp's state of a socket whose peer closed and whose owner has not closed it yet
_TCP_CLOSE_WAIT = "08"


def _tcp_states() -> dict[str, str]:
    """The TCP state of every socket of this network namespace, by inode (as a descriptor's
    ``socket:[inode]`` link names it)."""
    states: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            states[cols[9]] = cols[3]
    return states


def _descriptors(node: NodeProcess) -> dict[str, int]:
    """How many of ``node``'s descriptors refer to each socket (``socket:[inode]``) or each
    file of its data directory: what a leaked ``dup`` or an unclosed connection shows up as."""
    held: dict[str, int] = {}
    root = os.path.realpath(node.data_dir)  # as the links name it
    for fd in os.listdir(f"/proc/{node.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{node.pid}/fd/{fd}")
        except OSError:  # closed while we looked
            continue
        if target.startswith(("socket:[", root + os.sep)):
            held[target] = held.get(target, 0) + 1
    return held


def _leaked_descriptors(nodes: list[NodeProcess],
                        baseline: dict[int, dict[str, int]]) -> list[str]:
    """The descriptors of ``nodes`` that only a leak explains: a socket or segment file held
    by more descriptors than before (a ``dup`` of the socket or of the segment that a transfer
    never closed), or a socket whose peer has gone that the node has not closed (CLOSE_WAIT).
    The number of descriptors alone says nothing: the frontend keeps a pool of up to
    ``pool_size`` connections per node, and opens more of them when GETs stall the ones it
    has (ESTABLISHED sockets the node rightly keeps)."""
    states = _tcp_states()
    leaks = []
    for node in nodes:
        before = baseline[node.pid]
        for target, n in _descriptors(node).items():
            if n > max(1, before.get(target, 0)):
                leaks.append(f"{node.node_id}: {n} descriptors on {target}")
            if target.startswith("socket:[") and \
                    states.get(target[len("socket:["):-1]) == _TCP_CLOSE_WAIT:
                leaks.append(f"{node.node_id}: {target} stays open after its peer left")
    return leaks


async def _damage_reported(node: NodeProcess) -> int:
    client = node.client()
    try:
        reply = await client.request("stats", {})
    finally:
        await client.close()
    return sum(len(r.get("damage", [])) for r in reply.header["replicas"])


async def _put_simple_on_every_replica(store: StoreCluster, http: aiohttp.ClientSession,
                                       data: bytes) -> str:
    """A simple blob larger than any the frontend makes (it chunks at CHUNK), written to
    every replica through the node protocol: (its id)."""
    like = decode(await post_blob(http, store.url("dc1", ""), b"x"))
    bid = BlobId(like.datacenter_id, like.account_id, like.container_id, like.partition_id,
                 os.urandom(16), BlobType.SIMPLE)
    props = BlobProperties(size=len(data), created_ms=int(time.time() * 1000),
                           content_type="application/x-itest", service_id="itest",
                           account_id=like.account_id, container_id=like.container_id)
    for node in store.nodes_in("dc1"):  # 3 nodes, 3 replicas: each holds every partition
        client = node.client()
        try:
            # replication may have brought it already
            assert (await client.put(bid, props, b"", data)).result in ("created", "duplicate")
        finally:
            await client.close()
    return bid.to_str()


async def test_whole_blobs_and_ranges_arrive_intact_and_whole_ones_go_out_with_sendfile(
        store: StoreCluster) -> None:
    # the path itself: the bytes of every shape of GET are exact, and whole payloads of
    # sendfile size were sent by sendfile (a counter that stayed 0 means the path is dead)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        simple = blob_bytes(CHUNK - 1000, "simple")
        composite = blob_bytes(3 * CHUNK + 12345, "composite")
        small = blob_bytes(4000, "small")
        sid = await post_blob(http, store.url("dc1", ""), simple)
        cid = await post_blob(http, store.url("dc1", ""), composite)
        tid = await post_blob(http, store.url("dc1", ""), small)
        before = await _sendfile_bytes(http, store)
        for bid, data in ((sid, simple), (cid, composite), (tid, small)):
            assert (await call(http, "GET", store.url("dc1", "/" + bid))).expect(200).body \
                == data
        sent = await _sendfile_bytes(http, store) - before
        assert sent >= len(simple) + 3 * CHUNK, sent  # the 12345-byte last chunk: too small
        for bid, data in ((sid, simple), (cid, composite)):
            n = len(data)
            for lo, hi in ((0, 99), (1000, 700_000), (n - 5000, n - 1), (n // 3, n // 3 + CHUNK)):
                hi = min(hi, n - 1)
                got = await call(http, "GET", store.url("dc1", "/" + bid),
                                 {"Range": f"bytes={lo}-{hi}"})
                assert got.expect(206).body == data[lo:hi + 1], (bid, lo, hi)


async def test_a_bit_flip_on_one_replica_never_reaches_a_client(store: StoreCluster) -> None:
    # a node sending a damaged copy unread: the frontend must catch it, serve another
    # replica's copy, and make the damaged node find and report its damage
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        simple = blob_bytes(CHUNK - 1000, "flip-simple")
        composite = blob_bytes(3 * CHUNK, "flip-composite")
        sid = await post_blob(http, store.url("dc1", ""), simple)
        cid = await post_blob(http, store.url("dc1", ""), composite)
        chunk = (await _chunk_ids(store, cid))[1]
        damaged = [await _flip_on_one_replica(store, sid, at=len(simple) // 2),
                   await _flip_on_one_replica(store, chunk, at=CHUNK // 3)]
        before = {n.node_id: await _damage_reported(n) for n in damaged}
        reported = False
        # each GET asks a random replica first: go on until the damaged ones were asked
        for _ in range(200):
            for bid, data in ((sid, simple), (cid, composite)):
                got = await call(http, "GET", store.url("dc1", "/" + bid))
                assert got.expect(200).body == data
            counts = {n.node_id: await _damage_reported(n) for n in damaged}
            if all(counts[k] > before[k] for k in counts) or (
                    damaged[0].node_id == damaged[1].node_id
                    and counts[damaged[0].node_id] >= before[damaged[0].node_id] + 2):
                reported = True
                break
        assert reported, "the damaged replicas never reported their damage"


async def test_a_simple_blob_rotten_on_every_replica_is_a_503_before_any_byte(
        store: StoreCluster) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        data = blob_bytes(CHUNK // 2, "rot-all")
        bid = await post_blob(http, store.url("dc1", ""), data)
        await on_every_replica(store, bid)
        assert flip_payload_bytes([n.data_dir for n in store.nodes_in("dc1")], bid,
                                  at=100) == 3
        got = await call(http, "GET", store.url("dc1", "/" + bid))
        assert got.status == 503, got.status
        assert got.headers["x-ambry-error-code"] == "DATA_CORRUPT"


async def test_a_streamed_blob_rotten_on_every_replica_ends_short_never_wrong(
        store: StoreCluster) -> None:
    # a simple blob over 4 MiB is streamed as it arrives: its last piece is held back until
    # the checksum held, so rot at its very end still cuts the body short
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        data = blob_bytes(6 * MIB, "rot-stream")
        bid = await _put_simple_on_every_replica(store, http, data)
        got = await call(http, "GET", store.url("dc1", "/" + bid))
        assert got.expect(200).body == data  # intact first: the path serves it whole
        assert flip_payload_bytes([n.data_dir for n in store.nodes_in("dc1")], bid,
                                  at=len(data) - 3, count=1) == 3
        async with http.get(store.url("dc1", "/" + bid)) as r:
            assert r.status == 200
            assert int(r.headers["Content-Length"]) == len(data)
            body = bytearray()
            with pytest.raises(aiohttp.ClientPayloadError):
                async for piece in r.content.iter_any():
                    body += piece
        assert len(body) < len(data)
        assert body == data[:len(body)]


async def test_clients_that_stop_reading_hold_no_node_thread_and_leak_no_descriptor(
        store: StoreCluster) -> None:
    # a reader that stops mid-GET: the node waits on the loop for its socket to drain (no
    # I/O thread held), others are served meanwhile, and its descriptors are freed after.
    # Failed on a busy machine when it counted all the nodes' descriptors (174 > 162 + 6):
    # every extra one was an ESTABLISHED connection of the frontend's pool, which opens more
    # connections while GETs stall the ones it has; so it now looks for what a leak leaves
    # (a dup'ed socket or segment descriptor, a socket the node kept after its peer left)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        data = blob_bytes(24 * MIB, "idle")
        bid = await _put_simple_on_every_replica(store, http, data)
        other = blob_bytes(CHUNK - 7, "other")
        oid = await post_blob(http, store.url("dc1", ""), other)
        nodes = store.nodes_in("dc1")
        baseline = {n.pid: _descriptors(n) for n in nodes}
        fe = store.frontends["dc1"]
        idle: list[socket.socket] = []
        try:
            for _ in range(12):  # more than the nodes' io_threads (8)
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect((fe.host, fe.port))
                s.sendall(f"GET /{bid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert b"200 OK" in s.recv(1024)  # the response began, then no more reads
                idle.append(s)
            for _ in range(5):
                t0 = time.monotonic()
                got = await call(http, "GET", store.url("dc1", "/" + oid))
                assert got.expect(200).body == other
                assert time.monotonic() - t0 < 10.0
        finally:
            for s in idle:
                s.close()
        # the stalled transfers end when the frontend gives up on them (its node stall
        # timeout): until then their duplicates are rightly open
        deadline = time.monotonic() + 60
        while _leaked_descriptors(nodes, baseline) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not _leaked_descriptors(nodes, baseline)


@pytest.fixture(scope="module")
def stock_loop_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("sendfile-asyncio"), datacenters=1,
                             nodes_per_dc=3, partitions=2, env={"AMBRY_NO_UVLOOP": "1"})


async def test_sendfile_on_the_stock_asyncio_loop(stock_loop_store: StoreCluster,
                                                  tmp_path: Path) -> None:
    # AMBRY_NO_UVLOOP=1: the same path over asyncio's own transports and selector
    store = stock_loop_store
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        data = blob_bytes(3 * CHUNK + 5, "stock")
        big = blob_bytes(12 * MIB, "stock-big")
        bid = await post_blob(http, store.url("dc1", ""), data)
        lid = await _put_simple_on_every_replica(store, http, big)
        before = await _sendfile_bytes(http, store)
        got = await asyncio.gather(*(call(http, "GET", store.url("dc1", "/" + b))
                                     for b in (bid, lid, bid, lid)))
        assert [g.expect(200).body for g in got] == [data, big, data, big]
        assert await _sendfile_bytes(http, store) - before >= 2 * (len(data) + len(big))
