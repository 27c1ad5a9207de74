"""Reed-Solomon encode and decode of one stripe, with an xxh3_64 checksum per block.

Owns the call into the erasure-code library (pyeclib, backed by liberasurecode and Intel's
ISA-L; chosen by measurement: benchmarks/bench_ec.py, docs/erasure-coding.md) and the rule that
a block whose checksum does not match is treated as missing, never decoded from.

pyeclib frames every fragment it returns with its own header (liberasurecode's: index, sizes,
a metadata checksum); our fragment files store the bare blocks (ambry/ec/fragfile.py), so they
do not depend on that framing. For a given block size the framing is the same for every stripe
(no data checksum is asked of liberasurecode: ours is xxh3), so the codec learns it once per
block size by encoding a zero stripe and puts it back in front of the blocks it decodes. The
tests check that this round-trips for every loss pattern.

Does not own the geometry (``layout``), files (``fragfile``) or I/O: callers run it off the
event loop (it is CPU work on megabytes).

pyeclib is the optional extra ``ambry[ec]`` (it has wheels for Linux only); the pure modules
of this package import without it, and :class:`Codec` says how to install it when it is absent.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from ambry.common.errors import DataCorrupt
from ambry.ec.layout import MAX_FRAGMENTS

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Block", "Codec", "Decoded", "Encoded", "block_checksum"]

#: The codes a fragment file may name, by the id it stores (a byte). Parity bytes differ from
#: one code to another, so the id is part of the format: never renumber.
BACKENDS: dict[int, str] = {1: "isa_l_rs_vand", 2: "liberasurecode_rs_vand"}
DEFAULT_BACKEND = 1

#: A block as callers hold it: bytes read from a file, or a view of an encoder's output.
Block = bytes | bytearray | memoryview

INSTALL_HINT = ("erasure coding needs pyeclib (liberasurecode + ISA-L): "
                "pip install 'ambry[ec]' (Linux x86_64/aarch64 wheels)")


def block_checksum(block: Block) -> int:
    return xxhash.xxh3_64_intdigest(block)


@dataclass(frozen=True)
class Encoded:
    blocks: tuple[memoryview, ...]  # k data then m parity blocks, each block_bytes long
    checksums: tuple[int, ...]  # xxh3_64 of each block


@dataclass(frozen=True)
class Decoded:
    data: bytes  # the stripe's data_bytes
    bad: frozenset[int]  # blocks handed in that failed their checksum (repair them)


def _load_pyeclib() -> Any:
    try:
        from pyeclib.ec_iface import ECDriver
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return ECDriver


class Codec:
    """One (k, m, backend) code. Thread-safe: it holds no mutable state beyond a cache."""

    def __init__(self, k: int, m: int, backend: int = DEFAULT_BACKEND) -> None:
        if not (1 <= k and 1 <= m and k + m <= MAX_FRAGMENTS):
            raise ValueError(f"need k >= 1, m >= 1, k + m <= {MAX_FRAGMENTS}: k={k} m={m}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown erasure-code backend id {backend}")
        self.k, self.m, self.backend = k, m, backend
        self._driver = _load_pyeclib()(k=k, m=m, ec_type=BACKENDS[backend])
        self._framing = functools.lru_cache(maxsize=8)(self._learn_framing)

    @property
    def n(self) -> int:
        return self.k + self.m

    def _learn_framing(self, block_bytes: int) -> tuple[bytes, ...]:
        frags = self._driver.encode(bytes(self.k * block_bytes))
        heads = tuple(bytes(f[:len(f) - block_bytes]) for f in frags)
        # the library must cut a stripe of k * block bytes into blocks of exactly block bytes
        # (no padding of its own), or our offsets inside fragments would be wrong
        assert len(heads) == self.n and len({len(h) for h in heads}) == 1 and heads[0], \
            [len(f) for f in frags]
        return heads

    def encode(self, data: bytes | bytearray | memoryview, block_bytes: int) -> Encoded:
        """The k + m blocks of one stripe holding ``data`` (at most k * block_bytes; the rest
        of the stripe is zeros)."""
        size = self.k * block_bytes
        if len(data) > size:
            raise ValueError(f"{len(data)} bytes do not fit a stripe of {size}")
        buf = bytes(data) if len(data) == size else bytes(data) + bytes(size - len(data))
        head = len(self._framing(block_bytes)[0])
        frags = self._driver.encode(buf)
        # views past the library's framing: no copy of the stripe's k + m blocks
        blocks = tuple(memoryview(f)[head:] for f in frags)
        assert all(len(b) == block_bytes for b in blocks), [len(b) for b in blocks]
        return Encoded(blocks, tuple(block_checksum(b) for b in blocks))

    def _healthy(self, blocks: Mapping[int, Block], checksums: Sequence[int], block_bytes: int
                 ) -> tuple[dict[int, Block], frozenset[int]]:
        if len(checksums) != self.n:
            raise ValueError(f"{len(checksums)} checksums for {self.n} blocks")
        good: dict[int, Block] = {}
        bad: set[int] = set()
        for i, b in blocks.items():
            if not 0 <= i < self.n:
                raise ValueError(f"block index {i} outside 0..{self.n - 1}")
            if len(b) == block_bytes and block_checksum(b) == checksums[i]:
                good[i] = b
            else:
                bad.add(i)
        if len(good) < self.k:
            raise DataCorrupt(f"stripe not decodable: {len(good)} healthy blocks of the "
                              f"{self.k} needed (given {sorted(blocks)}, failed checksum "
                              f"{sorted(bad)})")
        return good, frozenset(bad)

    def decode(self, blocks: Mapping[int, Block], checksums: Sequence[int], block_bytes: int,
               data_bytes: int) -> Decoded:
        """The stripe's first ``data_bytes`` from any k healthy blocks (index -> block).
        Blocks that fail their checksum are left out and reported in ``Decoded.bad``."""
        if not 0 <= data_bytes <= self.k * block_bytes:
            raise ValueError(f"data_bytes {data_bytes} outside a stripe of "
                             f"{self.k * block_bytes}")
        good, bad = self._healthy(blocks, checksums, block_bytes)
        if all(j in good for j in range(self.k)):  # healthy: no arithmetic at all
            data = b"".join(good[j] for j in range(self.k))
        else:
            heads = self._framing(block_bytes)
            chosen = sorted(good)[:self.k]
            data = self._driver.decode([heads[i] + good[i] for i in chosen])
        return Decoded(data if len(data) == data_bytes else data[:data_bytes], bad)

    def rebuild_window(self, windows: Mapping[int, Block], missing: int) -> bytes:
        """Bytes ``[a, b)`` of block ``missing`` from bytes ``[a, b)`` of any k other blocks
        of the same stripe (``windows``: index -> those bytes). Reed-Solomon works byte
        position by byte position, so a degraded read of a small blob reads only its span
        of k fragments, not k whole blocks. A window of ``missing`` itself, if given (it
        failed a check), is not used. Unchecked (a block checksum covers the whole
        block): the caller checks the result, e.g. against the blob record's own xxh3."""
        if not 0 <= missing < self.n:
            raise ValueError(f"block index {missing} outside 0..{self.n - 1}")
        lengths = {len(w) for w in windows.values()}
        if len(lengths) != 1:
            raise ValueError(f"windows of different lengths {sorted(lengths)}")
        chosen = sorted(i for i in windows if i != missing)[:self.k]
        if len(chosen) < self.k:
            raise DataCorrupt(f"window not rebuildable: {len(chosen)} other blocks of the "
                              f"{self.k} needed")
        (length,) = lengths
        heads = self._framing(length)
        (made,) = self._driver.reconstruct([heads[i] + windows[i] for i in chosen], [missing])
        return bytes(memoryview(made)[len(heads[0]):])

    def rebuild(self, blocks: Mapping[int, Block], checksums: Sequence[int], block_bytes: int,
                missing: Sequence[int]) -> dict[int, bytes]:
        """The blocks ``missing`` (data or parity), rebuilt from any k healthy ones, each
        checked against its recorded checksum (a mismatch is corruption we cannot explain:
        raised, never written)."""
        good, _ = self._healthy(blocks, checksums, block_bytes)
        want = sorted(set(missing))
        if not want:
            return {}
        heads = self._framing(block_bytes)
        chosen = sorted(good)[:self.k]
        made = self._driver.reconstruct([heads[i] + good[i] for i in chosen], want)
        head = len(heads[0])
        out = {i: bytes(memoryview(f)[head:]) for i, f in zip(want, made, strict=True)}
        wrong = [i for i, b in out.items() if block_checksum(b) != checksums[i]]
        if wrong:
            raise DataCorrupt(f"rebuilt blocks {wrong} do not match their checksums")
        return out
