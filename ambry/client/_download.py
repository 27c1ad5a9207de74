"""Parallel, ordered, verified downloads: range planning and the bounded fetch pipeline.

Owns splitting a blob into ranges (pure), checking that a range reply is the range asked
for of the blob asked for, fetching ranges with at most ``parallelism`` in flight while
handing them out in order (so the caller can hash and write sequentially, and memory stays
``parallelism x range_size`` whatever the blob's size), and the end-to-end check against the
size and xxh3 stored with the blob. Does not own where the bytes go (``_fetch``, ``_reader``).
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import xxhash

from ambry.client._errors import IntegrityError
from ambry.client._types import BlobInfo

__all__ = [
    "Verifier",
    "check_range_reply",
    "ordered_ranges",
    "parse_content_range",
    "plan_ranges",
]

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+)", re.ASCII | re.IGNORECASE)


def plan_ranges(start: int, total: int, range_size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of consecutive ranges covering ``[start, total)``, each
    ``range_size`` bytes but the last. A range size that is a multiple of the frontend's
    chunk size (the default is two 4 MiB chunks) touches whole chunks only."""
    if range_size < 1 or start < 0 or total < start:
        raise ValueError(f"bad range plan {start=} {total=} {range_size=}")
    return [(off, min(range_size, total - off)) for off in range(start, total, range_size)]


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``Content-Range: bytes a-b/total`` -> ``(a, b, total)``; None if absent or another
    form (``bytes */total`` of a 416)."""
    if not value:
        return None
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def check_range_reply(status: int, headers: Mapping[str, str], offset: int, length: int,
                      blob_id: str | None, what: str) -> int:
    """Check that a reply is ``length`` bytes at ``offset`` of blob ``blob_id`` (when given);
    returns the blob's total size. A frontend that ignored the range (200) is accepted only
    when the range was the whole blob."""
    etag = (headers.get("ETag") or "").removeprefix("W/").strip('"')
    if blob_id and etag and etag != blob_id:
        raise IntegrityError(f"{what}: asked for blob {blob_id}, got {etag}")
    if status == 200:
        total = int(headers.get("Content-Length", "-1"))
        if offset != 0 or total != length:
            raise IntegrityError(f"{what}: the frontend ignored the range request")
        return total
    cr = parse_content_range(headers.get("Content-Range"))
    if status != 206 or cr is None or cr[0] != offset or cr[1] != offset + length - 1:
        raise IntegrityError(f"{what}: asked for bytes {offset}-{offset + length - 1}, got "
                             f"{status} {headers.get('Content-Range')!r}")
    return cr[2]


async def ordered_ranges(fetch: Callable[[int, int], Awaitable[bytes]],
                         ranges: list[tuple[int, int]], parallelism: int
                         ) -> AsyncIterator[tuple[int, bytes]]:
    """Yield ``(offset, data)`` for every range in order, fetching up to ``parallelism``
    ahead. On any failure (or when the consumer stops early) the fetches still running are
    cancelled."""
    if parallelism < 1:
        raise ValueError("parallelism must be >= 1")
    window: collections.deque[tuple[int, asyncio.Task[bytes]]] = collections.deque()
    todo = iter(ranges)
    try:
        while True:
            while len(window) < parallelism:
                nxt = next(todo, None)
                if nxt is None:
                    break
                window.append((nxt[0], asyncio.ensure_future(fetch(*nxt))))
            if not window:
                return
            offset, task = window.popleft()
            yield offset, await task
    finally:
        for _, task in window:
            task.cancel()
        if window:
            await asyncio.gather(*(t for _, t in window), return_exceptions=True)


class Verifier:
    """The end-to-end check of one download: bytes must arrive in order; :meth:`finish`
    compares the count and the xxh3 with what the blob's properties promise."""

    def __init__(self, info: BlobInfo) -> None:
        self.info = info
        self.size = 0
        self._hasher = xxhash.xxh3_64()

    def update(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self.size += len(data)

    def finish(self) -> None:
        if self.size != self.info.size:
            raise IntegrityError(f"blob {self.info.blob_id}: received {self.size} of "
                                 f"{self.info.size} bytes")
        want = self.info.content_xxh3
        if want is not None and self._hasher.hexdigest() != want.rjust(16, "0"):
            raise IntegrityError(f"blob {self.info.blob_id}: xxh3 {self._hasher.hexdigest()} "
                                 f"of the bytes received != {want} stored at upload")
