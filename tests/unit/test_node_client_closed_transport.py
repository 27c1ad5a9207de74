"""A node that dies mid-upload, seen by the frontend on uvloop: a connection error, never a 500.

uvloop closes a transport's handle as soon as the peer resets the connection, but the read loop
of the node client learns of it only a loop iteration later (connection_lost). A request sent in
between got ``RuntimeError: unable to perform operation on <TCPTransport closed=True ...>; the
handler is closed`` from ``transport.write``; it escaped ``NodeClient.send`` and
``FanOut.quorum`` (which catch typed errors and OSError) and the upload failed with a 500
(seen 1 in 3 runs of uploads while a node was killed). These tests put a request exactly in that
window, on uvloop and on the stock loop, against small real servers speaking the node protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from ambry.common.config import config_from_dict
from ambry.common.errors import Unavailable
from ambry.frontend.quorum import Outcome
from ambry.frontend.router import Router
from ambry.protocol import stream
from ambry.protocol.client import NodeClient
from ambry.protocol.framing import pack_header, read_header, write_message
from ambry.protocol.messages import STATUS_OK

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


async def _ping_server() -> tuple[asyncio.Server, int, list[stream.Writer]]:
    """A node stand-in that answers every request with an empty OK (the real framing), and
    keeps the server side of each connection so a test can reset it."""
    conns: list[stream.Writer] = []

    async def serve(reader: stream.Reader, writer: stream.Writer) -> None:
        conns.append(writer)
        while True:
            h = await read_header(reader)
            if h is None:
                return
            n = h.get("payload_len") or 0
            if n:
                await reader.readexactly(n)
            write_message(writer, pack_header({"corr": h["corr"], "status": STATUS_OK}), None)
            await writer.drain()

    srv = await stream.start_server(serve, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1], conns


async def _transport_closed_under(conn: Any) -> None:
    """Put the client's connection in the window a node's death opens: its transport closed
    (as uvloop closes the handle on a reset), its read loop not yet told (connection_lost
    runs one iteration later, the read loop one after that). Closing the transport here
    rather than resetting it from the node side makes the window exact, not a race."""
    conn.writer.transport.abort()
    await asyncio.sleep(0)  # uvloop closes the handle by the next iteration
    assert conn.writer.is_closing() and not conn.closed


def _run(loop: str, main: Callable[[], Awaitable[Any]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())  # type: ignore[arg-type]


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_request_on_a_connection_the_node_just_reset_is_unavailable_not_runtime_error(
        loop: str) -> None:
    # broke (uvloop): RuntimeError "the handler is closed" escaped NodeClient.request
    async def main() -> None:
        srv, port, _ = await _ping_server()
        client = NodeClient("127.0.0.1", port, request_timeout_ms=5000)
        try:
            await client.ping()
            conn = client._conns[0]
            await _transport_closed_under(conn)
            with pytest.raises(Unavailable, match="writing to"):
                await client.put(b"\x00" * 32, {}, b"", b"payload", partition=0)
            assert conn.closed  # the connection is dropped; the next request reconnects
            await client.ping()
        finally:
            await client.close()
            srv.close()

    _run(loop, main)


def _router(ports: list[int]) -> Router:
    return Router(config_from_dict({
        "datacenters": [{"name": "dc1", "id": 1}],
        "nodes": [{"id": f"n{i}", "datacenter": "dc1", "host": "127.0.0.1", "port": p,
                   "http_port": 1} for i, p in enumerate(ports)],
        "partitions": {"count": 1},
        "frontend": {"failure_threshold_errors": 1},
    }), "dc1")


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_quorum_counts_a_node_reset_mid_upload_as_a_node_error(loop: str) -> None:
    # broke (uvloop): the RuntimeError escaped Router._quorum (now FanOut.quorum), and the upload was a 500
    async def main() -> None:
        servers = [await _ping_server() for _ in range(3)]
        router = _router([port for _, port, _ in servers])
        errors: list[str] = []
        router.fanout.on_node_error = lambda nid, op: errors.append(nid)
        ids = ["n0", "n1", "n2"]

        victim = router.client("n0")
        die_now = False

        async def call(c: NodeClient) -> Any:
            if c is victim and die_now:  # n0 dies while this upload is being sent to it
                await _transport_closed_under(c._conns[0])
            return await c.request("put", {"partition": 0}, b"x" * 1000)

        try:
            verdict, _, _ = await router.fanout.quorum(ids, "put", call, w=2)
            assert verdict is Outcome.SUCCESS
            die_now = True
            verdict, results, errs = await router.fanout.quorum(ids, "put", call, w=2)
            assert verdict is Outcome.SUCCESS, errs
            await asyncio.gather(*router.fanout.background, return_exceptions=True)
            assert "n0" not in results
            assert len(errs) == 1 and isinstance(errs[0], Unavailable), errs
            assert errors == ["n0"]  # noted as a node error...
            assert not router.detector.is_available("n0")  # ...in the failure detector
        finally:
            await router.close()
            for srv, _, _ in servers:
                srv.close()

    _run(loop, main)
