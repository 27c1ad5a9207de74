"""The part map of multipart objects (``ambry.frontend.s3.parts``): stored form and spans."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambry.common.errors import DataCorrupt
from ambry.frontend.s3.parts import (
    MAX_PART_MAP_BYTES,
    decode_part_sizes,
    encode_part_sizes,
    part_span,
)

sizes_st = st.lists(st.sampled_from([0, 1, 5 * 2**20, 8 * 2**20, 123_456_789]), min_size=1,
                    max_size=300)


@given(sizes_st)
def test_part_map_round_trips_and_spans_tile_the_object(sizes: list[int]) -> None:
    text = encode_part_sizes(sizes)
    assert text is not None
    assert decode_part_sizes(text, sum(sizes)) == sizes
    start = 0
    for n, size in enumerate(sizes, start=1):
        assert part_span(sizes, n) == (start, size)
        start += size
    assert part_span(sizes, 0) is None and part_span(sizes, len(sizes) + 1) is None


def test_equal_parts_cost_a_few_bytes_and_a_huge_map_is_not_kept() -> None:
    # the usual shape (equal parts, a shorter last one) is one run whatever the count
    assert encode_part_sizes([8 * 2**20] * 10_000 + [7]) == "8388608*10000,7"
    distinct = list(range(1_000_000, 1_000_000 + 10_000))
    assert encode_part_sizes(distinct) is None  # would be ~80 KB of metadata
    assert len(encode_part_sizes(distinct[:400]) or "") <= MAX_PART_MAP_BYTES


@pytest.mark.parametrize("text", ["", "1,", "a", "5*1", "5*0", "05", "-5", "1*10001",
                                  "1 ,2", "5*2*2", "3"])
def test_a_bad_part_map_is_corruption(text: str) -> None:
    with pytest.raises(DataCorrupt):
        decode_part_sizes(text, 10)
