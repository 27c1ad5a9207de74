"""Every row of the Ambry REST API table (DESIGN.md section 4) against real processes: three
storage nodes and a frontend, started once for this module. Chunks are 1 MiB here, so a few
MiB already make a composite blob (chunk boundaries at multiples of 1 MiB)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import re
import struct
import time
import urllib.parse
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
import xxhash
from fe_helpers import (
    CHUNK,
    KIB,
    MIB,
    SERVICE,
    TIMEOUT,
    PatternBody,
    PausedBody,
    assert_no_new_reachable_blob,
    blob_bytes,
    call,
    fetch_hash,
    new_chunk_ids,
    node_records,
    post_blob,
    seed_from_env,
    store_fixture,
    until,
)
from yarl import URL

from ambry.common.blobid import BlobType, new_blob_id
from ambry.testing.frontend import StoreCluster

# Headers a GET and a HEAD of the same blob must agree on.
BLOB_HEADERS = ("Content-Type", "Content-Length", "Accept-Ranges", "ETag", "Last-Modified",
                "x-ambry-blob-size", "x-ambry-service-id", "x-ambry-content-type",
                "x-ambry-creation-time", "x-ambry-ttl", "x-ambry-owner-id", "x-ambry-filename",
                "x-ambry-um-epoch", "x-ambry-um-run-name", "x-ambry-target-account-name",
                "x-ambry-target-container-name")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("fe-api"), datacenters=1,
                             nodes_per_dc=3, partitions=4)


@pytest.fixture
def base(store: StoreCluster) -> str:
    return store.url("dc1", "")


def never_stored_id(partition: int = 1, blob_type: BlobType = BlobType.SIMPLE) -> str:
    return new_blob_id(1, 1, 1, partition, blob_type).to_str()


def rfc1123_s(text: str) -> float:
    assert text.endswith(" GMT"), text
    return email.utils.parsedate_to_datetime(text).timestamp()


async def node_errors(http: aiohttp.ClientSession, base: str) -> float:
    text = (await call(http, "GET", base + "/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ambry_frontend_node_errors_total"))


# ------------------------------------------------------------------------------- POST /
async def test_post_returns_201_with_location_size_and_creation_time(http, base):
    before = time.time()
    got = (await call(http, "POST", base + "/", SERVICE, b"hello world")).expect(201)
    assert re.fullmatch(r"/[A-Za-z0-9_-]{43}", got.headers["Location"])
    assert got.headers["x-ambry-blob-size"] == "11"
    assert before - 1 <= rfc1123_s(got.headers["x-ambry-creation-time"]) <= time.time() + 1
    assert (await call(http, "GET", base + got.headers["Location"])).expect(200).body == \
        b"hello world"


@pytest.mark.parametrize("missing", ["x-ambry-service-id", "x-ambry-content-type"])
async def test_post_without_a_required_header_is_400(http, base, missing):
    headers = {k: v for k, v in SERVICE.items() if k != missing}
    got = (await call(http, "POST", base + "/", headers, b"data")).expect(400)
    assert got.headers["x-ambry-error-code"] == "MISSING_HEADER"
    assert missing in got.text and len(got.body) < 600 and "Traceback" not in got.text


@pytest.mark.parametrize("ttl", ["abc", "-2", "1.5", "", "1e3", "+5", "ten"])
async def test_post_with_a_bad_ttl_is_400(http, base, ttl):
    got = (await call(http, "POST", base + "/", {**SERVICE, "x-ambry-ttl": ttl},
                      b"data")).expect(400)
    assert got.headers["x-ambry-error-code"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("header,value,status", [
    ("x-ambry-blob-size", "abc", 400),
    ("x-ambry-blob-size", "-1", 400),
    ("x-ambry-blob-size", str(10**15), 413),  # over max_blob_size_bytes: refused up front
    ("x-ambry-chunk-upload", "maybe", 400),
    ("x-ambry-um-", "v", 400),  # empty user metadata key
])
async def test_post_with_a_bad_optional_header(http, base, header, value, status):
    got = await call(http, "POST", base + "/", {**SERVICE, header: value}, b"data")
    assert got.status == status, got.text
    assert got.headers["x-ambry-error-code"] and "Location" not in got.headers


async def test_user_metadata_over_8_kib_is_400(http, base):
    # five 2 KiB values: each header line is fine, the total is not
    um = {f"x-ambry-um-k{i}": "v" * 2048 for i in range(5)}
    got = await call(http, "POST", base + "/", {**SERVICE, **um}, b"data")
    assert got.status == 400, got.text
    assert got.headers["x-ambry-error-code"] == "INVALID_ARGUMENT"


async def test_unknown_routes_and_methods_are_named_errors(http, base):
    got = await call(http, "GET", base + "/a/b/c")
    assert got.status == 404 and got.headers["x-ambry-error-code"] == "NOT_FOUND"
    got = await call(http, "PATCH", base + "/")
    assert got.status == 405 and got.headers["x-ambry-error-code"] == "METHOD_NOT_ALLOWED"


# ------------------------------------------------------------------------------- GET / HEAD
async def test_get_and_head_carry_every_blob_header(http, base):
    data = blob_bytes(5000, "props")
    headers = {**SERVICE, "x-ambry-ttl": "3600", "x-ambry-owner-id": "alice",
               "x-ambry-filename": "model.pt", "x-ambry-um-epoch": "42",
               "x-ambry-um-Run-Name": "baseline v2"}
    posted = (await call(http, "POST", base + "/", headers, data)).expect(201)
    bid = posted.location_id
    got = (await call(http, "GET", f"{base}/{bid}")).expect(200)
    assert got.body == data
    h = got.headers
    assert h["Content-Type"] == "application/x-itest"
    assert h["Content-Length"] == "5000"
    assert h["Accept-Ranges"] == "bytes"
    assert h["ETag"] == f'"{bid}"'
    assert h["Last-Modified"] == posted.headers["x-ambry-creation-time"]
    assert h["x-ambry-creation-time"] == posted.headers["x-ambry-creation-time"]
    assert h["x-ambry-blob-size"] == "5000"
    assert h["x-ambry-service-id"] == "itest"
    assert h["x-ambry-content-type"] == "application/x-itest"
    assert h["x-ambry-ttl"] == "3600"
    assert h["x-ambry-owner-id"] == "alice"
    assert h["x-ambry-filename"] == "model.pt"
    assert h["x-ambry-um-epoch"] == "42"
    assert h["x-ambry-um-run-name"] == "baseline v2"
    assert h["x-ambry-target-account-name"] == "default"
    assert h["x-ambry-target-container-name"] == "default"
    head = (await call(http, "HEAD", f"{base}/{bid}")).expect(200)
    assert head.body == b""
    for name in BLOB_HEADERS:
        assert head.headers.get(name) == h.get(name), name


async def test_get_option_that_is_unknown_is_400(http, base):
    bid = await post_blob(http, base, b"x")
    got = await call(http, "GET", f"{base}/{bid}", {"x-ambry-get-option": "Everything"})
    assert got.expect(400).headers["x-ambry-error-code"] == "INVALID_ARGUMENT"


# ------------------------------------------------------------------------------- ranges
# A composite of 4 chunks: 1 MiB, 1 MiB, 1 MiB, 0.5 MiB + 123 bytes.
COMPOSITE_SIZE = 3 * CHUNK + CHUNK // 2 + 123


@pytest.fixture(scope="module")
def ranged_blobs(store: StoreCluster) -> dict[str, tuple[str, bytes]]:
    async def post_all() -> dict[str, tuple[str, bytes]]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            out = {}
            for kind, size in (("simple", 4000), ("composite", COMPOSITE_SIZE)):
                data = blob_bytes(size, kind)
                out[kind] = (await post_blob(s, store.url("dc1", ""), data), data)
            return out

    return asyncio.run(post_all())


def _ranges(total: int) -> list[tuple[str, int, int]]:
    """(Range header, expected start, expected length) for a blob of ``total`` bytes."""
    b = CHUNK if total > CHUNK else 1000  # a chunk boundary (or an inner offset)
    return [
        ("bytes=0-0", 0, 1),
        ("bytes=100-199", 100, 100),
        (f"bytes={b - 10}-{b + 9}", b - 10, 20),  # across the first chunk boundary
        (f"bytes={b - 1}-{total - 2}", b - 1, total - b),  # across every boundary
        (f"bytes={b}-", b, total - b),  # open end, starting at a boundary
        ("bytes=-100", total - 100, 100),  # suffix
        (f"bytes=-{total + 1000}", 0, total),  # suffix longer than the blob: all of it
        (f"bytes={total - 5}-{total + 10**9}", total - 5, 5),  # end clamped
        (f"bytes={total - 1}-{total - 1}", total - 1, 1),  # the last byte
    ]


@pytest.mark.parametrize("kind", ["simple", "composite"])
@pytest.mark.parametrize("case", range(9))
async def test_range_get_is_206_with_content_range(http, base, ranged_blobs, kind, case):
    bid, data = ranged_blobs[kind]
    header, start, length = _ranges(len(data))[case]
    got = (await call(http, "GET", f"{base}/{bid}", {"Range": header})).expect(206)
    assert got.headers["Content-Range"] == f"bytes {start}-{start + length - 1}/{len(data)}"
    assert got.headers["Content-Length"] == str(length)
    assert got.headers["x-ambry-blob-size"] == str(len(data))
    assert got.body == data[start:start + length]
    head = (await call(http, "HEAD", f"{base}/{bid}", {"Range": header})).expect(206)
    assert head.headers["Content-Range"] == got.headers["Content-Range"]
    assert head.headers["Content-Length"] == str(length)


@pytest.mark.parametrize("kind", ["simple", "composite"])
async def test_unsatisfiable_range_is_416(http, base, ranged_blobs, kind):
    bid, data = ranged_blobs[kind]
    for header in (f"bytes={len(data)}-", f"bytes={len(data) + 5}-{len(data) + 9}",
                   "bytes=-0"):
        got = (await call(http, "GET", f"{base}/{bid}", {"Range": header})).expect(416)
        assert got.headers["Content-Range"] == f"bytes */{len(data)}"
        assert got.headers["x-ambry-error-code"] == "RANGE_NOT_SATISFIABLE"
        assert (await call(http, "HEAD", f"{base}/{bid}", {"Range": header})).status == 416


async def test_invalid_or_multi_range_serves_the_whole_blob(http, base, ranged_blobs):
    bid, data = ranged_blobs["composite"]
    for header in ("bytes=5-2", "bytes=0-1,5-6", "items=0-5"):
        got = (await call(http, "GET", f"{base}/{bid}", {"Range": header})).expect(200)
        assert got.body == data


async def test_composite_reads_are_fast_and_leave_node_connections_healthy(http, base):
    # Regression: the GET of each chunk asks two replicas at once; when both answered before
    # the router looked, the slower reply was never released, its node connection stalled
    # for node_timeout_ms (5 s here) and was then dropped: reads of big composite blobs took
    # seconds longer, at random. A healthy read of 24 MiB takes a fraction of a second.
    body = PatternBody(24 * MIB, seed=24)
    got = (await call(http, "POST", base + "/", SERVICE, body.stream())).expect(201)
    url = base + got.headers["Location"]
    errors_before = await node_errors(http, base)
    slow = []
    for _ in range(4):
        t0 = time.monotonic()
        assert await fetch_hash(http, url) == (200, body.size, body.xxh3())
        slow += [time.monotonic() - t0] if time.monotonic() - t0 > 3.0 else []
    assert not slow, f"reads took {slow} s"
    assert await node_errors(http, base) == errors_before


# ------------------------------------------------------------------------------- sizes
async def test_zero_byte_blob(http, base):
    got = (await call(http, "POST", base + "/", SERVICE, b"")).expect(201)
    assert got.headers["x-ambry-blob-size"] == "0"
    url = base + got.headers["Location"]
    g = (await call(http, "GET", url)).expect(200)
    assert g.body == b"" and g.headers["Content-Length"] == "0"
    assert (await call(http, "HEAD", url)).expect(200).headers["Content-Length"] == "0"
    for header in ("bytes=0-", "bytes=-1", "bytes=0-0"):
        r = (await call(http, "GET", url, {"Range": header})).expect(416)
        assert r.headers["Content-Range"] == "bytes */0"


async def test_hundred_mib_blob_streams_both_ways(http, base):
    body = PatternBody(100 * MIB, seed=100)
    got = (await call(http, "POST", base + "/",
                      {**SERVICE, "Content-Length": str(body.size)}, body.stream())).expect(201)
    assert got.headers["x-ambry-blob-size"] == str(body.size)
    url = base + got.headers["Location"]
    status, n, digest = await fetch_hash(http, url)
    assert (status, n, digest) == (200, body.size, body.xxh3())
    # a range deep inside, across a chunk boundary
    at = 50 * MIB
    r = (await call(http, "GET", url, {"Range": f"bytes={at - 3}-{at + 2}"})).expect(206)
    pieces = list(body.pieces())
    assert r.body == pieces[49][-3:] + pieces[50][:3]


async def _pieces(sizes: list[int], data: bytes):
    off = 0
    for n in sizes:
        yield data[off:off + n]
        off += n
        await asyncio.sleep(0)


@pytest.mark.parametrize("size", [0, 10 * KIB, CHUNK, 2 * CHUNK, 2 * CHUNK + MIB // 2 + 1],
                         ids=["0", "10KiB", "1chunk", "2chunks", "2.5chunks"])
async def test_chunked_transfer_encoding_upload_of_unknown_length(http, base, size):
    data = blob_bytes(size, f"te{size}")
    sizes = []
    left = size
    while left:  # uneven pieces, none aligned with the chunk size
        sizes.append(min(left, 100 * KIB + 7))
        left -= sizes[-1]
    got = (await call(http, "POST", base + "/", SERVICE, _pieces(sizes, data))).expect(201)
    assert got.headers["x-ambry-blob-size"] == str(size)
    assert (await call(http, "GET", base + got.headers["Location"])).expect(200).body == data


async def test_chunked_upload_with_a_declared_size(http, base):
    data = blob_bytes(CHUNK + 5, "te-declared")
    got = (await call(http, "POST", base + "/", {**SERVICE, "x-ambry-blob-size": str(len(data))},
                      _pieces([300 * KIB] * 3 + [len(data) - 900 * KIB], data))).expect(201)
    assert (await call(http, "GET", base + got.headers["Location"])).body == data


# ------------------------------------------------------------------------------- BlobInfo
async def test_blob_info_and_user_metadata(http, base):
    bid = await post_blob(http, base, b"abc", {"x-ambry-um-stage": "eval",
                                               "x-ambry-owner-id": "bob"})
    info = (await call(http, "GET", f"{base}/{bid}/BlobInfo")).expect(200)
    assert info.body == b""
    assert info.headers["x-ambry-blob-size"] == "3"
    assert info.headers["x-ambry-service-id"] == "itest"
    assert info.headers["x-ambry-content-type"] == "application/x-itest"
    assert info.headers["x-ambry-owner-id"] == "bob"
    assert info.headers["x-ambry-um-stage"] == "eval"
    um = (await call(http, "GET", f"{base}/{bid}/UserMetadata")).expect(200)
    assert um.headers["x-ambry-um-stage"] == "eval"
    assert "x-ambry-blob-size" not in um.headers
    assert "x-ambry-service-id" not in um.headers


# ------------------------------------------------------------------------------- DELETE
@pytest.mark.parametrize("size", [100, 2 * CHUNK + 10], ids=["simple", "composite"])
async def test_delete_then_get_is_410_unless_deleted_blobs_are_asked_for(http, base, size):
    data = blob_bytes(size, f"del{size}")
    bid = await post_blob(http, base, data)
    url = f"{base}/{bid}"
    (await call(http, "DELETE", url)).expect(202)
    for method, path in (("GET", ""), ("HEAD", ""), ("GET", "/BlobInfo"),
                         ("GET", "/UserMetadata")):
        got = await call(http, method, url + path)
        assert got.status == 410, (method, path)
        if method == "GET":
            assert got.headers["x-ambry-error-code"] == "BLOB_DELETED"
    for option in ("Include_Deleted_Blobs", "Include_All"):
        got = (await call(http, "GET", url, {"x-ambry-get-option": option})).expect(200)
        assert got.body == data
        assert got.headers.get("x-ambry-deleted") == "true"
        (await call(http, "HEAD", url, {"x-ambry-get-option": option})).expect(200)
        (await call(http, "GET", url + "/BlobInfo", {"x-ambry-get-option": option})).expect(200)
    (await call(http, "GET", url, {"x-ambry-get-option": "Include_Expired_Blobs"})).expect(410)
    (await call(http, "DELETE", url)).expect(202)  # deleting a deleted blob is fine


async def test_delete_of_a_composite_deletes_its_chunks(http, base, store):
    before = await node_records(store)
    bid = await post_blob(http, base, blob_bytes(3 * CHUNK + 1, "del-chunks"))
    (await call(http, "DELETE", f"{base}/{bid}")).expect(202)

    async def all_deleted() -> bool:
        new = {k: v for k, v in (await node_records(store)).items() if k not in before}
        assert len({b for _, b in new}) == 5  # 4 chunks and the metadata blob
        return all("DELETE" in kinds for kinds in new.values())

    await until(all_deleted, what="chunks of the deleted composite deleted")


async def test_ids_that_never_existed_are_404(http, base):
    for btype in (BlobType.SIMPLE, BlobType.METADATA):
        url = f"{base}/{never_stored_id(2, btype)}"
        for method, path in (("GET", ""), ("HEAD", ""), ("DELETE", ""), ("GET", "/BlobInfo")):
            got = await call(http, method, url + path)
            assert got.status == 404, (btype, method, path, got.text)
        assert (await call(http, "GET", url)).headers["x-ambry-error-code"] == "BLOB_NOT_FOUND"


# ------------------------------------------------------------------------------- TTL
async def test_ttl_update_expiry_and_buffer(http, base, store):
    """One sleep for every TTL row: blobs with a 2 s TTL, some made permanent at once. The
    chunks of composites are checked directly: a composite's GET reads its chunks whatever
    their state, so only a GET of a chunk id shows whether it expires with its blob and is
    made permanent with it."""
    small = blob_bytes(300, "ttl-small")
    big = blob_bytes(2 * CHUNK + 99, "ttl-big")
    ttl2 = {"x-ambry-ttl": "2"}
    # a permanent blob stitched from chunks uploaded with a 2 s TTL: the chunks are made
    # permanent with it
    parts = [blob_bytes(n, f"ttl-part{n}") for n in (1000, CHUNK, 5)]
    part_ids = [await post_blob(http, base, p, {**ttl2, "x-ambry-chunk-upload": "true"})
                for p in parts]
    stitched = (await call(http, "POST", base + "/stitch", SERVICE,
                           json.dumps({"chunkIds": part_ids}))).expect(201).location_id
    before = await node_records(store)
    expiring = [await post_blob(http, base, small, ttl2), await post_blob(http, base, big, ttl2)]
    expiring_chunks = await new_chunk_ids(store, before)
    before = await node_records(store)
    kept = [await post_blob(http, base, small, ttl2), await post_blob(http, base, big, ttl2)]
    t_posted = time.monotonic()  # the TTL updates below must come > 1 s before expiry
    kept_chunks = await new_chunk_ids(store, before)
    assert len(expiring_chunks) == len(kept_chunks) == 3
    for bid in kept:
        (await call(http, "PUT", base + "/updateTtl",
                    {"x-ambry-blob-id": bid, "x-ambry-service-id": "itest"})).expect(200)
        assert (await call(http, "HEAD", f"{base}/{bid}")).headers["x-ambry-ttl"] == "-1"
    # already permanent: 200 again
    (await call(http, "PUT", base + "/updateTtl",
                {"x-ambry-blob-id": "/" + kept[0], "x-ambry-service-id": "itest"})).expect(200)
    permanent = await post_blob(http, base, small)
    (await call(http, "PUT", base + "/updateTtl",
                {"x-ambry-blob-id": permanent, "x-ambry-service-id": "itest"})).expect(200)
    # within ttl_update_buffer_s (1 s) of expiry: 405
    short = await post_blob(http, base, small, {"x-ambry-ttl": "1"})
    got = await call(http, "PUT", base + "/updateTtl",
                     {"x-ambry-blob-id": short, "x-ambry-service-id": "itest"})
    assert got.expect(405).headers["x-ambry-error-code"] == "TTL_UPDATE_TOO_LATE"
    # missing headers
    assert (await call(http, "PUT", base + "/updateTtl",
                       {"x-ambry-blob-id": permanent})).status == 400
    assert (await call(http, "PUT", base + "/updateTtl",
                       {"x-ambry-service-id": "itest"})).status == 400

    await asyncio.sleep(max(0.0, 2.4 - (time.monotonic() - t_posted)))
    for bid, data in zip(kept, (small, big), strict=True):  # survived their original TTL
        assert (await call(http, "GET", f"{base}/{bid}")).expect(200).body == data
    assert (await call(http, "GET", f"{base}/{stitched}")).expect(200).body == b"".join(parts)
    for chunk in kept_chunks | set(part_ids):  # made permanent with their blob
        assert (await call(http, "HEAD", f"{base}/{chunk}")).status == 200, chunk
    for chunk in expiring_chunks:  # chunks carry their blob's TTL
        assert (await call(http, "HEAD", f"{base}/{chunk}")).status == 410, chunk
    for bid, data in zip(expiring, (small, big), strict=True):
        got = (await call(http, "GET", f"{base}/{bid}")).expect(410)
        assert got.headers["x-ambry-error-code"] == "BLOB_EXPIRED"
        assert (await call(http, "HEAD", f"{base}/{bid}")).status == 410
        for option in ("Include_Expired_Blobs", "Include_All"):
            got = await call(http, "GET", f"{base}/{bid}", {"x-ambry-get-option": option})
            assert got.expect(200).body == data
        got = await call(http, "PUT", base + "/updateTtl",
                         {"x-ambry-blob-id": bid, "x-ambry-service-id": "itest"})
        assert got.status == 410
    assert (await call(http, "GET", f"{base}/{short}")).status == 410


async def test_ttl_update_of_an_unknown_id_is_404(http, base):
    got = await call(http, "PUT", base + "/updateTtl",
                     {"x-ambry-blob-id": never_stored_id(), "x-ambry-service-id": "itest"})
    assert got.status == 404


# ------------------------------------------------------------------------------- undelete
@pytest.mark.parametrize("size", [100, 2 * CHUNK + 10], ids=["simple", "composite"])
async def test_undelete(http, base, store, size):
    data = blob_bytes(size, f"undel{size}")
    before = await node_records(store)
    bid = await post_blob(http, base, data)
    chunks = await new_chunk_ids(store, before)
    hdrs = {"x-ambry-blob-id": bid, "x-ambry-service-id": "itest"}
    got = (await call(http, "PUT", base + "/undelete", hdrs)).expect(409)  # live blob
    assert got.headers["x-ambry-error-code"] == "BLOB_NOT_DELETED"
    (await call(http, "DELETE", f"{base}/{bid}")).expect(202)
    assert (await call(http, "GET", f"{base}/{bid}")).status == 410

    async def chunks_deleted() -> bool:
        return [(await call(http, "HEAD", f"{base}/{c}")).status for c in chunks] == \
            [410] * len(chunks)

    await until(chunks_deleted, what="chunks deleted with their composite")
    (await call(http, "PUT", base + "/undelete", hdrs)).expect(200)
    got = (await call(http, "GET", f"{base}/{bid}")).expect(200)
    assert got.body == data
    assert got.headers["x-ambry-life-version"] == "1"
    for chunk in chunks:  # undeleted with it (its GET would read deleted chunks too)
        assert (await call(http, "HEAD", f"{base}/{chunk}")).status == 200, chunk
    (await call(http, "PUT", base + "/undelete", hdrs)).expect(409)
    # and it can die again
    (await call(http, "DELETE", f"{base}/{bid}")).expect(202)
    assert (await call(http, "GET", f"{base}/{bid}")).status == 410


async def test_undelete_of_an_unknown_id_is_404(http, base):
    got = await call(http, "PUT", base + "/undelete",
                     {"x-ambry-blob-id": never_stored_id(), "x-ambry-service-id": "itest"})
    assert got.status == 404


# ------------------------------------------------------------------------------- named blobs
def named(base: str, name: str, account: str = "default", container: str = "default") -> URL:
    return URL(f"{base}/named/{account}/{container}/" + urllib.parse.quote(name, safe="/"),
               encoded=True)


@pytest.mark.parametrize("name", ["runs/42/model.pt", "a b/ü?x#%.bin", "plain"])
async def test_named_blob_put_get_head_delete(http, base, name):
    name = f"{uuid.uuid4().hex[:8]}/{name}"
    data = blob_bytes(3000, name)
    put = (await call(http, "PUT", named(base, name), {**SERVICE, "x-ambry-um-k": "v"},
                      data)).expect(201)
    bid = put.location_id
    assert put.headers["x-ambry-blob-size"] == "3000"
    got = (await call(http, "GET", named(base, name))).expect(200)
    assert got.body == data
    assert got.headers["ETag"] == f'"{bid}"'
    assert got.headers["x-ambry-um-k"] == "v"
    assert (await call(http, "GET", f"{base}/{bid}")).body == data
    head = (await call(http, "HEAD", named(base, name))).expect(200)
    assert head.headers["Content-Length"] == "3000" and head.body == b""
    r = (await call(http, "GET", named(base, name), {"Range": "bytes=10-19"})).expect(206)
    assert r.body == data[10:20]
    (await call(http, "DELETE", named(base, name))).expect(202)
    # as for ids: a deleted name reads as gone (410), and its blob is deleted with it
    assert (await call(http, "GET", named(base, name))).status == 410
    assert (await call(http, "HEAD", named(base, name))).status == 410
    assert (await call(http, "GET", f"{base}/{bid}")).status == 410
    (await call(http, "DELETE", named(base, name))).expect(202)
    # the name can be used again without upsert once deleted
    (await call(http, "PUT", named(base, name), SERVICE, b"again")).expect(201)
    assert (await call(http, "GET", named(base, name))).body == b"again"


async def test_named_put_that_fails_creates_no_name(http, base):
    name = f"failed/{uuid.uuid4().hex}"
    for headers, data in (({"x-ambry-content-xxh3": "0" * 16}, b"checksum mismatch"),
                          ({"x-ambry-blob-size": "100"}, b"short"),
                          ({"x-ambry-content-xxh3": "0" * 16}, blob_bytes(2 * CHUNK, "n"))):
        got = await call(http, "PUT", named(base, name), {**SERVICE, **headers}, data)
        assert got.status == 400
    assert (await call(http, "GET", named(base, name))).status == 404
    got = await call(http, "PUT", named(base, "bad\x01name"), SERVICE, b"x")
    assert got.status == 400  # control characters are not allowed in names


async def test_named_blob_that_never_existed_is_404(http, base):
    name = f"nothing-{uuid.uuid4().hex}"
    for method in ("GET", "HEAD", "DELETE"):
        assert (await call(http, method, named(base, name))).status == 404, method


async def test_named_blob_conflict_and_upsert(http, base):
    name = f"conflict/{uuid.uuid4().hex}/weights.bin"
    first = (await call(http, "PUT", named(base, name), SERVICE, b"first")).expect(201)
    got = (await call(http, "PUT", named(base, name), SERVICE, b"second")).expect(409)
    assert got.headers["x-ambry-error-code"] == "NAME_ALREADY_EXISTS"
    assert (await call(http, "GET", named(base, name))).body == b"first"
    big = blob_bytes(2 * CHUNK + 1, "upsert")
    second = (await call(http, "PUT", named(base, name),
                         {**SERVICE, "x-ambry-named-upsert": "true"}, big)).expect(201)
    assert second.location_id != first.location_id
    assert (await call(http, "GET", named(base, name))).body == big
    # the replaced blob is deleted, so it does not leak disk

    async def old_gone() -> bool:
        return (await call(http, "GET", f"{base}/{first.location_id}")).status == 410

    await until(old_gone)


async def test_a_small_create_of_a_taken_name_is_409_and_leaves_no_blob(http, base, store):
    # a create of one chunk or less no longer looks the name up first (2 node requests on
    # every create): the 409 is decided when the name is written, and the body stored
    # meanwhile is deleted on every node that has it
    name = f"conflict-small/{uuid.uuid4().hex}"
    (await call(http, "PUT", named(base, name), SERVICE, b"first")).expect(201)
    before = await node_records(store)
    got = (await call(http, "PUT", named(base, name), SERVICE, b"second")).expect(409)
    assert got.headers["x-ambry-error-code"] == "NAME_ALREADY_EXISTS"

    async def stored_meanwhile_is_deleted() -> bool:
        new = {k: v for k, v in (await node_records(store)).items() if k not in before}
        return all("DELETE" in kinds for kinds in new.values())

    await until(stored_meanwhile_is_deleted, what="the refused create's blob deleted")
    assert (await call(http, "GET", named(base, name))).body == b"first"


async def test_a_large_create_of_a_taken_name_is_409_before_its_body_is_sent(http, base):
    # more than one chunk: the name is looked up first, so the 409 comes before the body
    name = f"conflict-large/{uuid.uuid4().hex}"
    (await call(http, "PUT", named(base, name), SERVICE, b"first")).expect(201)
    body = PausedBody(PatternBody(3 * CHUNK, seed=5), CHUNK)  # never resumed
    async with asyncio.timeout(60):
        async with http.put(named(base, name), headers={**SERVICE,
                                                        "Content-Length": str(3 * CHUNK)},
                            data=body.stream()) as r:
            assert r.status == 409
    assert body.sent <= 2 * CHUNK  # answered while the body was still held back


async def test_named_blob_name_length_limit(http, base):
    prefix = uuid.uuid4().hex[:8] + "/"
    ok = prefix + "é" * ((350 - len(prefix)) // 2)  # 2 bytes each
    ok += "x" * (350 - len(ok.encode()))
    assert len(ok.encode()) == 350
    (await call(http, "PUT", named(base, ok), SERVICE, b"fits")).expect(201)
    assert (await call(http, "GET", named(base, ok))).body == b"fits"
    too_long = ok + "y"
    got = (await call(http, "PUT", named(base, too_long), SERVICE, b"no")).expect(400)
    assert got.headers["x-ambry-error-code"] == "INVALID_ARGUMENT"
    assert (await call(http, "GET", named(base, too_long))).status == 400


async def test_named_blobs_of_two_containers_are_separate(http, base):
    name = f"same/{uuid.uuid4().hex}"
    (await call(http, "PUT", named(base, name), SERVICE, b"default")).expect(201)
    (await call(http, "PUT", named(base, name, container="models"), SERVICE,
                b"models")).expect(201)
    (await call(http, "PUT", named(base, name, account="team"), SERVICE, b"team")).expect(201)
    assert (await call(http, "GET", named(base, name))).body == b"default"
    assert (await call(http, "GET", named(base, name, container="models"))).body == b"models"
    assert (await call(http, "GET", named(base, name, account="team"))).body == b"team"
    got = await call(http, "PUT", named(base, name, container="nope"), SERVICE, b"x")
    assert got.status == 400


async def test_named_listing_pages_and_json_shape(http, base):
    p = f"list-{uuid.uuid4().hex[:8]}/"
    names = [p + n for n in ("a", "b/1", "b/2", "b/3", "c", "d é", "e")]
    created = {}
    for i, n in enumerate(names):
        got = (await call(http, "PUT", named(base, n, container="models"),
                          {**SERVICE, "x-ambry-content-type": f"text/x-{i}"},
                          b"x" * (i + 1))).expect(201)
        created[n] = got
    # noise: outside the prefix, a deleted name, an upserted one
    (await call(http, "PUT", named(base, p[:-1] + "-other", container="models"), SERVICE,
                b"o")).expect(201)
    (await call(http, "PUT", named(base, p + "gone", container="models"), SERVICE,
                b"g")).expect(201)
    (await call(http, "DELETE", named(base, p + "gone", container="models"))).expect(202)
    up = (await call(http, "PUT", named(base, p + "e", container="models"),
                     {**SERVICE, "x-ambry-named-upsert": "true"}, b"eeee")).expect(201)
    created[p + "e"] = up

    list_url = f"{base}/named/default/models"
    seen: list[dict[str, object]] = []
    pages = 0
    token = None
    while True:
        q = {"prefix": p, "maxResults": "3"} | ({"page": token} if token else {})
        got = (await call(http, "GET", list_url, params=q)).expect(200)
        assert got.headers["Content-Type"].startswith("application/json")
        body = json.loads(got.body)
        assert set(body) <= {"entries", "nextPageToken"}
        pages += 1
        seen += body["entries"]
        token = body.get("nextPageToken")
        if token is None:
            break
        assert len(body["entries"]) == 3
    assert pages == 3
    assert [e["name"] for e in seen] == sorted(names)
    for e in seen:
        assert set(e) == {"name", "blobId", "size", "contentType", "createdMs"}
        put = created[e["name"]]
        assert e["blobId"] == put.location_id
        assert e["size"] == int(put.headers["x-ambry-blob-size"])
        assert abs(e["createdMs"] / 1000 - rfc1123_s(put.headers["x-ambry-creation-time"])) < 1
    assert seen[0]["contentType"] == "text/x-0"
    # default page size: everything in one page, no token
    body = json.loads((await call(http, "GET", list_url, params={"prefix": p})).body)
    assert [e["name"] for e in body["entries"]] == sorted(names)
    assert "nextPageToken" not in body
    # an exact multiple of the page size: the last page has no token
    sub = [json.loads((await call(http, "GET", list_url,
                                  params={"prefix": p + "b/", "maxResults": "3"})).body)]
    assert len(sub[0]["entries"]) == 3 and "nextPageToken" not in sub[0]
    # bad parameters
    for q in ({"maxResults": "0"}, {"maxResults": "many"}, {"page": "%%%"}):
        assert (await call(http, "GET", list_url, params=q)).status == 400, q


# ------------------------------------------------------------------------------- stitch
async def test_stitch_of_uneven_chunk_uploads(http, base):
    sizes = [300 * KIB + 1, CHUNK, 7, 200 * KIB]
    parts = [blob_bytes(n, f"part{i}") for i, n in enumerate(sizes)]
    ids = [await post_blob(http, base, d, {"x-ambry-chunk-upload": "true"}) for d in parts]
    got = (await call(http, "POST", base + "/stitch", {**SERVICE, "x-ambry-um-kind": "stitched"},
                      json.dumps({"chunkIds": ["/" + ids[0]] + ids[1:]}))).expect(201)
    whole = b"".join(parts)
    assert got.headers["x-ambry-blob-size"] == str(len(whole))
    url = base + got.headers["Location"]
    g = (await call(http, "GET", url)).expect(200)
    assert g.body == whole and g.headers["x-ambry-um-kind"] == "stitched"
    b1 = sizes[0]
    b2 = b1 + sizes[1]
    for start, end in ((b1 - 2, b1 + 3), (b2 - 1, b2 + 4), (b1 - 1, len(whole) - 1),
                       (b2 + 3, b2 + 10)):
        r = (await call(http, "GET", url, {"Range": f"bytes={start}-{end}"})).expect(206)
        assert r.body == whole[start:end + 1], (start, end)
    # order matters
    rev = (await call(http, "POST", base + "/stitch", SERVICE,
                      json.dumps({"chunkIds": ids[::-1]}))).expect(201)
    assert (await call(http, "GET", base + rev.headers["Location"])).body == \
        b"".join(parts[::-1])


async def test_stitch_errors(http, base):
    simple = await post_blob(http, base, b"not a chunk")
    chunk = await post_blob(http, base, b"chunk", {"x-ambry-chunk-upload": "true"})
    for body in (json.dumps({"chunkIds": [simple]}), json.dumps({"chunkIds": []}),
                 json.dumps({"chunkIds": ["garbage"]}), json.dumps({"chunks": [chunk]}),
                 "not json", json.dumps({"chunkIds": chunk})):
        got = await call(http, "POST", base + "/stitch", SERVICE, body)
        assert got.status == 400, (body, got.status, got.text)
    got = await call(http, "POST", base + "/stitch", SERVICE,
                     json.dumps({"chunkIds": [never_stored_id(1, BlobType.CHUNK)]}))
    assert got.status == 404
    # a chunk of another account/container
    team = await post_blob(http, base, b"team chunk", {"x-ambry-chunk-upload": "true",
                                                       "x-ambry-target-account-name": "team"})
    got = await call(http, "POST", base + "/stitch", SERVICE,
                     json.dumps({"chunkIds": [chunk, team]}))
    assert got.status == 400
    # a chunk upload bigger than one chunk
    got = await call(http, "POST", base + "/", {**SERVICE, "x-ambry-chunk-upload": "true"},
                     blob_bytes(CHUNK + 1, "too-big"))
    assert got.status == 413


# ------------------------------------------------------------------------------- signed URLs
def _with_param(url: str, name: str, value: str) -> str:
    parts = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    q = [(k, value if k == name else v) for k, v in q]
    if name not in dict(q):
        q.append((name, value))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))


async def test_signed_post_and_get_urls_work_bare(http, base):
    got = (await call(http, "GET", base + "/signedUrl",
                      {"x-ambry-url-type": "POST", **SERVICE, "x-ambry-um-source": "signed",
                       "x-ambry-ttl": "3600"})).expect(200)
    post_url = got.headers["x-ambry-signed-url"]
    assert post_url.startswith(base + "/?") and "x-ambry-signature=" in post_url
    posted = (await call(http, "POST", URL(post_url, encoded=True), None,
                         b"uploaded via a signed url")).expect(201)
    bid = posted.location_id
    g = (await call(http, "GET", f"{base}/{bid}")).expect(200)
    assert g.body == b"uploaded via a signed url"
    assert g.headers["x-ambry-um-source"] == "signed"
    assert g.headers["x-ambry-ttl"] == "3600"

    got = (await call(http, "GET", base + "/signedUrl",
                      {"x-ambry-url-type": "GET", "x-ambry-blob-id": bid})).expect(200)
    get_url = got.headers["x-ambry-signed-url"]
    assert (await call(http, "GET", URL(get_url, encoded=True))).expect(200).body == \
        b"uploaded via a signed url"

    # tampering with anything is 401
    other = await post_blob(http, base, b"other")
    parts = urllib.parse.urlsplit(get_url)
    sig = dict(urllib.parse.parse_qsl(parts.query))["x-ambry-signature"]
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    exp = dict(urllib.parse.parse_qsl(parts.query))["x-ambry-expires"]
    tampered = [
        _with_param(get_url, "x-ambry-expires", str(int(exp) + 1000)),
        _with_param(get_url, "x-ambry-signature", flipped),
        _with_param(get_url, "x-ambry-extra", "1"),
        urllib.parse.urlunsplit(parts._replace(path=f"/{other}")),
    ]
    for url in tampered:
        got = await call(http, "GET", URL(url, encoded=True))
        assert got.status == 401, url
        assert got.headers["x-ambry-error-code"] == "SIGNATURE_INVALID"
    for url in (_with_param(post_url, "x-ambry-content-type", "text/evil"),
                _with_param(post_url, "x-ambry-um-source", "forged")):
        assert (await call(http, "POST", URL(url, encoded=True), None, b"x")).status == 401
    # a GET URL is not a POST URL
    assert (await call(http, "POST", URL(get_url, encoded=True), None, b"x")).status == 401


async def test_signed_url_expires(http, base):
    bid = await post_blob(http, base, b"short-lived url")
    got = (await call(http, "GET", base + "/signedUrl",
                      {"x-ambry-url-type": "GET", "x-ambry-blob-id": bid,
                       "x-ambry-url-ttl-secs": "1"})).expect(200)
    url = URL(got.headers["x-ambry-signed-url"], encoded=True)
    expires = int(dict(urllib.parse.parse_qsl(url.raw_query_string))["x-ambry-expires"])
    await asyncio.sleep(max(0.0, expires - time.time() + 0.1))
    got = await call(http, "GET", url)
    assert got.status == 401 and got.headers["x-ambry-error-code"] == "SIGNATURE_INVALID"


async def test_signed_url_requests_are_validated(http, base):
    assert (await call(http, "GET", base + "/signedUrl", {})).status == 400
    assert (await call(http, "GET", base + "/signedUrl",
                       {"x-ambry-url-type": "GET"})).status == 400  # no blob id
    assert (await call(http, "GET", base + "/signedUrl",
                       {"x-ambry-url-type": "POST"})).status == 400  # no service id
    assert (await call(http, "GET", base + "/signedUrl",
                       {"x-ambry-url-type": "GET", "x-ambry-blob-id": "junk"})).status == 400


# ------------------------------------------------------------------------------- ops
async def test_health_check(http, base):
    got = (await call(http, "GET", base + "/healthCheck")).expect(200)
    assert got.text.strip() == "GOOD"


async def test_metrics_count_requests(http, base):
    bid = await post_blob(http, base, b"metered")
    (await call(http, "GET", f"{base}/{bid}")).expect(200)
    (await call(http, "GET", f"{base}/{never_stored_id()}")).expect(404)
    got = (await call(http, "GET", base + "/metrics")).expect(200)
    assert got.headers["Content-Type"].startswith("text/plain")
    values = {}
    for line in got.text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    assert values['ambry_frontend_requests_total{op="POST /",status="201"}'] >= 1
    assert values['ambry_frontend_requests_total{op="GET /{blob_id}",status="200"}'] >= 1
    assert values['ambry_frontend_requests_total{op="GET /{blob_id}",status="404"}'] >= 1
    assert any(k.startswith("ambry_frontend_request_seconds_bucket") for k in values)
    assert values["ambry_frontend_bytes_in_total"] >= len(b"metered")
    assert values["ambry_frontend_bytes_out_total"] >= len(b"metered")


async def test_request_id_is_echoed_or_generated(http, base):
    rid = "my-request-1234"
    bid = await post_blob(http, base, b"rid")
    for method, url in (("POST", base + "/"), ("GET", f"{base}/{bid}"),
                        ("HEAD", f"{base}/{bid}"), ("GET", f"{base}/{never_stored_id()}"),
                        ("GET", f"{base}/garbage"), ("GET", base + "/healthCheck")):
        got = await call(http, method, url, {**SERVICE, "x-ambry-request-id": rid},
                         b"x" if method == "POST" else None)
        assert got.headers["x-ambry-request-id"] == rid, (method, url)
    a = (await call(http, "GET", f"{base}/{bid}")).headers["x-ambry-request-id"]
    b = (await call(http, "GET", f"{base}/{bid}")).headers["x-ambry-request-id"]
    assert a and b and a != b


async def test_cors_headers_and_preflight(http, base):
    bid = await post_blob(http, base, b"cors")
    origin = {"Origin": "https://app.example"}
    for method, url in (("GET", f"{base}/{bid}"), ("GET", f"{base}/{never_stored_id()}"),
                        ("HEAD", f"{base}/{bid}")):
        got = await call(http, method, url, origin)
        assert got.headers["Access-Control-Allow-Origin"] == "*", (method, url)
        assert got.headers.get("Access-Control-Expose-Headers"), (method, url)
    for path in ("/", f"/{bid}", "/named/default/default/a/b.txt", "/updateTtl"):
        got = await call(http, "OPTIONS", base + path,
                         {**origin, "Access-Control-Request-Method": "POST",
                          "Access-Control-Request-Headers": "x-ambry-service-id, content-type"})
        assert got.status in (200, 204), path
        assert got.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in got.headers["Access-Control-Allow-Methods"]
        assert "x-ambry-service-id" in got.headers["Access-Control-Allow-Headers"].lower()


# ------------------------------------------------------------------------------- integrity
async def test_content_xxh3_match_and_mismatch(http, base, store):
    for size in (1000, 2 * CHUNK + 77):
        data = blob_bytes(size, f"xxh{size}")
        digest = xxhash.xxh3_64_hexdigest(data)
        bid = await post_blob(http, base, data, {"x-ambry-content-xxh3": digest})
        assert (await call(http, "GET", f"{base}/{bid}")).body == data
        before = await node_records(store)
        wrong = f"{(int(digest, 16) ^ 1):016x}"
        got = await call(http, "POST", base + "/", {**SERVICE, "x-ambry-content-xxh3": wrong},
                         data)
        assert got.status == 400 and "Location" not in got.headers
        await assert_no_new_reachable_blob(store, before)


@pytest.mark.parametrize("size,declared", [(500, 1000), (1500, 1000), (0, 10),
                                           (2 * CHUNK + 5, 3 * CHUNK)],
                         ids=["short", "long", "empty", "composite-short"])
async def test_body_not_matching_the_declared_size_is_400(http, base, store, size, declared):
    before = await node_records(store)
    got = await call(http, "POST", base + "/", {**SERVICE, "x-ambry-blob-size": str(declared)},
                     blob_bytes(size, "size"))
    assert got.status == 400 and "Location" not in got.headers
    await assert_no_new_reachable_blob(store, before)


def _forged_id(version: int = 1, flags: int = 0, partition: int = 1) -> str:
    raw = struct.pack(">HBBHHQ16s", version, flags, 1, 1, 1, partition, b"\x01" * 16)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


GARBAGE_IDS = {
    "short": "abc",
    "long": "A" * 44,
    "42": "A" * 42,
    "not-base64": "*" * 43,
    "std-base64": "+" * 43,
    "version-2": _forged_id(version=2),
    "bad-flags": _forged_id(flags=0x80),
    "unknown-partition": _forged_id(partition=999),
}


@pytest.mark.parametrize("name", sorted(GARBAGE_IDS))
async def test_garbage_ids_are_400_never_404_or_500(http, base, name):
    bad = GARBAGE_IDS[name]
    url = base + "/" + urllib.parse.quote(bad, safe="")
    calls = [("GET", url, {}), ("HEAD", url, {}), ("DELETE", url, {}),
             ("GET", url + "/BlobInfo", {}), ("GET", url + "/UserMetadata", {}),
             ("PUT", base + "/updateTtl", {"x-ambry-blob-id": bad, "x-ambry-service-id": "s"}),
             ("PUT", base + "/undelete", {"x-ambry-blob-id": bad, "x-ambry-service-id": "s"}),
             ("GET", base + "/signedUrl", {"x-ambry-url-type": "GET", "x-ambry-blob-id": bad})]
    for method, u, headers in calls:
        got = await call(http, method, URL(u, encoded=True), headers)
        assert got.status == 400, (method, u, got.status, got.text)
        assert got.headers["x-ambry-error-code"] in ("INVALID_BLOB_ID", "BAD_REQUEST"), \
            (method, u)
    got = await call(http, "POST", base + "/stitch", SERVICE, json.dumps({"chunkIds": [bad]}))
    assert got.status == 400


async def test_account_or_container_mismatch_is_403(http, base):
    data = b"belongs to default/default"
    bid = await post_blob(http, base, data)
    url = f"{base}/{bid}"
    for target in ({"x-ambry-target-container-name": "models"},
                   {"x-ambry-target-account-name": "team"},
                   {"x-ambry-target-account-name": "default",
                    "x-ambry-target-container-name": "models"}):
        for method, u, extra in (("GET", url, {}), ("HEAD", url, {}),
                                 ("GET", url + "/BlobInfo", {}), ("DELETE", url, {}),
                                 ("PUT", base + "/updateTtl",
                                  {"x-ambry-blob-id": bid, "x-ambry-service-id": "s"}),
                                 ("PUT", base + "/undelete",
                                  {"x-ambry-blob-id": bid, "x-ambry-service-id": "s"})):
            got = await call(http, method, u, {**target, **extra})
            assert got.status == 403, (target, method, u, got.status)
            if method != "HEAD":
                assert got.headers["x-ambry-error-code"] == "ACCESS_DENIED"
    ok = {"x-ambry-target-account-name": "default", "x-ambry-target-container-name": "default"}
    assert (await call(http, "GET", url, ok)).expect(200).body == data
    # a blob posted into another container is only readable with matching targets
    team = await post_blob(http, base, b"team blob", {"x-ambry-target-account-name": "team"})
    assert (await call(http, "GET", f"{base}/{team}", ok)).status == 403
    assert (await call(http, "GET", f"{base}/{team}",
                       {"x-ambry-target-account-name": "team"})).status == 200
    got = await call(http, "GET", url, {"x-ambry-target-account-name": "nobody"})
    assert got.status == 400


# ------------------------------------------------------------------------------- load
async def test_64_concurrent_clients_with_mixed_sizes(base):
    import random

    seed = seed_from_env()
    rng = random.Random(seed)
    plans = [(i, int(2 ** rng.uniform(10, 21.58)), rng.random() < 0.5) for i in range(64)]
    start = asyncio.Event()

    async def client(i: int, size: int, chunked: bool) -> int:
        data = blob_bytes(size, f"{seed}-{i}")
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            await start.wait()
            body = _pieces([64 * KIB] * (size // (64 * KIB) + 1), data) if chunked else data
            got = (await call(s, "POST", base + "/", SERVICE, body)).expect(201)
            assert got.headers["x-ambry-blob-size"] == str(size)
            url = base + got.headers["Location"]
            got = (await call(s, "GET", url)).expect(200)
            assert got.body == data, f"client {i}: body of {size} bytes differs (seed {seed})"
            a = size // 3
            r = (await call(s, "GET", url, {"Range": f"bytes={a}-{a + 999}"})).expect(206)
            assert r.body == data[a:a + 1000]
        return size

    tasks = [asyncio.ensure_future(client(*p)) for p in plans]
    await asyncio.sleep(0.05)
    start.set()
    sizes = await asyncio.gather(*tasks)
    assert min(sizes) >= KIB and max(sizes) <= 3 * MIB
    assert any(s > CHUNK for s in sizes), "no composite blob among them"


# ------------------------------------------------------------------------------- browsers
@pytest.mark.parametrize("ctype,active", [
    ("text/html; charset=utf-8", True), ("image/svg+xml", True), ("Application/XHTML+XML", True),
    ("text/plain", False), ("image/png", False), ("application/octet-stream", False)])
async def test_blobs_are_never_served_as_pages_on_the_frontend_origin(http, base, ctype, active):
    # broke: an uploaded text/html or SVG blob came back inline with its stored type and
    # Access-Control-Allow-Origin: *, so a link to it ran the uploader's script on this origin
    bid = await post_blob(http, base, b"<script>alert(1)</script>",
                          {"x-ambry-content-type": ctype, "x-ambry-filename": "r\u00e9port 1.html"})
    for method, path in [("GET", f"/{bid}"), ("HEAD", f"/{bid}")]:
        got = (await call(http, method, base + path)).expect(200)
        assert got.headers["Content-Type"].lower().startswith(ctype.split(";")[0].lower())
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        if active:
            assert got.headers["Content-Disposition"] == \
                "attachment; filename*=UTF-8''r%C3%A9port%201.html"
            assert got.headers["Content-Security-Policy"].startswith("sandbox")
        else:
            assert "Content-Disposition" not in got.headers
            assert "Content-Security-Policy" not in got.headers
