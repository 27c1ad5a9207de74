"""A fragment window read that is cancelled (a hedge that lost, a rebuild that had its k
answers) must give its connection back at once, against a real ``ambry server``.

What broke (issue 17, bench_warm "bench-ec 4 MiB, one fragment node SIGKILLed": one GET in
~20 failed): a window's reply over 256 KiB is streamed and holds its pipelined connection's
read side until read. ``FragmentFetcher.window`` did not release it when cancelled after the
reply header came, so every request queued behind it on that connection waited for the
stall timeout (10 s): they timed out at ``fragment_timeout_ms``, their nodes turned suspect,
and with one node really dead a 4-of-6 rebuild found only 2 or 3 answers: ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from ec_helpers import one_node

from ambry.ec.layout import SegmentLayout
from ambry.protocol.client import NodeClient
from ambry.storage.ecstate import EcRecord
from ambry.testing.cluster import NodeProcess
from ambry.warm.fetch import FragmentFetcher

SOURCE = "cd" * 16
BLOCK = 1 << 20  # streamed (over the connection's 256 KiB inline limit), as 4 MiB stripes' are


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with one_node(tmp_path_factory.mktemp("fragcancel")) as n:
        yield n


async def _write_fragment(c: NodeClient, blocks: list[bytes], layout: SegmentLayout) -> None:
    header = {"code": 1, "k": 2, "m": 1, "original_bytes": layout.segment_bytes,
              "stripe_bytes": layout.stripe_bytes}
    for s, b in enumerate(blocks):
        reply = await c.request("ec_frag_write", {
            "partition": 0, "source": SOURCE, "segment": 3, "generation": 0, "fragment": 0,
            "header": header, "stripe": s, "finish": s == len(blocks) - 1}, b)
        await reply.release()


async def test_cancelled_fragment_window_reads_never_stall_their_connection(
        node: NodeProcess) -> None:
    layout = SegmentLayout.plan(2, 1, 4 * BLOCK, 2 * BLOCK)  # 2 stripes of 1 MiB blocks
    blocks = [os.urandom(st.block_bytes) for st in layout.stripes()]
    whole = b"".join(blocks)
    rec = EcRecord(bytes.fromhex(SOURCE), 3, 0, "dc1", 2, 1, 1, layout.stripe_bytes,
                   layout.segment_bytes, (node.node_id, "dc1-n2", "dc1-n3"), 0, b"")
    # one connection, a stall timeout far above the fetcher's: a reply left unread shows
    # as the next read on that connection timing out
    client = NodeClient(node.host, node.port, pool_size=1, request_timeout_ms=60_000)
    fetcher = FragmentFetcher(asyncio.get_running_loop(), lambda _n: client, timeout_ms=8000)
    try:
        await _write_fragment(client, blocks, layout)
        cut = 0
        for steps in range(24):  # cancel at successive points of the read
            task: asyncio.Task[Any] = asyncio.ensure_future(
                fetcher.window(0, rec, 0, 0, BLOCK))
            conn = None
            while not task.done():  # until the reply header came and its payload streams
                conn = next((x for x in client._conns if x.streaming is not None), None)
                if conn is not None:
                    break
                await asyncio.sleep(0)
            for _ in range(steps % 4):
                await asyncio.sleep(0)
            if not task.done():
                cut += 1
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # the next window on the same connection answers at once, with its bytes
            got = await asyncio.wait_for(fetcher.window(0, rec, 0, BLOCK, BLOCK), 30)
            assert got == whole[BLOCK:2 * BLOCK], f"cancelled after {steps} steps"
        assert cut, "no read was cancelled mid-reply: the test did not test anything"
        assert not fetcher._suspect, "a node turned suspect after cancelled reads"
    finally:
        await client.close()
