"""ambry.protocol.stream over real loopback sockets, on uvloop and on the stock loop: exact
reads across many small sends and one big one, read(n) pieces, end of stream inside a message,
flow control both ways, a reset waking the readers, a cancelled large read losing nothing."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from ambry.protocol import stream
from ambry.protocol.stream import Reader, Writer

LOOPS = ["asyncio", "uvloop"]


def run(kind: str, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as r:
        r.run(asyncio.wait_for(fn(), 60))


async def pair(server_side: Callable[[Reader, Writer], Awaitable[None]]
               ) -> tuple[Reader, Writer, asyncio.Server]:
    """A server running ``server_side`` on each connection, and a client connected to it."""
    async def cb(r: Reader, w: Writer) -> None:
        try:
            await server_side(r, w)
        finally:
            w.close()

    server = await stream.start_server(cb, "127.0.0.1", 0, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await stream.open_connection("127.0.0.1", port)
    return reader, writer, server


@pytest.mark.parametrize("loop", LOOPS)
def test_readexactly_many_small_sends_and_one_big(loop: str) -> None:
    rng = __import__("random").Random(7)
    msgs = [os.urandom(rng.randint(1, 300)) for _ in range(3000)]
    big = os.urandom(9 * 1024 * 1024 + 17)

    async def send(_r: Reader, w: Writer) -> None:
        for m in msgs:
            w.write(struct.pack(">I", len(m)) + m)
            if rng.random() < 0.1:
                await w.drain()
        w.write(struct.pack(">I", len(big)))
        for i in range(0, len(big), 100_000):  # in pieces, with pauses in between
            w.write(big[i:i + 100_000])
            await w.drain()
            if i % 1_000_000 == 0:
                await asyncio.sleep(0.001)
        await w.drain()

    async def main() -> None:
        r, w, server = await pair(send)
        async with server:
            for m in msgs:
                (n,) = struct.unpack(">I", await r.readexactly(4))
                got = await r.readexactly(n)
                assert isinstance(got, bytes) and got == m
            (n,) = struct.unpack(">I", await r.readexactly(4))
            got = await r.readexactly(n)
            assert isinstance(got, bytearray)  # received in place, not copied out
            assert got == big
            assert await r.read(10) == b"" and r.at_eof()
            w.close()
            await w.wait_closed()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_read_pieces(loop: str) -> None:
    data = os.urandom(5 * 1024 * 1024 + 3)

    async def send(_r: Reader, w: Writer) -> None:
        for i in range(0, len(data), 300_000):
            w.write(data[i:i + 300_000])
            await w.drain()

    async def main() -> None:
        r, w, server = await pair(send)
        async with server:
            parts = []
            while True:
                piece = await r.read(1 << 20)
                if not piece:
                    break
                assert len(piece) <= 1 << 20
                parts.append(piece)
            assert b"".join(parts) == data
            assert await r.read(1 << 20) == b""
            assert await r.read(10) == b""
            w.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("want", [20, 3 * 1024 * 1024])
def test_eof_mid_message(loop: str, want: int) -> None:
    sent = os.urandom(min(want - 5, 200_000))

    async def send(_r: Reader, w: Writer) -> None:
        w.write(sent)
        await w.drain()

    async def main() -> None:
        r, w, server = await pair(send)
        async with server:
            with pytest.raises(asyncio.IncompleteReadError) as ei:
                await r.readexactly(want)
            assert ei.value.partial == sent and ei.value.expected == want
            assert await r.read(100) == b""
            with pytest.raises(asyncio.IncompleteReadError) as ei:
                await r.readexactly(4)
            assert ei.value.partial == b""
            w.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_flow_control_bounds_both_sides(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    total = 64 * 1024 * 1024
    peak = [0]
    paused = [0]
    real_updated = Reader.buffer_updated
    real_pause = Reader.pause_writing

    def updated(self: Reader, nbytes: int) -> None:
        real_updated(self, nbytes)
        peak[0] = max(peak[0], self._wpos - self._rpos)

    def pause(self: Reader) -> None:
        paused[0] += 1
        real_pause(self)

    monkeypatch.setattr(Reader, "buffer_updated", updated)
    monkeypatch.setattr(Reader, "pause_writing", pause)
    block = os.urandom(256 * 1024)

    async def slow_reader(r: Reader, _w: Writer) -> None:
        got = 0
        while got < total:
            piece = await r.read(32 * 1024)  # small reads: all through the receive buffer
            assert piece
            got += len(piece)
            if got % (256 * 1024) < 32 * 1024:
                await asyncio.sleep(0.002)

    async def main() -> None:
        r, w, server = await pair(slow_reader)
        async with server:
            high = w.transport.get_write_buffer_limits()[1]
            for _ in range(total // len(block)):
                w.write(block)
                await w.drain()
                assert w.transport.get_write_buffer_size() <= high + len(block)
            w.write_eof()
            assert await r.read(1) == b""  # the server read it all and closed
            w.close()

    run(loop, main)
    assert paused[0] > 0  # drain waited on the writer's side
    # the reader filled up to its bound (and paused the socket there), never past it
    assert stream.MAX_BUFFERED_BYTES <= peak[0] <= (stream.MAX_BUFFERED_BYTES
                                                   + stream.RECV_BUFFER_BYTES)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("want", [100, 2 * 1024 * 1024])
def test_reset_wakes_readers_and_drain(loop: str, want: int) -> None:
    async def reset(r: Reader, w: Writer) -> None:
        w.write(b"x" * 10)
        await w.drain()
        await asyncio.sleep(0.05)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()  # linger 0: RST

    async def main() -> None:
        r, w, server = await pair(reset)
        async with server:
            with pytest.raises(ConnectionResetError):
                await r.readexactly(want)
            with pytest.raises(ConnectionResetError):
                await r.read(10)
            with pytest.raises(ConnectionResetError):  # (write itself raises on uvloop)
                await w.drain()
            w.close()
            await w.wait_closed()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelled_large_read_keeps_the_bytes(loop: str) -> None:
    data = os.urandom(3 * 1024 * 1024)
    go = asyncio.Event
    gates: list[asyncio.Event] = []

    async def send(_r: Reader, w: Writer) -> None:
        w.write(data[:1_000_000])
        await w.drain()
        await gates[0].wait()
        w.write(data[1_000_000:])
        await w.drain()

    async def main() -> None:
        gates.append(go())
        r, w, server = await pair(send)
        async with server:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await r.readexactly(len(data))
            gates[0].set()
            assert await r.readexactly(len(data)) == data
            w.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_two_readers_is_an_error(loop: str) -> None:
    async def idle(r: Reader, _w: Writer) -> None:
        await r.read(1)

    async def main() -> None:
        r, w, server = await pair(idle)
        async with server:
            t = asyncio.ensure_future(r.readexactly(10))
            await asyncio.sleep(0.01)
            with pytest.raises(RuntimeError):
                await r.readexactly(10)
            t.cancel()
            w.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_readinto_exactly_reuses_the_callers_buffer_and_a_cancel_keeps_nothing_of_it(
        loop: str) -> None:
    # the node receives large put payloads into reused buffers: each read must fill exactly
    # the caller's view, and a cancelled one must leave its bytes readable from the stream
    # without the caller's buffer (which goes on to be reused and overwritten)
    first, second = os.urandom(1_500_000), os.urandom(3 * 1024 * 1024)
    gate: list[asyncio.Event] = []

    async def send(_r: Reader, w: Writer) -> None:
        w.write(b"abc" + first + second[:1_000_000])
        await w.drain()
        await gate[0].wait()
        w.write(second[1_000_000:] + b"tail")
        await w.drain()

    async def main() -> None:
        gate.append(asyncio.Event())
        r, w, server = await pair(send)
        async with server:
            buf = bytearray(4 * 1024 * 1024)
            small = memoryview(bytearray(3))
            await r.readinto_exactly(small)  # buffered already, or a small wait
            assert small == b"abc"
            await r.readinto_exactly(memoryview(buf)[:len(first)])
            assert buf[:len(first)] == first
            task = asyncio.ensure_future(r.readinto_exactly(memoryview(buf)[:len(second)]))
            while r.received_bytes < 3 + len(first) + 1_000_000:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0)  # let the read start waiting
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            buf[:] = b"\xff" * len(buf)  # the caller reuses its buffer
            gate[0].set()
            await r.readinto_exactly(memoryview(buf)[:len(second)])
            assert buf[:len(second)] == second
            with pytest.raises(asyncio.IncompleteReadError):
                await r.readinto_exactly(memoryview(buf)[:100])  # "tail", then EOF
            w.close()

    run(loop, main)
