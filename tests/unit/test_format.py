"""Record and segment headers: round trips and detection of every single-bit flip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambry.common.errors import DataCorrupt
from ambry.storage.format import (
    RECORD_HEADER_SIZE,
    RecordHeader,
    RecordType,
    SegmentHeader,
    decode_record_header,
    encode_record_header,
    name_key,
    split_name_key,
)

headers = st.builds(
    RecordHeader,
    type=st.sampled_from(list(RecordType)),
    blob_flags=st.integers(0, 255), state_flags=st.integers(0, 3),
    life_version=st.integers(0, 0xFFFF), key_len=st.integers(0, 0xFFFF),
    props_len=st.integers(0, 2**32 - 1), usermeta_len=st.integers(0, 2**32 - 1),
    payload_len=st.integers(0, 2**32 - 1), sequence=st.integers(0, 2**64 - 1),
    time_ms=st.integers(0, 2**64 - 1), expiry_ms=st.integers(0, 2**64 - 1),
    body_xxh3=st.integers(0, 2**64 - 1),
)


@given(headers)
def test_record_header_roundtrip(h: RecordHeader) -> None:
    raw = encode_record_header(h)
    assert len(raw) == RECORD_HEADER_SIZE
    assert decode_record_header(raw) == h


@given(headers, st.integers(0, RECORD_HEADER_SIZE * 8 - 1))
def test_any_flipped_bit_in_a_record_header_is_detected(h: RecordHeader, bit: int) -> None:
    raw = bytearray(encode_record_header(h))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DataCorrupt):
        decode_record_header(bytes(raw))


def test_segment_header() -> None:
    raw = SegmentHeader(12, 3).encode()
    assert SegmentHeader.decode(raw) == SegmentHeader(12, 3)
    with pytest.raises(DataCorrupt):
        SegmentHeader.decode(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(DataCorrupt):
        SegmentHeader.decode(b"x" * 32)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.text(min_size=1, max_size=100))
def test_name_key_roundtrip(a: int, c: int, name: str) -> None:
    assert split_name_key(name_key(a, c, name)) == (a, c, name)
