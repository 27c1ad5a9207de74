"""Chunks of uploads that never complete are reclaimed (issue 13 item 9), on real processes:
three storage nodes and a frontend whose chunks are 64 KiB and whose pending chunk TTL
(``frontend.pending_chunk_ttl_s``) is a few seconds, so a 1 MiB upload is 16 chunks and the
window passes within the test. What broke: ``kill -9`` of a frontend in the middle of a large
upload left every chunk it had written permanent, with nothing that would ever reclaim them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from fe_helpers import (
    KIB,
    MIB,
    SERVICE,
    TIMEOUT,
    PatternBody,
    PausedBody,
    blob_bytes,
    call,
    new_chunk_ids,
    node_records,
    post_blob,
    store_fixture,
    until,
)
from s3_helpers import s3_client

from ambry.client import Client, RequestEvent, RetryPolicy
from ambry.testing.frontend import TEST_S3, StoreCluster

CHUNK = 64 * KIB
PENDING_TTL_S = 6  # the window; every upload this module completes takes well under 1 s
MODELS = {"x-ambry-target-container-name": "models"}
ALL = {"x-ambry-get-option": "Include_All"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(
        tmp_path_factory.mktemp("orphans"), datacenters=1, nodes_per_dc=3, partitions=2,
        frontend={"chunk_size_bytes": CHUNK, "pending_chunk_ttl_s": PENDING_TTL_S},
        extra={"s3": {**TEST_S3, "min_part_size_bytes": CHUNK}})


@pytest.fixture
def base(store: StoreCluster) -> str:
    return store.url("dc1", "")


async def chunk_ttls(http: aiohttp.ClientSession, base: str, ids: set[str]) -> dict[str, str]:
    """x-ambry-ttl of each chunk as a HEAD shows it ("-1" once made permanent)."""
    out = {}
    for bid in ids:
        got = (await call(http, "HEAD", f"{base}/{bid}", ALL)).expect(200)
        out[bid] = got.headers["x-ambry-ttl"]
    return out


def usage_of(store: StoreCluster, container: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "ambry.cli", "admin", "usage", "--config",
                          str(store.config_path), "--json"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode in (0, 1), res.stderr
    rows = {f"{r['account']}/{r['container']}": r for r in json.loads(res.stdout)["containers"]}
    return rows.get(container, {"bytes": 0, "expiring_chunk_bytes": 0, "expired_bytes": 0})


async def test_completed_uploads_leave_permanent_chunks_or_the_blobs_own_ttl(
        store, http, base):
    # the chunks of a complete upload must not expire with the pending window: they are made
    # permanent before the blob is acknowledged (or keep the TTL the blob has)
    data = blob_bytes(5 * CHUNK + 7, "complete")
    before = await node_records(store)
    bid = await post_blob(http, base, data)
    chunks = await new_chunk_ids(store, before)
    assert len(chunks) == 6
    assert set((await chunk_ttls(http, base, chunks)).values()) == {"-1"}
    assert (await call(http, "GET", f"{base}/{bid}")).expect(200).body == data

    before = await node_records(store)
    await post_blob(http, base, data, {"x-ambry-ttl": "3600"})
    assert set((await chunk_ttls(http, base, await new_chunk_ids(store, before))).values()) \
        == {"3600"}

    before = await node_records(store)
    (await call(http, "PUT", f"{base}/named/default/default/done/{time.time_ns()}", SERVICE,
                data)).expect(201)
    assert set((await chunk_ttls(http, base, await new_chunk_ids(store, before))).values()) \
        == {"-1"}

    # a chunk upload without a TTL is pending until a stitch makes it permanent
    part = await post_blob(http, base, b"p" * 100, {"x-ambry-chunk-upload": "true"})
    assert (await chunk_ttls(http, base, {part}))[part] == str(PENDING_TTL_S)
    # ...and cannot end up in a blob that would outlive it
    got = await call(http, "POST", base + "/stitch", {**SERVICE, "x-ambry-ttl": "3600"},
                     json.dumps({"chunkIds": [part]}))
    assert got.status == 400, got.text
    (await call(http, "POST", base + "/stitch", SERVICE,
                json.dumps({"chunkIds": [part]}))).expect(201)
    assert (await chunk_ttls(http, base, {part}))[part] == "-1"


async def test_killed_upload_expires_after_the_window_while_resumable_uploads_survive_it(
        store, http, base, tmp_path):
    # kill -9 of the frontend in the middle of an upload left its chunks permanent: now they
    # carry the pending TTL, `ambry admin usage` shows them, and they expire after the
    # window; an SDK resumable upload and an S3 multipart upload started before the kill
    # still complete after it, and a completed blob is unaffected
    kept = blob_bytes(3 * CHUNK + 1, "kept")
    kept_id = await post_blob(http, base, kept)
    unstitched = await post_blob(http, base, b"u" * 99, {"x-ambry-chunk-upload": "true"})

    # an SDK upload that stops before its stitch (its journal keeps the chunk ids)
    src = tmp_path / "model.bin"
    sdk_data = blob_bytes(4 * CHUNK + 5, "sdk")
    src.write_bytes(sdk_data)
    kw: dict[str, Any] = {"part_size_bytes": CHUNK, "resume_dir": tmp_path / "resume",
                          "progress": False}

    def fail_on_stitch(e: RequestEvent) -> None:
        if e.path == "/stitch":
            raise ConnectionResetError("injected before the stitch")

    def first_try() -> None:
        with Client(base, on_request=fail_on_stitch, retry=RetryPolicy(attempts=1),
                    **kw) as c, pytest.raises(Exception, match="injected"):
            c.put(src)

    await asyncio.to_thread(first_try)

    # an S3 multipart upload with its parts stored, not completed yet
    s3 = s3_client(store)
    key = f"mp/{time.time_ns()}"
    parts_data = [blob_bytes(2 * CHUNK, "mp1"), blob_bytes(CHUNK + 3, "mp2")]

    def start_multipart() -> tuple[str, list[dict[str, Any]]]:
        up = s3.create_multipart_upload(Bucket="default", Key=key)["UploadId"]
        done = [{"PartNumber": i + 1, "ETag": s3.upload_part(
            Bucket="default", Key=key, UploadId=up, PartNumber=i + 1, Body=d)["ETag"]}
            for i, d in enumerate(parts_data)]
        return up, done

    upload_id, parts = await asyncio.to_thread(start_multipart)

    # the upload that the kill interrupts, into its own container
    before = await node_records(store)
    paused = PausedBody(PatternBody(1 * MIB, piece_bytes=CHUNK, seed=9), MIB // 2)
    outcome: list[object] = []

    async def send() -> None:
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
                outcome.append(await call(s, "POST", base + "/",
                                          {**SERVICE, **MODELS,
                                           "Content-Length": str(paused.body.size)},
                                          paused.stream()))
        except (aiohttp.ClientError, ConnectionError) as e:
            outcome.append(e)

    task = asyncio.ensure_future(send())
    await asyncio.wait_for(paused.reached.wait(), 30)

    async def chunks_stored() -> bool:
        return len(await new_chunk_ids(store, before)) >= 6

    await until(chunks_stored, what="chunks of the paused upload stored")
    store.frontends["dc1"].kill()
    paused.resume.set()
    await asyncio.wait_for(task, 30)
    assert isinstance(outcome[0], Exception), f"the killed upload got an answer: {outcome}"
    await asyncio.to_thread(store.frontends["dc1"].start().wait_ready)

    orphans = await new_chunk_ids(store, before)

    # an upload slower than the window: paused until its first chunks have expired
    before_slow = await node_records(store)
    slow = PausedBody(PatternBody(6 * CHUNK, piece_bytes=CHUNK, seed=10), 3 * CHUNK)
    slow_task = asyncio.ensure_future(call(http, "POST", base + "/", SERVICE, slow.stream()))
    await asyncio.wait_for(slow.reached.wait(), 30)

    async def slow_chunks_stored() -> bool:
        return len(await new_chunk_ids(store, before_slow)) >= 2

    await until(slow_chunks_stored, what="chunks of the slow upload stored")
    slow_chunks = await new_chunk_ids(store, before_slow)

    # every chunk the killed upload wrote carries the pending TTL
    ttls = await chunk_ttls(http, base, orphans)
    assert set(ttls.values()) == {str(PENDING_TTL_S)}, ttls
    sizes = 0
    for bid in orphans:
        sizes += int((await call(http, "HEAD", f"{base}/{bid}", ALL)).headers[
            "x-ambry-blob-size"])
    # ...and `ambry admin usage` shows their bytes as chunks with a TTL
    usage = await asyncio.to_thread(usage_of, store, "default/models")
    assert usage["expiring_chunk_bytes"] >= sizes >= 6 * CHUNK, (usage, sizes)
    assert usage["bytes"] >= usage["expiring_chunk_bytes"]

    # after the window the orphans are expired (and compaction frees them as any expired
    # blob), as is the chunk upload that was never stitched
    async def all_expired() -> bool:
        for bid in orphans | {unstitched}:
            got = await call(http, "HEAD", f"{base}/{bid}")
            if got.status != 410:
                assert got.status == 200, (bid, got.status)
                return False
        return True

    await until(all_expired, timeout_s=PENDING_TTL_S + 30, what="orphan chunks expired")
    for bid in orphans:
        got = await call(http, "GET", f"{base}/{bid}")
        assert got.headers["x-ambry-error-code"] == "BLOB_EXPIRED", bid

    # the slow upload's chunks cannot be made permanent any more: a clear 400, no blob
    async def slow_expired() -> bool:
        statuses = [(await call(http, "HEAD", f"{base}/{b}")).status for b in slow_chunks]
        return set(statuses) == {410}

    await until(slow_expired, timeout_s=PENDING_TTL_S + 30, what="slow upload's chunks expired")
    slow.resume.set()
    got = await asyncio.wait_for(slow_task, 30)
    assert got.status == 400 and "pending_chunk_ttl_s" in got.text, (got.status, got.text)

    # what completed before the window is still whole
    assert (await call(http, "GET", f"{base}/{kept_id}")).expect(200).body == kept

    # the SDK resumes across the window: its chunks carry its own resume window, so the
    # stitch takes them and no chunk is sent again
    events: list[RequestEvent] = []

    def resume() -> bytes:
        with Client(base, on_request=events.append, **kw) as c:
            return c.get_bytes(c.put(src))

    assert await asyncio.to_thread(resume) == sdk_data
    assert [e.path for e in events if e.method == "POST"] == ["/stitch"]

    # the S3 multipart upload completes across the window too (parts live multipart_ttl_s)
    def complete() -> bytes:
        s3.complete_multipart_upload(Bucket="default", Key=key, UploadId=upload_id,
                                     MultipartUpload={"Parts": parts})
        return bytes(s3.get_object(Bucket="default", Key=key)["Body"].read())

    assert await asyncio.to_thread(complete) == b"".join(parts_data)


def test_pending_chunk_ttl_must_exceed_the_ttl_update_buffer() -> None:
    from ambry.common.config import FrontendConfig
    from ambry.common.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="pending_chunk_ttl_s"):
        FrontendConfig(pending_chunk_ttl_s=60, ttl_update_buffer_s=60)
    assert FrontendConfig().pending_chunk_ttl_s == 24 * 3600
