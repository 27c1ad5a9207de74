"""Whether encoding a sealed segment pays (docs/erasure-coding.md, "When encoding pays").

Encoding adds k + m fragment files per datacenter; it frees, on each replica of that
datacenter, the payloads of the segment's records (a wholly freed segment is rewritten as
its skeleton: headers, keys and properties only, ``ambry.storage.skeleton``). For records of
a few hundred bytes the record overhead outweighs that, so encoding would add more than it
frees. The encode job asks :func:`worth_encoding` first and leaves a segment that does not pay
replicated ("left replicated: small records" in ``ambry admin ec-status``).

Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from ambry.ec.layout import SegmentLayout

__all__ = ["PAGE_BYTES", "fragment_disk_bytes", "freeable_bytes", "worth_encoding"]

#: the file system's allocation unit (ext4, xfs: 4 KiB): fragment files round up to it
PAGE_BYTES = 4096
#: a fragment file's header and checksum table per stripe (ambry.ec.fragfile)
_FRAG_HEADER_BYTES = 64
_FRAG_TABLE_BYTES_PER_STRIPE = 8


def freeable_bytes(spans: Iterable[tuple[int, int]]) -> int:
    """Bytes of the union of ``spans`` ((offset, length) of payloads in one segment): what
    freeing the segment gives back on a replica once it is a skeleton. Overlapping spans
    count once."""
    total = 0
    cur_a = cur_b = -1
    for a, n in sorted((a, n) for a, n in spans if n > 0):
        b = a + n
        if a <= cur_b:
            cur_b = max(cur_b, b)
            continue
        total += max(0, cur_b - cur_a)
        cur_a, cur_b = a, b
    return total + max(0, cur_b - cur_a)


def fragment_disk_bytes(k: int, m: int, segment_bytes: int, stripe_bytes: int,
                        page_bytes: int = PAGE_BYTES) -> int:
    """Bytes the k + m fragment files of a segment take on disk (header, table, blocks;
    each file rounded up to whole pages)."""
    layout = SegmentLayout.plan(k, m, segment_bytes, stripe_bytes)
    one = _FRAG_HEADER_BYTES + _FRAG_TABLE_BYTES_PER_STRIPE * layout.stripe_count + \
        layout.fragment_bytes
    return (k + m) * (-(-one // page_bytes) * page_bytes)


def worth_encoding(freeable_bytes_per_replica: int, replicas: int, fragment_bytes: int,
                   min_gain_ratio: float) -> bool:
    """Encode only when the bytes the ``replicas`` of one datacenter would free exceed the
    fragment bytes encoding adds there by ``min_gain_ratio`` (>= 1): a segment that frees
    less stays replicated, so encoding never makes a datacenter store more."""
    return freeable_bytes_per_replica * replicas > min_gain_ratio * fragment_bytes
