"""Composite metadata, chunk splitting, range -> chunk slices, and HTTP Range parsing."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from ambry.common.blobid import BlobId, BlobType, new_blob_id
from ambry.common.errors import BadRequest, DataCorrupt, InvalidArgument, InvalidBlobId
from ambry.frontend.chunking import (
    ChunkRef,
    ChunkSlice,
    RangeNotSatisfiable,
    content_range,
    decode_metadata,
    encode_metadata,
    parse_range,
    slices_for_range,
    split_sizes,
    unsatisfied_content_range,
)

# Pure CPU work, but shared CI machines are loaded: no per-example deadline.
NO_DEADLINE = settings(deadline=None)

chunk_ids = st.builds(
    BlobId,
    datacenter_id=st.integers(0, 255),
    account_id=st.integers(0, 0xFFFF),
    container_id=st.integers(0, 0xFFFF),
    partition_id=st.integers(0, 2**64 - 1),
    uuid=st.binary(min_size=16, max_size=16),
    blob_type=st.sampled_from([BlobType.CHUNK, BlobType.SIMPLE]),
).map(str)

chunk_refs = st.builds(ChunkRef, blob_id=chunk_ids, size=st.integers(0, 2**40))


def cid(partition: int = 1) -> str:
    return str(new_blob_id(1, 2, 3, partition, BlobType.CHUNK))


def raw(obj: object) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


# ---- metadata payload ------------------------------------------------------------------------

@NO_DEADLINE
@given(st.lists(chunk_refs, min_size=1, max_size=50))
def test_metadata_roundtrip(chunks: list[ChunkRef]) -> None:
    total, back = decode_metadata(encode_metadata(chunks))
    assert back == chunks
    assert total == sum(c.size for c in chunks)


def test_metadata_layout_is_the_documented_one() -> None:
    a, b = cid(1), cid(2)
    m = msgpack.unpackb(encode_metadata([ChunkRef(a, 5), ChunkRef(b, 0)]), raw=False)
    assert m == {"v": 1, "total_size": 5, "chunks": [[a, 5], [b, 0]]}


def test_encode_refuses_an_empty_composite() -> None:
    with pytest.raises(InvalidArgument):
        encode_metadata([])


def test_chunkref_validates_its_fields() -> None:
    with pytest.raises(InvalidBlobId):
        ChunkRef("not-a-blob-id", 1)
    with pytest.raises(InvalidArgument):
        ChunkRef(cid(), -1)
    with pytest.raises(InvalidArgument):
        ChunkRef(cid(), True)
    with pytest.raises(InvalidArgument, match="nested"):
        ChunkRef(str(new_blob_id(1, 2, 3, 4, BlobType.METADATA)), 1)


def _malformed() -> list[tuple[str, bytes]]:
    a, b = cid(1), cid(2)
    meta = str(new_blob_id(1, 2, 3, 4, BlobType.METADATA))
    good = {"v": 1, "total_size": 3, "chunks": [[a, 1], [b, 2]]}
    return [
        ("not msgpack", b"\xc1"),
        ("truncated", raw(good)[:-3]),
        ("trailing bytes", raw(good) + b"\x00"),
        ("not a map", raw([1, 3, [[a, 3]]])),
        ("version 2", raw({**good, "v": 2})),
        ("version 0", raw({**good, "v": 0})),
        ("version bool", raw({**good, "v": True})),
        ("version missing", raw({"total_size": 3, "chunks": [[a, 1], [b, 2]]})),
        ("unknown key", raw({**good, "x": 1})),
        ("total missing", raw({"v": 1, "chunks": [[a, 1], [b, 2]]})),
        ("sizes do not sum", raw({**good, "total_size": 4})),
        ("negative total", raw({"v": 1, "total_size": -1, "chunks": [[a, -1]]})),
        ("negative size", raw({"v": 1, "total_size": 1, "chunks": [[a, -1], [b, 2]]})),
        ("float size", raw({"v": 1, "total_size": 1.0, "chunks": [[a, 1.0]]})),
        ("bool size", raw({"v": 1, "total_size": 1, "chunks": [[a, True]]})),
        ("chunks not a list", raw({**good, "chunks": {a: 3}})),
        ("chunks empty", raw({"v": 1, "total_size": 0, "chunks": []})),
        ("entry not a pair", raw({"v": 1, "total_size": 3, "chunks": [[a, 1, 2]]})),
        ("entry a map", raw({"v": 1, "total_size": 3, "chunks": [{"id": a, "size": 3}]})),
        ("bad id", raw({"v": 1, "total_size": 3, "chunks": [["x" * 43, 3]]})),
        ("id as bytes", raw({"v": 1, "total_size": 3, "chunks": [[a.encode(), 3]]})),
        ("nested composite", raw({"v": 1, "total_size": 3, "chunks": [[meta, 3]]})),
        ("int map key", raw({1: 1})),
    ]


@pytest.mark.parametrize(("case", "payload"), _malformed(), ids=[c for c, _ in _malformed()])
def test_malformed_metadata_is_data_corrupt(case: str, payload: bytes) -> None:
    with pytest.raises(DataCorrupt):
        decode_metadata(payload)


@NO_DEADLINE
@given(st.binary(max_size=200))
def test_garbage_metadata_is_only_ever_data_corrupt(payload: bytes) -> None:
    try:
        decode_metadata(payload)
    except DataCorrupt:
        pass


# ---- split_sizes -----------------------------------------------------------------------------

@NO_DEADLINE
@given(st.integers(1, 10**9), st.data())
def test_split_sizes_cover_the_blob_in_bounded_chunks(chunk_size: int, data: st.DataObject) -> None:
    total = data.draw(st.integers(0, chunk_size * 1000))  # at most ~1000 chunks: fast
    sizes = split_sizes(total, chunk_size)
    assert sum(sizes) == total
    assert all(0 < s <= chunk_size for s in sizes)
    assert all(s == chunk_size for s in sizes[:-1])


def test_split_sizes_edges() -> None:
    assert split_sizes(0, 4) == []
    assert split_sizes(4, 4) == [4]
    assert split_sizes(9, 4) == [4, 4, 1]
    for bad in ((-1, 4), (4, 0), (4, -1)):
        with pytest.raises(ValueError):
            split_sizes(*bad)


# ---- slices_for_range ------------------------------------------------------------------------

@st.composite
def layout_and_range(draw: st.DrawFn) -> tuple[list[int], int, int]:
    sizes = draw(st.lists(st.integers(0, 40), max_size=12))
    total = sum(sizes)
    start = draw(st.integers(0, total))
    length = draw(st.integers(0, total - start))
    return sizes, start, length


@NO_DEADLINE
@given(layout_and_range())
def test_slices_reassemble_exactly_the_requested_bytes(case: tuple[list[int], int, int]) -> None:
    sizes, start, length = case
    blob = bytes(i % 251 for i in range(sum(sizes)))
    chunks, pos = [], 0
    for s in sizes:
        chunks.append(blob[pos:pos + s])
        pos += s
    slices = slices_for_range(sizes, start, length)
    note(f"sizes={sizes} start={start} length={length} slices={slices}")
    got = b"".join(chunks[s.index][s.start:s.start + s.length] for s in slices)
    assert got == blob[start:start + length]
    assert all(s.length > 0 and sizes[s.index] > 0 for s in slices)
    assert [s.index for s in slices] == sorted({s.index for s in slices})
    assert all(s.start + s.length <= sizes[s.index] for s in slices)


def test_slices_examples() -> None:
    assert slices_for_range([4, 0, 4, 2], 3, 4) == [ChunkSlice(0, 3, 1), ChunkSlice(2, 0, 3)]
    assert slices_for_range([4, 4], 0, 8) == [ChunkSlice(0, 0, 4), ChunkSlice(1, 0, 4)]
    assert slices_for_range([4, 4], 4, 0) == []
    assert slices_for_range([], 0, 0) == []
    assert slices_for_range([0, 0, 3], 2, 1) == [ChunkSlice(2, 2, 1)]


def test_slices_reject_a_range_past_the_blob() -> None:
    for args in (([4], 0, 5), ([4], 5, 0), ([4], -1, 1), ([4], 0, -1), ([-1, 5], 0, 1)):
        with pytest.raises(ValueError):
            slices_for_range(*args)


# ---- HTTP Range ------------------------------------------------------------------------------

def reference_range(a: int | None, b: int | None, total: int) -> tuple[int, int] | None | str:
    """RFC 9110 section 14.1.2, written the obvious way (``"416"`` when unsatisfiable)."""
    if a is None:
        assert b is not None
        if b == 0 or total == 0:
            return "416"
        return max(0, total - b), min(b, total)
    if b is not None and b < a:
        return None
    if a >= total:
        return "416"
    last = total - 1 if b is None else min(b, total - 1)
    return a, last - a + 1


@NO_DEADLINE
@given(st.one_of(st.none(), st.integers(0, 300)), st.one_of(st.none(), st.integers(0, 300)),
       st.integers(0, 200))
def test_parse_range_matches_the_rfc(a: int | None, b: int | None, total: int) -> None:
    if a is None and b is None:
        return
    header = f"bytes={'' if a is None else a}-{'' if b is None else b}"
    expected = reference_range(a, b, total)
    note(f"{header!r} total={total} expected={expected}")
    if expected == "416":
        with pytest.raises(RangeNotSatisfiable) as exc:
            parse_range(header, total)
        assert exc.value.total_size == total
        return
    got = parse_range(header, total)
    assert got == expected
    if got is not None:
        start, length = got
        assert 0 <= start and 1 <= length and start + length <= total


@NO_DEADLINE
@given(st.text(max_size=40), st.integers(0, 1000))
def test_parse_range_never_raises_anything_but_416(header: str, total: int) -> None:
    try:
        got = parse_range(header, total)
    except RangeNotSatisfiable:
        return
    if got is not None:
        start, length = got
        assert 0 <= start and 1 <= length and start + length <= total


@NO_DEADLINE
@given(layout_and_range(), st.data())
def test_range_header_to_chunk_bytes_end_to_end(
        case: tuple[list[int], int, int], data: st.DataObject) -> None:
    sizes, _, _ = case
    total = sum(sizes)
    blob = bytes(i % 253 for i in range(total))
    a = data.draw(st.integers(0, total + 3))
    b = data.draw(st.integers(a, total + 10))
    try:
        got = parse_range(f"bytes={a}-{b}", total)
    except RangeNotSatisfiable:
        assert a >= total
        return
    assert got is not None
    start, length = got
    chunks, pos = [], 0
    for s in sizes:
        chunks.append(blob[pos:pos + s])
        pos += s
    body = b"".join(chunks[s.index][s.start:s.start + s.length]
                    for s in slices_for_range(sizes, start, length))
    assert body == blob[a:b + 1]  # Python slicing clamps like RFC 9110 does


@pytest.mark.parametrize(("header", "total", "expected"), [
    ("bytes=0-0", 10, (0, 1)),
    ("bytes=2-5", 10, (2, 4)),
    ("bytes=2-500", 10, (2, 8)),
    ("bytes=7-", 10, (7, 3)),
    ("bytes=-3", 10, (7, 3)),
    ("bytes=-30", 10, (0, 10)),
    ("BYTES=1-2", 10, (1, 2)),
    ("bytes= 1-2 ", 10, (1, 2)),
    ("bytes=1-2,", 10, (1, 2)),
    ("bytes=0001-0002", 10, (1, 2)),
    ("bytes=0-99999999999999999999999999999999", 10, (0, 10)),
    ("bytes=-99999999999999999999999999999999", 10, (0, 10)),
    ("bytes=5-1", 10, None),
    ("bytes=0-1,3-4", 10, None),
    ("bytes=-", 10, None),
    ("bytes=", 10, None),
    ("bytes", 10, None),
    ("items=0-1", 10, None),
    ("bytes=a-b", 10, None),
    ("bytes=+1-2", 10, None),
    ("bytes=1 - 2", 10, None),
    ("bytes=\u0661-2", 10, None),  # ARABIC-INDIC DIGIT ONE is not an HTTP digit
    ("bytes=" + "9" * 5000 + "-" + "8" * 5000, 10, None),
    ("", 10, None),
])
def test_parse_range_examples(header: str, total: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, total) == expected


@pytest.mark.parametrize(("header", "total"), [
    ("bytes=10-", 10),
    ("bytes=10-20", 10),
    ("bytes=-0", 10),
    ("bytes=0-", 0),
    ("bytes=0-0", 0),
    ("bytes=-5", 0),
    ("bytes=" + "9" * 5000 + "-", 10),
])
def test_parse_range_unsatisfiable(header: str, total: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        parse_range(header, total)
    assert isinstance(exc.value, BadRequest)
    assert exc.value.code == "RANGE_NOT_SATISFIABLE"


def test_content_range_headers() -> None:
    assert content_range(0, 1, 10) == "bytes 0-0/10"
    assert content_range(7, 3, 10) == "bytes 7-9/10"
    assert unsatisfied_content_range(10) == "bytes */10"
    for bad in ((0, 0, 10), (8, 3, 10), (-1, 1, 10)):
        with pytest.raises(ValueError):
            content_range(*bad)
