"""Request and reply header values of the Ambry REST API (DESIGN.md section 4), parsed strictly.

Owns turning header strings into typed values (TTL, blob size, booleans, get options, user
metadata, blob names) with a clear :class:`~ambry.common.errors.InvalidArgument` (HTTP 400) for
anything malformed, and formatting the few values that go back out (HTTP dates, ETags). Also the
stored form of user metadata (a msgpack map of str to str).

Also the one check of raw header bytes (:func:`check_ambry_headers`): aiohttp hands a header's
bytes that are not UTF-8 over as lone surrogates ("surrogateescape"), which cannot be stored
(msgpack), signed into a URL or written back in a reply, each of which raised
UnicodeEncodeError (a 500). Every ``x-ambry-*`` value is checked once, at the door, whatever
the route; values that other headers echo (a request id, a CORS preflight's list) go through
:func:`header_text_or`.

Does not own which headers a route requires, the HTTP status table, or blob ids
(``ambry.common.blobid``). Integers are ASCII digits only: Python's ``int()`` would also accept
``"+5"``, ``"1_000"`` and non-ASCII digits, none of which are valid in HTTP.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

import msgpack

from ambry.common.errors import DataCorrupt, InvalidArgument

__all__ = [
    "AMBRY_HEADER_PREFIX",
    "MAX_BLOB_NAME_BYTES",
    "MAX_TTL_S",
    "MAX_USER_METADATA_BYTES",
    "USER_METADATA_PREFIX",
    "check_ambry_headers",
    "check_header_text",
    "decode_user_metadata",
    "encode_user_metadata",
    "etag_for",
    "header_text_or",
    "http_date",
    "if_none_match_hits",
    "parse_blob_size",
    "parse_bool_header",
    "parse_get_option",
    "parse_ttl",
    "parse_user_metadata",
    "validate_blob_name",
]

USER_METADATA_PREFIX = "x-ambry-um-"
#: Every request header with this prefix is checked by :func:`check_ambry_headers`.
AMBRY_HEADER_PREFIX = "x-ambry-"
#: Sum of the UTF-8 lengths of every user metadata key (without the prefix) and value.
MAX_USER_METADATA_BYTES = 8 * 1024
MAX_BLOB_NAME_BYTES = 350
#: About 31,700 years: keeps ``created_ms + ttl_s * 1000`` far inside the u64 expiry field.
MAX_TTL_S = 2**31 - 1  # about 68 years; the expiry must also fit (BlobProperties)
_MAX_SIZE = 2**63 - 1  # sizes fit an i64
_MAX_SIZE_DIGITS = len(str(_MAX_SIZE))

_INT = re.compile(r"-?[0-9]+", re.ASCII)
_UINT = re.compile(r"[0-9]+", re.ASCII)
_OWS = " \t"

_GET_OPTIONS: dict[str, tuple[bool, bool]] = {
    "none": (False, False),
    "include_deleted_blobs": (True, False),
    "include_expired_blobs": (False, True),
    "include_all": (True, True),
}


def parse_ttl(value: str | None) -> int:
    """``x-ambry-ttl`` in seconds: absent -> -1 (forever); -1 or 0..MAX_TTL_S; else 400."""
    if value is None:
        return -1
    text = value.strip(_OWS)
    if _INT.fullmatch(text) is None:
        raise InvalidArgument(f"x-ambry-ttl must be an integer number of seconds or -1 "
                              f"(forever), not {value!r}")
    if len(text.lstrip("-").lstrip("0")) > len(str(MAX_TTL_S)):
        raise InvalidArgument(f"x-ambry-ttl must be -1 (forever) or 0..{MAX_TTL_S} seconds, "
                              f"not {value!r}")
    ttl = int(text)
    if not -1 <= ttl <= MAX_TTL_S:
        raise InvalidArgument(f"x-ambry-ttl must be -1 (forever) or 0..{MAX_TTL_S} seconds, "
                              f"not {ttl}")
    return ttl


def parse_blob_size(value: str | None) -> int | None:
    """``x-ambry-blob-size``: absent -> None; else a non-negative integer, or 400."""
    if value is None:
        return None
    text = value.strip(_OWS)
    if _UINT.fullmatch(text) is None or len(text.lstrip("0")) > _MAX_SIZE_DIGITS:
        raise InvalidArgument(f"x-ambry-blob-size must be a non-negative integer, not {value!r}")
    size = int(text)
    if size > _MAX_SIZE:
        raise InvalidArgument(f"x-ambry-blob-size must be at most {_MAX_SIZE}, not {size}")
    return size


_XXH3_HEX = re.compile(r"[0-9a-fA-F]{1,16}")


def parse_content_xxh3(value: str | None) -> str | None:
    """``x-ambry-content-xxh3``: absent -> None; else 1 to 16 hex digits (normalised to 16
    lower-case digits), or 400 before a byte of the body is stored. (An empty or malformed
    value used to be ignored, or failed only after the whole body was uploaded.)"""
    if value is None:
        return None
    text = value.strip(_OWS)
    if _XXH3_HEX.fullmatch(text) is None:
        raise InvalidArgument(f"x-ambry-content-xxh3 must be 1 to 16 hex digits, not {value!r}")
    return text.lower().rjust(16, "0")


def parse_bool_header(value: str | None, default: bool = False, *,
                      name: str = "header") -> bool:
    """``true`` / ``false`` (case-insensitive); absent -> ``default``; anything else 400."""
    if value is None:
        return default
    text = value.strip(_OWS).lower()
    if text == "true":
        return True
    if text == "false":
        return False
    raise InvalidArgument(f"{name} must be true or false, not {value!r}")


def parse_get_option(value: str | None) -> tuple[bool, bool]:
    """``x-ambry-get-option`` -> ``(include_deleted, include_expired)``; unknown values 400.

    Accepted (case-insensitive): absent, ``None``, ``Include_Deleted_Blobs``,
    ``Include_Expired_Blobs``, ``Include_All``.
    """
    if value is None:
        return False, False
    opt = _GET_OPTIONS.get(value.strip(_OWS).lower())
    if opt is None:
        raise InvalidArgument(f"x-ambry-get-option must be one of None, Include_Deleted_Blobs, "
                              f"Include_Expired_Blobs, Include_All, not {value!r}")
    return opt


def _utf8_len(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} is not valid UTF-8") from None


def _has_control(text: str, allow_tab: bool = False) -> bool:
    return any(unicodedata.category(c) == "Cc" and not (allow_tab and c == "\t") for c in text)


def _text_problem(value: str) -> str | None:
    """Why a header value cannot be stored or echoed, or None. (The message never quotes the
    value: a 400 whose text held the bad bytes would fail to encode in turn.)"""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if _has_control(value, allow_tab=True):  # HTAB is legal in a header value
        return "contains control characters"
    return None


def check_ambry_headers(headers: Mapping[str, str]) -> None:
    """400 (:class:`InvalidArgument`, naming the header) unless every ``x-ambry-*`` value is
    UTF-8 text without control characters other than HTAB. Called for every request of the
    REST API, after a signed URL's parameters became headers, before any handler runs: these
    values are stored with a blob (service id, content type, owner, filename, user metadata),
    echoed in replies, signed into URLs and logged."""
    for name, value in headers.items():
        if name.lower().startswith(AMBRY_HEADER_PREFIX):
            check_header_text(name, value)


def check_header_text(name: str, value: str) -> str:
    """``value`` unchanged, or 400 if it is not UTF-8 text without control characters."""
    problem = _text_problem(value)
    if problem is not None:
        raise InvalidArgument(f"header {name} {problem}")
    return value


def header_text_or(value: str | None, default: str) -> str:
    """``value`` when it can be echoed in a reply header, else ``default`` (for values that
    are only ever echoed, such as a client's request id: the reply must still go out)."""
    if value is None or _text_problem(value) is not None:
        return default
    return value


def parse_user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """User metadata from ``x-ambry-um-<key>`` headers, keys lower-cased without the prefix.

    The prefix is matched case-insensitively. 400 for an empty key, the same key twice (in any
    case, e.g. from a multidict), a value with control characters other than tab or invalid
    UTF-8, or more than :data:`MAX_USER_METADATA_BYTES` in total (keys plus values, UTF-8).
    """
    out: dict[str, str] = {}
    total = 0
    for name, value in headers.items():
        if not name.lower().startswith(USER_METADATA_PREFIX):
            continue
        key = name[len(USER_METADATA_PREFIX):].lower()
        if not key:
            raise InvalidArgument(f"user metadata header {name!r} has an empty key")
        if key in out:
            raise InvalidArgument(f"user metadata key {key!r} given more than once")
        if _has_control(value, allow_tab=True):  # HTAB is legal in a header value
            raise InvalidArgument(f"user metadata {key!r} contains control characters")
        total += _utf8_len(key, f"user metadata key {key!r}")
        total += _utf8_len(value, f"user metadata {key!r}")
        if total > MAX_USER_METADATA_BYTES:
            raise InvalidArgument(f"user metadata exceeds {MAX_USER_METADATA_BYTES} bytes")
        out[key] = value
    return out


def encode_user_metadata(d: Mapping[str, str]) -> bytes:
    """The stored form: a msgpack map of str to str, keys sorted (same input, same bytes)."""
    out: bytes = msgpack.packb({k: d[k] for k in sorted(d)}, use_bin_type=True)
    return out


def decode_user_metadata(raw: bytes) -> dict[str, str]:
    """Inverse of :func:`encode_user_metadata`; ``b""`` (no metadata stored) -> ``{}``.

    ``DataCorrupt`` for anything else that is not a msgpack map of str to str: user metadata is
    only written by a frontend, so a bad one read back is corruption, not a client error.
    """
    if not raw:
        return {}
    try:
        m: Any = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as e:
        raise DataCorrupt(f"user metadata is not msgpack: {e}") from None
    if not isinstance(m, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
        raise DataCorrupt("user metadata is not a map of strings")
    return m


def http_date(ms: int) -> str:
    """RFC 1123 / IMF-fixdate of a unix time in ms, e.g. ``Tue, 14 Nov 2023 22:13:20 GMT``."""
    if ms < 0:
        raise ValueError(f"time must be >= 0 ms, not {ms}")
    return formatdate(ms // 1000, usegmt=True)


def validate_blob_name(name: str) -> str:
    """A named-blob name, returned unchanged: 1..350 UTF-8 bytes, no control characters.

    ``/`` is allowed (``runs/42/model.pt``); no normalisation is applied (as S3 keys).
    """
    n = _utf8_len(name, "blob name")
    if n == 0:
        raise InvalidArgument("blob name must not be empty")
    if n > MAX_BLOB_NAME_BYTES:
        raise InvalidArgument(f"blob name is {n} bytes; the limit is {MAX_BLOB_NAME_BYTES}")
    if _has_control(name):
        raise InvalidArgument("blob name contains control characters")
    return name


def etag_for(blob_id: str) -> str:
    """Strong ETag of a blob: its quoted id. Blobs are immutable, so the id names the bytes;
    a named blob that is overwritten points to a new id, hence a new ETag."""
    return f'"{blob_id}"'


def if_none_match_hits(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header matches ``etag`` (weak comparison, RFC 9110 13.1.2):
    ``*`` or any listed tag equal to it ignoring ``W/``. True means reply 304 to GET/HEAD."""
    if header is None:
        return False
    if header.strip(_OWS) == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(t.strip(_OWS).removeprefix("W/") == bare for t in header.split(","))
