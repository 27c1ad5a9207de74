#!/usr/bin/env python3
"""Erasure-code libraries for the warm tier (issue 17), measured on this machine.

For each library and code (k=2,m=1 and k=4,m=2) and stripe size, one thread:
  * encode: a whole segment, stripe by stripe (k data blocks in, m parity blocks out);
  * decode: the same segment back from k blocks per stripe with m DATA blocks missing (the
    worst case: every stripe needs the Reed-Solomon arithmetic), verified byte for byte;
in MB/s of segment data per CPU-second (``time.process_time``, so a busy machine lowers the
numbers less than wall time would; one thread = one core) and per wall second.
Rows: pyeclib with ISA-L (``isa_l_rs_vand``), pyeclib with liberasurecode's own Reed-Solomon
(``liberasurecode_rs_vand``), zfec, and ``ambry.ec.codec`` (the wrapper the store uses:
pyeclib/ISA-L plus an xxh3_64 per block on encode and on decode). Beside them, the limits they
are compared with: memory copy and xxh3_64 on one core. Each figure is the best of
``--repeat`` passes. A library that is not installed is a row saying so.

    python benchmarks/bench_ec.py                 # 64 MiB segments, 1/2/4/8 MiB stripes
    python benchmarks/bench_ec.py --smoke         # 8 MiB, 1 and 4 MiB stripes, one pass
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xxhash

from ambry.ec.layout import SegmentLayout
from benchmarks._results import print_run_header

MiB = 1 << 20


class Coder(Protocol):
    """Encode a stripe to k + m blocks; decode the stripe from k of them."""

    def encode(self, stripe: bytes, block: int) -> list[bytes]: ...

    def decode(self, blocks: dict[int, bytes], block: int, data_bytes: int) -> bytes: ...


class PyECLibCoder:
    def __init__(self, k: int, m: int, ec_type: str) -> None:
        from pyeclib.ec_iface import ECDriver

        self.k, self.driver = k, ECDriver(k=k, m=m, ec_type=ec_type)

    def encode(self, stripe: bytes, block: int) -> list[bytes]:
        # pyeclib's fragments, its own framing included (that is what it hands back)
        return list(self.driver.encode(stripe))

    def decode(self, blocks: dict[int, bytes], block: int, data_bytes: int) -> bytes:
        return bytes(self.driver.decode(list(blocks.values())))[:data_bytes]


class ZfecCoder:
    def __init__(self, k: int, m: int) -> None:
        import zfec

        self.k, self.n = k, k + m
        self.enc = zfec.Encoder(k, k + m)
        self.dec = zfec.Decoder(k, k + m)
        self.parity = list(range(k, k + m))

    def encode(self, stripe: bytes, block: int) -> list[bytes]:
        mv = memoryview(stripe)
        data = [mv[j * block:(j + 1) * block] for j in range(self.k)]
        return [bytes(b) for b in data] + list(self.enc.encode(data, self.parity))

    def decode(self, blocks: dict[int, bytes], block: int, data_bytes: int) -> bytes:
        nums = sorted(blocks)[:self.k]
        return b"".join(self.dec.decode([blocks[i] for i in nums], nums))[:data_bytes]


class AmbryCoder:
    def __init__(self, k: int, m: int) -> None:
        from ambry.ec.codec import Codec

        self.codec = Codec(k, m)
        # the checksums recorded at encode, handed back at decode (stripes decode in the order
        # they were encoded)
        self.sums: collections.deque[tuple[int, ...]] = collections.deque()

    def encode(self, stripe: bytes, block: int) -> list[bytes]:
        e = self.codec.encode(stripe, block)
        self.sums.append(e.checksums)
        return list(e.blocks)

    def decode(self, blocks: dict[int, bytes], block: int, data_bytes: int) -> bytes:
        return self.codec.decode(blocks, self.sums.popleft(), block, data_bytes).data


LIBRARIES: list[tuple[str, str, Callable[[int, int], Any]]] = [
    ("pyeclib isa_l_rs_vand", "pyeclib", lambda k, m: PyECLibCoder(k, m, "isa_l_rs_vand")),
    ("pyeclib liberasurecode_rs_vand", "pyeclib",
     lambda k, m: PyECLibCoder(k, m, "liberasurecode_rs_vand")),
    ("zfec", "zfec", ZfecCoder),
    ("ambry.ec.codec (ISA-L + xxh3)", "pyeclib", AmbryCoder),
]


def install_facts(dist: str) -> str:
    """How the installed distribution came: its wheel tag, and whether it carries its own
    native libraries (auditwheel's ``<name>.libs``)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    tags = [ln.split(": ", 1)[1] for ln in (d.read_text("WHEEL") or "").splitlines()
            if ln.startswith("Tag: ")]
    bundled = sorted({Path(str(f)).name.split("-")[0] for f in d.files or []
                      if ".libs/" in str(f)})
    libs = f"; bundles {', '.join(bundled)}" if bundled else ""
    return f"{dist} {d.version}, wheel {tags[0] if tags else '?'}{libs}"


def measure(coder: Any, layout: SegmentLayout, segment: bytes, repeat: int
            ) -> tuple[float, float, float, float]:
    """(encode MB/s per CPU s, encode MB/s wall, decode per CPU s, decode wall); decode drops
    data blocks 0..m-1 of every stripe and checks the bytes it gets back."""
    stripes = layout.stripes()
    mb = layout.segment_bytes / 1e6
    best = [0.0, 0.0, 0.0, 0.0]
    for _ in range(repeat):
        encoded: list[list[bytes]] = []
        c0, w0 = time.process_time(), time.perf_counter()
        for st in stripes:
            chunk = segment[st.segment_offset:st.segment_offset + st.data_bytes]
            stripe = chunk + bytes(layout.k * st.block_bytes - st.data_bytes)
            encoded.append(coder.encode(stripe, st.block_bytes))
        c1, w1 = time.process_time(), time.perf_counter()
        # every stripe loses its first m data blocks: all need reconstruction
        out = []
        for st, blocks in zip(stripes, encoded, strict=True):
            have = {i: b for i, b in enumerate(blocks) if i >= layout.m}
            out.append(coder.decode(have, st.block_bytes, st.data_bytes))
        c2, w2 = time.process_time(), time.perf_counter()
        if b"".join(out) != segment:
            raise SystemExit(f"{type(coder).__name__}: decode returned other bytes")
        best = [max(best[0], mb / max(c1 - c0, 1e-9)), max(best[1], mb / (w1 - w0)),
                max(best[2], mb / max(c2 - c1, 1e-9)), max(best[3], mb / (w2 - w1))]
        del encoded, out
    return best[0], best[1], best[2], best[3]


def machine_limits(segment: bytes, repeat: int) -> dict[str, float]:
    """One core, MB/s per CPU second: memcpy of the whole segment (memory to memory) and of
    1 MiB over and over (in cache; a stripe's working set), into buffers already mapped so
    the copy is the copy alone; xxh3_64 of the segment."""
    mb = len(segment) / 1e6
    dst = bytearray(len(segment))
    dst[:] = segment
    small, small_dst = segment[:MiB], bytearray(MiB)
    best = {"memcpy, whole segment (memory)": 0.0, "memcpy, 1 MiB again and again (cache)": 0.0,
            "xxh3_64": 0.0}
    for _ in range(repeat):
        c0 = time.process_time()
        dst[:] = segment
        c1 = time.process_time()
        for _ in range(len(segment) // MiB):
            small_dst[:] = small
        c2 = time.process_time()
        xxhash.xxh3_64_intdigest(segment)
        c3 = time.process_time()
        for key, dt in zip(best, (c1 - c0, c2 - c1, c3 - c2), strict=True):
            best[key] = max(best[key], mb / max(dt, 1e-9))
    return best


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (a few seconds)")
    ap.add_argument("--segment-mib", type=int, default=64)
    ap.add_argument("--stripe-mib", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--codes", nargs="+", default=["2+1", "4+2"], help="k+m")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    print_run_header(__file__, argv)
    if a.smoke:
        a.segment_mib, a.stripe_mib, a.repeat = 8, [1, 4], 1
    segment = os.urandom(a.segment_mib * MiB)
    codes = [tuple(int(x) for x in c.split("+")) for c in a.codes]

    print("## How each library installs here\n")
    for dist in ("pyeclib", "zfec"):
        print(f"- {install_facts(dist)}")
    print("\n## Machine limits (one core)\n")
    print("| operation | MB/s per CPU s |\n|---|---:|")
    for name, v in machine_limits(segment, a.repeat).items():
        print(f"| {name} | {v:,.0f} |")
    print(f"\n## Encode and decode, {a.segment_mib} MiB segment, one thread, best of "
          f"{a.repeat}\n")
    print("Decode = reconstruct the segment with the first m data blocks of every stripe "
          "missing (verified). MB/s of segment data.\n")
    print("| library | k+m | stripe | encode MB/s per core | encode MB/s wall "
          "| decode MB/s per core | decode MB/s wall |")
    print("|---|---|---:|---:|---:|---:|---:|")
    missing = 0
    for label, dist, make in LIBRARIES:
        for k, m in codes:
            try:
                coder = make(k, m)
            except ImportError as e:
                # zfec is not a dependency (the choice is made): `pip install zfec` to compare
                print(f"| {label} | {k}+{m} | - | not installed ({e}; `pip install {dist}` "
                      "to compare) | | | |")
                missing += 1
                break
            for stripe_mib in a.stripe_mib:
                layout = SegmentLayout.plan(k, m, len(segment), stripe_mib * MiB)
                ec, ew, dc, dw = measure(coder, layout, segment, a.repeat)
                print(f"| {label} | {k}+{m} | {stripe_mib} MiB | {ec:,.0f} | {ew:,.0f} "
                      f"| {dc:,.0f} | {dw:,.0f} |", flush=True)
    # the store's own codec must be there: the smoke run fails without it
    from ambry.ec.codec import Codec

    Codec(2, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
