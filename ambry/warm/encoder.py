"""Writing one encoded segment's k + m fragment files: the stripe loop the encode job and
the re-encoding of a compacted segment share (docs/erasure-coding.md, "States of a segment").

Stripe by stripe, the caller's ``read`` gives the stripe's data bytes; the codec makes the
k + m blocks off the event loop; block i goes to node ``nodes[i]`` (``ec_frag_write``, the
node writes ``<fragment>.tmp``), all blocks of a stripe at once. The last stripe makes each
node verify its file and answer its per-stripe checksum table, which must equal the one
computed here; only then is the result returned, with the hash of the tables that the
EC_SEGMENT record carries. Memory: one stripe and its blocks. Pace: ``rate_bytes_per_s`` of
segment bytes. Any failure raises :class:`EncodeFailed` and leaves only ``.tmp`` files (the
next try starts over at stripe 0, which restarts them).

Does not own what is encoded (the caller's ``read``), the record (the caller appends it) nor
the fragment file format (``ambry.ec.fragfile``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ambry.ec.codec import DEFAULT_BACKEND, Codec, Encoded
from ambry.ec.layout import SegmentLayout, Stripe
from ambry.protocol.client import NodeClient
from ambry.warm.repair import tables_hash

__all__ = ["EncodeFailed", "Encoding", "write_fragments"]

log = logging.getLogger(__name__)


class EncodeFailed(Exception):
    """A fragment write failed, or a node's file read back differently: nothing is recorded;
    the next pass starts over."""


@dataclass(frozen=True)
class Encoding:
    tables_xxh3: int  # of the k + m per-stripe checksum tables (the record's field)
    codec_cpu_s: float  # CPU seconds inside the codec (encode MB/s per core)


async def write_fragments(*, partition: int, source_hex: str, segment: int, generation: int,
                          layout: SegmentLayout, nodes: Sequence[str], codec: Codec,
                          client: Callable[[str], NodeClient], timeout_ms: int,
                          rate_bytes_per_s: int, read: Callable[[Stripe], Awaitable[bytes]],
                          progress: Callable[[int], None] | None = None) -> Encoding:
    k, m = layout.k, layout.m
    header = {"code": DEFAULT_BACKEND, "k": k, "m": m, "original_bytes": layout.segment_bytes,
              "stripe_bytes": layout.stripe_bytes}
    sums: list[list[int]] = [[] for _ in range(k + m)]
    tables: list[list[int]] = [[] for _ in range(k + m)]
    stripes = layout.stripes()
    started = time.monotonic()
    cpu_s = 0.0
    loop = asyncio.get_running_loop()
    for st in stripes:
        if progress is not None:
            progress(st.index)
        data = await read(st)
        if len(data) != st.data_bytes:
            raise EncodeFailed(f"stripe {st.index}: {len(data)} bytes read, "
                               f"{st.data_bytes} expected")
        enc, spent = await loop.run_in_executor(None, _timed_encode, codec, data,
                                                st.block_bytes)
        cpu_s += spent
        last = st.index == len(stripes) - 1

        async def send(i: int, block: bytes, last: bool = last, s: int = st.index) -> None:
            reply = await client(nodes[i]).request(
                "ec_frag_write", {"partition": partition, "source": source_hex,
                                  "segment": segment, "generation": generation,
                                  "fragment": i, "header": header, "stripe": s,
                                  "finish": last}, block, timeout_ms=timeout_ms)
            await reply.release()
            if last:
                if not reply.header.get("ok"):
                    raise EncodeFailed(f"fragment {i} on {nodes[i]} failed its verify: "
                                       f"{reply.header.get('problems')}")
                tables[i] = list(reply.header["checksums"])

        try:
            await asyncio.gather(*(send(i, bytes(b)) for i, b in enumerate(enc.blocks)))
        except EncodeFailed:
            raise
        except Exception as e:  # any failure: start over next pass
            raise EncodeFailed(f"fragment write failed at stripe {st.index}: {e!r}") from e
        for i, c in enumerate(enc.checksums):
            sums[i].append(c)
        ahead = (st.segment_offset + st.data_bytes) / rate_bytes_per_s - \
            (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    if tables != sums:
        bad = [i for i in range(k + m) if tables[i] != sums[i]]
        raise EncodeFailed(f"fragments {bad} read back differently")
    return Encoding(tables_hash(sums), cpu_s)


def _timed_encode(codec: Codec, data: bytes, block_bytes: int) -> tuple[Encoded, float]:
    t0 = time.thread_time()
    enc = codec.encode(data, block_bytes)
    return enc, time.thread_time() - t0
