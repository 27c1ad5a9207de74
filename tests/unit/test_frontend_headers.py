"""Header parsing: every malformed value is a 400 (InvalidArgument) with a clear message."""

from __future__ import annotations

import email.utils

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from ambry.common.errors import DataCorrupt, InvalidArgument
from ambry.common.properties import MAX_EXPIRY_MS, BlobProperties
from ambry.frontend.headers import (
    MAX_BLOB_NAME_BYTES,
    MAX_TTL_S,
    MAX_USER_METADATA_BYTES,
    decode_user_metadata,
    encode_user_metadata,
    etag_for,
    http_date,
    if_none_match_hits,
    parse_blob_size,
    parse_bool_header,
    parse_content_xxh3,
    parse_get_option,
    parse_ttl,
    parse_user_metadata,
    validate_blob_name,
)

# Pure CPU work, but shared CI machines are loaded: no per-example deadline.
NO_DEADLINE = settings(deadline=None)

# ---- TTL and sizes ---------------------------------------------------------------------------


@NO_DEADLINE
@given(st.integers(-1, MAX_TTL_S))
def test_ttl_round_trip(ttl: int) -> None:
    assert parse_ttl(str(ttl)) == ttl


@NO_DEADLINE
@given(st.text(max_size=20))
def test_ttl_garbage_is_invalid_argument_or_a_valid_ttl(text: str) -> None:
    try:
        ttl = parse_ttl(text)
    except InvalidArgument as e:
        assert "x-ambry-ttl" in e.message
        return
    assert -1 <= ttl <= MAX_TTL_S
    assert text.strip(" \t").lstrip("-").isascii()


@pytest.mark.parametrize("value", ["", "abc", "1.5", "-2", "-100", "+5", "1_000", "١٢",
                                   "0x10", " ", str(MAX_TTL_S + 1), "9" * 5000, "--1"])
def test_bad_ttl_is_400(value: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_ttl(value)


def test_ttl_examples() -> None:
    assert parse_ttl(None) == -1
    assert parse_ttl("-1") == -1
    assert parse_ttl("0") == 0
    assert parse_ttl(" 60 ") == 60
    assert parse_ttl("0060") == 60


@NO_DEADLINE
@given(st.integers(0, 2**63 - 1))
def test_blob_size_round_trip(n: int) -> None:
    assert parse_blob_size(str(n)) == n


@pytest.mark.parametrize("value", ["", "-1", "1.0", "+1", "x", "1e3", "9" * 25, str(2**63)])
def test_bad_blob_size_is_400(value: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_blob_size(value)
    assert parse_blob_size(None) is None


# ---- booleans and get options ----------------------------------------------------------------

def test_bool_header() -> None:
    assert parse_bool_header("true") is True
    assert parse_bool_header("TRUE") is True
    assert parse_bool_header("False") is False
    assert parse_bool_header(None) is False
    assert parse_bool_header(None, default=True) is True
    for bad in ("yes", "1", "", "truee"):
        with pytest.raises(InvalidArgument, match="x-ambry-named-upsert"):
            parse_bool_header(bad, name="x-ambry-named-upsert")


@pytest.mark.parametrize(("value", "expected"), [
    (None, (False, False)),
    ("None", (False, False)),
    ("Include_Deleted_Blobs", (True, False)),
    ("include_deleted_blobs", (True, False)),
    ("Include_Expired_Blobs", (False, True)),
    ("INCLUDE_ALL", (True, True)),
    ("Include_All", (True, True)),
])
def test_get_option(value: str | None, expected: tuple[bool, bool]) -> None:
    assert parse_get_option(value) == expected


@pytest.mark.parametrize("value", ["", "all", "Include_Deleted", "Include-All"])
def test_unknown_get_option_is_400(value: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_get_option(value)


# ---- user metadata ---------------------------------------------------------------------------

def test_user_metadata_from_headers() -> None:
    headers = CIMultiDict({"X-Ambry-UM-Owner": "Alice", "x-ambry-um-run": "42",
                           "x-ambry-ttl": "60", "Content-Type": "x"})
    assert parse_user_metadata(headers) == {"owner": "Alice", "run": "42"}
    assert parse_user_metadata({}) == {}


def test_user_metadata_rejects_bad_input() -> None:
    dup = CIMultiDict([("x-ambry-um-a", "1"), ("X-Ambry-Um-A", "2")])
    for bad in (dup, {"x-ambry-um-": "v"}, {"x-ambry-um-k": "a\nb"},
                {"x-ambry-um-k": "a\x00"}, {"x-ambry-um-k": "\udc80"},
                {"x-ambry-um-k": "v" * MAX_USER_METADATA_BYTES}):
        with pytest.raises(InvalidArgument):
            parse_user_metadata(bad)
    assert parse_user_metadata({"x-ambry-um-k": "a\tb"}) == {"k": "a\tb"}
    at_limit = {"x-ambry-um-k": "v" * (MAX_USER_METADATA_BYTES - 1)}
    assert parse_user_metadata(at_limit) == {"k": "v" * (MAX_USER_METADATA_BYTES - 1)}


@NO_DEADLINE
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=10))
def test_user_metadata_encoding_round_trip(d: dict[str, str]) -> None:
    raw = encode_user_metadata(d)
    assert decode_user_metadata(raw) == d
    assert encode_user_metadata(dict(reversed(list(d.items())))) == raw  # deterministic


@NO_DEADLINE
@given(st.binary(max_size=100))
def test_garbage_user_metadata_is_data_corrupt(raw: bytes) -> None:
    try:
        d = decode_user_metadata(raw)
    except DataCorrupt:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in d.items())


def test_user_metadata_decode_edges() -> None:
    assert decode_user_metadata(b"") == {}
    for bad in ([1], {"a": 1}, {"a": b"x"}, "x"):
        with pytest.raises(DataCorrupt):
            decode_user_metadata(msgpack.packb(bad, use_bin_type=True))


# ---- names, dates, etags ---------------------------------------------------------------------

@NO_DEADLINE
@given(st.text(min_size=1, max_size=80).filter(
    lambda s: not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in s)))
def test_valid_names_pass_unchanged(name: str) -> None:
    if len(name.encode()) <= MAX_BLOB_NAME_BYTES:
        assert validate_blob_name(name) == name


def test_blob_name_rules() -> None:
    assert validate_blob_name("runs/42/model.pt") == "runs/42/model.pt"
    assert validate_blob_name("é" * 175) == "é" * 175  # 350 bytes
    for bad in ("", "é" * 175 + "x", "a" * 351, "a\nb", "a\x00", "a\x7f", "a\x85", "\udc80"):
        with pytest.raises(InvalidArgument):
            validate_blob_name(bad)


@NO_DEADLINE
@given(st.integers(0, 253402300799999))  # up to year 9999
def test_http_date_is_rfc1123(ms: int) -> None:
    text = http_date(ms)
    assert text.endswith(" GMT")
    parsed = email.utils.parsedate_to_datetime(text)
    assert int(parsed.timestamp()) == ms // 1000


def test_http_date_example() -> None:
    assert http_date(1_700_000_000_999) == "Tue, 14 Nov 2023 22:13:20 GMT"
    with pytest.raises(ValueError):
        http_date(-1)


def test_etag_and_if_none_match() -> None:
    tag = etag_for("AAEBAgMEBQ")
    assert tag == '"AAEBAgMEBQ"'
    assert if_none_match_hits(tag, tag)
    assert if_none_match_hits('"x", W/"AAEBAgMEBQ"', tag)
    assert if_none_match_hits("*", tag)
    assert not if_none_match_hits('"x"', tag)
    assert not if_none_match_hits(None, tag)
    assert etag_for("a") != etag_for("b")


@pytest.mark.parametrize("value", ["", " ", "xyz", "0x12", "1" * 17, "12 34", "é"])
def test_a_malformed_content_xxh3_is_400_before_the_body(value: str) -> None:
    # the fuzzer's find: an empty x-ambry-content-xxh3 was ignored (201, nothing checked)
    with pytest.raises(InvalidArgument):
        parse_content_xxh3(value)


def test_content_xxh3_is_normalised_to_16_lower_case_digits() -> None:
    assert parse_content_xxh3(None) is None
    assert parse_content_xxh3(" ABC ") == "0000000000000abc"
    assert parse_content_xxh3("0123456789abcdef") == "0123456789abcdef"


@pytest.mark.parametrize("ttl_s", [2**32 - 1, 2**32, 6_878_346_413])
def test_a_ttl_that_expires_after_2106_is_a_400_not_an_overflow_on_every_replica(
        ttl_s: int) -> None:
    # the fuzzer's find: the index keeps expiry as u32 seconds; such a PUT overflowed on all
    # three replicas and the frontend answered 503 "no writable partition took the blob"
    with pytest.raises(InvalidArgument):
        BlobProperties(size=1, created_ms=1_765_000_000_000, ttl_s=ttl_s)
    assert BlobProperties(size=1, created_ms=1_765_000_000_000,
                          ttl_s=MAX_TTL_S).expiry_ms <= MAX_EXPIRY_MS
