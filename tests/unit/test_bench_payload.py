"""The benchmarks' body layout and verifier (benchmarks/_payload.py).

What broke: the load generator made large bodies by repeating one random 1 MiB block (and
bench_frontend / bench_sdk one 16-byte block), so every 4 MiB chunk of a blob was the same
bytes: a GET that returned chunks swapped, duplicated or out of place still hashed equal to
what was PUT and counted as verified.
"""

from __future__ import annotations

import random

from benchmarks._payload import (
    STAMP_BYTES,
    Verifier,
    body_bytes,
    body_digest,
    filler,
    object_tag,
    pieces,
)

MIB = 1 << 20
CHUNK = 4 * MIB


def _verify(body: bytes, tag: int, size: int, digest: int, piece: int = 256 * 1024) -> str:
    v = Verifier(tag, size, digest)
    for i in range(0, len(body), piece):
        v.update(memoryview(body)[i:i + piece])
    return v.error()


def _chunks(body: bytes) -> list[bytes]:
    return [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]


def test_swapped_4mib_chunks_fail_verification() -> None:
    # with the repeated 1 MiB block, chunk 1 and chunk 2 were byte-equal: a swap went unseen
    fill, tag, size = filler(1), object_tag("obj-1"), 16 * MIB
    body = body_bytes(fill, tag, size)
    digest = body_digest(fill, tag, size)
    assert _verify(body, tag, size, digest) == ""
    c = _chunks(body)
    swapped = b"".join([c[0], c[2], c[1], c[3]])
    err = _verify(swapped, tag, size, digest)
    assert f"window at offset {CHUNK} holds the window at offset {2 * CHUNK}" in err, err


def test_duplicated_4mib_chunk_fails_verification() -> None:
    # a chunk served twice (chunk 0 in the place of chunk 1) passed the old verifier
    fill, tag, size = filler(2), object_tag("obj-2"), 12 * MIB + 5
    body = body_bytes(fill, tag, size)
    digest = body_digest(fill, tag, size)
    c = _chunks(body)
    duplicated = b"".join([c[0], c[0], c[2], c[3]])
    assert len(duplicated) == size
    assert "window at offset 4194304 holds the window at offset 0 of this object" in \
        _verify(duplicated, tag, size, digest)


def test_chunk_of_another_object_fails_verification() -> None:
    # two blobs PUT with the same payload index had the same bytes: a GET served the wrong one
    fill, size = filler(3), 8 * MIB
    a, b = object_tag("a"), object_tag("b")
    body_a, body_b = body_bytes(fill, a, size), body_bytes(fill, b, size)
    mixed = body_a[:CHUNK] + body_b[CHUNK:]
    assert "of another object" in _verify(mixed, a, size, body_digest(fill, a, size))
    small_a, small_b = body_bytes(fill, a, 4096), body_bytes(fill, b, 4096)
    assert small_a != small_b
    assert _verify(small_b, a, 4096, body_digest(fill, a, 4096)) != ""


def test_no_window_repeats_and_no_16_byte_pattern_repeats() -> None:
    fill, tag, size = filler(4), object_tag("obj-4"), 6 * MIB
    body = body_bytes(fill, tag, size)
    windows = [body[i:i + STAMP_BYTES] for i in range(0, size, STAMP_BYTES)]
    assert len(set(windows)) == len(windows)
    blocks = {body[i:i + 16] for i in range(0, STAMP_BYTES, 16)}
    assert len(blocks) == STAMP_BYTES // 16


def test_verifier_passes_whatever_the_piece_boundaries() -> None:
    # stamps cut across received pieces must not be reported as wrong
    rnd = random.Random(5)
    fill, tag, size = filler(5), object_tag("obj-5"), 3 * MIB + 20
    body = body_bytes(fill, tag, size)
    digest = body_digest(fill, tag, size)
    for piece in (1, 7, 4093, STAMP_BYTES - 8, STAMP_BYTES + 3, rnd.randrange(1, 99999)):
        assert _verify(body, tag, size, digest, piece) == "", piece
    assert _verify(body[:-1], tag, size, digest) == f"body is {size - 1} bytes, expected {size}"
    flipped = bytearray(body)
    flipped[STAMP_BYTES + 100] ^= 1
    assert "filler wrong" in _verify(bytes(flipped), tag, size, digest)


def test_pieces_copy_nothing_but_the_stamps() -> None:
    fill, tag = filler(6), object_tag("obj-6")
    got = list(pieces(fill, tag, 2 * MIB))
    assert [len(p) for p in got] == [16, STAMP_BYTES - 16] * 2
    assert all(isinstance(p, memoryview) for p in got[1::2])
