"""Whole-blob reads of :class:`~ambry.client.AsyncClient`: ``get_bytes`` and ``download`` (by
id or by name), as parallel range GETs verified end to end.

Owns the first range (one request serves a small blob whole and pins a name to its blob id),
resuming a range reply cut short from where it stopped, the ordered parallel ranges after it,
and where the bytes go: memory, or a hidden temporary file beside the destination renamed
into place once verified. Does not own range planning, range-reply checks or the hash
(``_download``), HTTP and retries (``_transport``), or seekable readers (``_reader``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import IO

import aiohttp

from ambry.client._download import (
    Verifier,
    check_range_reply,
    ordered_ranges,
    parse_content_range,
    plan_ranges,
)
from ambry.client._errors import ConnectionFailed, IntegrityError, RangeNotSatisfiable
from ambry.client._progress import Progress
from ambry.client._transport import Transport
from ambry.client._types import BlobInfo, info_from_headers

__all__ = ["BlobFetch"]


class BlobFetch:
    """One client's settings for whole-blob reads (made per call, so a change to the
    client's ``range_size_bytes`` or ``parallelism`` applies to the next read)."""

    def __init__(self, transport: Transport, executor: Executor, *, range_size_bytes: int,
                 parallelism: int, attempts: int,
                 bar: Callable[[bool | None, int | None, str], Progress]) -> None:
        self._t = transport
        self._executor = executor
        self.range_size_bytes = range_size_bytes
        self.parallelism = parallelism
        #: cuts of one range reply tolerated (the client's ``retry.attempts``)
        self.attempts = attempts
        self._bar = bar

    async def _first_range(self, path: str, headers: dict[str, str], rid: str
                           ) -> tuple[bytes, BlobInfo]:
        """The first range of the blob at ``path`` (an id or a name) and its info: one
        request serves small blobs whole, and pins a name to its blob id."""
        n = self.range_size_bytes
        what = f"get {path}"
        try:
            resp, _ = await self._t.open("GET", path, headers={**headers,
                                                               "Range": f"bytes=0-{n - 1}"},
                                         what=what, rid=rid)
        except RangeNotSatisfiable:  # only a 0-byte blob has no byte 0
            head = await self._t.call("HEAD", path, headers=headers, idempotent=True,
                                      what=what, rid=rid)
            info = info_from_headers(head.headers)
            if info.size != 0:
                raise
            return b"", info
        try:
            info = info_from_headers(resp.headers)
            cr = parse_content_range(resp.headers.get("Content-Range"))
            total = cr[2] if cr is not None else int(resp.headers.get("Content-Length", "-1"))
            check_range_reply(resp.status, resp.headers, 0, min(n, total),
                              info.blob_id or None, what)
            if total != info.size:
                raise IntegrityError(f"{what}: a {total}-byte range reply of a blob whose "
                                     f"size says {info.size}")
        except BaseException:
            resp.close()
            raise
        # a cut is resumed by id: a name may point elsewhere by then
        again = "/" + info.blob_id if info.blob_id else path
        body = await self._read_range(resp, again, headers, 0, min(n, total),
                                      info.blob_id or None, what, rid)
        return body, info

    async def _read_range(self, resp: aiohttp.ClientResponse, path: str,
                          headers: dict[str, str], offset: int, length: int,
                          blob_id: str | None, what: str, rid: str) -> bytes:
        """The ``length`` bytes at ``offset`` from ``resp`` (an open, checked range reply).
        A reply cut short is not started over: the rest is asked for from where it stopped
        (at most ``attempts`` cuts), so a frontend that cuts a reply at a chunk it
        cannot read answers the re-ask with that error (:class:`CorruptBlob`) at once."""
        buf = bytearray()
        cuts = 0
        while True:
            try:
                while len(buf) < length:
                    piece = await resp.content.read(length - len(buf))
                    if not piece:
                        raise aiohttp.ClientPayloadError("reply ended before its range")
                    buf += piece
                resp.release()
                return bytes(buf)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                resp.close()
                cuts += 1
                if cuts >= self.attempts:
                    raise ConnectionFailed(f"{what}: reply cut after {len(buf)} of {length} "
                                           f"bytes, {cuts} time(s): {e}") from e
            except BaseException:
                resp.close()
                raise
            pos = offset + len(buf)
            end = offset + length
            resp, _ = await self._t.open("GET", path, headers={
                **headers, "Range": f"bytes={pos}-{end - 1}"}, what=what, rid=rid)
            try:
                check_range_reply(resp.status, resp.headers, pos, end - pos, blob_id, what)
            except BaseException:
                resp.close()
                raise

    async def _ranges(self, info: BlobInfo, start: int, headers: dict[str, str], rid: str
                      ) -> AsyncIterator[tuple[int, bytes]]:
        path = "/" + info.blob_id

        async def fetch(offset: int, length: int) -> bytes:
            what = f"get {path} bytes {offset}-{offset + length - 1}"
            resp, _ = await self._t.open(
                "GET", path, headers={**headers, "Range": f"bytes={offset}-{offset + length - 1}"},
                what=what, rid=rid)
            try:
                check_range_reply(resp.status, resp.headers, offset, length, info.blob_id, what)
            except BaseException:
                resp.close()
                raise
            return await self._read_range(resp, path, headers, offset, length, info.blob_id,
                                          what, rid)

        ranges = plan_ranges(start, info.size, self.range_size_bytes)
        async for item in ordered_ranges(fetch, ranges, self.parallelism):
            yield item

    async def get_bytes(self, path: str, headers: dict[str, str],
                         progress: bool | None) -> bytes:
        rid = self._t.new_request_id()
        first, info = await self._first_range(path, headers, rid)
        verifier = Verifier(info)
        verifier.update(first)
        pieces = [first]
        bar = self._bar(progress, info.size, f"get {path.rsplit('/', 1)[-1]}")
        try:
            bar.update(len(first))
            async for _, data in self._ranges(info, len(first), headers, rid):
                verifier.update(data)
                pieces.append(data)
                bar.update(len(data))
        finally:
            bar.close()
        verifier.finish()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def download(self, path: str, dest: Path, headers: dict[str, str],
                        progress: bool | None) -> BlobInfo:
        rid = self._t.new_request_id()
        first, info = await self._first_range(path, headers, rid)
        verifier = Verifier(info)
        loop = asyncio.get_running_loop()
        # a hidden temporary beside the destination: the rename is atomic, and a failed or
        # interrupted download never leaves a partial file under the real name. No fsync: this
        # is the caller's file, as curl -o or cp write it, not a store's
        tmp = dest.with_name(f".{dest.name}.{rid}.ambry-part")
        f: IO[bytes] = await loop.run_in_executor(self._executor, open, tmp, "wb")
        bar = self._bar(progress, info.size, f"get {dest.name}")
        try:
            verifier.update(first)
            await loop.run_in_executor(self._executor, f.write, first)
            bar.update(len(first))
            async for _, data in self._ranges(info, len(first), headers, rid):
                verifier.update(data)
                await loop.run_in_executor(self._executor, f.write, data)
                bar.update(len(data))
            verifier.finish()
            await loop.run_in_executor(self._executor, f.close)
            os.replace(tmp, dest)
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
        return info
