"""ambry/ec/fragfile.py: a segment encoded into k + m fragment files reads back through the
layout; a torn tail, a flipped byte (in a block, the table or the header) is detected."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest

pytest.importorskip("pyeclib", reason="pyeclib (the ec extra) has wheels for Linux only: "
                    "pip install '.[ec]' on Linux")

from ambry.common.errors import DataCorrupt
from ambry.ec import fragfile
from ambry.ec.codec import Codec
from ambry.ec.fragfile import FragmentHeader, FragmentWriter, read_header, verify
from ambry.ec.layout import SegmentLayout

K, M = 4, 2


def _encode_segment(tmp: Path, seg: bytes, stripe_bytes: int = 16 << 10) -> list[Path]:
    """The encode job's core, in miniature: every stripe through the codec, block i of each
    into fragment file i."""
    lay = SegmentLayout.plan(K, M, len(seg), stripe_bytes)
    codec = Codec(K, M)
    paths = [tmp / f"frag-{i}" for i in range(K + M)]
    writers = [FragmentWriter(p, FragmentHeader(1, K, M, i, 42, 3, 1, len(seg),
                                                lay.stripe_bytes))
               for i, p in enumerate(paths)]
    for s in lay.stripes():
        enc = codec.encode(seg[s.segment_offset:s.segment_offset + s.data_bytes], s.block_bytes)
        for w, b in zip(writers, enc.blocks, strict=True):
            w.add(b)
    for w in writers:
        w.finish()
    return paths


@pytest.fixture
def segment() -> bytes:
    return random.Random(17).randbytes(100_003)  # 6 full stripes and a short last one


def test_fragments_hold_every_blob_range_where_the_layout_says(tmp_path: Path,
                                                               segment: bytes) -> None:
    paths = _encode_segment(tmp_path, segment)
    files = [p.open("rb") for p in paths]
    try:
        h, _ = read_header(files[0])
        assert h.layout.stripe_count == 7 and h.stripe_bytes == 16 << 10
        rnd = random.Random(3)
        for _ in range(200):
            off = rnd.randrange(len(segment))
            length = rnd.randrange(min(40_000, len(segment) - off) + 1)
            got = b""
            for p in h.layout.pieces(off, length):
                f = files[p.fragment]
                f.seek(h.data_offset + p.fragment_offset)
                got += f.read(p.length)
            assert got == segment[off:off + length]
    finally:
        for f in files:
            f.close()
    assert all(verify(p).ok for p in paths)
    assert all(os.path.getsize(p) == h.file_bytes for p in paths)


def test_a_segment_decodes_from_any_k_fragment_files(tmp_path: Path, segment: bytes) -> None:
    paths = _encode_segment(tmp_path, segment)
    codec = Codec(K, M)
    survivors = [paths[i] for i in (0, 2, 4, 5)]  # two data fragments lost
    heads = {}
    for p in survivors:
        with p.open("rb") as f:
            h, sums = read_header(f)
            heads[h.fragment] = (h, sums, f.read())
    h = heads[0][0]
    out = b""
    for s in h.layout.stripes():
        blocks = {i: body[s.fragment_offset:s.fragment_offset + s.block_bytes]
                  for i, (_, _, body) in heads.items()}
        # the per-stripe sums of all k + m fragments: each file has its own
        sums = [heads[i][1][s.index] if i in heads else 0 for i in range(K + M)]
        out += codec.decode(blocks, sums, s.block_bytes, s.data_bytes).data
    assert out == segment


def test_a_torn_tail_is_detected(tmp_path: Path, segment: bytes) -> None:
    # a writer that died mid-file (or a file cut short by a disk) must never verify
    p = _encode_segment(tmp_path, segment)[3]
    size = os.path.getsize(p)
    for cut in (size - 1, size - 5000, 60, 10):
        with p.open("r+b") as f:
            f.truncate(cut)
        r = verify(p)
        assert not r.ok and r.torn, (cut, r.problems)
        assert "torn" in fragfile.dump(p)


@pytest.mark.parametrize("where", ["block", "last block", "table", "header"])
def test_a_flipped_byte_is_detected(tmp_path: Path, segment: bytes, where: str) -> None:
    # bit rot anywhere in the file: in a block it names the stripe to rebuild
    p = _encode_segment(tmp_path, segment)[5]
    with p.open("rb") as f:
        h, _ = read_header(f)
    at = {"block": h.data_offset + 2 * h.layout.block_bytes + 17,
          "last block": os.path.getsize(p) - 1,
          "table": fragfile.HEADER_BYTES + 8 * 3 + 2,
          "header": 30}[where]
    raw = bytearray(p.read_bytes())
    raw[at] ^= 0x10
    p.write_bytes(bytes(raw))
    r = verify(p)
    assert not r.ok and not r.torn
    if where == "block":
        assert r.bad_stripes == (2,)
    elif where == "last block":
        assert r.bad_stripes == (h.stripe_count - 1,)
    else:
        with p.open("rb") as f, pytest.raises(DataCorrupt, match="fails its checksum"):
            read_header(f)


def test_an_unknown_version_or_a_foreign_file_is_refused_loudly(tmp_path: Path,
                                                                segment: bytes) -> None:
    p = _encode_segment(tmp_path, segment)[0]
    raw = bytearray(p.read_bytes())
    raw[8] = 2  # a future version, header checksum made valid again
    raw[48:56] = fragfile._U64.pack(fragfile._xxh(bytes(raw[:48])))
    p.write_bytes(bytes(raw))
    assert "version 2" in verify(p).problems[0]
    other = tmp_path / "segment.log"
    other.write_bytes(b"\0" * 4096)
    assert "not a fragment file" in verify(other).problems[0]


def test_an_unfinished_writer_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    h = FragmentHeader(1, 2, 1, 0, 1, 1, 1, 1000, 512)
    w = FragmentWriter(tmp_path / "frag", h)
    w.add(bytes(256))
    with pytest.raises(ValueError, match="block of 10 bytes"):
        w.add(bytes(10))
    with pytest.raises(ValueError, match="1 of 2 stripes"):
        w.finish()
    assert not (tmp_path / "frag").exists()
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_the_documented_byte_table_is_the_one_the_code_writes() -> None:
    # the layout is documented once, in docs/erasure-coding.md: its offsets must be the
    # struct's, so the doc cannot drift from the files
    doc = (Path(__file__).resolve().parents[2] / "docs" / "erasure-coding.md").read_text()
    table = doc[doc.index("offset        size    field"):]
    table = table[:table.index("```")]
    rows = [line.split()[:3] for line in table.splitlines()[1:] if line.strip()]
    # the fixed header: rows with a plain offset and size ("56  8 x S" is the table)
    fixed = [(int(o), int(s)) for o, s, unit in rows
             if o.isdigit() and s.isdigit() and unit != "x"]
    assert [o for o, _ in fixed] == [0, 8, 9, 10, 11, 12, 13, 16, 24, 28, 32, 40, 44, 48]
    assert all(o + s == nxt for (o, s), (nxt, _) in itertools.pairwise(fixed))  # contiguous
    assert fixed[-1][0] + fixed[-1][1] == fragfile.HEADER_BYTES == 56
    raw = FragmentHeader(1, 4, 2, 5, 0x1122334455667788, 9, 3, 123_456, 4 << 10).pack()
    # spot-check fields at their documented offsets (little-endian)
    assert raw[:8] == fragfile.MAGIC and raw[8] == fragfile.VERSION and raw[9] == 1
    assert (raw[10], raw[11], raw[12]) == (4, 2, 5) and raw[13:16] == bytes(3)
    assert int.from_bytes(raw[16:24], "little") == 0x1122334455667788
    assert int.from_bytes(raw[24:28], "little") == 9
    assert int.from_bytes(raw[28:32], "little") == 3
    assert int.from_bytes(raw[32:40], "little") == 123_456
    assert int.from_bytes(raw[40:44], "little") == 4 << 10
    assert int.from_bytes(raw[44:48], "little") == 31  # ceil(123456 / 4096) stripes
    assert "64 + 8S" in table and "56 + 8S" in table
