"""The node's batch reader (ambry.storage.batchreader): GETs parsed together are located and
read on one trip to the I/O threads, and every kind of GET still gets its own right answer.

A real node process, with the C extensions and with their pure-Python twins
(AMBRY_NO_EXTENSIONS=1).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import aiohttp
import pytest
import xxhash

from ambry.common.blobid import BlobId, new_blob_id
from ambry.common.errors import BlobDeleted, BlobNotFound, InvalidArgument
from ambry.common.properties import BlobProperties
from ambry.protocol.client import NodeClient
from ambry.testing.cluster import LocalCluster, NodeProcess

STORAGE = {"segment_size_bytes": "8MiB", "max_record_bytes": 4 * 1024 * 1024,
           # 3 MiB payloads take the streaming path (pread in pieces), 4 KiB ones the
           # verified read, 600 KiB ones asked with client_verifies go out with sendfile
           "verify_on_read_max_bytes": "1MiB", "sendfile_min_bytes": "256KiB"}
SMALL_BLOBS = 48


def _props(size: int) -> BlobProperties:
    return BlobProperties(size=size, created_ms=int(time.time() * 1000),
                          content_type="application/x-test", service_id="batch-reads")


async def _put(client: NodeClient, size: int) -> tuple[BlobId, bytes]:
    bid = new_blob_id(1, 101, 5, 1)
    data = os.urandom(size)
    assert (await client.put(bid, _props(size), b"um", data)).result == "created"
    return bid, data


async def _metric(node: NodeProcess, name: str) -> float:
    async with aiohttp.ClientSession() as http, \
            http.get(node.http_url("/metrics")) as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _started_node(make_cluster: Callable[..., LocalCluster], impl: str) -> NodeProcess:
    """A started node of 2 partitions, with the C extensions (``c``) or their pure-Python
    twins (``python``)."""
    env = {"AMBRY_NO_EXTENSIONS": "1"} if impl == "python" else {}
    node = make_cluster(partitions=2, storage=STORAGE, env=env).nodes["dc1-n1"]
    node.start()
    await node.wait_ready_async()
    return node


async def _get(client: NodeClient, bid: BlobId, **kw: object) -> bytes | BaseException:
    try:
        reply = await client.get(bid, **kw)  # type: ignore[arg-type]
        async with reply:
            data = bytes(await reply.read())
        check = reply.payload_check()
        if check is not None:  # sent unread (sendfile): the reader verifies
            check.update(data)
            assert check.ok(), "a payload sent with sendfile fails its checksum"
        return data
    except (BlobNotFound, BlobDeleted, InvalidArgument) as e:
        return e


@pytest.mark.parametrize("impl", ["c", "python"])
async def test_pipelined_gets_share_io_trips_and_each_gets_its_own_answer(
        make_cluster: Callable[..., LocalCluster], impl: str) -> None:
    # Before the batch reader every GET took its own task and thread hand-off (~60 % of a
    # node's CPU per 4 KiB GET); a batch that mixed up replies, lost one, or sent a stream's
    # payload at the wrong place would show here as a wrong body or a hang.
    node = await _started_node(make_cluster, impl)
    writer = node.client(pool_size=2)
    try:
        small = [await _put(writer, 4096 + i) for i in range(SMALL_BLOBS)]
        mid_id, mid = await _put(writer, 600 * 1024)  # sendfile when the reader verifies
        big_id, big = await _put(writer, 3 * 1024 * 1024)  # streamed in pieces
        gone_id, _ = await _put(writer, 100)
        await writer.delete(gone_id)
    finally:
        await writer.close()
    never = new_blob_id(1, 101, 5, 1)
    batches0 = await _metric(node, "ambry_node_read_batches_total")
    jobs0 = await _metric(node, "ambry_node_read_batch_requests_total")

    client = node.client(pool_size=1)  # every GET pipelined on one connection
    try:
        expected: list[tuple[asyncio.Future[bytes | BaseException], object]] = []

        def ask(bid: BlobId, want: object, **kw: object) -> None:
            expected.append((asyncio.ensure_future(_get(client, bid, **kw)), want))

        for _round in range(3):
            for bid, data in small:
                ask(bid, data)
            ask(small[0][0], small[0][1][100:300], range=(100, 200))
            ask(small[1][0], b"", info_only=True)
            ask(mid_id, mid, client_verifies=True)
            ask(mid_id, mid[1000:5000], range=(1000, 4000))
            ask(big_id, big)
            ask(big_id, big[-10:], range=(len(big) - 10, 50))  # clamped to the end
            ask(small[2][0], InvalidArgument, range=(10**9, 1))
            ask(gone_id, BlobDeleted)
            ask(never, BlobNotFound)
        async with asyncio.timeout(60):
            got = await asyncio.gather(*(f for f, _ in expected))
    finally:
        await client.close()
    for i, ((_, want), answer) in enumerate(zip(expected, got)):
        if isinstance(want, type):
            assert isinstance(answer, want), (i, want, answer)
        else:
            assert isinstance(answer, bytes), (i, answer)
            assert xxhash.xxh3_64_hexdigest(answer) == xxhash.xxh3_64_hexdigest(want), i
    batches = await _metric(node, "ambry_node_read_batches_total") - batches0
    jobs = await _metric(node, "ambry_node_read_batch_requests_total") - jobs0
    assert jobs == len(expected), (jobs, len(expected))
    assert 0 < batches < jobs, f"{jobs} GETs took {batches} trips: none shared one"
    assert node.terminate() == 0


@pytest.mark.parametrize("impl", ["c", "python"])
async def test_gets_asked_together_share_one_write_and_one_node_trip(
        make_cluster: Callable[..., LocalCluster], impl: str) -> None:
    # A frontend asked each payload-less request on the least loaded connection and wrote it
    # alone: 24 GETs at once cost 24 sends (each a loopback packet the node reads and parses
    # on its own) spread over every pooled connection. Corked, the headers of one loop step
    # leave together on a few connections, and the node serves them in few trips.
    node = await _started_node(make_cluster, impl)
    writer = node.client(pool_size=1)
    try:
        blobs = [await _put(writer, 4096 + i) for i in range(24)]
    finally:
        await writer.close()
    client = node.client(pool_size=8)
    try:
        assert await _get(client, blobs[0][0]) == blobs[0][1]  # one connection is open
        batches0 = await _metric(node, "ambry_node_read_batches_total")
        jobs0 = await _metric(node, "ambry_node_read_batch_requests_total")
        for _round in range(3):
            async with asyncio.timeout(30):
                got = await asyncio.gather(*(_get(client, bid) for bid, _ in blobs))
            assert got == [data for _, data in blobs]
        # 24 at once, at most 8 in flight per corked connection: 3 connections, not 8
        assert client.connections <= 3, client.connections
        batches = await _metric(node, "ambry_node_read_batches_total") - batches0
        jobs = await _metric(node, "ambry_node_read_batch_requests_total") - jobs0
        assert jobs == 72, jobs
        assert batches <= 36, f"72 GETs sent together took {batches} trips"
    finally:
        await client.close()
    assert node.terminate() == 0
