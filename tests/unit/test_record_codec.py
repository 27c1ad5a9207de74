"""The record codec of the node's append path (ambry.native._crecord and its Python twin):
the same bytes as format.py's layout, the same errors, both implementations side by side."""

from __future__ import annotations

import os

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from ambry.native import _pyrecord
from ambry.storage.format import (
    RECORD_HEADER_SIZE,
    RecordHeader,
    RecordType,
    decode_record_header,
    encode_record_header,
)

try:
    from ambry.native import _crecord
except ImportError:  # not built: only the twin is tested (CI builds it)
    _crecord = None  # type: ignore[assignment]

IMPLS = [pytest.param(_pyrecord, id="python"),
         pytest.param(_crecord, id="c", marks=pytest.mark.skipif(
             _crecord is None, reason="ambry.native._crecord is not built"))]

U64 = st.integers(0, 2**64 - 1)


def _reference(rtype: int, bflags: int, sflags: int, lv: int, seq: int, t: int, exp: int,
               body: int, key: bytes, props: bytes, um: bytes, payload: bytes) -> bytes:
    h = RecordHeader(RecordType(rtype), bflags, sflags, lv, len(key), len(props), len(um),
                     len(payload), seq, t, exp, body)
    return encode_record_header(h) + key + props + um + payload


@pytest.mark.parametrize("impl", IMPLS)
def test_encoded_record_is_format_py_layout_and_decodes(impl: object) -> None:
    key, props, um, payload = os.urandom(32), b"props", b"um", os.urandom(5000)
    body = impl.body_xxh3(key, props, um, payload)  # type: ignore[attr-defined]
    assert body == xxhash.xxh3_64_intdigest(key + props + um + payload)
    rec = impl.encode_record(1, 2, 3, 7, 12345, 1_700_000_000_000, 0, body,  # type: ignore[attr-defined]
                             key, props, um, payload)
    assert rec == _reference(1, 2, 3, 7, 12345, 1_700_000_000_000, 0, body, key, props, um,
                             payload)
    h = decode_record_header(rec[:RECORD_HEADER_SIZE])
    assert (h.type, h.sequence, h.payload_len, h.body_xxh3) == (RecordType.PUT, 12345, 5000,
                                                                 body)
    assert rec[h.payload_offset:] == payload


@pytest.mark.parametrize("impl", IMPLS)
def test_state_record_with_empty_parts_and_buffer_kinds(impl: object) -> None:
    key = bytearray(os.urandom(32))
    rec = impl.encode_record(2, 0, 1, 0, 9, 5, 0, impl.body_xxh3(key),  # type: ignore[attr-defined]
                             memoryview(key), b"", bytearray(), memoryview(b""))
    assert rec == _reference(2, 0, 1, 0, 9, 5, 0, xxhash.xxh3_64_intdigest(bytes(key)),
                             bytes(key), b"", b"", b"")
    assert impl.body_xxh3() == xxhash.xxh3_64_intdigest(b"")  # type: ignore[attr-defined]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("field,value", [(0, 256), (1, -1), (3, 0x10000), (4, 2**64),
                                         (7, -5)])
def test_out_of_range_header_field_is_overflow_error(impl: object, field: int,
                                                     value: int) -> None:
    # what broke without the check: a wrapped value written silently into the header
    args: list[object] = [1, 0, 0, 0, 1, 1, 0, 0, b"k" * 32, b"", b"", b""]
    args[field] = value
    with pytest.raises(OverflowError):
        impl.encode_record(*args)  # type: ignore[attr-defined]


@pytest.mark.parametrize("impl", IMPLS)
def test_key_over_65535_bytes_is_value_error_as_in_format(impl: object) -> None:
    with pytest.raises(ValueError, match="key too long"):
        impl.encode_record(5, 0, 0, 0, 1, 1, 0, 0, b"k" * 0x10000, b"", b"", b"")  # type: ignore[attr-defined]


@pytest.mark.parametrize("impl", IMPLS)
def test_non_int_field_and_non_buffer_part_are_type_errors(impl: object) -> None:
    with pytest.raises(TypeError):
        impl.encode_record(1, 0, 0, 0, 1.5, 1, 0, 0, b"k", b"", b"", b"")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        impl.encode_record(1, 0, 0, 0, 1, 1, 0, 0, "key", b"", b"", b"")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        impl.body_xxh3(b"a", 3)  # type: ignore[attr-defined]


@pytest.mark.skipif(_crecord is None, reason="ambry.native._crecord is not built")
@given(rtype=st.integers(1, 6), bflags=st.integers(0, 255), sflags=st.integers(0, 255),
       lv=st.integers(0, 0xFFFF), seq=U64, t=U64, exp=U64, body=U64,
       key=st.binary(max_size=300), props=st.binary(max_size=200), um=st.binary(max_size=50),
       payload=st.binary(max_size=3000))
def test_c_and_python_twin_give_the_same_bytes(rtype: int, bflags: int, sflags: int, lv: int,
                                               seq: int, t: int, exp: int, body: int,
                                               key: bytes, props: bytes, um: bytes,
                                               payload: bytes) -> None:
    args = (rtype, bflags, sflags, lv, seq, t, exp, body, key, props, um, payload)
    assert _crecord.encode_record(*args) == _pyrecord.encode_record(*args) \
        == _reference(*args)
    assert _crecord.body_xxh3(key, props, um, payload) == \
        _pyrecord.body_xxh3(key, props, um, payload)


@pytest.mark.skipif(_crecord is None, reason="ambry.native._crecord is not built")
def test_large_body_hash_releases_nothing_it_should_not() -> None:
    # over the GIL-release threshold: a bytearray stays exported (cannot be resized) meanwhile
    big = bytearray(os.urandom(3 << 20))
    assert _crecord.body_xxh3(b"k", big) == xxhash.xxh3_64_intdigest(b"k" + bytes(big))
