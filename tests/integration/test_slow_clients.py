"""Slow and idle clients against a real frontend (three storage nodes, REST and S3 ports):
connections that send headers and never the body, half-sent headers, more connections than
the cap, and (slow) a thousand idle or trickling uploads beside normal ones.

What broke: each upload reserved a whole chunk of the byte budget before reading a byte and
nothing timed out a body or a header, so 32 connections announcing a 1-byte body froze every
upload of the frontend (REST and S3) for good, and half-sent requests piled up until the
process ran out of file descriptors. See docs/security.md, "Slow and idle clients"."""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fe_helpers import (
    MIB,
    TIMEOUT,
    assert_no_new_reachable_blob,
    blob_bytes,
    call,
    node_records,
    post_blob,
    store_fixture,
    until,
)
from s3_helpers import KEYS, REGION, s3_client

from ambry.testing.frontend import StoreCluster

HEADER_TIMEOUT_S = 2.0
BODY_IDLE_TIMEOUT_S = 2.0
CAP = 48
#: Generous bound for "closed after the timeout" on a busy 2-core machine.
CLOSE_BOUND_S = 30.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    # a 32 MiB budget of 1 MiB chunks: 32 connections each reserving a chunk froze it
    yield from store_fixture(
        tmp_path_factory.mktemp("slow-clients"), datacenters=1, nodes_per_dc=3, partitions=4,
        frontend={"inflight_budget_bytes": "32MiB", "header_timeout_s": HEADER_TIMEOUT_S,
                  "body_idle_timeout_s": BODY_IDLE_TIMEOUT_S, "keepalive_timeout_s": 10,
                  "max_connections_per_port": CAP})


def _signed_s3_put_head(url: str, content_length: int) -> bytes:
    """Request line and headers of a SigV4-signed S3 PutObject (UNSIGNED-PAYLOAD) announcing
    ``content_length`` body bytes."""
    ak, sk = KEYS["default"]
    req = AWSRequest(method="PUT", url=url, data=b"",
                     headers={"Content-Length": str(content_length)})
    signer = S3SigV4Auth(Credentials(ak, sk), "s3", REGION)
    signer.payload = lambda request: "UNSIGNED-PAYLOAD"  # type: ignore[method-assign]
    signer.add_auth(req)
    u = urlsplit(url)
    lines = [f"PUT {u.path} HTTP/1.1", f"Host: {u.netloc}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _rest_post_head(base: str, content_length: int) -> bytes:
    u = urlsplit(base)
    return (f"POST / HTTP/1.1\r\nHost: {u.netloc}\r\nx-ambry-service-id: idle\r\n"
            f"x-ambry-content-type: application/x-idle\r\nContent-Length: {content_length}"
            f"\r\n\r\n").encode()


async def _open(url: str, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    if head:
        writer.write(head)
        await writer.drain()
    return reader, writer


async def _read_to_close(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    with contextlib.suppress(ConnectionResetError):
        return await asyncio.wait_for(reader.read(), timeout_s)
    return b""


async def _metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    got = (await call(http, "GET", base + "/metrics")).expect(200)
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", got.text, re.MULTILINE)
    assert m is not None, f"{name} not in /metrics"
    return float(m.group(1))


def _s3_put(store: StoreCluster, key: str, body: bytes) -> None:
    s3_client(store).put_object(Bucket="default", Key=key, Body=body)


async def test_uploads_go_on_while_40_connections_never_send_their_bodies(
        store: StoreCluster, http: aiohttp.ClientSession) -> None:
    # What broke: each of these reserved a 1 MiB chunk before reading a byte and waited
    # for its body forever; 32 of them held the whole budget and every upload froze.
    base = store.url("dc1", "")
    s3 = store.s3_url("dc1")
    started = await _metric(http, base, "ambry_frontend_inflight_requests")
    idle = [await _open(base, _rest_post_head(base, 1)) for _ in range(24)]
    idle += [await _open(s3, _signed_s3_put_head(f"{s3}/default/idle-{i}", 1))
             for i in range(16)]
    t0 = time.monotonic()

    async def all_waiting_for_bodies() -> bool:
        return await _metric(http, base, "ambry_frontend_inflight_requests") >= started + 40

    await until(all_waiting_for_bodies, what="40 uploads waiting for their bodies")
    # they sent no body byte, so they hold no budget
    assert await _metric(http, base, "ambry_frontend_inflight_budget_bytes") == 0
    big = blob_bytes(3 * MIB + 5, "big")
    rest_id, _ = await asyncio.wait_for(asyncio.gather(
        post_blob(http, base, big),
        asyncio.to_thread(_s3_put, store, "beside-idle", blob_bytes(2 * MIB, "s3"))), 60)
    got = (await call(http, "GET", f"{base}/{rest_id}")).expect(200)
    assert got.body == big
    # the idle ones end with 408 once the body idle timeout passed, and free everything
    replies = await asyncio.gather(*(_read_to_close(r, CLOSE_BOUND_S) for r, _ in idle))
    assert time.monotonic() - t0 >= BODY_IDLE_TIMEOUT_S * 0.9
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies), {r[:40] for r in replies}
    for _, w in idle:
        w.close()

    async def released() -> bool:
        return (await _metric(http, base, "ambry_frontend_inflight_requests") <= started
                and await _metric(http, base, "ambry_frontend_inflight_budget_bytes") == 0)

    await until(released, what="idle uploads ended and released")


async def test_an_idle_body_after_some_bytes_ends_the_upload_and_its_chunks(
        store: StoreCluster, http: aiohttp.ClientSession) -> None:
    # A chunked upload that stops half-way: 408, and what it held and stored is given back.
    base = store.url("dc1", "")
    before = await node_records(store)
    reader, writer = await _open(base, _rest_post_head(base, 8 * MIB))
    writer.write(blob_bytes(3 * MIB, "partial"))  # three chunks of 1 MiB, then silence
    await writer.drain()
    reply = await _read_to_close(reader, CLOSE_BOUND_S)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]

    async def released() -> bool:
        return await _metric(http, base, "ambry_frontend_inflight_budget_bytes") == 0

    await until(released, what="the idle upload's budget released")
    await assert_no_new_reachable_blob(store, before)  # its chunks were deleted
    await post_blob(http, base, b"still works")


async def test_half_sent_headers_are_closed_after_the_header_timeout(
        store: StoreCluster, http: aiohttp.ClientSession) -> None:
    # What broke: nothing timed out a request's headers (aiohttp kept such a connection for
    # an hour), so about 20,000 of them took every file descriptor of the frontend.
    base, s3 = store.url("dc1", ""), store.s3_url("dc1")
    half = b"POST / HTTP/1.1\r\nHost: x\r\nx-ambry-serv"
    t0 = time.monotonic()
    conns = [await _open(url, half) for url in (base, s3) for _ in range(10)]
    silent = [await _open(url, b"") for url in (base, s3) for _ in range(5)]
    replies = await asyncio.gather(*(_read_to_close(r, CLOSE_BOUND_S) for r, _ in conns))
    quiet = await asyncio.gather(*(_read_to_close(r, CLOSE_BOUND_S) for r, _ in silent))
    assert time.monotonic() - t0 >= HEADER_TIMEOUT_S * 0.9
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies), {r[:40] for r in replies}
    assert quiet == [b""] * len(silent)
    for _, w in conns + silent:
        w.close()
    await post_blob(http, base, b"still works")


async def test_a_connection_over_the_cap_gets_503_not_a_reset(store: StoreCluster) -> None:
    # What broke: no cap at all; a frontend out of descriptors resets new connections.
    for url in (store.url("dc1", ""), store.s3_url("dc1")):
        for _attempt in range(5):  # a holder closed by its keep-alive timeout: start over
            holders = aiohttp.TCPConnector(limit=0, force_close=False)
            async with aiohttp.ClientSession(connector=holders, timeout=TIMEOUT) as s:
                # CAP kept-alive connections, each idle after one request
                async def one(s: aiohttp.ClientSession = s, url: str = url) -> int:
                    async with s.get(url + "/healthCheck") as r:
                        await r.read()
                        return r.status

                statuses = await asyncio.gather(*(one() for _ in range(CAP)))
                reader, writer = await _open(url, b"GET /healthCheck HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = await _read_to_close(reader, CLOSE_BOUND_S)
                writer.close()
            if reply.startswith(b"HTTP/1.1 503 "):
                break
        else:
            raise AssertionError(f"no 503 from {url} over the cap: {reply[:80]!r} "
                                 f"(holders: {sorted(set(statuses))})")
        head = reply.split(b"\r\n\r\n", 1)[0].lower()
        assert b"retry-after: " in head and b"connection: close" in head, head
        # the cap frees as connections close
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            async def ok(s: aiohttp.ClientSession = s, url: str = url) -> bool:
                async with s.get(url + "/healthCheck") as r:  # S3: not a route; no 503
                    return r.status != 503

            await until(ok, what="a new connection served again")


# ----------------------------------------------------------------------------- slow soak
@pytest.fixture(scope="module")
def soak_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    # production defaults for timeouts and the budget's size relative to a chunk: 128 MiB
    # of 4 MiB chunks is 32 chunks, here 32 MiB of 1 MiB chunks
    yield from store_fixture(
        tmp_path_factory.mktemp("slow-soak"), datacenters=1, nodes_per_dc=3, partitions=4,
        frontend={"inflight_budget_bytes": "32MiB", "max_connections_per_port": 4096})


async def _timed_uploads(http: aiohttp.ClientSession, store: StoreCluster, n: int
                         ) -> list[float]:
    base = store.url("dc1", "")
    times = []
    for i in range(n):
        t = time.monotonic()
        if i % 4 == 3:
            await asyncio.to_thread(_s3_put, store, f"soak-{i}", blob_bytes(256 * 1024, i))
        else:
            await post_blob(http, base, blob_bytes(2 * MIB + 7 if i % 4 == 0 else 64 * 1024,
                                                   i))
        times.append(time.monotonic() - t)
    return times


@pytest.mark.slow
async def test_a_thousand_idle_and_trickling_uploads_do_not_delay_others(
        soak_store: StoreCluster, http: aiohttp.ClientSession) -> None:
    store = soak_store
    base, s3 = store.url("dc1", ""), store.s3_url("dc1")
    await _timed_uploads(http, store, 8)  # warm up: connections, partitions
    before = await _timed_uploads(http, store, 40)
    started = await _metric(http, base, "ambry_frontend_inflight_requests")
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for i in range(1000):
        url = base if i % 2 == 0 else s3
        head = (_rest_post_head(base, 64 * MIB) if url == base
                else _signed_s3_put_head(f"{s3}/default/trickle-{i}", 64 * MIB))
        conns.append(await _open(url, head))
    trickling = conns[::2]  # the others send nothing (closed after body_idle_timeout_s)
    stop = asyncio.Event()

    async def trickle() -> None:
        while not stop.is_set():
            for _, w in trickling:
                if not w.is_closing():
                    w.write(b"x")
            await asyncio.sleep(1.0)

    dripper = asyncio.create_task(trickle())
    try:
        async def all_in() -> bool:
            return await _metric(http, base, "ambry_frontend_inflight_requests") >= \
                started + 1000

        await until(all_in, timeout_s=60, what="1000 slow uploads being served")
        during = await _timed_uploads(http, store, 40)
    finally:
        stop.set()
        await dripper
        for _, w in conns:
            w.close()
    p50_before, p50_during = statistics.median(before), statistics.median(during)
    print(f"upload p50 {p50_before * 1000:.0f} ms before, {p50_during * 1000:.0f} ms with "
          f"1000 idle/trickling uploads; max {max(before) * 1000:.0f} / "
          f"{max(during) * 1000:.0f} ms")
    assert p50_during <= 3 * p50_before + 0.25, (p50_before, p50_during)
    assert max(during) <= 10 * max(before) + 2.0, (max(before), max(during))
