"""Stitch: one composite blob from chunks uploaded before (resumable and parallel uploads).

Owns :class:`Stitcher`: checking the chunk ids a client sends (chunks of the same container,
uploaded as chunks), their sizes and expiries (a composite with a TTL never outlives one of
its chunks), making pending chunks permanent for a permanent composite, and writing the
metadata blob. Does not own uploading the chunks (``uploads``) nor pointing a name at the
result (``names``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ambry.common.blobid import BlobId, BlobType
from ambry.common.errors import InvalidArgument
from ambry.common.properties import BlobProperties
from ambry.frontend.chunking import ChunkRef, encode_metadata
from ambry.frontend.clusterview import ClusterView
from ambry.frontend.reads import Reader
from ambry.frontend.uploads import StoredBlob, Uploader, with_size

__all__ = ["Stitcher"]


class Stitcher:
    def __init__(self, view: ClusterView, reader: Reader, uploader: Uploader) -> None:
        self.view = view
        self.reader = reader
        self.uploader = uploader

    async def stitch(self, chunk_ids: Sequence[str], *, account_id: int, container_id: int,
                     props: BlobProperties, usermeta: bytes, rid: str) -> StoredBlob:
        """One composite blob from chunks uploaded with ``x-ambry-chunk-upload``."""
        if not chunk_ids:
            raise InvalidArgument("stitch needs at least one chunk id")
        ids = []
        for text in chunk_ids:
            if not isinstance(text, str):
                raise InvalidArgument("chunk ids must be strings")
            bid = self.view.parse_id(text)
            if bid.blob_type is not BlobType.CHUNK:
                raise InvalidArgument(f"{text} was not uploaded as a chunk")
            if (bid.account_id, bid.container_id) != (account_id, container_id):
                raise InvalidArgument(f"chunk {text} belongs to another container")
            ids.append(bid)
        infos = await asyncio.gather(*(self.reader.get(b, info_only=True, rid=rid)
                                       for b in ids))
        refs = [ChunkRef(b.to_str(), i.total_size) for b, i in zip(ids, infos, strict=True)]
        lift = [b for b, info in zip(ids, infos, strict=True)
                if info.properties.ttl_s != -1 and not info.state.permanent]
        if props.ttl_s != -1:  # a composite with a TTL never outlives one of its chunks
            expiry_ms = props.created_ms + props.ttl_s * 1000
            for b, info in zip(ids, infos, strict=True):
                if info.expiry_ms and info.expiry_ms < expiry_ms:
                    raise InvalidArgument(
                        f"chunk {b.to_str()} expires before the stitched blob would: upload "
                        f"chunks with an x-ambry-ttl of at least the blob's")
        return await self.stitch_chunks(refs, account_id=account_id, container_id=container_id,
                                        props=props, usermeta=usermeta, make_permanent=lift,
                                        rid=rid)

    async def stitch_chunks(self, refs: Sequence[ChunkRef], *, account_id: int,
                            container_id: int, props: BlobProperties, usermeta: bytes,
                            make_permanent: Sequence[BlobId] = (), rid: str) -> StoredBlob:
        """One composite blob of chunks whose sizes the caller knows (from :meth:`stitch`,
        or the parts of an S3 multipart upload, each several chunks). Chunks take the
        composite's TTL: when it is permanent, ``make_permanent`` chunks get a TTL update
        first (a few at a time), so the composite never outlives a chunk."""
        if props.ttl_s == -1 and make_permanent:
            await self.uploader.lift_ttls(make_permanent, rid)
        total = sum(r.size for r in refs)
        bid = await self.uploader.put_one_blob(BlobType.METADATA, account_id, container_id,
                                               with_size(props, total), usermeta,
                                               encode_metadata(refs), rid)
        return StoredBlob(bid, total, props.created_ms)
