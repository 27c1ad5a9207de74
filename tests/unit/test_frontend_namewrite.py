"""Pure decisions of the named-write path (ambry/frontend/namewrite.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ambry.frontend.namewrite import worth_an_early_409

CHUNK = 4 * 1024 * 1024


@given(size=st.integers(0, 4 * CHUNK), chunk=st.integers(1024, 2 * CHUNK))
def test_an_early_409_lookup_only_for_bodies_of_more_than_one_chunk(size: int,
                                                                    chunk: int) -> None:
    # a create looked the name up before every upload (2 node requests on each named
    # create); for a body of one chunk or less that cost more than the rare conflict saves
    assert worth_an_early_409(size, chunk) is (size > chunk)


def test_an_early_409_lookup_when_the_size_is_unknown() -> None:
    assert worth_an_early_409(None, CHUNK)  # chunked transfer: may be any size
