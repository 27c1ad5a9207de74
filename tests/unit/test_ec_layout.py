"""ambry/ec/layout.py: stripes, blocks and the byte range -> fragment pieces map."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.ec.layout import ALIGN_BYTES, SegmentLayout

NO_DEADLINE = settings(deadline=None, max_examples=300)


@st.composite
def layouts(draw: st.DrawFn) -> SegmentLayout:
    k = draw(st.integers(1, 8))
    m = draw(st.integers(1, 4))
    block = ALIGN_BYTES * draw(st.integers(1, 16))
    # segments from empty to a few stripes, often exactly on a stripe or block boundary
    stripes = draw(st.integers(0, 5))
    tail = draw(st.sampled_from([0, 1, block - 1, block, block + 1, k * block - 1])
                | st.integers(0, k * block - 1))
    return SegmentLayout(k, m, block, stripes * k * block + tail)


@st.composite
def layout_and_range(draw: st.DrawFn) -> tuple[SegmentLayout, int, int]:
    lay = draw(layouts())
    off = draw(st.integers(0, lay.segment_bytes))
    return lay, off, draw(st.integers(0, lay.segment_bytes - off))


@NO_DEADLINE
@given(layout_and_range())
def test_pieces_cover_the_range_exactly_in_order(case: tuple[SegmentLayout, int, int]) -> None:
    lay, off, length = case
    pieces = lay.pieces(off, length)
    pos = off
    for p in pieces:
        assert p.segment_offset == pos and p.length > 0  # no gap, no overlap, no empty read
        pos += p.length
    assert pos == off + length


@NO_DEADLINE
@given(layout_and_range())
def test_each_piece_lies_in_one_data_block_of_its_stripe(case: tuple[SegmentLayout, int, int]
                                                         ) -> None:
    lay, off, length = case
    for p in lay.pieces(off, length):
        s = lay.stripe(p.stripe)
        assert 0 <= p.fragment < lay.k
        assert p.block_offset + p.length <= s.block_bytes
        assert p.fragment_offset == s.fragment_offset + p.block_offset
        # the byte's place in the stripe agrees with the block cut: block j = bytes
        # [j * block, (j + 1) * block) of the stripe
        assert p.segment_offset - s.segment_offset == p.fragment * s.block_bytes + p.block_offset
        assert p.segment_offset + p.length <= s.segment_offset + s.data_bytes
        assert p.fragment_offset + p.length <= lay.fragment_bytes


@NO_DEADLINE
@given(layouts())
def test_stripes_tile_the_segment_and_blocks_tile_the_fragment(lay: SegmentLayout) -> None:
    pos = frag = 0
    for s in lay.stripes():
        assert s.segment_offset == pos and s.fragment_offset == frag
        assert 0 < s.data_bytes <= lay.k * s.block_bytes  # room for the data, zero-padded
        assert s.block_bytes % ALIGN_BYTES == 0 and s.block_bytes <= lay.block_bytes
        # the last stripe pads to less than one aligned unit per block, never a whole block
        assert lay.k * (s.block_bytes - ALIGN_BYTES) < s.data_bytes
        pos += s.data_bytes
        frag += s.block_bytes
    assert pos == lay.segment_bytes and frag == lay.fragment_bytes


def test_a_small_blob_is_one_read_of_one_fragment() -> None:
    # 4 MiB stripes at k=4: 1 MiB blocks; a 100 KiB blob inside a block is one read
    lay = SegmentLayout.plan(4, 2, 64 << 20, 4 << 20)
    assert lay.block_bytes == 1 << 20
    (p,) = lay.pieces(5 * (1 << 20) + 1000, 100 << 10)
    assert (p.fragment, p.stripe, p.block_offset) == (1, 1, 1000)
    # one straddling a block boundary is two reads of neighbouring fragments
    a, b = lay.pieces((1 << 20) - 10, 20)
    assert (a.fragment, a.length, b.fragment, b.length) == (0, 10, 1, 10)


def test_plan_rounds_the_block_up_to_the_alignment() -> None:
    lay = SegmentLayout.plan(3, 1, 10 << 20, 4 << 20)
    assert lay.block_bytes % ALIGN_BYTES == 0 and lay.stripe_bytes >= 4 << 20
    assert lay.stripe_bytes - (4 << 20) < 3 * ALIGN_BYTES


def test_a_range_past_the_segment_is_refused() -> None:
    lay = SegmentLayout(2, 1, 64, 1000)
    with pytest.raises(ValueError, match="outside the segment"):
        lay.pieces(990, 11)
    with pytest.raises(ValueError):
        SegmentLayout(2, 1, 100, 1000)  # block not aligned
    with pytest.raises(ValueError):
        SegmentLayout(20, 13, 64, 1000)  # more fragments than a datacenter spreads
