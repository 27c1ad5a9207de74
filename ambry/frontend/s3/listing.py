"""ListObjects (V1 and V2) over an ordered name listing: prefixes, delimiters, pagination.

Owns the pure logic of one listing page: which keys become ``Contents``, which roll up into
``CommonPrefixes``, where the next read from the store starts (skipping past a rolled-up
prefix instead of reading every key under it), when the page is full and whether more
follows (``IsTruncated``), and the opaque continuation token. Does not own reading names
(the S3 app feeds :class:`ListingBuilder` pages from the router) nor XML.

Rules, as AWS documents them:
  * keys are in UTF-8 binary order (the store's name order);
  * ``max-keys`` bounds Contents plus CommonPrefixes together; 0 gives an empty, untruncated
    page; more than 1000 is treated as 1000;
  * a common prefix is ``prefix`` + everything up to and including the first ``delimiter``
    after it; each is reported once, and a marker / start-after / continuation token at or
    inside a common prefix means that prefix was already listed;
  * IsTruncated is true only when another key or prefix really follows.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["MAX_KEYS", "ListEntry", "ListPage", "ListingBuilder", "decode_token",
           "encode_token"]

MAX_KEYS = 1000
#: Appended to a common prefix to read past every key under it (the highest code point).
_AFTER_ALL = "\U0010ffff"


@dataclass(frozen=True, slots=True)
class ListEntry:
    key: str
    size: int
    last_modified_ms: int
    etag: str


@dataclass
class ListPage:
    contents: list[ListEntry] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    #: the last key or common prefix of the page (the V1 NextMarker / V2 token's content)
    next_marker: str | None = None


def encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8")).decode("ascii")


def decode_token(token: str) -> str:
    """The marker inside a continuation token; ValueError when it is not one of ours."""
    try:
        return base64.b64decode(token.encode("ascii") + b"=" * (-len(token) % 4),
                                altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as e:
        raise ValueError(f"bad continuation token: {e}") from None


class ListingBuilder:
    """Build one page. Loop: read up to ``read_limit`` names under ``prefix`` after
    :attr:`next_start` from the store and :meth:`feed` them with whether the store has more,
    until :attr:`done`; then take :attr:`page`."""

    def __init__(self, *, prefix: str, delimiter: str, max_keys: int, marker: str) -> None:
        self.prefix = prefix
        self.delimiter = delimiter
        self.max_keys = max(0, min(max_keys, MAX_KEYS))
        self.marker = marker
        self.page = ListPage()
        self.next_start = marker if marker > prefix else ""
        self.done = self.max_keys == 0
        self._count = 0
        self._last_prefix: str | None = None

    @property
    def read_limit(self) -> int:
        return min(MAX_KEYS, self.max_keys - self._count + 1)

    def feed(self, entries: Sequence[ListEntry], more: bool) -> None:
        """Names after :attr:`next_start` in order, as the store returned them."""
        if self.done:
            return
        skip_prefix: str | None = None
        for e in entries:
            if skip_prefix is not None and e.key.startswith(skip_prefix):
                continue  # under a prefix already rolled up (pathological names only)
            if not e.key.startswith(self.prefix) or e.key <= self.marker:
                continue  # the store honours prefix and start_after; be safe anyway
            cp = self._common_prefix(e.key)
            if cp is not None:
                skip_prefix = cp
                if cp == self._last_prefix or cp <= self.marker or self.marker.startswith(cp):
                    continue
                if self._full(cp):
                    return
                self.page.common_prefixes.append(cp)
                self._last_prefix = cp
                self.page.next_marker = cp
                self.next_start = cp + _AFTER_ALL
                self._count += 1
                # everything else under cp is skipped by the next read
                continue
            if self._full(e.key):
                return
            self.page.contents.append(e)
            self.page.next_marker = e.key
            self.next_start = e.key
            self._count += 1
        if entries and skip_prefix is not None:
            self.next_start = max(self.next_start, skip_prefix + _AFTER_ALL)
        elif entries:
            self.next_start = max(self.next_start, entries[-1].key)
        if not more:
            self.done = True

    def _full(self, next_item: str) -> bool:
        """Another item exists: if the page is already full it is truncated."""
        if self._count >= self.max_keys:
            self.page.is_truncated = True
            self.done = True
            return True
        return False

    def _common_prefix(self, key: str) -> str | None:
        if not self.delimiter:
            return None
        i = key.find(self.delimiter, len(self.prefix))
        if i < 0:
            return None
        return key[:i + len(self.delimiter)]
