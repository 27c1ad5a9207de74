"""Composite blobs and byte ranges: the pure arithmetic between a blob and its chunks.

Owns
  * the metadata payload of a composite blob (DESIGN.md section 5), its encoding and strict
    validation;
  * how a blob of known size is cut into chunks (:func:`split_sizes`);
  * which chunks, and which bytes of each, a byte range touches (:func:`slices_for_range`);
  * the HTTP ``Range`` / ``Content-Range`` headers (RFC 9110 section 14, formerly RFC 7233).

Does not own any I/O: uploading, fetching and streaming chunks is the router's job; this module
takes values and returns values.

Metadata payload, version 1 (msgpack map, exactly these three keys)::

    {"v": 1, "total_size": <int>, "chunks": [[<43-char chunk blob id>, <size>], ...]}

Flat: stitch and S3 multipart parts may have uneven sizes, zero-size chunks are allowed, and a
chunk is never itself a composite (metadata) blob. A composite has at least one chunk.

Error choice: :func:`decode_metadata` raises :class:`~ambry.common.errors.DataCorrupt` for
anything malformed, because a metadata payload is only ever written by a frontend (clients
cannot create blobs of type *metadata*), so a bad one read back from storage is corruption, not a
client mistake. :func:`encode_metadata` and :class:`ChunkRef` raise 4xx errors
(:class:`~ambry.common.errors.InvalidBlobId` / :class:`~ambry.common.errors.InvalidArgument`),
because their input can come from a client (``POST /stitch``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ambry.common import blobid
from ambry.common.errors import BadRequest, DataCorrupt, InvalidArgument

__all__ = [
    "METADATA_VERSION",
    "ChunkRef",
    "ChunkSlice",
    "RangeNotSatisfiable",
    "content_range",
    "decode_metadata",
    "encode_metadata",
    "parse_range",
    "slices_for_range",
    "split_sizes",
    "unsatisfied_content_range",
]

METADATA_VERSION = 1
_METADATA_KEYS = frozenset({"v", "total_size", "chunks"})


class RangeNotSatisfiable(BadRequest):
    """The Range header is well formed but selects no byte of the blob (HTTP 416).

    ``total_size`` is the blob size, for the reply's ``Content-Range: bytes */<total_size>``
    (see :func:`unsatisfied_content_range`).
    """

    code = "RANGE_NOT_SATISFIABLE"

    def __init__(self, message: str = "", total_size: int | None = None) -> None:
        super().__init__(message)
        self.total_size = total_size


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a composite blob: its blob id (43-character text form) and size in bytes.

    Construction validates: the id must decode (else ``InvalidBlobId``), must not name a
    metadata blob (composites are flat; else ``InvalidArgument``), and the size must be a
    non-negative int (else ``InvalidArgument``).
    """

    blob_id: str
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.blob_id, str):
            raise InvalidArgument("chunk blob id must be a string")
        bid = blobid.decode(self.blob_id)
        if bid.blob_type == blobid.BlobType.METADATA:
            raise InvalidArgument(
                f"chunk {self.blob_id} is a composite blob; composites cannot be nested")
        if not _is_int(self.size) or self.size < 0:
            raise InvalidArgument(f"chunk {self.blob_id} size must be an integer >= 0, "
                                  f"not {self.size!r}")


def _is_int(x: object) -> bool:
    # bool is an int subclass; msgpack true/false must never pass as a size.
    return isinstance(x, int) and not isinstance(x, bool)


def encode_metadata(chunks: Sequence[ChunkRef]) -> bytes:
    """The metadata payload (version 1) of a composite blob made of ``chunks``, in order.

    Raises ``InvalidArgument`` for an empty list (a 0-byte or single-upload blob is stored as a
    simple blob, and a stitch of nothing is a client error).
    """
    if not chunks:
        raise InvalidArgument("a composite blob needs at least one chunk")
    total = sum(c.size for c in chunks)
    body = {"v": METADATA_VERSION, "total_size": total,
            "chunks": [[c.blob_id, c.size] for c in chunks]}
    out: bytes = msgpack.packb(body, use_bin_type=True)
    return out


def decode_metadata(raw: bytes | bytearray) -> tuple[int, list[ChunkRef]]:
    """Parse a metadata payload into ``(total_size, chunks)``; ``DataCorrupt`` if malformed.

    Rejected: not a msgpack map, trailing bytes, unknown or missing keys, a version other than 1,
    a ``chunks`` value that is not a non-empty list of ``[id, size]`` pairs, an id that does not
    decode or names a metadata blob, a negative or non-integer size, sizes not summing to
    ``total_size``.
    """
    try:
        m: Any = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as e:
        raise DataCorrupt(f"composite metadata is not msgpack: {e}") from None
    if not isinstance(m, dict):
        raise DataCorrupt("composite metadata is not a map")
    version = m.get("v")
    if not _is_int(version) or version != METADATA_VERSION:
        raise DataCorrupt(f"unsupported composite metadata version {version!r}")
    if set(m) != _METADATA_KEYS:
        raise DataCorrupt(f"composite metadata keys must be {sorted(_METADATA_KEYS)}, "
                          f"got {sorted(map(str, m))}")
    total = m["total_size"]
    if not _is_int(total) or total < 0:
        raise DataCorrupt(f"composite metadata total_size {total!r} is not an integer >= 0")
    entries = m["chunks"]
    if not isinstance(entries, list) or not entries:
        raise DataCorrupt("composite metadata chunks must be a non-empty list")
    chunks: list[ChunkRef] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, list) or len(entry) != 2:
            raise DataCorrupt(f"composite metadata chunk {i} is not an [id, size] pair")
        try:
            chunks.append(ChunkRef(entry[0], entry[1]))
        except BadRequest as e:
            raise DataCorrupt(f"composite metadata chunk {i}: {e.message}") from None
    if sum(c.size for c in chunks) != total:
        raise DataCorrupt(f"composite metadata chunk sizes sum to {sum(c.size for c in chunks)},"
                          f" not total_size {total}")
    return total, chunks


def split_sizes(total: int, chunk_size: int) -> list[int]:
    """Sizes of the chunks a blob of ``total`` bytes is cut into: full chunks, then the rest.

    A 0-byte blob has no chunks: ``split_sizes(0, n) == []`` (the router stores 0-byte and
    single-chunk blobs as simple blobs, never as composites). ``ValueError`` for a negative
    total or a chunk size < 1 (programmer/config errors).
    """
    if total < 0:
        raise ValueError(f"total size must be >= 0, not {total}")
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, not {chunk_size}")
    full, rest = divmod(total, chunk_size)
    return [chunk_size] * full + ([rest] if rest else [])


@dataclass(frozen=True, slots=True)
class ChunkSlice:
    """Bytes ``[start, start + length)`` of chunk number ``index`` (offsets within that chunk)."""

    index: int
    start: int
    length: int


def slices_for_range(chunk_sizes: Sequence[int], start: int, length: int) -> list[ChunkSlice]:
    """The chunks that bytes ``[start, start + length)`` of the blob touch, in order.

    Chunk sizes may be uneven; zero-size chunks never appear in the result. Concatenating the
    slices yields exactly the requested bytes. ``length == 0`` gives ``[]``. A range outside
    the blob, or a negative size, is a ``ValueError``: ranges come from :func:`parse_range`,
    which already clamps them.
    """
    if start < 0 or length < 0:
        raise ValueError(f"range start {start} and length {length} must be >= 0")
    out: list[ChunkSlice] = []
    end = start + length
    offset = 0  # blob offset of the current chunk's first byte
    for index, size in enumerate(chunk_sizes):
        if size < 0:
            raise ValueError(f"chunk {index} has negative size {size}")
        chunk_end = offset + size
        lo, hi = max(start, offset), min(end, chunk_end)
        if lo < hi:  # also skips zero-size chunks and empty ranges
            out.append(ChunkSlice(index, lo - offset, hi - lo))
        offset = chunk_end
    if end > offset:
        raise ValueError(f"range [{start}, {end}) goes past the blob size {offset}")
    return out


# RFC 9110 section 14: range-unit is case-insensitive; positions are 1*DIGIT (ASCII only).
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)
_OWS = " \t"
# Positions longer than this many digits are compared exactly as strings and otherwise
# treated as "bigger than any blob" (Python refuses int() of > 4300 digits).
_MAX_EXACT_DIGITS = 20
_HUGE = 10**_MAX_EXACT_DIGITS


def _pos(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_EXACT_DIGITS else _HUGE


def _digits_gt(a: str, b: str) -> bool:
    a, b = a.lstrip("0") or "0", b.lstrip("0") or "0"
    return (len(a), a) > (len(b), b)


def parse_range(header: str, total: int) -> tuple[int, int] | None:
    """Parse a ``Range`` header against a blob of ``total`` bytes into ``(start, length)``.

    Supported: ``bytes=a-b`` (``b`` clamped to the last byte), ``bytes=a-`` and ``bytes=-n``
    (the last ``n`` bytes; all of them when ``n >= total``). The unit is case-insensitive and
    optional whitespace around the range-spec is allowed.

    Returns ``None`` (serve the whole blob with 200, as RFC 9110 allows) for a syntactically
    invalid header, another unit, ``a > b``, and multi-range requests (``bytes=0-1,5-6``).
    Raises :class:`RangeNotSatisfiable` (416) when the range is valid but selects nothing:
    ``a >= total``, a suffix of 0 bytes, or any range on a 0-byte blob.
    """
    if total < 0:
        raise ValueError(f"total size must be >= 0, not {total}")
    unit, eq, spec_set = header.partition("=")
    if not eq or unit.strip(_OWS).lower() != "bytes":
        return None
    # 1#range-spec allows empty list elements and OWS around commas.
    specs = [s.strip(_OWS) for s in spec_set.split(",")]
    specs = [s for s in specs if s]
    if len(specs) != 1:
        return None  # empty or multi-range: serve the full body
    m = _RANGE_SPEC.fullmatch(specs[0])
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None  # "bytes=-"
    if not first:  # suffix range: the last n bytes
        n = _pos(last)
        if n == 0 or total == 0:
            raise RangeNotSatisfiable(f"range {specs[0]} selects no byte of a {total}-byte blob",
                                      total)
        n = min(n, total)
        return total - n, n
    if last and _digits_gt(first, last):
        return None  # RFC 9110 14.1.1: last < first makes the range-spec invalid
    start = _pos(first)
    if start >= total:
        raise RangeNotSatisfiable(f"range {specs[0]} starts past the end of a {total}-byte blob",
                                  total)
    end = min(_pos(last), total - 1) if last else total - 1
    return start, end - start + 1


def content_range(start: int, length: int, total: int) -> str:
    """``Content-Range`` value of a 206 reply: ``bytes <first>-<last>/<total>``."""
    if not (start >= 0 and length >= 1 and start + length <= total):
        raise ValueError(f"bad content range start={start} length={length} total={total}")
    return f"bytes {start}-{start + length - 1}/{total}"


def unsatisfied_content_range(total: int) -> str:
    """``Content-Range`` value of a 416 reply: ``bytes */<total>``."""
    if total < 0:
        raise ValueError(f"total size must be >= 0, not {total}")
    return f"bytes */{total}"
