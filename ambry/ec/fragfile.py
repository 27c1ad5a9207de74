"""The fragment file: one fragment (data or parity) of one erasure-coded log segment.

Owns the file's byte layout, writing it crash-safely, and reading, verifying and dumping it.
Does not own file names (they will be built beside the segment names in
``ambry/storage/filenames.py`` when the encode job lands) nor the geometry (``layout``).

The byte layout (version 1; integers little-endian like the log's, checksums xxh3_64) is
documented once, as a table of offsets, in docs/erasure-coding.md ("The fragment file");
``_HEAD`` below is that table in code, and tests/unit/test_ec_fragfile.py checks they agree.
In short: a 56-byte header (magic, version, code, k, m, fragment index, partition, segment
number and generation, original length, stripe size, stripe count, its own checksum), a table
of one checksum per stripe (this fragment's block) and the table's checksum, then the blocks.

The file's length is exactly ``64 + 8S + fragment_bytes`` (``SegmentLayout.fragment_bytes``):
a shorter file is torn (the writer died), never valid. The header and table come first so a
reader loads them with one read, then reads any byte range of the fragment at
``data_offset + fragment_offset`` and checks the blocks it touches.

The writer streams blocks after a zero-filled table, then writes the table and header
checksum, fsyncs, renames the temp file to its name and fsyncs the directory: a file under its
final name is complete.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import xxhash

from ambry.common.errors import DataCorrupt
from ambry.ec.codec import BACKENDS, Block
from ambry.ec.layout import SegmentLayout

__all__ = ["MAGIC", "VERSION", "FragmentHeader", "FragmentWriter", "VerifyReport", "dump",
           "read_header", "verify"]

MAGIC = b"AMBRYEC\n"
VERSION = 1
_HEAD = struct.Struct("<8sBBBBB3xQIIQII")  # bytes 0 .. 47
_U64 = struct.Struct("<Q")
HEADER_BYTES = _HEAD.size + 8  # 56: the fixed part and its checksum
assert _HEAD.size == 48


def _xxh(b: Block) -> int:
    return xxhash.xxh3_64_intdigest(b)


@dataclass(frozen=True)
class FragmentHeader:
    code: int
    k: int
    m: int
    fragment: int
    partition_id: int
    segment_number: int
    segment_generation: int
    original_bytes: int
    stripe_bytes: int

    def __post_init__(self) -> None:
        if self.code not in BACKENDS:
            raise ValueError(f"unknown code id {self.code}")
        if not 0 <= self.fragment < self.k + self.m:
            raise ValueError(f"fragment {self.fragment} outside 0..{self.k + self.m - 1}")
        self.layout  # noqa: B018 -- validates k, m and the stripe size

    @property
    def layout(self) -> SegmentLayout:
        return SegmentLayout.from_stripe_bytes(self.k, self.m, self.stripe_bytes,
                                               self.original_bytes)

    @property
    def stripe_count(self) -> int:
        return self.layout.stripe_count

    @property
    def data_offset(self) -> int:
        """Where the fragment's byte 0 is in the file."""
        return HEADER_BYTES + 8 * self.stripe_count + 8

    @property
    def file_bytes(self) -> int:
        return self.data_offset + self.layout.fragment_bytes

    def pack(self) -> bytes:
        fixed = _HEAD.pack(MAGIC, VERSION, self.code, self.k, self.m, self.fragment,
                           self.partition_id, self.segment_number, self.segment_generation,
                           self.original_bytes, self.stripe_bytes, self.stripe_count)
        return fixed + _U64.pack(_xxh(fixed))


def _unpack_header(raw: bytes) -> FragmentHeader:
    if len(raw) < HEADER_BYTES:
        raise DataCorrupt(f"fragment file torn: {len(raw)} bytes, shorter than its header")
    (magic, version, code, k, m, frag, pid, seg, gen, orig, stripe, count) = \
        _HEAD.unpack_from(raw)
    if magic != MAGIC:
        raise DataCorrupt(f"not a fragment file (magic {magic!r})")
    if _U64.unpack_from(raw, _HEAD.size)[0] != _xxh(raw[:_HEAD.size]):
        raise DataCorrupt("fragment file header fails its checksum")
    if version != VERSION:
        raise DataCorrupt(f"fragment file format version {version}: this build reads "
                          f"{VERSION} only")
    try:
        h = FragmentHeader(code, k, m, frag, pid, seg, gen, orig, stripe)
    except ValueError as e:
        raise DataCorrupt(f"fragment file header is inconsistent: {e}") from e
    if h.stripe_count != count:
        raise DataCorrupt(f"fragment file header says {count} stripes, its sizes {h.stripe_count}")
    return h


def read_header(f: BinaryIO) -> tuple[FragmentHeader, tuple[int, ...]]:
    """The header and per-stripe block checksums of an open fragment file (checked)."""
    f.seek(0)
    h = _unpack_header(f.read(HEADER_BYTES))
    n = h.stripe_count
    table = f.read(8 * n + 8)
    if len(table) < 8 * n + 8:
        raise DataCorrupt(f"fragment file torn inside its checksum table ({len(table)} of "
                          f"{8 * n + 8} bytes)")
    if _U64.unpack_from(table, 8 * n)[0] != _xxh(table[:8 * n]):
        raise DataCorrupt("fragment file checksum table fails its checksum")
    return h, struct.unpack_from(f"<{n}Q", table)


class FragmentWriter:
    """Writes one fragment file: ``add`` each stripe's block in order, then ``finish``.
    Until ``finish`` returns, only ``<path>.tmp`` exists; ``abort`` removes it."""

    def __init__(self, path: str | os.PathLike[str], header: FragmentHeader) -> None:
        self.path, self.header = os.fspath(path), header
        self.tmp = self.path + ".tmp"
        self._stripes = header.layout.stripes()
        self._sums: list[int] = []
        self._f: BinaryIO | None = open(self.tmp, "wb")  # noqa: SIM115 -- closed in finish
        self._f.write(bytes(header.data_offset))  # header and table: written last

    def add(self, block: Block) -> None:
        assert self._f is not None, "fragment writer already closed"
        s = len(self._sums)
        if s >= len(self._stripes):
            raise ValueError(f"stripe {s} past the {len(self._stripes)} of the segment")
        if len(block) != self._stripes[s].block_bytes:
            raise ValueError(f"stripe {s}: block of {len(block)} bytes, the layout says "
                             f"{self._stripes[s].block_bytes}")
        self._f.write(block)
        self._sums.append(_xxh(block))

    def finish(self) -> None:
        assert self._f is not None, "fragment writer already closed"
        if len(self._sums) != len(self._stripes):
            raise ValueError(f"{len(self._sums)} of {len(self._stripes)} stripes written")
        table = struct.pack(f"<{len(self._sums)}Q", *self._sums)
        self._f.seek(0)
        self._f.write(self.header.pack() + table + _U64.pack(_xxh(table)))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        os.replace(self.tmp, self.path)
        dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            os.remove(self.tmp)
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class VerifyReport:
    path: str
    header: FragmentHeader | None
    problems: tuple[str, ...] = ()
    bad_stripes: tuple[int, ...] = ()  # blocks that fail their checksum: rebuild them
    torn: bool = False  # the file ends before its last block
    checksums: tuple[int, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems


def _blocks(f: BinaryIO, h: FragmentHeader) -> Iterator[tuple[int, bytes]]:
    f.seek(h.data_offset)
    for st in h.layout.stripes():
        yield st.index, f.read(st.block_bytes)


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check the header, the table and every block of a fragment file, one block in memory
    at a time. Never raises for a damaged file: the report says what is wrong."""
    p = os.fspath(path)
    with open(p, "rb") as f:
        try:
            h, sums = read_header(f)
        except DataCorrupt as e:
            return VerifyReport(p, None, (str(e),), torn="torn" in str(e))
        size = os.fstat(f.fileno()).st_size
        problems: list[str] = []
        torn = size < h.file_bytes
        if torn:
            problems.append(f"torn: {size} bytes, the header promises {h.file_bytes}")
        elif size > h.file_bytes:
            problems.append(f"{size - h.file_bytes} bytes past the last block")
        bad = []
        for s, block in _blocks(f, h):
            if len(block) < h.layout.stripe(s).block_bytes:
                break  # the torn tail, reported above
            if _xxh(block) != sums[s]:
                bad.append(s)
        if bad:
            problems.append(f"stripes {_ranges(bad)} fail their checksum")
        return VerifyReport(p, h, tuple(problems), tuple(bad), torn, sums)


def _ranges(xs: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    runs: list[list[int]] = []
    for x in xs:
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def dump(path: str | os.PathLike[str]) -> str:
    """A human-readable account of a fragment file and its health (for ``ambry admin``)."""
    r = verify(path)
    lines = [f"{r.path}:"]
    if r.header is not None:
        h = r.header
        role = "data" if h.fragment < h.k else "parity"
        lines.append(f"  format v{VERSION}, code {BACKENDS[h.code]} (id {h.code}), "
                     f"k={h.k} m={h.m}, fragment {h.fragment} ({role})")
        lines.append(f"  partition {h.partition_id}, segment {h.segment_number} generation "
                     f"{h.segment_generation}, {h.original_bytes} bytes encoded")
        lines.append(f"  {h.stripe_count} stripes of {h.stripe_bytes} bytes (block "
                     f"{h.layout.block_bytes}), fragment {h.layout.fragment_bytes} bytes "
                     f"from offset {h.data_offset}")
    lines += [f"  {'OK' if r.ok else 'DAMAGED'}"] + [f"  - {p}" for p in r.problems]
    return "\n".join(lines)
