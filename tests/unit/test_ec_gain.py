"""When encoding a segment pays (ambry/ec/gain.py, issue 17): small records free no whole
page, so encoding them added fragments on top of 6 replicas (9.6x measured with 4 KiB blobs);
such segments must stay replicated."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.ec.gain import PAGE_BYTES, fragment_disk_bytes, punchable_bytes, worth_encoding

RECORD_OVERHEAD = 300  # header, key, properties, checksum of a PUT record (about)


def _brute(spans: list[tuple[int, int]], page: int) -> int:
    covered = set()
    for a, n in spans:
        covered.update(range(a, a + n))
    end = max((a + n for a, n in spans), default=0)
    return sum(page for p in range(0, end, page) if all(b in covered
                                                         for b in range(p, p + page)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 100)), max_size=6),
       st.sampled_from([8, 16, 64]))
def test_punchable_bytes_counts_exactly_the_whole_pages_inside_the_spans(
        spans: list[tuple[int, int]], page: int) -> None:
    assert punchable_bytes(spans, page) == _brute(spans, page)


def _segment(payload: int, segment_bytes: int) -> tuple[int, list[tuple[int, int]]]:
    """A segment of back-to-back records of ``payload`` bytes each: (length, payload spans)."""
    spans, off = [], 0
    while off + RECORD_OVERHEAD + payload <= segment_bytes:
        spans.append((off + RECORD_OVERHEAD - 8, payload))
        off += RECORD_OVERHEAD + payload
    return off, spans


@settings(max_examples=60, deadline=None)
@given(payload=st.integers(1024, 4 << 20), k=st.sampled_from([2, 4, 6]),
       m=st.sampled_from([1, 2, 3]), replicas=st.integers(1, 5),
       ratio=st.floats(1.0, 2.0))
def test_a_segment_is_encoded_only_when_freeing_beats_its_fragments(
        payload: int, k: int, m: int, replicas: int, ratio: float) -> None:
    # the decision's promise: encoding never makes a datacenter store more bytes
    size, spans = _segment(payload, 2 << 20)
    if not spans:
        return
    freeable = punchable_bytes(spans)
    frags = fragment_disk_bytes(k, m, size, 4 << 20)
    assert frags >= size * (k + m) // k
    if worth_encoding(freeable, replicas, frags, ratio):
        assert freeable * replicas - frags > (ratio - 1) * frags >= 0
    # a payload that covers no whole page frees nothing: never encoded
    if payload < PAGE_BYTES:
        assert freeable == 0 and not worth_encoding(freeable, replicas, frags, ratio)


def test_bench_sizes_small_records_stay_replicated_and_ml_sizes_are_encoded() -> None:
    for payload, k, m, expect in ((4 << 10, 2, 1, False), (4 << 10, 4, 2, False),
                                  (200 << 10, 2, 1, True), (200 << 10, 4, 2, True),
                                  (4 << 20, 4, 2, True)):
        size, spans = _segment(payload, 16 << 20)
        frags = fragment_disk_bytes(k, m, size, 4 << 20)
        assert worth_encoding(punchable_bytes(spans), 3, frags, 1.2) is expect, payload
