"""``Reply.release`` of a streamed node reply payload, over a real loopback connection.

What broke: two owners releasing the same unread payload at once (the frontend's
``BlobRead.aclose`` and a collected body generator) made the second fail with "RuntimeError:
a reply payload is read by one task at a time", logged as an unretrieved task exception. Now
a release is idempotent and concurrent releases wait for the one drop, which a cancelled
caller does not stop (a half-dropped payload would hold the pipelined connection)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ambry.common.errors import Unavailable
from ambry.protocol import stream
from ambry.protocol.connection import Connection, Reply
from ambry.protocol.framing import pack_header

PAYLOAD_BYTES = 8 << 20  # far above the inline limit: streamed to the caller


@pytest.fixture
async def conn() -> AsyncIterator[Connection]:
    """A connection to a server that answers corr 1 with a large payload, then corr 2 with
    a small one (pipelined behind it), once the client says "go"."""
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(2)  # the client has registered its calls
        w.write(pack_header({"corr": 1, "status": "ok", "payload_len": PAYLOAD_BYTES}))
        w.write(b"x" * PAYLOAD_BYTES)
        w.write(pack_header({"corr": 2, "status": "ok", "payload_len": 3}) + b"end")
        await w.drain()
        await r.read()  # until the client closes
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await stream.open_connection("127.0.0.1", port)
    c = Connection(reader, writer, "test-node", stall_timeout_s=30)
    try:
        yield c
    finally:
        c.fail(Unavailable("test over"))
        server.close()


async def _replies(conn: Connection) -> tuple[Reply, asyncio.Future[Reply]]:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[Reply] = loop.create_future()
    second: asyncio.Future[Reply] = loop.create_future()
    conn.pending[1], conn.pending[2] = first, second
    conn.writer.write(b"go")
    return await asyncio.wait_for(first, 10), second


async def test_concurrent_releases_of_one_payload_share_one_drop(conn: Connection) -> None:
    # What broke: the second release raised RuntimeError while the first was dropping.
    reply, second = await _replies(conn)
    assert await anext(reply.iter_chunks(64 * 1024))
    await asyncio.wait_for(asyncio.gather(reply.release(), reply.release(), reply.release()),
                           10)
    await reply.release()  # once more, after: nothing left, nothing raised
    nxt = await asyncio.wait_for(second, 10)  # the connection is free for the next reply
    assert await nxt.read() == b"end"


async def test_a_cancelled_release_still_frees_the_connection(conn: Connection) -> None:
    # What must hold: a releaser cancelled mid-drop never leaves the payload half unread,
    # pinning the connection (and the reply pipelined behind it) until the stall timeout.
    reply, second = await _replies(conn)
    first = asyncio.ensure_future(reply.release())
    await asyncio.sleep(0)  # the drop has started
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    nxt = await asyncio.wait_for(second, 10)
    assert await nxt.read() == b"end"
