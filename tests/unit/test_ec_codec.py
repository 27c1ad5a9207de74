"""ambry/ec/codec.py on the real library (pyeclib + ISA-L): any m blocks lost or corrupt,
the stripe still decodes to its bytes; a corrupt block is never decoded from."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

pytest.importorskip("pyeclib", reason="pyeclib (the ec extra) has wheels for Linux only: "
                    "pip install '.[ec]' on Linux")

from ambry.common.errors import DataCorrupt
from ambry.ec.codec import BACKENDS, Codec
from ambry.ec.layout import ALIGN_BYTES, SegmentLayout

NO_DEADLINE = settings(deadline=None, max_examples=60)
CODES = [(2, 1), (4, 2), (3, 2), (6, 3)]
_codecs: dict[tuple[int, int, int], Codec] = {}


def codec(k: int, m: int, backend: int = 1) -> Codec:
    if (k, m, backend) not in _codecs:
        _codecs[k, m, backend] = Codec(k, m, backend)
    return _codecs[k, m, backend]


@st.composite
def stripe_case(draw: st.DrawFn) -> tuple[int, int, int, bytes, list[int], list[int]]:
    """(k, m, block, data, lost, corrupt): up to m blocks lost or corrupt in all."""
    k, m = draw(st.sampled_from(CODES))
    block = ALIGN_BYTES * draw(st.integers(1, 64))
    size = draw(st.integers(0, k * block))
    data = draw(st.randoms(use_true_random=False)).randbytes(size)
    hit = draw(st.lists(st.integers(0, k + m - 1), unique=True, max_size=m))
    cut = draw(st.integers(0, len(hit)))
    return k, m, block, data, hit[:cut], hit[cut:]


def _flip(b: bytes, rnd: random.Random) -> bytes:
    i = rnd.randrange(len(b))
    return b[:i] + bytes([b[i] ^ (1 << rnd.randrange(8))]) + b[i + 1:]


@NO_DEADLINE
@given(stripe_case(), st.randoms(use_true_random=False))
def test_decode_with_any_m_blocks_lost_or_corrupt_returns_the_data(
        case: tuple[int, int, int, bytes, list[int], list[int]], rnd: random.Random) -> None:
    k, m, block, data, lost, corrupt = case
    note(f"k={k} m={m} block={block} size={len(data)} lost={lost} corrupt={corrupt}")
    c = codec(k, m)
    enc = c.encode(data, block)
    assert len(enc.blocks) == k + m and all(len(b) == block for b in enc.blocks)
    # systematic: data block j is bytes [j * block, (j + 1) * block) of the padded stripe
    padded = data + bytes(k * block - len(data))
    assert all(bytes(enc.blocks[j]) == padded[j * block:(j + 1) * block] for j in range(k))
    have = {i: bytes(b) for i, b in enumerate(enc.blocks) if i not in lost}
    for i in corrupt:
        have[i] = _flip(have[i], rnd)
    out = c.decode(have, enc.checksums, block, len(data))
    assert out.data == data
    assert out.bad == frozenset(corrupt)  # every flipped block is named for repair


@NO_DEADLINE
@given(stripe_case())
def test_rebuild_restores_the_lost_blocks_exactly(
        case: tuple[int, int, int, bytes, list[int], list[int]]) -> None:
    k, m, block, data, lost, corrupt = case
    c = codec(k, m)
    enc = c.encode(data, block)
    gone = lost + corrupt
    have = {i: enc.blocks[i] for i in range(k + m) if i not in gone}
    made = c.rebuild(have, enc.checksums, block, gone)
    assert {i: bytes(b) for i, b in made.items()} == {i: bytes(enc.blocks[i]) for i in gone}


@NO_DEADLINE
@given(st.sampled_from(CODES), st.integers(1, 32), st.data())
def test_a_window_rebuilds_from_the_same_window_of_k_other_blocks(
        code: tuple[int, int], units: int, data: st.DataObject) -> None:
    # a degraded read of a small blob reads only its span of k fragments: Reed-Solomon must
    # work byte position by byte position through the library for that to be right
    k, m = code
    block = units * ALIGN_BYTES
    c = codec(k, m)
    rnd = data.draw(st.randoms(use_true_random=False))
    enc = c.encode(rnd.randbytes(k * block), block)
    a = data.draw(st.integers(0, block - 1))
    b = data.draw(st.integers(a + 1, block))
    missing = data.draw(st.integers(0, k + m - 1))
    others = data.draw(st.lists(st.sampled_from([i for i in range(k + m) if i != missing]),
                                unique=True, min_size=k, max_size=k))
    got = c.rebuild_window({i: bytes(enc.blocks[i][a:b]) for i in others}, missing)
    assert got == bytes(enc.blocks[missing][a:b])


def test_more_than_m_bad_blocks_is_data_corrupt_not_wrong_bytes() -> None:
    c = codec(4, 2)
    enc = c.encode(b"x" * 1000, 256)
    have = {i: bytes(b) for i, b in enumerate(enc.blocks)}
    del have[0], have[5]
    have[2] = _flip(have[2], random.Random(1))
    with pytest.raises(DataCorrupt, match="3 healthy blocks of the 4 needed"):
        c.decode(have, enc.checksums, 256, 1000)


def test_a_flipped_data_block_is_not_served_on_the_healthy_path() -> None:
    # all k data blocks present is the no-arithmetic path; a flipped one there must still be
    # caught by its checksum and the stripe decoded from parity instead
    c = codec(2, 1)
    data = random.Random(7).randbytes(2 * 4096)
    enc = c.encode(data, 4096)
    have = {i: bytes(b) for i, b in enumerate(enc.blocks)}
    have[1] = _flip(have[1], random.Random(2))
    out = c.decode(have, enc.checksums, 4096, len(data))
    assert out.data == data and out.bad == {1}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_backend_a_fragment_file_may_name_round_trips(backend: int) -> None:
    c = codec(4, 2, backend)
    lay = SegmentLayout.plan(4, 2, 100_000, 16 << 10)
    seg = random.Random(backend).randbytes(lay.segment_bytes)
    for s in lay.stripes():
        enc = c.encode(seg[s.segment_offset:s.segment_offset + s.data_bytes], s.block_bytes)
        have = {i: enc.blocks[i] for i in (1, 3, 4, 5)}
        got = c.decode(have, enc.checksums, s.block_bytes, s.data_bytes).data
        assert got == seg[s.segment_offset:s.segment_offset + s.data_bytes]


def test_without_pyeclib_the_codec_says_how_to_install_it(tmp_path: Path) -> None:
    # the ``ec`` extra is optional: the layout still imports, and Codec names the extra
    (tmp_path / "pyeclib").mkdir()
    (tmp_path / "pyeclib" / "__init__.py").write_text("raise ImportError('absent')\n")
    code = ("import ambry.ec.layout, ambry.ec.placement\n"
            "from ambry.ec.codec import Codec\n"
            "try:\n    Codec(2, 1)\nexcept ImportError as e:\n    print(e)\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root,
                         env={"PYTHONPATH": f"{tmp_path}:{root}", "PATH": "/usr/bin:/bin"})
    assert "pip install 'ambry[ec]'" in out.stdout, out
