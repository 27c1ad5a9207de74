"""ListObjects pagination (ambry.frontend.s3.listing) against a brute-force model of S3."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.frontend.s3.listing import (
    ListEntry,
    ListingBuilder,
    decode_token,
    encode_token,
)


def model(keys: list[str], prefix: str, delimiter: str, marker: str
          ) -> list[tuple[str, str]]:
    """Every item S3 would list after ``marker``, in order: ("K", key) or ("P", prefix)."""
    items: list[tuple[str, str]] = []
    for k in sorted(set(keys), key=lambda k: k.encode()):
        if not k.startswith(prefix) or k <= marker:
            continue
        i = k.find(delimiter, len(prefix)) if delimiter else -1
        if i >= 0:
            cp = k[:i + len(delimiter)]
            if cp <= marker or (items and items[-1] == ("P", cp)):
                continue
            items.append(("P", cp))
        else:
            items.append(("K", k))
    return items


class FakeStore:
    """The router's name listing: names under a prefix after start_after, at most limit,
    in UTF-8 order; sometimes cut short, as the merge of two replicas can be."""

    def __init__(self, keys: list[str], page_cap: int) -> None:
        self.keys = sorted(set(keys), key=lambda k: k.encode())
        self.page_cap = page_cap
        self.reads = 0

    def read(self, prefix: str, start_after: str, limit: int) -> tuple[list[ListEntry], bool]:
        self.reads += 1
        enc = [k.encode() for k in self.keys]
        i = bisect.bisect_right(enc, start_after.encode())
        out = [k for k in self.keys[i:] if k.startswith(prefix)]
        n = min(limit, self.page_cap)
        return [ListEntry(k, 1, 0, '"e"') for k in out[:n]], len(out) > n


def page(store: FakeStore, prefix: str, delimiter: str, max_keys: int, marker: str
         ) -> ListingBuilder:
    b = ListingBuilder(prefix=prefix, delimiter=delimiter, max_keys=max_keys, marker=marker)
    while not b.done:
        entries, more = store.read(prefix, b.next_start, b.read_limit)
        b.feed(entries, more and bool(entries))
    return b


def items_of(b: ListingBuilder) -> list[tuple[str, str]]:
    got = [("K", e.key) for e in b.page.contents] + [("P", p) for p in b.page.common_prefixes]
    return sorted(got, key=lambda x: x[1])


KEYS = st.lists(st.text(alphabet="ab/.", min_size=1, max_size=6), max_size=40)


@settings(max_examples=400, deadline=None)
@given(keys=KEYS, prefix=st.sampled_from(["", "a", "a/", "b/", "ab"]),
       delimiter=st.sampled_from(["", "/", ".", "b/"]), max_keys=st.integers(0, 7),
       cap=st.integers(1, 5), marker=st.sampled_from(["", "a", "a/", "a/b", "b", "zzz"]))
def test_one_page_is_the_model_prefix(keys: list[str], prefix: str, delimiter: str,
                                      max_keys: int, cap: int, marker: str) -> None:
    want = model(keys, prefix, delimiter, marker)
    b = page(FakeStore(keys, cap), prefix, delimiter, max_keys, marker)
    assert items_of(b) == want[:max_keys]
    assert b.page.is_truncated == (max_keys > 0 and len(want) > max_keys)
    if b.page.is_truncated:
        assert b.page.next_marker == want[max_keys - 1][1]


@settings(max_examples=300, deadline=None)
@given(keys=KEYS, prefix=st.sampled_from(["", "a", "a/"]),
       delimiter=st.sampled_from(["", "/", "."]), max_keys=st.integers(1, 4),
       cap=st.integers(1, 5))
def test_following_the_marker_lists_everything_once(keys: list[str], prefix: str,
                                                    delimiter: str, max_keys: int,
                                                    cap: int) -> None:
    store = FakeStore(keys, cap)
    got: list[tuple[str, str]] = []
    marker = ""
    for _ in range(100):
        b = page(store, prefix, delimiter, max_keys, marker)
        got += items_of(b)
        if not b.page.is_truncated:
            break
        assert b.page.next_marker is not None
        marker = decode_token(encode_token(b.page.next_marker))
    assert got == model(keys, prefix, delimiter, "")


def test_a_rolled_up_prefix_is_skipped_with_one_read_not_read_through() -> None:
    keys = [f"logs/{i:05d}" for i in range(5000)] + ["z"]
    store = FakeStore(keys, 1000)
    b = page(store, "", "/", 1000, "")
    assert b.page.common_prefixes == ["logs/"] and [e.key for e in b.page.contents] == ["z"]
    assert store.reads <= 3


def test_max_keys_zero_and_over_1000() -> None:
    store = FakeStore(["a", "b"], 10)
    b = page(store, "", "", 0, "")
    assert (b.page.contents, b.page.is_truncated) == ([], False)
    assert ListingBuilder(prefix="", delimiter="", max_keys=5000, marker="").max_keys == 1000


def test_token_roundtrip_and_garbage() -> None:
    assert decode_token(encode_token("ü/ß x")) == "ü/ß x"
    with pytest.raises(ValueError):
        decode_token("!!!")
    with pytest.raises(ValueError):
        decode_token(encode_token("a")[:-1] + "\xff")
