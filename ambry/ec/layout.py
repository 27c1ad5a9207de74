"""How a sealed log segment is cut into stripes and k data + m parity fragments, and where a
byte range of the segment lives in them.

Owns one pure decision (values in, values out, no I/O): the geometry of an encoded segment.

* The segment's ``segment_bytes`` are cut into stripes of ``stripe_bytes`` = k x
  ``block_bytes`` (the last stripe may be shorter). Stripe ``s`` covers segment bytes
  ``[s * stripe_bytes, s * stripe_bytes + data_bytes)``; its data block ``j`` (0 <= j < k) is
  the contiguous slice ``[j * block, (j + 1) * block)`` of the stripe, zero-padded past the
  segment's end, and blocks k .. k+m-1 are the parity computed from them (the code is
  systematic: data blocks are stored as they are).
* Fragment ``i`` is the concatenation of block ``i`` of every stripe, so every fragment has the
  same length, ``fragment_bytes``, and stripe ``s`` starts at ``s * block_bytes`` in each.
* The last stripe's block is ``ceil(rest / k)`` rounded up to :data:`ALIGN_BYTES` (not a full
  block), so a small sealed segment does not cost a whole stripe of padding.
* Blocks are multiples of :data:`ALIGN_BYTES` (cache lines; the SIMD coders like it).

:meth:`SegmentLayout.pieces` maps a blob's byte range to the (fragment, offset, length) reads
that hold it when the data fragments are healthy: a blob smaller than a block is one read
unless it straddles a block boundary. A piece never crosses a block, so a degraded read can
rebuild exactly that piece from the same byte range of any k fragments of its stripe (the
Reed-Solomon code works byte position by byte position).

Does not own encoding (``codec``), files (``fragfile``) or which node holds what (``placement``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALIGN_BYTES", "MAX_FRAGMENTS", "Piece", "SegmentLayout", "Stripe"]

#: Every block is a multiple of this.
ALIGN_BYTES = 64
#: k + m at most: fragment indexes fit a byte with room to spare, and no datacenter here has
#: more nodes than that to spread one partition over.
MAX_FRAGMENTS = 32


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _align_up(n: int) -> int:
    return _ceil_div(n, ALIGN_BYTES) * ALIGN_BYTES


@dataclass(frozen=True)
class Stripe:
    index: int
    segment_offset: int  # where the stripe's first data byte is in the segment
    data_bytes: int  # real segment bytes in it (< stripe bytes only for the last stripe)
    block_bytes: int  # of each of its k + m blocks
    fragment_offset: int  # where its block starts inside every fragment


@dataclass(frozen=True)
class Piece:
    """``length`` bytes of the segment from ``segment_offset`` are bytes
    ``[fragment_offset, fragment_offset + length)`` of data fragment ``fragment``; they lie in
    stripe ``stripe``'s block, at ``block_offset`` inside it."""

    fragment: int
    fragment_offset: int
    length: int
    segment_offset: int
    stripe: int
    block_offset: int


@dataclass(frozen=True)
class SegmentLayout:
    k: int
    m: int
    block_bytes: int  # of a full stripe's block
    segment_bytes: int

    def __post_init__(self) -> None:
        if not (1 <= self.k and 1 <= self.m and self.k + self.m <= MAX_FRAGMENTS):
            raise ValueError(f"need k >= 1, m >= 1, k + m <= {MAX_FRAGMENTS}: "
                             f"k={self.k} m={self.m}")
        if self.block_bytes <= 0 or self.block_bytes % ALIGN_BYTES:
            raise ValueError(f"block_bytes must be a positive multiple of {ALIGN_BYTES}: "
                             f"{self.block_bytes}")
        if self.segment_bytes < 0:
            raise ValueError(f"segment_bytes < 0: {self.segment_bytes}")

    @classmethod
    def plan(cls, k: int, m: int, segment_bytes: int, stripe_target_bytes: int
             ) -> SegmentLayout:
        """The layout whose stripe is the smallest aligned one of at least
        ``stripe_target_bytes`` (a 4 MiB target at k=4 gives 1 MiB blocks; at k=3, blocks of
        1398144 bytes)."""
        if stripe_target_bytes <= 0:
            raise ValueError(f"stripe_target_bytes must be > 0: {stripe_target_bytes}")
        return cls(k, m, _align_up(_ceil_div(stripe_target_bytes, max(k, 1))), segment_bytes)

    @classmethod
    def from_stripe_bytes(cls, k: int, m: int, stripe_bytes: int, segment_bytes: int
                          ) -> SegmentLayout:
        """The layout a fragment file's header describes (its stripe size is exact)."""
        if k <= 0 or stripe_bytes % k:
            raise ValueError(f"stripe_bytes {stripe_bytes} is not k={k} blocks")
        return cls(k, m, stripe_bytes // k, segment_bytes)

    @property
    def n(self) -> int:
        return self.k + self.m

    @property
    def stripe_bytes(self) -> int:
        return self.k * self.block_bytes

    @property
    def stripe_count(self) -> int:
        return _ceil_div(self.segment_bytes, self.stripe_bytes)

    def stripe(self, s: int) -> Stripe:
        count = self.stripe_count
        if not 0 <= s < count:
            raise IndexError(f"stripe {s} of {count}")
        start = s * self.stripe_bytes
        data = min(self.stripe_bytes, self.segment_bytes - start)
        block = self.block_bytes if s < count - 1 else _align_up(_ceil_div(data, self.k))
        return Stripe(s, start, data, block, s * self.block_bytes)

    def stripes(self) -> list[Stripe]:
        return [self.stripe(s) for s in range(self.stripe_count)]

    @property
    def fragment_bytes(self) -> int:
        """Length of every fragment (data or parity)."""
        count = self.stripe_count
        return 0 if count == 0 else self.stripe(count - 1).fragment_offset + \
            self.stripe(count - 1).block_bytes

    @property
    def stored_bytes(self) -> int:
        """Bytes of all k + m fragments (without file headers)."""
        return self.n * self.fragment_bytes

    def pieces(self, offset: int, length: int) -> list[Piece]:
        """The data-fragment reads that hold segment bytes ``[offset, offset + length)``, in
        segment order, each inside one block."""
        if offset < 0 or length < 0 or offset + length > self.segment_bytes:
            raise ValueError(f"range [{offset}, {offset + length}) outside the segment of "
                             f"{self.segment_bytes} bytes")
        out: list[Piece] = []
        pos, end = offset, offset + length
        while pos < end:
            stripe = self.stripe(pos // self.stripe_bytes)
            inner = pos - stripe.segment_offset
            j, block_offset = divmod(inner, stripe.block_bytes)
            n = min(end - pos, stripe.block_bytes - block_offset)
            out.append(Piece(j, stripe.fragment_offset + block_offset, n, pos, stripe.index,
                             block_offset))
            pos += n
        return out
