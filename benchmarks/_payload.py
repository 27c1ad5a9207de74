"""Benchmark bodies that are unique per object and per MiB, and the streaming verifier for them.

A body of ``size`` bytes is cut into windows of ``STAMP_BYTES`` (1 MiB, so every chunk of a
chunked blob, whatever its chunk size in MiB, holds whole windows). Each window starts with a
16-byte stamp, (object tag u64, window offset u64) big-endian, followed by the first bytes of
a random ``filler`` (1 MiB - 16 bytes) made once per client process::

    offset 0        16                1 MiB     1 MiB + 16           2 MiB
           | tag, 0 | filler ...      | tag, 1 MiB | filler ...     | ...

So no two windows of one object are equal (their offsets differ), no window of one object equals
one of another (their tags differ), and there is no repeating 16-byte pattern inside a window.
A swapped, duplicated or misplaced chunk, or a body of another object, changes the xxh3 of the
body, and :class:`Verifier` also names the first window whose stamp is wrong.

Cost: the filler is made once; a body of <= 1 MiB is one concatenation, a larger one is sent as
pieces (the stamp and a memoryview of the filler: no copy) whose xxh3 is taken as they go out.
This module owns the body layout only; the load generators own what they send and when.
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator, Iterator

import xxhash

__all__ = ["FILLER_BYTES", "STAMP_BYTES", "Verifier", "body_bytes", "body_digest", "filler",
           "hashed_pieces", "object_tag", "pieces", "windows"]

STAMP_BYTES = 1 << 20
_STAMP = struct.Struct(">QQ")
FILLER_BYTES = STAMP_BYTES - _STAMP.size


def filler(seed: int) -> bytes:
    """The random tail of every window, made once per (process, seed)."""
    return random.Random(seed).randbytes(FILLER_BYTES)


def object_tag(key: str) -> int:
    """A 64-bit tag from the object's unique key (its name or load generator counter)."""
    return xxhash.xxh3_64_intdigest(key.encode())


def pieces(fill: bytes | memoryview, tag: int, size: int) -> Iterator[bytes | memoryview]:
    """The body as stamp / filler pieces; nothing is copied (a 1-byte window is one byte)."""
    view = memoryview(fill)
    off = 0
    while off < size:
        n = min(STAMP_BYTES, size - off)
        stamp = _STAMP.pack(tag, off)
        yield stamp[:n]
        if n > _STAMP.size:
            yield view[:n - _STAMP.size]
        off += n


def windows(fill: bytes | memoryview, tag: int, size: int) -> Iterator[bytes]:
    """The body as one ``bytes`` per 1 MiB window (one copy per window: for consumers that
    want ``bytes``, e.g. the SDK's generator uploads and file writers)."""
    view = memoryview(fill)
    for off in range(0, size, STAMP_BYTES):
        n = min(STAMP_BYTES, size - off)
        yield (_STAMP.pack(tag, off) + view[:max(0, n - _STAMP.size)])[:n]


def body_bytes(fill: bytes | memoryview, tag: int, size: int) -> bytes:
    """The whole body in one ``bytes`` (for small bodies and tests)."""
    return b"".join(pieces(fill, tag, size))


def body_digest(fill: bytes | memoryview, tag: int, size: int) -> int:
    h = xxhash.xxh3_64()
    for p in pieces(fill, tag, size):
        h.update(p)
    return h.intdigest()


async def hashed_pieces(fill: bytes | memoryview, tag: int, size: int,
                        hasher: xxhash.xxh3_64) -> AsyncIterator[bytes | memoryview]:
    """:func:`pieces` as an async iterator (an aiohttp request body), hashed as sent."""
    for p in pieces(fill, tag, size):
        hasher.update(p)
        yield p


class Verifier:
    """Streams a received body: its xxh3 against the expected one, and every window's stamp
    against (tag, offset), whatever the piece boundaries. :meth:`error` says what is wrong."""

    def __init__(self, tag: int, size: int, digest: int) -> None:
        self.tag, self.size, self.digest = tag, size, digest
        self.pos = 0
        self._h = xxhash.xxh3_64()
        self._stamp = bytearray()  # a stamp cut by a piece boundary, collected so far
        self._stamp_at = -1
        self.bad_window = ""

    def update(self, piece: bytes | bytearray | memoryview) -> None:
        self._h.update(piece)
        start, end = self.pos, self.pos + len(piece)
        if self._stamp_at >= 0:  # finish the stamp the previous piece cut
            self._stamp += piece[:_STAMP.size - len(self._stamp)]
            self._check(self._stamp_at, bytes(self._stamp))
        at = -(-start // STAMP_BYTES) * STAMP_BYTES  # first window start in this piece
        while at < end:
            part = bytes(piece[at - start:at - start + _STAMP.size])
            if len(part) < _STAMP.size and at + len(part) < self.size:
                self._stamp, self._stamp_at = bytearray(part), at
            else:
                self._check(at, part)
            at += STAMP_BYTES
        self.pos = end

    def _check(self, at: int, got: bytes) -> None:
        self._stamp_at = -1
        want = _STAMP.pack(self.tag, at)[:len(got)]
        if got != want and not self.bad_window:
            if len(got) == _STAMP.size:
                tag, off = _STAMP.unpack(got)
                whose = "this object" if tag == self.tag else "another object"
                what = f"the window at offset {off} of {whose} ({tag:016x})"
            else:
                what = "a cut stamp"
            self.bad_window = f"window at offset {at} holds {what}"

    def error(self) -> str:
        """'' when the body is the one expected, else what differs."""
        if self.pos != self.size:
            return f"body is {self.pos} bytes, expected {self.size}"
        if self.bad_window:
            return self.bad_window
        if self._h.intdigest() != self.digest:
            return "body bytes differ from what was PUT (stamps right, filler wrong)"
        return ""
