"""ETags and conditional requests of the S3 API (pure functions).

Owns the ETag arithmetic (a single PUT's ETag is the hex MD5 of the body; a multipart
upload's is the MD5 of the concatenated binary part MD5s, ``-N`` appended), the comparison of
ETag lists, and the decision of a conditional request (``If-Match``, ``If-None-Match``,
``If-Modified-Since``, ``If-Unmodified-Since`` and their ``x-amz-copy-source-if-*`` twins),
in the order of RFC 9110 section 13.2.2, which gives the combinations AWS documents:

* If-Match true and If-Unmodified-Since false: the request proceeds (200);
* If-None-Match false and If-Modified-Since true: 304 Not Modified.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from collections.abc import Mapping, Sequence

__all__ = [
    "NOT_MODIFIED",
    "PRECONDITION_FAILED",
    "etag_matches",
    "evaluate_conditions",
    "multipart_etag",
    "normalize_etag",
    "parse_http_date",
    "single_etag",
]

NOT_MODIFIED = 304
PRECONDITION_FAILED = 412
_MD5_HEX = re.compile(r"[0-9a-f]{32}", re.ASCII)


def single_etag(md5_hex: str) -> str:
    """The quoted ETag of an object stored by one PUT."""
    return f'"{md5_hex}"'


def multipart_etag(part_md5s: Sequence[bytes]) -> str:
    """The quoted ETag of a completed multipart upload of these parts (binary MD5s)."""
    if not part_md5s:
        raise ValueError("a multipart upload has at least one part")
    joined = hashlib.md5(b"".join(part_md5s)).hexdigest()
    return f'"{joined}-{len(part_md5s)}"'


def normalize_etag(text: str) -> str:
    """An ETag as compared: without ``W/`` and surrounding quotes."""
    t = text.strip(" \t")
    t = t.removeprefix("W/")
    if len(t) >= 2 and t[0] == '"' and t[-1] == '"':
        t = t[1:-1]
    return t


def etag_matches(header: str, etag: str) -> bool:
    """Whether an ``If-Match`` / ``If-None-Match`` list names ``etag`` (``*`` names any)."""
    if header.strip(" \t") == "*":
        return True
    want = normalize_etag(etag)
    return any(normalize_etag(t) == want for t in header.split(",") if t.strip(" \t"))


def parse_http_date(text: str | None) -> int | None:
    """An HTTP date -> unix seconds; None if absent or invalid (an invalid date is ignored,
    as RFC 9110 says)."""
    if not text:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp())


def evaluate_conditions(headers: Mapping[str, str], etag: str, last_modified_s: int, *,
                        read: bool = True, prefix: str = "") -> int | None:
    """None when the request may proceed; 304 or 412 otherwise.

    ``headers`` maps lower-case names to values; ``prefix`` is ``"x-amz-copy-source-"`` for
    the copy-source conditions (which never answer 304: a failed copy condition is 412).
    ``read``: GET/HEAD (a failed If-None-Match is 304), else 412.
    """
    im = headers.get(prefix + "if-match")
    inm = headers.get(prefix + "if-none-match")
    ims = parse_http_date(headers.get(prefix + "if-modified-since"))
    ius = parse_http_date(headers.get(prefix + "if-unmodified-since"))
    not_modified = NOT_MODIFIED if read and not prefix else PRECONDITION_FAILED
    if im is not None:
        if not etag_matches(im, etag):
            return PRECONDITION_FAILED
    elif ius is not None and last_modified_s > ius:
        return PRECONDITION_FAILED
    if inm is not None:
        if etag_matches(inm, etag):
            return not_modified
    elif ims is not None and (read or prefix) and last_modified_s <= ims:
        return not_modified
    return None
