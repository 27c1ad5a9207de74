"""Rot on every replica of one chunk of a composite blob (DESIGN.md section 20, "the rot"): a
GET that has already sent its 200 must end at once with a cut reply, never stall; the frontend
logs the blob and the chunk and counts the abort in /metrics; the SDK raises a typed error
instead of hanging or returning a short file. The same for the S3 GET path.

Real processes: three storage nodes and a frontend (1 MiB chunks); the bytes are flipped in the
log segment files of every replica while the nodes run (:mod:`ambry.testing.rot`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from fe_helpers import CHUNK, MIB, blob_bytes, call, on_every_replica, post_blob, store_fixture

from ambry.client import AsyncClient, RetryPolicy
from ambry.client import _errors as sdk_errors
from ambry.common.blobid import BlobType, decode
from ambry.frontend.chunking import decode_metadata
from ambry.testing.frontend import StoreCluster
from ambry.testing.rot import flip_payload_bytes

# A stalled reply would run until this; a prompt abort takes well under a second.
PROMPT_S = 20.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("rot"), datacenters=1, nodes_per_dc=3,
                             partitions=4)


async def _chunk_ids(store: StoreCluster, blob_id: str) -> list[str]:
    """The chunk ids of a composite blob, from its metadata record on a node."""
    await on_every_replica(store, blob_id)  # acked by 2 of 3: node 0 may not have it yet
    node = store.nodes_in("dc1")[0]
    client = node.client()
    try:
        _, data = await client.get_bytes(decode(blob_id))
    finally:
        await client.close()
    return [c.blob_id for c in decode_metadata(data)[1]]


async def _composite_with_rotten_chunk(store: StoreCluster, http: aiohttp.ClientSession,
                                       seed: str, index: int = 3) -> tuple[str, str, bytes]:
    """A 6-chunk blob whose chunk ``index`` is corrupt on every replica: (blob id, chunk id,
    the good bytes)."""
    data = blob_bytes(6 * CHUNK, seed)
    bid = await post_blob(http, store.url("dc1", ""), data)
    assert decode(bid).blob_type is BlobType.METADATA
    return bid, await _rot_chunk_on_every_replica(store, bid, index, at=CHUNK // 2), data


async def _rot_chunk_on_every_replica(store: StoreCluster, blob_id: str, index: int,
                                      at: int) -> str:
    """Flip payload bytes of chunk ``index`` of ``blob_id`` on all 3 replicas: its id.
    Flaked on a busy machine ("found on 2 replicas"): the chunk's PUT was acked by 2, and the
    third copy came later (a straggling write, or replication); it was never damaged."""
    chunk = (await _chunk_ids(store, blob_id))[index]
    await on_every_replica(store, chunk)
    damaged = flip_payload_bytes([n.data_dir for n in store.nodes_in("dc1")], chunk, at=at)
    assert damaged == 3, f"chunk {chunk} found on {damaged} replicas"
    return chunk


async def _metric(http: aiohttp.ClientSession, store: StoreCluster, name: str) -> float:
    text = (await call(http, "GET", store.url("dc1", "/metrics"))).text
    return sum(float(m.group(1)) for m in
               re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE))


async def _read_until_cut(resp: aiohttp.ClientResponse) -> tuple[int, BaseException | None]:
    got = 0
    try:
        async for piece in resp.content.iter_chunked(256 * 1024):
            got += len(piece)
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
        return got, e
    return got, None


async def test_get_of_a_composite_with_a_chunk_rotten_on_every_replica_is_cut_at_once(
        store: StoreCluster, http: aiohttp.ClientSession) -> None:
    # broke: the 200 and the first 3 chunks went out, then the chunk's error was turned into
    # a second (503) response on the already-started body, and the connection stalled forever
    bid, chunk, data = await _composite_with_rotten_chunk(store, http, "rot-rest")
    before = await _metric(http, store, "ambry_frontend_responses_aborted_total")
    t0 = time.monotonic()
    async with asyncio.timeout(PROMPT_S):
        async with http.get(store.url("dc1", f"/{bid}")) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len(data))
            got, err = await _read_until_cut(resp)
    assert err is not None, "a short body must not look complete"
    assert got < len(data)
    assert got <= 3 * CHUNK + MIB  # nothing past the rotten chunk
    print(f"cut after {got} bytes in {time.monotonic() - t0:.2f} s")
    assert await _metric(http, store, "ambry_frontend_responses_aborted_total") == before + 1
    log = (Path(store.root) / "frontend-dc1.log").read_text()
    assert re.search(rf"{bid}.*chunk 3 .*{chunk}", log), "the log names the blob and chunk"


async def test_a_range_starting_at_the_rotten_chunk_is_a_clear_503_before_any_byte(
        store: StoreCluster, http: aiohttp.ClientSession) -> None:
    # the first piece of a body is fetched before the status goes out, so a chunk that fails
    # there is an error reply naming the cause, not a 206 cut at byte 0
    bid, _chunk, _ = await _composite_with_rotten_chunk(store, http, "rot-range")
    got = await call(http, "GET", store.url("dc1", f"/{bid}"),
                     {"Range": f"bytes={3 * CHUNK + 10}-{4 * CHUNK}"})
    assert got.status == 503, got.text
    assert got.headers["x-ambry-error-code"] == "DATA_CORRUPT"


async def test_the_sdk_raises_a_typed_error_on_a_rotten_chunk(
        store: StoreCluster, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    # the SDK must neither hang nor hand back a short file
    bid, _chunk, _ = await _composite_with_rotten_chunk(store, http, "rot-sdk")
    policy = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05)
    async with AsyncClient(store.url("dc1", ""), retry=policy, service_id="itest") as c:
        async with asyncio.timeout(PROMPT_S):
            with pytest.raises(sdk_errors.CorruptBlob):
                await c.get_bytes(bid)
            dest = tmp_path / "out.bin"
            with pytest.raises(sdk_errors.CorruptBlob):
                await c.download(bid, dest)
            assert not dest.exists()
            reader = await c.get(bid)
            with pytest.raises(sdk_errors.CorruptBlob):
                while await reader.read(MIB):
                    pass
            await reader.aclose()


async def test_s3_get_of_a_rotten_chunk_is_cut_at_once(
        store: StoreCluster, http: aiohttp.ClientSession) -> None:
    # the S3 GET path streams through the same code and stalled the same way
    import boto3
    from botocore.config import Config

    from ambry.testing.frontend import TEST_S3

    key = TEST_S3["access_keys"][0]
    s3 = boto3.client("s3", endpoint_url=store.s3_url("dc1"), region_name="us-east-1",
                      aws_access_key_id=key["access_key"], aws_secret_access_key=key["secret_key"],
                      config=Config(retries={"max_attempts": 1}, read_timeout=PROMPT_S))
    data = blob_bytes(6 * CHUNK, "rot-s3")
    await asyncio.to_thread(s3.create_bucket, Bucket="rot")
    await asyncio.to_thread(s3.put_object, Bucket="rot", Key="k", Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "rot", "Key": "k"})
    # the blob behind the key: buckets are containers and keys are names (REST listing)
    listing = await call(http, "GET", store.url("dc1", "/named/default/rot"))
    bid = json.loads(listing.expect(200).body)["entries"][0]["blobId"]
    await _rot_chunk_on_every_replica(store, bid, 3, at=1)
    before = await _metric(http, store, "ambry_frontend_responses_aborted_total")
    async with asyncio.timeout(PROMPT_S):
        async with http.get(url) as resp:
            assert resp.status == 200
            got, err = await _read_until_cut(resp)
    assert err is not None and got < len(data)
    assert await _metric(http, store, "ambry_frontend_responses_aborted_total") == before + 1



async def test_rot_on_every_replica_waits_for_a_replica_that_straggled_through_the_put(
        store: StoreCluster, http: aiohttp.ClientSession) -> None:
    # broke: a replica stopped (or just slow) while the blob was put gets its copy later,
    # but the chunk was flipped on the two that acked only: "found on 2 replicas" on a busy
    # machine, or a GET served whole by the late, intact copy. Last in the module: it
    # stops a node
    straggler = store.nodes_in("dc1")[2]
    os.kill(straggler.pid, signal.SIGSTOP)
    try:
        data = blob_bytes(6 * CHUNK, "rot-straggler")
        bid = await post_blob(http, store.url("dc1", ""), data)  # acked by the other two
        # it goes on a little later: the helper must wait for its copy, whenever it comes
        # (the delay only makes the old helper's flip come first; nothing waits on it)
        asyncio.get_running_loop().call_later(2.0, os.kill, straggler.pid, signal.SIGCONT)
        await _rot_chunk_on_every_replica(store, bid, 3, at=CHUNK // 2)
    finally:
        os.kill(straggler.pid, signal.SIGCONT)
    got = await call(http, "GET", store.url("dc1", f"/{bid}"),
                     {"Range": f"bytes={3 * CHUNK}-{3 * CHUNK + 99}"})
    assert got.status == 503, got.text
    assert got.headers["x-ambry-error-code"] == "DATA_CORRUPT"
