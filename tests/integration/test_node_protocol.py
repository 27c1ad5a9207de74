"""The node protocol against a real ``ambry server`` process: every op through NodeClient,
garbage on the socket, a put cut off mid-payload, SIGTERM and restart."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import aiohttp
import msgpack
import pytest

from ambry.common.blobid import BlobId, new_blob_id
from ambry.common.config import load_config
from ambry.common.errors import (
    AmbryError,
    BlobAlreadyExists,
    BlobDeleted,
    BlobNotDeleted,
    BlobNotFound,
    InvalidArgument,
    InvalidBlobId,
    PayloadTooLarge,
    ProtocolError,
    ReplicaUnavailable,
    Unavailable,
)
from ambry.common.properties import BlobProperties
from ambry.protocol.client import NodeClient
from ambry.protocol.messages import NameRecord
from ambry.storage.node import StorageNode
from ambry.testing.cluster import LocalCluster, NodeProcess, write_config

MAX_RECORD = 4 * 1024 * 1024
STORAGE = {"segment_size_bytes": "8MiB", "max_record_bytes": MAX_RECORD,
           # 3 MiB payloads take the streaming path (iter_payload), 4 KiB ones the verified read
           "verify_on_read_max_bytes": "1MiB"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    cluster = LocalCluster(tmp_path_factory.mktemp("proto"), partitions=2, storage=STORAGE)
    cluster.start()
    n = cluster.nodes["dc1-n1"]
    yield n
    code = n.terminate() if n.running else None
    print(f"==== log of {n.node_id} ====\n{n.log_tail(60)}")
    assert code in (0, None)


@pytest.fixture
async def client(node: NodeProcess) -> NodeClient:
    c = node.client(pool_size=4)
    yield c  # type: ignore[misc]
    await c.close()


def new_id(partition: int = 1) -> BlobId:
    return new_blob_id(1, 101, 5, partition)


def props(size: int, ttl_s: int = -1) -> BlobProperties:
    return BlobProperties(size=size, created_ms=int(time.time() * 1000), ttl_s=ttl_s,
                          content_type="application/x-test", service_id="proto-test")


async def put_blob(client: NodeClient, size: int, partition: int = 1,
                   ttl_s: int = -1) -> tuple[BlobId, bytes]:
    bid = new_id(partition)
    data = os.urandom(size)
    reply = await client.put(bid, props(size, ttl_s), b"usermeta", data)
    assert reply.result == "created"
    return bid, data


# ---------------------------------------------------------------------------------- blobs
@pytest.mark.parametrize("size", [4096, 3 * 1024 * 1024], ids=["4KiB", "3MiB"])
async def test_put_get_is_byte_identical(client: NodeClient, size: int) -> None:
    bid, data = await put_blob(client, size)
    reply, got = await client.get_bytes(bid)
    assert got == data
    assert reply.blob_size == size and reply.payload_len == size
    assert reply.user_metadata == b"usermeta"
    assert reply.properties.service_id == "proto-test"
    assert reply.properties.content_type == "application/x-test"
    assert not reply.state.deleted and reply.expiry_ms == 0
    # the same payload, streamed in small pieces without reading it whole
    reply = await client.get(bid)
    pieces = [p async for p in reply.iter_chunks(100_000)]
    assert max(len(p) for p in pieces) <= 100_000
    assert b"".join(pieces) == data


@pytest.mark.parametrize("size", [4096, 3 * 1024 * 1024], ids=["4KiB", "3MiB"])
async def test_range_and_info_only(client: NodeClient, size: int) -> None:
    bid, data = await put_blob(client, size)
    reply, got = await client.get_bytes(bid, range=(1000, 2000))
    assert got == data[1000:3000] and reply.range_start == 1000 and reply.blob_size == size
    # a range running past the end is clamped; starting past the end is refused
    _, got = await client.get_bytes(bid, range=(size - 10, 1000))
    assert got == data[-10:]
    with pytest.raises(InvalidArgument):
        await client.get(bid, range=(size + 1, 10))
    info = await client.get(bid, info_only=True)
    assert info.payload_len == 0 and info.blob_size == size
    assert info.properties.size == size and info.user_metadata == b"usermeta"
    assert await info.read() == b""


async def test_duplicate_put_same_content_ok_other_content_refused(client: NodeClient) -> None:
    bid, data, p = new_id(), os.urandom(5000), props(5000)
    assert (await client.put(bid, p, b"usermeta", data)).result == "created"
    again = await client.put(bid, p, b"usermeta", data)
    assert again.result == "duplicate"
    with pytest.raises(BlobAlreadyExists):
        await client.put(bid, p, b"usermeta", os.urandom(5000))
    _, got = await client.get_bytes(bid)
    assert got == data


async def test_empty_payload_roundtrip(client: NodeClient) -> None:
    bid = new_id()
    assert (await client.put(bid, props(0), b"", b"")).result == "created"
    reply, got = await client.get_bytes(bid)
    assert got == b"" and reply.blob_size == 0


async def test_delete_then_get_is_deleted_unless_included(client: NodeClient) -> None:
    bid, data = await put_blob(client, 2048)
    res = await client.delete(bid, time_ms=int(time.time() * 1000))
    assert res.result == "deleted"
    with pytest.raises(BlobDeleted):
        await client.get(bid)
    reply, got = await client.get_bytes(bid, include_deleted=True)
    assert got == data and reply.state.deleted
    assert (await client.delete(bid)).result == "already_deleted"
    st = await client.blob_state(bid)
    assert st.has_put and st.state is not None and st.state.deleted
    # an id never seen: tombstone by default, not found when asked not to tombstone
    assert (await client.delete(new_id())).result == "tombstoned"
    with pytest.raises(BlobNotFound):
        await client.delete(new_id(), tombstone_if_missing=False)
    with pytest.raises(BlobNotFound):
        await client.get(new_id())


async def test_ttl_update_makes_blob_permanent(client: NodeClient) -> None:
    bid, _ = await put_blob(client, 1000, ttl_s=3600)
    info = await client.get(bid, info_only=True)
    assert info.expiry_ms > 0 and not info.state.permanent
    assert (await client.ttl_update(bid)).result == "updated"
    info = await client.get(bid, info_only=True)
    assert info.state.permanent and info.expiry_ms == 0
    assert (await client.ttl_update(bid)).result == "already_permanent"


async def test_undelete_starts_a_new_life(client: NodeClient) -> None:
    bid, data = await put_blob(client, 1000)
    with pytest.raises(BlobNotDeleted):
        await client.undelete(bid)
    await client.delete(bid)
    res = await client.undelete(bid)
    assert res.result == "undeleted" and res.life_version == 1
    reply, got = await client.get_bytes(bid)
    assert got == data and reply.state.life_version == 1 and not reply.state.deleted
    st = await client.blob_state(bid)
    assert st.state is not None and st.state.life_version == 1 and st.has_put


async def test_blob_state_of_unknown_id(client: NodeClient) -> None:
    st = await client.blob_state(new_id())
    assert st.state is None and not st.has_put


# ---------------------------------------------------------------------------------- names
async def test_names_put_get_list_with_prefix(client: NodeClient) -> None:
    container = int.from_bytes(os.urandom(2), "big")  # a container no other test uses
    now = int(time.time() * 1000)
    bid, _ = await put_blob(client, 100, partition=0)
    names = ["runs/1/a.pt", "runs/1/b.pt", "runs/10/c.pt", "runs/2/d.pt", "other"]
    for i, name in enumerate(names):
        await client.name_put(0, NameRecord(101, container, name, bid.to_bytes(), now + i, 1,
                                            size=100, content_type="x/y", created_ms=now))
    got = await client.name_get(0, 101, container, "runs/1/b.pt")
    assert got is not None and got.blob_id == bid.to_bytes() and got.size == 100
    assert await client.name_get(0, 101, container, "nope") is None
    listed = await client.name_list(0, 101, container, prefix="runs/1")
    assert [e.name for e in listed] == ["runs/1/a.pt", "runs/1/b.pt", "runs/10/c.pt"]
    listed = await client.name_list(0, 101, container, prefix="runs/1/")
    assert [e.name for e in listed] == ["runs/1/a.pt", "runs/1/b.pt"]
    page = await client.name_list(0, 101, container, prefix="runs/", limit=2)
    assert [e.name for e in page] == ["runs/1/a.pt", "runs/1/b.pt"]
    page = await client.name_list(0, 101, container, prefix="runs/", start_after="runs/1/b.pt")
    assert [e.name for e in page] == ["runs/10/c.pt", "runs/2/d.pt"]
    # a name delete (a later timestamp) hides the name from listings
    await client.name_put(0, NameRecord(101, container, "runs/1/a.pt", b"", now + 100, 1,
                                        deleted=True))
    listed = await client.name_list(0, 101, container, prefix="runs/1/")
    assert [e.name for e in listed] == ["runs/1/b.pt"]
    gone = await client.name_get(0, 101, container, "runs/1/a.pt")
    assert gone is None or gone.deleted
    with pytest.raises(InvalidArgument):
        await client.name_put(0, NameRecord(101, container, "bad\x01name", bid.to_bytes(),
                                            now, 1))


# ---------------------------------------------------------------------------------- feed
async def _drain_feed(client: NodeClient, partition: int,
                      token: tuple[bytes, int] | None) -> tuple[list[dict], tuple[bytes, int]]:
    out: list[dict] = []
    while True:
        batch = await client.entries_since(partition, token, max_entries=3)
        out += batch.entries
        token = batch.token
        if not batch.entries:
            assert batch.remaining_bytes == 0
            return out, token


async def test_entries_since_returns_records_in_order_and_resumes(client: NodeClient) -> None:
    _, token = await _drain_feed(client, 1, None)
    bids = [(await put_blob(client, 300 + i, ttl_s=3600))[0] for i in range(5)]
    await client.delete(bids[0])
    assert (await client.ttl_update(bids[1])).result == "updated"
    first = await client.entries_since(1, token, max_entries=4)
    assert len(first.entries) == 4 and first.remaining_bytes > 0
    rest, _ = await _drain_feed(client, 1, first.token)
    entries = first.entries + rest
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(token[1] + 1, token[1] + 8))
    assert [e["k"] for e in entries] == [b.to_bytes() for b in bids] + \
        [bids[0].to_bytes(), bids[1].to_bytes()]
    assert [e["t"] for e in entries] == [1, 1, 1, 1, 1, 2, 3]  # PUT x5, DELETE, TTL_UPDATE
    assert entries[2]["pl"] == 302
    # a token of another incarnation starts over from the beginning
    restart = await client.entries_since(1, (b"\x00" * 16, 10**9), max_entries=1)
    assert restart.entries[0]["seq"] == 1
    with pytest.raises(InvalidArgument):
        await client.entries_since(1, (b"x", -1))


# ---------------------------------------------------------------------------------- node
async def test_stats_health_and_metrics(client: NodeClient, node: NodeProcess) -> None:
    bid, data = await put_blob(client, 10)
    # a GET of its own: the op="get" latency rows below must not depend on an earlier test
    assert (await client.get_bytes(bid))[1] == data
    stats = await client.stats()
    assert sorted(s["partition_id"] for s in stats) == [0, 1]
    p1 = next(s for s in stats if s["partition_id"] == 1)
    assert p1["blobs"] >= 1 and p1["log_bytes"] > 0 and p1["damage"] == []
    assert p1["read_only"] == ""
    assert (await client.ping())["node"] == "dc1-n1"
    async with aiohttp.ClientSession() as http:
        async with http.get(node.http_url("/healthCheck")) as r:
            assert r.status == 200 and await r.text() == "GOOD"
        async with http.get(node.http_url("/metrics")) as r:
            assert r.status == 200
            text = await r.text()
    assert 'ambry_node_requests_total{op="put",status="OK"}' in text
    assert 'ambry_node_request_seconds_bucket{le="0.005",op="get"}' in text
    assert 'ambry_replica_blobs{partition="1"}' in text
    assert "ambry_replica_group_commit_syncs" in text
    assert "ambry_node_payload_bytes_in_total" in text


async def test_unknown_partition_and_bad_ids_are_typed_errors(client: NodeClient) -> None:
    with pytest.raises(ReplicaUnavailable):
        await client.get(new_id(partition=99))
    with pytest.raises(ReplicaUnavailable):
        await client.put(new_id(partition=99), props(10), b"", b"0123456789")
    with pytest.raises(InvalidBlobId):
        await client.get(b"\x00\x01" + b"x" * 29, partition=1)
    with pytest.raises(InvalidArgument):  # id of partition 0 sent to partition 1
        await client.get(new_id(partition=0), partition=1)
    with pytest.raises(PayloadTooLarge):
        await client.put(new_id(), props(MAX_RECORD + 1), b"", bytes(MAX_RECORD + 1))
    # the client replaced the connection the node closed and goes on
    assert (await client.ping())["status"] == "OK"


async def test_pipelined_requests_share_one_connection(node: NodeProcess) -> None:
    c = node.client(pool_size=1)
    try:
        blobs = [(new_id(), os.urandom(1000 + i * 997)) for i in range(40)]
        await asyncio.gather(*(c.put(b, props(len(d)), b"", d) for b, d in blobs))
        results = await asyncio.gather(*(c.get_bytes(b) for b, _ in blobs),
                                       *(c.ping() for _ in range(20)))
        for (_, data), (_, got) in zip(blobs, results[:40]):
            assert got == data
        assert c.connections == 1
    finally:
        await c.close()


# ---------------------------------------------------------------------------------- garbage
class RawConn:
    """A bare socket to the node, for sending what NodeClient never would."""

    def __init__(self, host: str, port: int) -> None:
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.host = host
        self.port = port

    async def __aenter__(self) -> Self:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, header: dict, payload: bytes = b"") -> None:
        body = msgpack.packb(header, use_bin_type=True)
        self.writer.write(struct.pack(">I", len(body)) + body + payload)

    async def reply(self, timeout_s: float = 5.0) -> dict | None:
        """The next reply header, or None if the node closed the connection."""
        try:
            async with asyncio.timeout(timeout_s):
                n = struct.unpack(">I", await self.reader.readexactly(4))[0]
                hdr = msgpack.unpackb(await self.reader.readexactly(n), raw=False)
                if hdr.get("payload_len"):
                    await self.reader.readexactly(hdr["payload_len"])
                return hdr
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def closed_by_node(self, timeout_s: float = 5.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                while await self.reader.read(65536):
                    pass
            return True
        except ConnectionError:
            return True


async def test_garbage_on_the_socket_never_hurts_the_node(node: NodeProcess,
                                                          client: NodeClient) -> None:
    # random bytes: whatever the node makes of them, it ends the connection
    async with RawConn(node.host, node.port) as raw:
        raw.send_raw(os.urandom(4096))
        assert await raw.closed_by_node()
    assert (await client.ping())["status"] == "OK"

    # a huge length prefix: PROTOCOL_ERROR, then the connection is closed
    async with RawConn(node.host, node.port) as raw:
        raw.send_raw(struct.pack(">I", 0xFFFFFFF0) + b"x" * 100)
        hdr = await raw.reply()
        assert hdr is not None and hdr["status"] == ProtocolError.code
        assert await raw.closed_by_node()

    # msgpack that is not a map
    async with RawConn(node.host, node.port) as raw:
        body = msgpack.packb([1, 2, 3])
        raw.send_raw(struct.pack(">I", len(body)) + body)
        hdr = await raw.reply()
        assert hdr is not None and hdr["status"] == ProtocolError.code and hdr["corr"] == 0
        assert await raw.closed_by_node()

    # well-framed but wrong requests get their error and the connection goes on
    async with RawConn(node.host, node.port) as raw:
        raw.send({"op": "no_such_op", "corr": 7, "rid": "t"})
        hdr = await raw.reply()
        assert hdr == {"corr": 7, "status": ProtocolError.code, "msg": "unknown op 'no_such_op'"}
        raw.send({"op": "get", "corr": 8, "rid": "t", "partition": 1, "blob_id": b"short"})
        assert (await raw.reply() or {})["status"] == InvalidBlobId.code
        raw.send({"op": "get", "corr": 9, "rid": "t", "partition": "1", "blob_id": b"x" * 32})
        assert (await raw.reply() or {})["status"] == ProtocolError.code
        raw.send({"op": "get", "corr": 10, "rid": "t", "blob_id": b"x" * 32})
        assert (await raw.reply() or {})["status"] == ProtocolError.code
        # a put to a partition the node does not host: its payload is skipped, not parsed
        fake = msgpack.packb({"op": "ping", "corr": 666})
        junk = struct.pack(">I", len(fake)) + fake
        raw.send({"op": "put", "corr": 11, "rid": "t", "partition": 99,
                  "blob_id": new_id(99).to_bytes(), "props": props(len(junk)).to_wire(),
                  "usermeta": b"", "payload_len": len(junk)}, junk)
        assert (await raw.reply() or {})["status"] == ReplicaUnavailable.code
        # a payload on an op that takes none is skipped as well
        raw.send({"op": "ping", "corr": 12, "rid": "t", "payload_len": len(junk)}, junk)
        assert (await raw.reply() or {})["status"] == ProtocolError.code
        raw.send({"op": "ping", "corr": 13, "rid": "t"})
        hdr = await raw.reply()
        assert hdr is not None and hdr["corr"] == 13 and hdr["status"] == "OK"

    # a bad payload_len cannot be skipped: error and close
    async with RawConn(node.host, node.port) as raw:
        raw.send({"op": "put", "corr": 1, "payload_len": -5})
        assert (await raw.reply() or {}).get("status") == ProtocolError.code
        assert await raw.closed_by_node()

    # the node served another client all along, and still does
    bid, data = await put_blob(client, 20_000)
    assert (await client.get_bytes(bid))[1] == data
    async with aiohttp.ClientSession() as http, http.get(node.http_url("/metrics")) as r:
        text = await r.text()
    assert "ambry_node_protocol_errors_total" in text
    assert 'status="INTERNAL"' not in text
    # no request or connection task left behind by the bad ones
    deadline = time.monotonic() + 5
    while True:
        async with aiohttp.ClientSession() as http, \
                http.get(node.http_url("/metrics")) as r:
            gauges = {line.split()[0]: float(line.split()[1])
                      for line in (await r.text()).splitlines()
                      if line.startswith(("ambry_node_connections ",
                                          "ambry_node_inflight_requests "))}
        if gauges["ambry_node_connections"] <= client.connections or \
                time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert gauges["ambry_node_inflight_requests"] == 0
    assert gauges["ambry_node_connections"] <= client.connections


# 200 KB: read as any payload; 1 MiB: received into a reused payload buffer (the large put
# path), which a cut-off put must not give back half-filled nor store
@pytest.mark.parametrize("size", [200_000, 1 << 20], ids=["200KB", "1MiB-pooled"])
async def test_put_cut_off_mid_payload_stores_nothing(node: NodeProcess,
                                                      client: NodeClient, size: int) -> None:
    before = {s["partition_id"]: s["last_seq"] for s in await client.stats()}
    bid = new_id()
    payload = os.urandom(size)
    async with RawConn(node.host, node.port) as raw:
        raw.send({"op": "put", "corr": 1, "rid": "cut", "partition": 1,
                  "blob_id": bid.to_bytes(), "props": props(len(payload)).to_wire(),
                  "usermeta": b"", "payload_len": len(payload)}, payload[:size // 2])
        await raw.writer.drain()
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.2)
    with pytest.raises(BlobNotFound):
        await client.get(bid)
    st = await client.blob_state(bid)
    assert st.state is None and not st.has_put
    after = {s["partition_id"]: s["last_seq"] for s in await client.stats()}
    assert after[1] == before[1]


async def test_concurrent_large_puts_through_reused_buffers_each_store_their_own_bytes(
        node: NodeProcess) -> None:
    # large put payloads are received into buffers the node reuses: one given back too early
    # (while its record is still being hashed or written) would store another put's bytes
    c = node.client(pool_size=4)
    try:
        async def one(i: int) -> tuple[BlobId, bytes]:
            data = os.urandom((1 << 20) + 4096 * i)
            bid = new_id(partition=i % 2)
            reply = await c.put(bid, props(len(data)), b"", data)
            assert reply.result == "created"
            return bid, data

        for _round in range(3):
            stored = await asyncio.gather(*(one(i) for i in range(12)))
            for bid, data in stored:
                _reply, got = await c.get_bytes(bid)
                assert got == data
    finally:
        await c.close()


# ---------------------------------------------------------------------------------- client
async def test_client_timeouts_and_refused_connections_are_unavailable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads everything, answers nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = NodeClient("127.0.0.1", port, request_timeout_ms=200)
    try:
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            await c.ping()
        assert time.monotonic() - t0 < 2
    finally:
        await c.close()
        server.close()
        await server.wait_closed()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    c = NodeClient("127.0.0.1", dead_port, connect_timeout_ms=500)
    with pytest.raises(Unavailable):
        await c.ping()
    await c.close()


# ---------------------------------------------------------------------------------- restart
async def test_sigterm_exits_zero_and_restart_keeps_everything(make_cluster: object,
                                                               tmp_path: Path) -> None:
    cluster: LocalCluster = make_cluster(partitions=2, storage=STORAGE)  # type: ignore
    cluster.start()
    n = cluster.nodes["dc1-n1"]
    c = n.client()
    blobs = [await put_blob(c, size, partition=i % 2)
             for i, size in enumerate([100, 5000, 2 * 1024 * 1024, 70_000])]
    await c.delete(blobs[0][0])
    now = int(time.time() * 1000)
    await c.name_put(0, NameRecord(101, 9, "models/final.pt", blobs[1][0].to_bytes(), now, 1))
    _, token_before = await _drain_feed(c, 1, None)
    await c.close()

    assert n.terminate() == 0
    assert "stopped in" in n.log_tail()
    n.start()
    await n.wait_ready_async()
    c = n.client()
    try:
        with pytest.raises(BlobDeleted):
            await c.get(blobs[0][0])
        for bid, data in blobs[1:]:
            assert (await c.get_bytes(bid))[1] == data
        entry = await c.name_get(0, 101, 9, "models/final.pt")
        assert entry is not None and entry.blob_id == blobs[1][0].to_bytes()
        # the feed goes on from the same token: same incarnation, nothing new
        batch = await c.entries_since(1, token_before)
        assert batch.entries == [] and batch.token == token_before
        stats = await c.stats()
        assert all(s["damage"] == [] for s in stats)
    finally:
        await c.close()
    assert n.terminate() == 0


# ---------------------------------------------------------------------------------- in-process
@pytest.fixture
async def inproc_node(tmp_path: Path) -> StorageNode:
    """A StorageNode in the test's own event loop (to hold it mid-request)."""
    write_config(tmp_path / "c.yaml", tmp_path / "data", partitions=1,
                 storage={"segment_size_bytes": "64MiB", "max_record_bytes": "32MiB",
                          "verify_on_read_max_bytes": "1MiB"})
    node = StorageNode(load_config(tmp_path / "c.yaml"), "dc1-n1", drain_timeout_s=10)
    await node.start()
    yield node  # type: ignore[misc]
    await node.stop()


async def test_drain_finishes_in_flight_request_with_health_bad(
        inproc_node: StorageNode) -> None:
    n = inproc_node
    c = NodeClient("127.0.0.1", n.port)
    bid = new_id(partition=0)
    data = os.urandom(24 * 1024 * 1024)
    await c.put(bid, props(len(data)), b"", data)
    await c.close()
    health = f"http://127.0.0.1:{n.http_port}/healthCheck"
    async with RawConn("127.0.0.1", n.port) as raw:
        # ask for 24 MiB and do not read: the reply stalls in the socket buffers
        raw.send({"op": "get", "corr": 1, "rid": "drain", "partition": 0,
                  "blob_id": bid.to_bytes()})
        await asyncio.sleep(0.3)
        stopping = asyncio.create_task(n.stop())
        # draining starts when the stop task runs: wait for it (before: a fixed 0.3 s, then
        # the health check had to be 503 already)
        deadline = time.monotonic() + 10
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(health) as r:
                    if r.status == 503:
                        assert await r.text() == "BAD"
                        break
                assert time.monotonic() < deadline, "health never turned BAD while stopping"
                await asyncio.sleep(0.05)
        assert not stopping.done()  # it waits for the reply in flight
        n2 = struct.unpack(">I", await raw.reader.readexactly(4))[0]
        hdr = msgpack.unpackb(await raw.reader.readexactly(n2), raw=False)
        assert hdr["status"] == "OK" and hdr["payload_len"] == len(data)
        assert await raw.reader.readexactly(len(data)) == data
        await asyncio.wait_for(stopping, 10)
        assert await asyncio.wait_for(raw.reader.read(), 5) == b""  # the node closed it
    with pytest.raises((ConnectionError, OSError)):
        await asyncio.open_connection("127.0.0.1", n.port)


async def test_unexpected_exception_is_internal_and_counted(inproc_node: StorageNode) -> None:
    n = inproc_node

    def broken(*_a: object) -> None:
        raise RuntimeError("a bug")

    n.replicas[0].state = broken  # type: ignore[method-assign]
    c = NodeClient("127.0.0.1", n.port)
    try:
        with pytest.raises(AmbryError) as ei:
            await c.blob_state(new_id(partition=0))
        assert ei.value.code == "INTERNAL"
        assert (await c.ping())["status"] == "OK"
    finally:
        await c.close()
    text = n.metrics.render().decode()
    assert "ambry_node_internal_errors_total 1.0" in text
    assert 'ambry_node_requests_total{op="blob_state",status="INTERNAL"} 1.0' in text
