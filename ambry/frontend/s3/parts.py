"""The part map of a completed multipart object: which bytes GET ``?partNumber=N`` serves.

Owns the stored form of a multipart object's part sizes and the pure arithmetic on it.
CompleteMultipartUpload keeps the sizes of the parts, in the order they were completed, in the
object's user metadata under :data:`UM_PART_SIZES`, run-length encoded so the usual shape
(equal parts and a shorter last one) costs a few bytes whatever the part count::

    s3.part-sizes = "8388608*12,1048576"     12 parts of 8 MiB, then one of 1 MiB
                    run := <size> | <size>*<count>      (decimal, count >= 2, no spaces)

Part N of a GET is the N-th *completed* part (1..parts count, as AWS numbers them), whatever
part number it was uploaded under. A map longer than :data:`MAX_PART_MAP_BYTES` (thousands of
parts of distinct sizes) is not stored, to keep the object's metadata small enough to travel
as HTTP headers on the REST API; such objects, and multipart objects completed before maps
were kept, have no known boundaries and read as a single part (what AWS does for an object it
holds no part information for: ``partNumber=1`` is the whole object).

Does not own HTTP (``ambry.frontend.s3.objects`` serves GET ``?partNumber``) nor completing
an upload (``ambry.frontend.s3.multipart``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ambry.common.errors import DataCorrupt

__all__ = ["MAX_PART_MAP_BYTES", "UM_PART_SIZES", "decode_part_sizes", "encode_part_sizes",
           "part_span"]

#: User-metadata key of the part map (the S3 layer's ``s3.`` keys are never shown as
#: ``x-amz-meta-*``).
UM_PART_SIZES = "s3.part-sizes"
#: The longest part map kept with an object (the REST API shows user metadata as headers).
MAX_PART_MAP_BYTES = 4096
_MAX_PARTS = 10_000
_RUN = re.compile(r"(0|[1-9][0-9]{0,14})(?:\*([2-9]|[1-9][0-9]{1,4}))?", re.ASCII)


def encode_part_sizes(sizes: Sequence[int]) -> str | None:
    """The stored form of ``sizes`` (in completion order); None when it would be longer than
    :data:`MAX_PART_MAP_BYTES` (the object then reads as one part)."""
    assert sizes and all(s >= 0 for s in sizes), sizes
    runs: list[str] = []
    i = 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and sizes[j] == sizes[i]:
            j += 1
        runs.append(str(sizes[i]) if j - i == 1 else f"{sizes[i]}*{j - i}")
        i = j
    text = ",".join(runs)
    return text if len(text) <= MAX_PART_MAP_BYTES else None


def decode_part_sizes(text: str, total_size: int) -> list[int]:
    """The part sizes of a stored map; ``DataCorrupt`` when it is malformed or does not add
    up to the object's size (only a frontend writes it, so a bad one is corruption)."""
    sizes: list[int] = []
    for run in text.split(","):
        m = _RUN.fullmatch(run)
        if m is None:
            raise DataCorrupt(f"part map: bad run {run[:40]!r}")
        count = int(m.group(2) or 1)
        if len(sizes) + count > _MAX_PARTS:
            raise DataCorrupt(f"part map: more than {_MAX_PARTS} parts")
        sizes += [int(m.group(1))] * count
    if sum(sizes) != total_size:
        raise DataCorrupt(f"part map: parts add up to {sum(sizes)}, the object has "
                          f"{total_size} bytes")
    return sizes


def part_span(sizes: Sequence[int], number: int) -> tuple[int, int] | None:
    """``(start, length)`` of part ``number`` (1-based), None when there is no such part."""
    if not 1 <= number <= len(sizes):
        return None
    return sum(sizes[:number - 1]), sizes[number - 1]
