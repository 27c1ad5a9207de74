"""The SDK against small fake frontends on loopback (aiohttp servers whose replies a test
scripts): which failures are retried for idempotent and non-idempotent steps, failover to
the next endpoint, "already done" answers after a lost reply, and readers that resume a cut
reply and verify the blob's xxh3."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Self

import pytest
import xxhash
from aiohttp import web

from ambry.client import (
    AsyncClient,
    BlobNotFound,
    Client,
    ConnectionFailed,
    IntegrityError,
    RequestEvent,
    RetryPolicy,
    Unavailable,
)

ID = "AAEAAQABAAEAAAAAAAAAAibvssKsqr4aCcV0HsRS_VU"
FAST = RetryPolicy(attempts=4, base_delay_s=0.001, max_delay_s=0.01)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeFrontend:
    """One aiohttp server on a free loopback port; ``calls`` counts requests per route."""

    def __init__(self, routes: list[tuple[str, str, Handler]]) -> None:
        self.app = web.Application()
        for method, path, handler in routes:
            self.app.router.add_route(method, path, handler)
        self.runner = web.AppRunner(self.app)
        self.url = ""

    async def __aenter__(self) -> Self:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def dead_url() -> str:
    """A loopback port nobody listens on (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def cut(request: web.Request) -> None:
    assert request.transport is not None
    request.transport.abort()


def client(urls: list[str], events: list[RequestEvent] | None = None, **kw) -> AsyncClient:
    return AsyncClient(urls, retry=FAST, progress=False,
                       on_request=events.append if events is not None else None, **kw)


def created() -> web.Response:
    return web.Response(status=201, headers={"Location": "/" + ID, "x-ambry-blob-size": "1"})


# ------------------------------------------------------------------ retries
async def test_idempotent_reads_retry_503s_until_they_succeed():
    replies = [503, 503, 200]

    async def head(request: web.Request) -> web.Response:
        status = replies.pop(0)
        return web.Response(status=status, headers={
            "x-ambry-error-code": "UNAVAILABLE" if status == 503 else "",
            "x-ambry-blob-size": "5", "ETag": f'"{ID}"'})

    events: list[RequestEvent] = []
    async with FakeFrontend([("HEAD", "/{id}", head)]) as fe, client([fe.url], events) as c:
        info = await c.head(ID)
    assert info.size == 5
    assert [e.status for e in events] == [503, 503, 200]
    assert len({e.request_id for e in events}) == 1  # one request id for all attempts


async def test_503s_that_never_end_raise_unavailable_after_the_attempts():
    async def head(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"x-ambry-error-code": "UNAVAILABLE"})

    events: list[RequestEvent] = []
    async with FakeFrontend([("HEAD", "/{id}", head)]) as fe, client([fe.url], events) as c:
        with pytest.raises(Unavailable) as info:
            await c.head(ID)
    assert len(events) == FAST.attempts and info.value.status == 503


async def test_a_404_is_final_and_not_retried():
    async def head(request: web.Request) -> web.Response:
        return web.Response(status=404, headers={"x-ambry-error-code": "BLOB_NOT_FOUND"})

    events: list[RequestEvent] = []
    async with FakeFrontend([("HEAD", "/{id}", head)]) as fe, client([fe.url], events) as c:
        with pytest.raises(BlobNotFound):
            await c.head(ID)
    assert len(events) == 1


async def test_a_whole_post_cut_after_sending_is_not_retried():
    # the frontend may have stored the blob: a second POST could make a duplicate
    posts = 0

    async def post(request: web.Request) -> web.Response:
        nonlocal posts
        posts += 1
        await request.read()
        cut(request)
        return created()

    async with FakeFrontend([("POST", "/", post)]) as fe, client([fe.url]) as c:
        with pytest.raises(ConnectionFailed):
            await c.put(b"small body")
    assert posts == 1


async def test_a_whole_post_answered_503_is_retried():
    # a 503 is a definite "nothing stored", so the retry cannot duplicate anything
    replies = [503, 201]

    async def post(request: web.Request) -> web.Response:
        await request.read()
        if replies.pop(0) == 503:
            return web.Response(status=503, headers={"x-ambry-error-code": "UNAVAILABLE"})
        return created()

    async with FakeFrontend([("POST", "/", post)]) as fe, client([fe.url]) as c:
        assert await c.put(b"small body") == ID
    assert replies == []


async def test_chunk_uploads_are_retried_after_a_cut_reply():
    # chunk uploads are safe to redo (an orphan chunk expires), so the upload survives
    state = {"chunk_posts": 0, "stitched": None}
    seen_sizes: list[int] = []

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        assert request.headers["x-ambry-chunk-upload"] == "true"
        assert request.headers["x-ambry-content-xxh3"] == xxhash.xxh3_64_hexdigest(body)
        state["chunk_posts"] += 1
        seen_sizes.append(len(body))
        if state["chunk_posts"] == 2:
            cut(request)
        n = state["chunk_posts"]
        return web.Response(status=201, headers={"Location": f"/{'C' * 42}{n % 10}"})

    async def stitch(request: web.Request) -> web.Response:
        state["stitched"] = (await request.json())["chunkIds"]
        return web.Response(status=201, headers={"Location": "/" + ID,
                                                 "x-ambry-blob-size": str(3 * 65536)})

    async with FakeFrontend([("POST", "/", post), ("POST", "/stitch", stitch)]) as fe, \
            client([fe.url], part_size_bytes=65536, parallelism=1) as c:
        assert await c.put(b"x" * (3 * 65536)) == ID
    assert state["chunk_posts"] == 4 and seen_sizes == [65536] * 4
    assert state["stitched"] == [f"{'C' * 42}{n}" for n in (1, 3, 4)]


async def test_an_undelete_whose_reply_was_lost_is_done_when_the_retry_says_not_deleted():
    calls = 0

    async def undelete(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            cut(request)  # the undelete happened, the reply is lost
        return web.Response(status=409, headers={"x-ambry-error-code": "BLOB_NOT_DELETED"})

    async with FakeFrontend([("PUT", "/undelete", undelete)]) as fe, client([fe.url]) as c:
        await c.undelete(ID)
    assert calls == 2


async def test_a_live_blob_undeleted_on_the_first_try_is_a_conflict():
    from ambry.client import BlobNotDeleted

    async def undelete(request: web.Request) -> web.Response:
        return web.Response(status=409, headers={"x-ambry-error-code": "BLOB_NOT_DELETED"})

    async with FakeFrontend([("PUT", "/undelete", undelete)]) as fe, client([fe.url]) as c:
        with pytest.raises(BlobNotDeleted):
            await c.undelete(ID)


# ------------------------------------------------------------------ failover
async def test_failover_to_the_next_endpoint_and_remember_the_dead_one():
    async def head(request: web.Request) -> web.Response:
        return web.Response(status=200, headers={"x-ambry-blob-size": "3", "ETag": f'"{ID}"'})

    dead = dead_url()
    events: list[RequestEvent] = []
    async with FakeFrontend([("HEAD", "/{id}", head)]) as fe, \
            client([dead, fe.url], events) as c:
        await c.head(ID)
        await c.head(ID)
    assert [(e.endpoint, e.status) for e in events] == [(dead, 0), (fe.url, 200),
                                                        (fe.url, 200)]
    assert "Connect" in events[0].error


async def test_a_post_fails_over_when_the_first_endpoint_refuses_connections():
    async def post(request: web.Request) -> web.Response:
        await request.read()
        return created()

    async with FakeFrontend([("POST", "/", post)]) as fe, client([dead_url(), fe.url]) as c:
        assert await c.put(b"abc") == ID


async def test_no_endpoint_reachable_is_connection_failed():
    events: list[RequestEvent] = []
    async with client([dead_url(), dead_url()], events) as c:
        with pytest.raises(ConnectionFailed) as info:
            await c.head(ID)
    assert len(events) == FAST.attempts
    assert isinstance(info.value, Unavailable)  # one class to catch for "try later"


# ------------------------------------------------------------------ readers
def blob_server(data: bytes, xxh3: str | None, cut_first_range_at: int | None = None
                ) -> tuple[list[tuple[str, str, Handler]], list[str]]:
    ranges: list[str] = []

    def headers() -> dict[str, str]:
        h = {"ETag": f'"{ID}"', "x-ambry-blob-size": str(len(data)),
             "Accept-Ranges": "bytes"}
        if xxh3:
            h["x-ambry-um-ambry-content-xxh3"] = xxh3
        return h

    async def head(request: web.Request) -> web.Response:
        return web.Response(status=200, headers={**headers(), "Content-Length": str(len(data))})

    async def get(request: web.Request) -> web.StreamResponse:
        rng = request.headers["Range"]
        ranges.append(rng)
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng)
        assert m is not None
        a, b = int(m.group(1)), min(int(m.group(2)), len(data) - 1)
        resp = web.StreamResponse(status=206, headers={
            **headers(), "Content-Range": f"bytes {a}-{b}/{len(data)}"})
        resp.content_length = b - a + 1
        await resp.prepare(request)
        body = data[a:b + 1]
        if cut_first_range_at is not None and len(ranges) == 1:
            await resp.write(body[:cut_first_range_at])
            await asyncio.sleep(0.05)
            cut(request)
            return resp
        await resp.write(body)
        return resp

    return [("HEAD", "/{id}", head), ("GET", "/{id}", get)], ranges


async def test_a_reader_resumes_a_cut_reply_from_the_byte_where_it_stopped():
    data = bytes(range(256)) * 4096  # 1 MiB
    routes, ranges = blob_server(data, xxhash.xxh3_64_hexdigest(data), cut_first_range_at=1000)
    async with FakeFrontend(routes) as fe, client([fe.url], read_ahead_bytes=65536) as c:
        r = await c.open(ID)
        assert await r.read() == data
        await r.aclose()
    assert ranges[0].startswith("bytes=0-")
    assert ranges[1].startswith("bytes=1000-")  # nothing before byte 1000 fetched twice


async def test_a_reader_raises_integrity_error_when_the_whole_blob_does_not_match():
    data = b"abc" * 100_000
    routes, _ = blob_server(data, "0123456789abcdef")
    async with FakeFrontend(routes) as fe, client([fe.url]) as c:
        r = await c.open(ID)
        first = await r.read(1000)
        assert first == data[:1000]  # partial reads cannot be judged yet
        with pytest.raises(IntegrityError):
            await r.read()


async def test_reads_that_skip_around_are_not_judged_as_a_whole():
    data = b"abc" * 100_000
    routes, _ = blob_server(data, "0123456789abcdef")
    async with FakeFrontend(routes) as fe, client([fe.url]) as c:
        r = await c.open(ID)
        r.seek(10)
        assert await r.read() == data[10:]  # never saw bytes 0..9: no verdict, no error


def spans_of(ranges: list[str]) -> list[int]:
    out = []
    for x in ranges:
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", x)
        assert m is not None
        out.append(int(m.group(2)) - int(m.group(1)) + 1)
    return out


async def test_readahead_grows_on_sequential_reads_then_streams_the_rest():
    data = bytes(range(256)) * 8192  # 2 MiB
    routes, ranges = blob_server(data, None)
    async with FakeFrontend(routes) as fe, \
            client([fe.url], read_ahead_bytes=16384, max_read_ahead_bytes=131072) as c:
        r = await c.open(ID)
        got = b"".join([await r.read(8192) for _ in range(256)])
        assert got == data
    spans = spans_of(ranges)
    # doubling up to the largest read-ahead, then one range for the rest of the blob
    assert spans == [16384, 32768, 65536, 131072, len(data) - 245760]


async def test_random_access_fetches_little_more_than_it_reads():
    data = bytes(range(256)) * 8192  # 2 MiB
    routes, ranges = blob_server(data, None)
    async with FakeFrontend(routes) as fe, \
            client([fe.url], read_ahead_bytes=16384, max_read_ahead_bytes=131072) as c:
        r = await c.open(ID)
        for pos in (1_500_000, 10, 900_000, 2_000_000):
            r.seek(pos)
            assert await r.read(100) == data[pos:pos + 100]
        n = len(ranges)
        r.seek(300)
        assert await r.read(10) == data[300:310]
        r.seek(5000)  # a short hop forward inside the open range: read through, no request
        assert await r.read(10) == data[5000:5010]
        assert len(ranges) == n + 1
    assert spans_of(ranges) == [16384] * 5
    assert r.bytes_requested == 5 * 16384


def test_sync_client_from_many_threads():
    import concurrent.futures
    import threading

    data = b"0123456789" * 1000
    xxh3 = xxhash.xxh3_64_hexdigest(data)
    ready = threading.Event()
    urls: list[str] = []

    async def serve(stop: asyncio.Event) -> None:
        routes, _ = blob_server(data, xxh3)
        async with FakeFrontend(routes) as fe:
            urls.append(fe.url)
            ready.set()
            await stop.wait()

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    t = threading.Thread(target=loop.run_until_complete, args=(serve(stop),))
    t.start()
    try:
        assert ready.wait(10)
        with Client(urls[0], retry=FAST, progress=False) as c, \
                concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: c.get_bytes(ID), range(32)))
            assert all(r == data for r in results)
            with c.open(ID) as f:
                f.seek(5)
                assert f.read(5) == b"56789"
    finally:
        loop.call_soon_threadsafe(stop.set)
        t.join()
        loop.close()
