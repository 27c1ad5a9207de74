"""A client that leaves in the middle of a GET body, against real processes on loopback.

What broke: when the client closed its connection half-way through a large body, two owners
dropped the rest of the same unread node reply at once: ``BlobRead.aclose`` and the clean-up
of the inner ``_stream_reply`` generator that Python ran later, when it collected it. The
second found the payload being read and every such request logged "RuntimeError: a reply
payload is read by one task at a time" as a task exception nobody retrieved. Now the body
closes its inner generator itself (one owner), and ``Reply.release`` is idempotent and safe
to call concurrently. Covered: simple blob (whole: the sendfile path with the frontend's
check, or the node's verified stream; a range: always the node's stream) and composite blob,
with the nodes' sendfile on and off; after each, GETs through the same frontend to the same
nodes still work promptly (an unread payload never holds a pipelined connection).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest
from fe_helpers import (
    FAST_STORAGE,
    MIB,
    blob_bytes,
    call,
    on_every_replica,
    post_blob,
    store_fixture,
    until,
)

from ambry.testing.frontend import StoreCluster

CHUNK_BYTES = 16 * MIB
SIMPLE_BYTES = 12 * MIB  # a simple blob above the frontend's verify-whole limit (4 MiB)
COMPOSITE_BYTES = 40 * MIB  # 16 + 16 + 8 MiB chunks
READ_BEFORE_CLOSE_BYTES = 256 * 1024
#: The node stall timeout is long, so that a payload left unread (it pins its connection until
#: the stall timeout) would make the follow-up GETs take far longer than this bound.
NODE_TIMEOUT_MS = 60_000
PROMPT_S = 20.0
BAD_LOG_LINES = ("Task exception was never retrieved", "RuntimeError",
                 "read by one task at a time")


@pytest.fixture(scope="module", params=["sendfile", "streamed"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[StoreCluster]:
    storage = dict(FAST_STORAGE)
    if request.param == "streamed":
        storage["sendfile_min_bytes"] = 0  # never: the node reads, verifies and streams
    yield from store_fixture(
        tmp_path_factory.mktemp(f"client-gone-{request.param}"), datacenters=1,
        nodes_per_dc=3, partitions=4, storage=storage,
        frontend={"chunk_size_bytes": CHUNK_BYTES, "inflight_budget_bytes": "256MiB",
                  "node_timeout_ms": NODE_TIMEOUT_MS})


def _log(store: StoreCluster) -> str:
    return store.frontends["dc1"].log_path.read_text(errors="replace")


async def _leave_mid_body(store: StoreCluster, path: str, headers: dict[str, str]) -> str:
    """GET ``path`` on a raw connection with a small receive buffer, read the headers and a
    little of the body, then close; the request id."""
    rid = f"gone-{uuid.uuid4().hex[:12]}"
    u = urlsplit(store.url("dc1", "/"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # a small window: the frontend cannot push the whole body into kernel buffers first
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (u.hostname, u.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    lines = [f"GET {path} HTTP/1.1", f"Host: {u.netloc}", f"x-ambry-request-id: {rid}",
             *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.split(b" ", 2)[1] in (b"200", b"206"), head
    await asyncio.wait_for(reader.readexactly(READ_BEFORE_CLOSE_BYTES), 30)
    writer.close()  # unread bytes in the receive buffer: the kernel resets the connection
    return rid


async def _gets_still_prompt(http: aiohttp.ClientSession, store: StoreCluster, blob_id: str,
                             data: bytes) -> None:
    # three whole reads: the frontend spreads them over the replicas, so each node is asked
    for _ in range(3):
        t0 = time.monotonic()
        got = (await call(http, "GET", store.url("dc1", "/" + blob_id))).expect(200)
        took = time.monotonic() - t0
        assert got.body == data
        assert took < PROMPT_S, f"GET took {took:.1f} s after a client left mid-body"


async def _client_gone_then_gets(http: aiohttp.ClientSession, store: StoreCluster,
                                 size: int, headers: dict[str, str]) -> None:
    data = blob_bytes(size, f"gone-{size}")
    blob_id = await post_blob(http, store.url("dc1", ""), data)
    await on_every_replica(store, blob_id)
    before = len(_log(store))
    rid = await _leave_mid_body(store, "/" + blob_id, headers)

    async def noted() -> bool:
        return any(rid in line and "client went away" in line
                   for line in _log(store)[before:].splitlines())

    await until(noted, 30, "the frontend noting the client went away")
    await _gets_still_prompt(http, store, blob_id, data)
    new = _log(store)[before:]
    bad = [line for line in new.splitlines() if any(b in line for b in BAD_LOG_LINES)]
    assert not bad, "frontend log after a client left mid-body:\n" + new[-4000:]


async def test_simple_blob_client_gone_mid_body_logs_no_task_exception(
        http: aiohttp.ClientSession, store: StoreCluster) -> None:
    # What broke: BlobRead.aclose and the collected _stream_reply both discarded the payload.
    await _client_gone_then_gets(http, store, SIMPLE_BYTES, {})


async def test_simple_blob_range_client_gone_mid_body_logs_no_task_exception(
        http: aiohttp.ClientSession, store: StoreCluster) -> None:
    # What broke: the same two releases, on the range body's streamed reply.
    await _client_gone_then_gets(http, store, SIMPLE_BYTES, {"Range": "bytes=1-"})


async def test_composite_blob_client_gone_mid_body_logs_no_task_exception(
        http: aiohttp.ClientSession, store: StoreCluster) -> None:
    # Must hold too: chunk fetches in flight are cancelled and release their replies once.
    await _client_gone_then_gets(http, store, COMPOSITE_BYTES, {})
