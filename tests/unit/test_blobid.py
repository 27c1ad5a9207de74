"""Blob ids: round trips, and every malformed text is a typed InvalidBlobId (-> HTTP 400)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambry.common.blobid import BLOB_ID_TEXT_LEN, BlobId, BlobType, decode, new_blob_id
from ambry.common.errors import InvalidBlobId

ids = st.builds(
    BlobId,
    datacenter_id=st.integers(0, 255),
    account_id=st.integers(0, 0xFFFF),
    container_id=st.integers(0, 0xFFFF),
    partition_id=st.integers(0, 2**64 - 1),
    uuid=st.binary(min_size=16, max_size=16),
    blob_type=st.sampled_from(list(BlobType)),
    encrypted=st.booleans(),
)


@given(ids)
def test_roundtrip(bid: BlobId) -> None:
    text = bid.to_str()
    assert len(text) == BLOB_ID_TEXT_LEN
    assert "=" not in text and "/" not in text and "+" not in text
    assert decode(text) == bid
    assert BlobId.from_bytes(bid.to_bytes()) == bid


@given(st.text(max_size=60))
def test_garbage_text_is_invalid_never_another_error(text: str) -> None:
    try:
        decode(text)
    except InvalidBlobId:
        pass


@given(st.binary(min_size=32, max_size=32))
def test_random_bytes_decode_or_raise_invalid(raw: bytes) -> None:
    text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    try:
        assert decode(text).to_bytes() == raw
    except InvalidBlobId:
        pass


def test_specific_rejections() -> None:
    good = new_blob_id(1, 2, 3, 4)
    raw = bytearray(good.to_bytes())
    raw[1] = 2  # version 2
    for bad in [
        "", "x" * 43, good.to_str()[:-1], good.to_str() + "A",
        base64.urlsafe_b64encode(bytes([0, 2]) + bytes(raw[2:])).rstrip(b"=").decode(),
        base64.urlsafe_b64encode(bytes([0, 1, 0x80]) + bytes(raw[3:])).rstrip(b"=").decode(),
        "é" * 43,
    ]:
        with pytest.raises(InvalidBlobId):
            decode(bad)
    with pytest.raises(InvalidBlobId):
        decode(good.to_str(), known_partitions={5, 6})
    assert decode(good.to_str(), known_partitions={4}) == good
    assert decode(good.to_str().encode()) == good
