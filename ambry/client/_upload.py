"""Uploads: one request for small blobs, parallel resumable chunk uploads plus a stitch for
large ones, and streamed named puts; every byte covered by xxh3.

Owns the upload plan. A source is read one part (``part_size_bytes``) at a time:

* at most one part: one ``POST /`` (or ``PUT /named/...``) carrying ``x-ambry-content-xxh3``,
  so the frontend refuses a body damaged on the way. Not idempotent: retried only when the
  outcome is certain (see ``_retry``).
* more: each part becomes a chunk (``POST /`` with ``x-ambry-chunk-upload: true`` and its own
  ``x-ambry-content-xxh3``), up to ``parallelism`` in flight, then ``POST /stitch`` lists the
  chunk ids in order. A chunk upload is safe to redo (a lost reply leaves at most an orphan
  chunk, which its TTL removes), so chunk uploads and the stitch are retried like GETs.
  Memory is bounded by ``(parallelism + 2) x part_size_bytes`` whatever the blob's size.
  For a file path, finished parts go to a resume journal (``_resume``): after a crash the
  same call skips them (reading them back only to hash them) and sends the rest.
* a named put of more than one part is the same chunked upload, stitched into the name with
  ``POST /named/<a>/<c>/<name>`` (the name rules of ``PUT``: 409 without upsert), so it is
  parallel and, for a file path, resumable. Without upsert a ``HEAD`` of the name first
  fails fast on a taken name, before any chunk is sent. A retried named stitch is safe: the
  frontend answers a stitch that already landed with the same blob.

The xxh3 of the whole blob is stored in its user metadata (``XXH3_METADATA_KEY``) so that
every download verifies the bytes end to end (``_download``, ``_reader``).

The part size must not exceed the frontend's ``chunk_size_bytes`` (a chunk upload must fit
one chunk; 4 MiB by default). A client finds out with its first chunked upload, which sends
the first part alone: a 413 that names the limit makes the client use that (else half) from
then on, re-splitting the parts it holds.

Does not own HTTP (``_transport``) or reading the source (``_source``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import xxhash

from ambry.client._errors import (
    BadRequest,
    BlobNotFound,
    Gone,
    IntegrityError,
    NameExists,
    PayloadTooLarge,
)
from ambry.client._progress import Progress
from ambry.client._resume import FinishedPart, ResumeJournal
from ambry.client._source import Source
from ambry.client._transport import Transport
from ambry.client._types import UM_PREFIX, XXH3_METADATA_KEY, check_blob_id

__all__ = ["MIN_PART_BYTES", "Uploader", "chunk_ttl_s", "split_parts"]

#: Smallest part the client will shrink to when a frontend refuses its chunk uploads.
MIN_PART_BYTES = 64 * 1024
_UM_XXH3 = UM_PREFIX + XXH3_METADATA_KEY


def split_parts(data: bytes, part_size: int) -> list[bytes]:
    """``data`` cut into ``part_size`` pieces (the last may be shorter; none for b"")."""
    if part_size < 1:
        raise ValueError("part_size must be >= 1")
    return [data[i:i + part_size] for i in range(0, len(data), part_size)]


def chunk_ttl_s(blob_ttl_s: int, resume_window_s: int) -> int:
    """TTL of a chunk before it is stitched: the resume window, plus the blob's own TTL when
    it has one (a stitch lifts the chunks' TTL only for a permanent blob, so a chunk must
    outlive the blob it ends up in, which is created up to the window later)."""
    if resume_window_s < 1:
        raise ValueError("resume_window_s must be >= 1")
    return resume_window_s if blob_ttl_s < 0 else blob_ttl_s + resume_window_s


class _StaleResume(Exception):
    """The stitch refused chunks taken from a resume journal (expired or gone)."""


class Uploader:
    """The upload plan of one client (shared by its calls)."""

    def __init__(self, transport: Transport, *, part_size: int, parallelism: int,
                 resume_dir: Path, resume_window_s: int) -> None:
        if part_size < MIN_PART_BYTES:
            raise ValueError(f"part_size_bytes must be >= {MIN_PART_BYTES}")
        if parallelism < 1:
            raise ValueError("parallelism must be >= 1")
        self.t = transport
        self.part_size = part_size
        self.part_size_confirmed = False
        self.parallelism = parallelism
        self.resume_dir = resume_dir
        self.resume_window_s = resume_window_s
        self._pruned = False

    # ------------------------------------------------------------------ entry points
    async def put(self, src: Source, headers: Mapping[str, str], *, resume: bool,
                  bar: Progress) -> str:
        """Upload ``src`` as a new blob with the property ``headers``; its id."""
        rid = self.t.new_request_id()
        first = await src.read(self.part_size)
        second = await src.read(self.part_size) if len(first) == self.part_size else b""
        if not second:
            blob_id = await self._one_request("POST", "/", first, headers, rid,
                                              idempotent=False, what="upload")
            bar.update(len(first))
            return blob_id
        journal_ok = resume and src.path is not None and src.stat is not None
        try:
            return await self._chunked(src, headers, [first, second], rid, bar, journal_ok)
        except _StaleResume:
            # chunks of an old try are gone (expired, compacted, another cluster): start over
            await src.restart()
            first = await src.read(self.part_size)
            second = await src.read(self.part_size)
            return await self._chunked(src, headers, [first, second], rid, bar, journal_ok,
                                       fresh=True)

    async def put_named(self, path: str, src: Source, headers: Mapping[str, str], *,
                        upsert: bool, resume: bool, bar: Progress) -> str:
        """Upload ``src`` under a name (``path`` is ``/named/<a>/<c>/<name>``); its blob id.
        One part: one ``PUT``, idempotent only with ``upsert`` (a retry of a put that did
        land finds the name taken otherwise). More: parallel chunks stitched into the name
        (resumable for a file path, as :meth:`put`)."""
        rid = self.t.new_request_id()
        hdrs = {**headers, "x-ambry-named-upsert": "true" if upsert else "false"}
        first = await src.read(self.part_size)
        second = await src.read(self.part_size) if len(first) == self.part_size else b""
        if not second:
            blob_id = await self._one_request("PUT", path, first, hdrs, rid, idempotent=upsert,
                                              what=f"named put {path}")
            bar.update(len(first))
            return blob_id
        if not upsert:
            await self._require_absent(path, rid)
        # the name's account and container are in the path; chunks need them as headers
        _, _, account, container, _ = path.split("/", 4)
        chunk_hdrs = {**hdrs, "x-ambry-target-account-name": account,
                      "x-ambry-target-container-name": container}
        journal_ok = resume and src.path is not None and src.stat is not None
        try:
            return await self._chunked(src, chunk_hdrs, [first, second], rid, bar, journal_ok,
                                       stitch_path=path)
        except _StaleResume:
            await src.restart()
            first = await src.read(self.part_size)
            second = await src.read(self.part_size)
            return await self._chunked(src, chunk_hdrs, [first, second], rid, bar, journal_ok,
                                       fresh=True, stitch_path=path)

    async def _require_absent(self, path: str, rid: str) -> None:
        """:class:`NameExists` if a live blob has this name (checked again by the stitch)."""
        try:
            await self.t.call("HEAD", path, idempotent=True, what=f"head {path}", rid=rid)
        except (BlobNotFound, Gone):
            return
        raise NameExists(f"named put {path}: the name exists (pass upsert=True to replace "
                         f"it)", status=409, code="NAME_ALREADY_EXISTS")

    # ------------------------------------------------------------------ one request
    async def _one_request(self, method: str, path: str, data: bytes,
                           headers: Mapping[str, str], rid: str, *, idempotent: bool,
                           what: str) -> str:
        h = xxhash.xxh3_64_hexdigest(data)
        hdrs = {**headers, "x-ambry-content-xxh3": h, _UM_XXH3: h,
                "x-ambry-blob-size": str(len(data))}
        reply = await self.t.call(method, path, headers=hdrs, body=data, idempotent=idempotent,
                                  what=what, rid=rid)
        return _location(reply.headers)

    # ------------------------------------------------------------------ chunked
    def _chunk_headers(self, headers: Mapping[str, str], data: bytes, xxh3: str
                       ) -> dict[str, str]:
        blob_ttl = int(headers.get("x-ambry-ttl", "-1"))
        h = {k: v for k, v in headers.items() if not k.lower().startswith(UM_PREFIX)}
        h.update({"x-ambry-chunk-upload": "true",
                  "x-ambry-ttl": str(chunk_ttl_s(blob_ttl, self.resume_window_s)),
                  "x-ambry-content-xxh3": xxh3, "x-ambry-blob-size": str(len(data))})
        return h

    async def _upload_chunk(self, data: bytes, xxh3: str, headers: Mapping[str, str],
                            rid: str) -> str:
        reply = await self.t.call("POST", "/", headers=self._chunk_headers(headers, data, xxh3),
                                  body=data, idempotent=True, what="chunk upload", rid=rid)
        return _location(reply.headers)

    def _journal(self, src: Source, headers: Mapping[str, str], part_size: int
                 ) -> ResumeJournal:
        assert src.path is not None and src.stat is not None
        if not self._pruned:  # once per client: journals of uploads never resumed
            self._pruned = True
            ResumeJournal.prune(self.resume_dir, self.resume_window_s)
        key = {"path": str(src.path), "size": src.stat.st_size,
               "mtime_ns": src.stat.st_mtime_ns,
               "account": headers.get("x-ambry-target-account-name", ""),
               "container": headers.get("x-ambry-target-container-name", ""),
               "ttl": headers.get("x-ambry-ttl", "-1")}
        return ResumeJournal.open(self.resume_dir, key, part_size,
                                  max_age_s=self.resume_window_s / 2)

    async def _settle_part_size(self, src: Source, headers: Mapping[str, str],
                                held: list[bytes], rid: str, use_journal: bool, fresh: bool
                                ) -> tuple[list[bytes], ResumeJournal | None,
                                           dict[int, FinishedPart]]:
        """Open the journal; on a client's first chunked upload, send part 0 alone to learn
        whether the frontend takes parts this big (see the module docstring)."""
        while True:
            part = self.part_size
            journal = self._journal(src, headers, part) if use_journal else None
            if journal is not None and fresh:
                journal.remove()
                journal = self._journal(src, headers, part)
            done: dict[int, FinishedPart] = dict(journal.parts) if journal else {}
            if self.part_size_confirmed or 0 in done:
                return held, journal, done
            h0 = xxhash.xxh3_64_hexdigest(held[0])
            try:
                cid = await self._upload_chunk(held[0], h0, headers, f"{rid}-0")
            except PayloadTooLarge as e:
                smaller = e.limit_bytes or part // 2
                if smaller >= part or smaller < MIN_PART_BYTES:
                    raise
                if journal is not None:
                    journal.remove()
                self.part_size = smaller
                held = split_parts(b"".join(held), smaller)
                continue
            self.part_size_confirmed = True
            probe = FinishedPart(0, cid, h0, len(held[0]))
            if journal is not None:
                journal.append(probe)
            done[0] = probe
            return held, journal, done

    async def _chunked(self, src: Source, headers: Mapping[str, str], held: list[bytes],
                       rid: str, bar: Progress, use_journal: bool, fresh: bool = False,
                       stitch_path: str = "/stitch") -> str:
        held, journal, done = await self._settle_part_size(src, headers, held, rid,
                                                           use_journal, fresh)
        part = self.part_size
        whole = xxhash.xxh3_64()
        ids: list[str | None] = []
        total = 0
        window = asyncio.Semaphore(self.parallelism)
        running: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []

        async def send(i: int, data: bytes, xxh3: str) -> None:
            try:
                cid = await self._upload_chunk(data, xxh3, headers, f"{rid}-{i}")
                ids[i] = cid
                if journal is not None:
                    journal.append(FinishedPart(i, cid, xxh3, len(data)))
                bar.update(len(data))
            except BaseException as e:  # noqa: BLE001 - handed to the reading loop
                failures.append(e)
            finally:
                window.release()

        try:
            i = 0
            while not failures:
                data = held.pop(0) if held else await src.read(part)
                if not data:
                    break
                whole.update(data)
                total += len(data)
                xxh3 = xxhash.xxh3_64_hexdigest(data)
                ids.append(None)
                prev = done.get(i)
                if prev is not None and prev.xxh3 == xxh3 and prev.size == len(data):
                    ids[i] = prev.chunk_id  # stored by an earlier try (or the probe)
                    bar.update(len(data))
                else:
                    await window.acquire()
                    if failures:
                        window.release()
                        break
                    t = asyncio.ensure_future(send(i, data, xxh3))
                    running.add(t)
                    t.add_done_callback(running.discard)
                i += 1
            if running:
                await asyncio.gather(*running)
            if failures:
                raise failures[0]
        except BaseException:
            for t in running:
                t.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            if journal is not None:
                journal.close()
            raise
        assert all(c is not None for c in ids), "a part ended without a chunk id"
        if src.size is not None and total != src.size:
            raise IntegrityError(f"the source changed while it was read: {total} bytes read, "
                                 f"{src.size} expected")
        hdrs = {**headers, _UM_XXH3: whole.hexdigest(), "Content-Type": "application/json"}
        body = json.dumps({"chunkIds": ids}).encode()
        try:
            reply = await self.t.call("POST", stitch_path, headers=hdrs, body=body,
                                      idempotent=True, what=f"stitch {stitch_path}",
                                      rid=f"{rid}-stitch")
        except (BlobNotFound, Gone, BadRequest):  # BadRequest: ids of another cluster
            if journal is not None:
                journal.remove()
            if journal is not None and done and not fresh:
                raise _StaleResume() from None
            raise
        size = int(reply.headers.get("x-ambry-blob-size", total))
        if size != total:
            raise IntegrityError(f"stitched blob has {size} bytes, {total} were uploaded")
        if journal is not None:
            journal.remove()
        return _location(reply.headers)


def _location(headers: Mapping[str, str]) -> str:
    return check_blob_id(headers.get("Location", ""))
