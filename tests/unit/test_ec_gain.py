"""When encoding a segment pays (ambry/ec/gain.py, issue 17): a freed segment gives back its
payloads (it becomes a skeleton), so records whose payload is small next to their header,
key and properties would add fragments on top of the replicas; such segments must stay
replicated. (Before skeletons, only whole pages inside payloads were freed and 4 KiB blobs
stayed replicated too: 9.6x measured when they were encoded anyway.)"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.ec.gain import fragment_disk_bytes, freeable_bytes, worth_encoding

RECORD_OVERHEAD = 300  # header, key, properties, checksum of a PUT record (about)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 100)), max_size=6))
def test_freeable_bytes_counts_the_union_of_the_spans(spans: list[tuple[int, int]]) -> None:
    covered: set[int] = set()
    for a, n in spans:
        covered.update(range(a, a + n))
    assert freeable_bytes(spans) == len(covered)


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
    freeable = freeable_bytes(spans)
    frags = fragment_disk_bytes(k, m, size, 4 << 20)
    assert frags >= size * (k + m) // k
    assert freeable == payload * len(spans) < size  # every payload, never a header
    if worth_encoding(freeable, replicas, frags, ratio):
        assert freeable * replicas - frags > (ratio - 1) * frags >= 0


def test_tiny_records_stay_replicated_and_bench_sizes_are_encoded() -> None:
    # 4 KiB: encoded since skeletons (bench_warm run 3: 3.43x); 64 bytes: the record's own
    # overhead outweighs what freeing gives back
    for payload, k, m, expect in ((64, 2, 1, False), (64, 4, 2, False),
                                  (4 << 10, 2, 1, True), (4 << 10, 4, 2, True),
                                  (200 << 10, 2, 1, True), (200 << 10, 4, 2, True),
                                  (4 << 20, 4, 2, True)):
        size, spans = _segment(payload, 16 << 20)
        frags = fragment_disk_bytes(k, m, size, 4 << 20)
        assert worth_encoding(freeable_bytes(spans), 3, frags, 1.2) is expect, payload
