"""S3 multipart uploads: upload state kept in the store, parts as chunks, completion by stitch.

Owns the records of an upload and the operations on them. Nothing lives in frontend memory:
any frontend of any datacenter can take the next request of an upload, and a restarted
frontend goes on where the last one stopped. State is named blobs of the system account, in
the uploads container (``ambry.frontend.containers.UPLOADS_CONTAINER_ID``)::

    u/<account id>/<container id>/<upload id>   the upload: name entry's content type = key;
                                                blob = JSON {key, content_type, usermeta}
    p/<upload id>/<part number, 5 digits>       one part: name entry's content type = ETag,
                                                size = part size; blob = JSON {etag, md5,
                                                size, chunks: [[chunk id, size], ...]}

A part's body is stored by ``Router.put_chunks`` as chunk blobs of the frontend's chunk size
(a part may be many chunks), in the bucket's container, with a TTL of ``multipart_ttl_s``:
an upload that is never completed or aborted frees itself. Re-uploading a part number frees
the chunks of the part it replaces. *Complete* checks the list against the part records,
writes one composite blob listing every chunk of every part in order
(``Router.stitch_chunks``, which first makes the chunks permanent; its user metadata keeps
the part sizes for GET ``?partNumber``: ``ambry.frontend.s3.parts``), points the key at it,
and drops the records; no byte is copied. *Abort* deletes the chunks and the records.

A completion first *claims* the upload: its entry becomes a deletion in one conditional
write at the record's replicas (``Router.write_name``), so of concurrent completions in a
datacenter exactly one goes on to stitch; if stitching fails, the entry is restored and a
retry can complete the upload. The object it makes carries :data:`UM_COMPLETED_UPLOAD` (the
upload id and a digest of the part list): a retried completion with the same parts is
answered from the object for as long as the key still holds it, from any frontend of any
datacenter it has replicated to; with other parts, or once the key holds another object, it
is ``NoSuchUpload``, as AWS.

Does not own HTTP or XML (the handlers: ``ambry.frontend.s3.uploads``, ``ambry.frontend.s3.copy``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ambry.common.blobid import BlobId
from ambry.common.errors import AmbryError, BlobDeleted, BlobExpired, BlobNotFound
from ambry.common.properties import BlobProperties
from ambry.frontend.chunking import ChunkRef
from ambry.frontend.containers import SYSTEM_ACCOUNT_ID, UPLOADS_CONTAINER_ID
from ambry.frontend.namewrite import name_version
from ambry.frontend.router import Router, StoredBlob
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.etag import multipart_etag, normalize_etag
from ambry.frontend.s3.parts import encode_part_sizes
from ambry.frontend.s3.xml import CompletedPart
from ambry.protocol.messages import NameRecord

__all__ = ["MAX_PART_NUMBER", "UM_COMPLETED_UPLOAD", "MultipartStore", "PartInfo", "Upload",
           "completion_marker"]

#: User metadata key of an object made by CompleteMultipartUpload: which completion made it
#: (:func:`completion_marker`), so that a retry of that completion is answered from the object.
UM_COMPLETED_UPLOAD = "s3.completed-upload"

MAX_PART_NUMBER = 10_000
_MAX_RECORD_BYTES = 16 * 1024 * 1024
_CONCURRENCY = 16
_SERVICE = "ambry-s3-multipart"
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{22}", re.ASCII)

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Upload:
    upload_id: str
    account_id: int
    container_id: int
    key: str
    initiated_ms: int


@dataclass(frozen=True, slots=True)
class PartInfo:
    number: int
    etag: str
    size: int
    last_modified_ms: int
    blob_id: bytes = b""  # of the part record


def completion_marker(upload_id: str, requested: Sequence[CompletedPart]) -> str:
    """Names one completion: the upload id and a digest of its part list (numbers and
    ETags). A retried CompleteMultipartUpload repeats both; another part list, or another
    upload, gives another marker."""
    listed = "\n".join(f"{p.number} {normalize_etag(p.etag)}" for p in requested)
    return f"{upload_id} {hashlib.sha256(listed.encode()).hexdigest()[:32]}"


def _no_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", "The specified upload does not exist. The upload ID may be "
                                   "invalid, or the upload may have been aborted or "
                                   "completed.", 404, extra={"UploadId": upload_id})


async def _bounded(items: Sequence[T], fn: Callable[[T], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(x: T) -> Any:
        async with gate:
            return await fn(x)

    return list(await asyncio.gather(*(one(x) for x in items)))


def _once(data: bytes) -> Callable[[int], Awaitable[bytes]]:
    sent = [False]

    async def read(n: int) -> bytes:
        if sent[0]:
            return b""
        sent[0] = True
        return data

    return read


class MultipartStore:
    def __init__(self, router: Router, ttl_s: int) -> None:
        self.router = router
        self.ttl_s = ttl_s

    # ------------------------------------------------------------------ records
    @staticmethod
    def _upload_name(account_id: int, container_id: int, upload_id: str) -> str:
        return f"u/{account_id}/{container_id}/{upload_id}"

    @staticmethod
    def _part_name(upload_id: str, number: int) -> str:
        return f"p/{upload_id}/{number:05d}"

    async def _put_record(self, name: str, payload: bytes, listing: str, rid: str,
                          created_ms: int, listing_size: int = 0) -> None:
        """Store a record blob and name it; the name entry shows ``listing`` as its content
        type and ``listing_size`` as its size (a part's size, not the record's)."""
        props = BlobProperties(size=len(payload), created_ms=created_ms, ttl_s=self.ttl_s,
                               content_type="application/json", service_id=_SERVICE,
                               account_id=SYSTEM_ACCOUNT_ID, container_id=UPLOADS_CONTAINER_ID)
        stored = await self.router.put(_once(payload), account_id=SYSTEM_ACCOUNT_ID,
                                       container_id=UPLOADS_CONTAINER_ID, props=props,
                                       usermeta=b"", declared_size=len(payload),
                                       content_xxh3=None, rid=rid)
        shown = StoredBlob(stored.blob_id, listing_size, stored.created_ms)
        await self.router.bind_name(name, shown, account_id=SYSTEM_ACCOUNT_ID,
                                    container_id=UPLOADS_CONTAINER_ID, content_type=listing,
                                    rid=rid)

    async def _read_record(self, blob_id: bytes, rid: str) -> dict[str, Any]:
        info = await self.router.get(BlobId.from_bytes(blob_id), rid=rid)
        try:
            if info.total_size > _MAX_RECORD_BYTES:
                raise AssertionError("multipart record too large")
            buf = bytearray()
            assert info.body is not None
            async for piece in info.body:
                buf += piece
        finally:
            await info.aclose()
        out: dict[str, Any] = json.loads(buf)
        return out

    async def _drop(self, name: str, rid: str) -> None:
        try:
            await self.router.delete_named(name, account_id=SYSTEM_ACCOUNT_ID,
                                           container_id=UPLOADS_CONTAINER_ID, rid=rid)
        except (BlobNotFound, BlobDeleted, BlobExpired):
            pass

    async def _delete_chunks(self, chunks: Sequence[Sequence[Any]], rid: str) -> None:
        async def one(c: Sequence[Any]) -> None:
            try:
                await self.router.delete(self.router.parse_id(str(c[0])), rid)
            except AmbryError:
                pass  # already gone, or it expires with its TTL

        await _bounded(list(chunks), one)

    # ------------------------------------------------------------------ operations
    async def create(self, account_id: int, container_id: int, key: str, content_type: str,
                     usermeta: dict[str, str], rid: str) -> str:
        upload_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        now = self.router.clock.now_ms()
        payload = json.dumps({"key": key, "content_type": content_type,
                              "usermeta": usermeta}).encode()
        await self._put_record(self._upload_name(account_id, container_id, upload_id), payload,
                               key, rid, now)
        return upload_id

    async def get(self, account_id: int, container_id: int, upload_id: str, key: str | None,
                  rid: str) -> Upload:
        """The live upload, or NoSuchUpload (unknown, finished, expired, another key)."""
        if _UPLOAD_ID.fullmatch(upload_id) is None:
            raise _no_upload(upload_id)
        e = await self.router.lookup_name(SYSTEM_ACCOUNT_ID, UPLOADS_CONTAINER_ID,
                                          self._upload_name(account_id, container_id,
                                                            upload_id), rid)
        if e is None or e.deleted or (key is not None and e.content_type != key) or \
                self._expired(e.created_ms):
            raise _no_upload(upload_id)
        return Upload(upload_id, account_id, container_id, e.content_type, e.created_ms)

    def _expired(self, created_ms: int) -> bool:
        # a little early, so a completion never races the chunks' TTL
        return created_ms + (self.ttl_s - 60) * 1000 <= self.router.clock.now_ms()

    async def upload_part(self, upload: Upload, number: int, read: Callable[[int], Awaitable[bytes]],
                          md5: Callable[[], bytes], rid: str) -> str:
        """Store one part; its ETag. ``md5`` gives the body's MD5 once it is read."""
        if not 1 <= number <= MAX_PART_NUMBER:
            raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and "
                                             f"{MAX_PART_NUMBER}, inclusive")
        name = self._part_name(upload.upload_id, number)
        old = await self.router.lookup_name(SYSTEM_ACCOUNT_ID, UPLOADS_CONTAINER_ID, name, rid)
        old_chunks: list[Any] = []
        if old is not None and not old.deleted:
            try:
                old_chunks = (await self._read_record(old.blob_id, rid))["chunks"]
            except (BlobNotFound, BlobDeleted, BlobExpired):
                old_chunks = []
        now = self.router.clock.now_ms()
        props = BlobProperties(size=0, created_ms=now, ttl_s=self.ttl_s,
                               content_type="application/octet-stream", service_id=_SERVICE,
                               account_id=upload.account_id, container_id=upload.container_id)
        chunks, size = await self.router.put_chunks(read, account_id=upload.account_id,
                                                    container_id=upload.container_id,
                                                    props=props, rid=rid)
        digest = md5()
        etag = f'"{digest.hex()}"'
        record = json.dumps({"etag": etag, "md5": digest.hex(), "size": size,
                             "chunks": [[c.blob_id, c.size] for c in chunks]}).encode()
        try:
            await self._put_record(name, record, etag, rid, now, size)
        except BaseException:
            self.router._spawn(self._delete_chunks([[c.blob_id] for c in chunks], rid))
            raise
        if old_chunks:
            self.router._spawn(self._delete_chunks(old_chunks, rid))
        return etag

    async def parts(self, upload: Upload, rid: str, after: int = 0, limit: int = MAX_PART_NUMBER
                    ) -> tuple[list[PartInfo], bool]:
        """Parts after number ``after``, in order, at most ``limit``; and whether more follow."""
        prefix = f"p/{upload.upload_id}/"
        out: list[PartInfo] = []
        start = self._part_name(upload.upload_id, after) if after else ""
        while True:
            entries, more = await self.router.list_named(
                account_id=SYSTEM_ACCOUNT_ID, container_id=UPLOADS_CONTAINER_ID,
                prefix=prefix, start_after=start, limit=min(1000, limit - len(out) + 1),
                rid=rid)
            for e in entries:
                num = e.name[len(prefix):]
                if num.isdigit():
                    out.append(PartInfo(int(num), e.content_type, e.size, e.created_ms,
                                        e.blob_id))
            if len(out) > limit:
                return out[:limit], True
            if not more or not entries:
                return out, False
            start = entries[-1].name

    async def uploads(self, account_id: int, container_id: int, rid: str
                      ) -> list[Upload]:
        """Every live upload of a container (key order, then initiation)."""
        prefix = f"u/{account_id}/{container_id}/"
        out: list[Upload] = []
        start = ""
        while True:
            entries, more = await self.router.list_named(
                account_id=SYSTEM_ACCOUNT_ID, container_id=UPLOADS_CONTAINER_ID,
                prefix=prefix, start_after=start, limit=1000, rid=rid)
            out += [Upload(e.name[len(prefix):], account_id, container_id, e.content_type,
                           e.created_ms) for e in entries if not self._expired(e.created_ms)]
            if not more or not entries:
                break
            start = entries[-1].name
        out.sort(key=lambda u: (u.key, u.initiated_ms, u.upload_id))
        return out

    async def abort(self, upload: Upload, rid: str) -> None:
        parts, _ = await self.parts(upload, rid)
        await _bounded(parts, lambda p: self._abort_part(upload, p, rid))
        await self._drop(self._upload_name(upload.account_id, upload.container_id,
                                           upload.upload_id), rid)

    async def _abort_part(self, upload: Upload, part: PartInfo, rid: str) -> None:
        name = self._part_name(upload.upload_id, part.number)
        e = await self.router.lookup_name(SYSTEM_ACCOUNT_ID, UPLOADS_CONTAINER_ID, name, rid)
        if e is not None and not e.deleted:
            try:
                rec = await self._read_record(e.blob_id, rid)
                await self._delete_chunks(rec["chunks"], rid)
            except (BlobNotFound, BlobDeleted, BlobExpired):
                pass
        await self._drop(name, rid)

    async def complete(self, upload: Upload, requested: Sequence[CompletedPart],
                       min_part_size: int, *, make_props: Callable[[str], BlobProperties],
                       make_usermeta: Callable[[dict[str, str], str, str | None], bytes],
                       rid: str) -> tuple[StoredBlob, str, str]:
        """Stitch the listed parts into the object; (stored blob, ETag, content type).
        ``make_usermeta(meta, etag, part map)`` gives the object's user metadata; the part map
        (``ambry.frontend.s3.parts``) is what GET ``?partNumber=N`` reads."""
        for a, b in itertools.pairwise(requested):
            if b.number <= a.number:
                raise S3Error("InvalidPartOrder", "The list of parts was not in ascending "
                                                  "order. Parts must be ordered by part "
                                                  "number.")
        stored_parts, _ = await self.parts(upload, rid)
        by_number = {p.number: p for p in stored_parts}
        for i, want in enumerate(requested):
            have = by_number.get(want.number)
            if have is None or normalize_etag(have.etag) != normalize_etag(want.etag):
                raise S3Error("InvalidPart", "One or more of the specified parts could not be "
                                             "found. The part may not have been uploaded, or "
                                             "the specified entity tag may not match the "
                                             "part's entity tag.",
                              extra={"PartNumber": str(want.number), "ETag": want.etag})
            if i < len(requested) - 1 and have.size < min_part_size:
                raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the "
                                                "minimum allowed object size.",
                              extra={"PartNumber": str(want.number),
                                     "MinSizeAllowed": str(min_part_size),
                                     "ProposedSize": str(have.size)})
        upload_entry = await self.router.lookup_name(
            SYSTEM_ACCOUNT_ID, UPLOADS_CONTAINER_ID,
            self._upload_name(upload.account_id, upload.container_id, upload.upload_id), rid)
        if upload_entry is None or upload_entry.deleted:
            raise _no_upload(upload.upload_id)
        try:
            meta = await self._read_record(upload_entry.blob_id, rid)
            blob_ids = [by_number[p.number].blob_id for p in requested]
            records = await _bounded(blob_ids, lambda b: self._read_record(b, rid))
        except (BlobNotFound, BlobDeleted, BlobExpired):
            raise _no_upload(upload.upload_id) from None
        refs: list[ChunkRef] = []
        md5s: list[bytes] = []
        for want, rec in zip(requested, records, strict=True):
            if normalize_etag(rec["etag"]) != normalize_etag(want.etag):
                raise S3Error("InvalidPart", "a part changed while the upload completed")
            md5s.append(bytes.fromhex(rec["md5"]))
            refs += [ChunkRef(str(c[0]), int(c[1])) for c in rec["chunks"]]
        etag = multipart_etag(md5s)
        content_type = str(meta.get("content_type") or "binary/octet-stream")
        props = make_props(content_type)
        um = make_usermeta(dict(meta.get("usermeta") or {}), etag,
                           encode_part_sizes([int(rec["size"]) for rec in records])
                           if records else None)
        # the upload ends here, before anything is stitched: of concurrent completions of it
        # in this datacenter exactly one claims it, so two objects never share these chunks
        # (deleting one would free the other's bytes); the others, and later retries, find
        # no upload (a retry of this one is answered from the object: app.complete_upload)
        claim = await self._claim(upload_entry, upload.upload_id, rid)
        try:
            if refs:
                stored = await self.router.stitch_chunks(
                    refs, account_id=upload.account_id, container_id=upload.container_id,
                    props=props, usermeta=um,
                    make_permanent=[self.router.parse_id(r.blob_id) for r in refs], rid=rid)
            else:  # every part was empty: an empty object
                stored = await self.router.put(_once(b""), account_id=upload.account_id,
                                               container_id=upload.container_id, props=props,
                                               usermeta=um, declared_size=0,
                                               content_xxh3=None, rid=rid)
        except BaseException as e:
            # nothing was named: open the upload again, so that a retry can complete it
            reopen = self._reopen(upload_entry, claim, rid)
            if isinstance(e, asyncio.CancelledError):
                self.router._spawn(reopen)
            else:
                await reopen
            raise
        self.router._spawn(self._delete_record_blob(upload_entry.blob_id, rid))
        used = {p.number for p in requested}
        self.router._spawn(self._cleanup(upload, [p for p in stored_parts if p.number in used],
                                         [p for p in stored_parts if p.number not in used],
                                         rid))
        return stored, etag, content_type

    def _next_ts(self, current: NameRecord) -> int:
        return max(self.router.clock.now_ms(), current.ts_ms + 1)

    async def _claim(self, entry: NameRecord, upload_id: str, rid: str) -> NameRecord:
        """End the upload as one conditional write at its record's replicas: the entry
        becomes a deletion, unless it is gone already (another completion or an abort got
        there first: NoSuchUpload). The record blob is kept until the completion succeeds,
        so :meth:`_reopen` can restore the entry. Returns the deletion written."""
        def decide(current: NameRecord | None) -> NameRecord:
            if current is None or current.deleted:
                raise _no_upload(upload_id)
            return NameRecord(SYSTEM_ACCOUNT_ID, UPLOADS_CONTAINER_ID, entry.name, b"",
                              self._next_ts(current), self.router.dc.id, True, 0,
                              entry.content_type, entry.created_ms)

        _, written = await self.router.write_name(SYSTEM_ACCOUNT_ID, UPLOADS_CONTAINER_ID,
                                                  entry.name, decide, rid)
        assert written is not None
        return written

    async def _reopen(self, entry: NameRecord, claim: NameRecord, rid: str) -> None:
        """Undo :meth:`_claim` after a completion that named nothing: the upload's entry as
        it was (if the claim is still the newest entry). Best effort: if this fails too, the
        upload stays ended, as it did before claims existed."""
        def decide(current: NameRecord | None) -> NameRecord | None:
            if current is None or name_version(current) != name_version(claim):
                return None
            return replace(entry, ts_ms=self._next_ts(current), dc_id=self.router.dc.id)

        try:
            await self.router.write_name(SYSTEM_ACCOUNT_ID, UPLOADS_CONTAINER_ID, entry.name,
                                         decide, rid)
        except AmbryError as e:
            log.warning("rid=%s multipart upload %s could not be reopened after a failed "
                        "completion: %s", rid, entry.name, e)

    async def _delete_record_blob(self, blob_id: bytes, rid: str) -> None:
        try:
            await self.router.delete(BlobId.from_bytes(blob_id), rid)
        except AmbryError:
            pass  # it expires with the upload's TTL anyway

    async def _cleanup(self, upload: Upload, used: list[PartInfo], unused: list[PartInfo],
                       rid: str) -> None:
        """After a completion: drop the part records; parts left out of it are freed."""
        await _bounded(unused, lambda p: self._abort_part(upload, p, rid))
        await _bounded(used, lambda p: self._drop(self._part_name(upload.upload_id, p.number),
                                                  rid))

