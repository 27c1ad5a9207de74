"""The SDK's pure pieces: part and range planning, Content-Range checks, the resume journal
(torn tails, stale keys, age), upload sources (bytes, files, iterators), header parsing and
the end-to-end verifier."""

from __future__ import annotations

import asyncio
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from ambry.client import BlobInfo, IntegrityError, InvalidBlobId
from ambry.client._download import (
    Verifier,
    check_range_reply,
    ordered_ranges,
    parse_content_range,
    plan_ranges,
)
from ambry.client._resume import FinishedPart, ResumeJournal
from ambry.client._source import Source, open_source
from ambry.client._types import check_blob_id, info_from_headers
from ambry.client._upload import chunk_ttl_s, split_parts

ID = "AAEAAQABAAEAAAAAAAAAAibvssKsqr4aCcV0HsRS_VU"


# ------------------------------------------------------------------ planning
@given(st.binary(max_size=300), st.integers(1, 64))
def test_split_parts_rejoins_to_the_input(data, part):
    parts = split_parts(data, part)
    assert b"".join(parts) == data
    assert all(len(p) == part for p in parts[:-1])
    assert all(0 < len(p) <= part for p in parts)


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 5000))
def test_ranges_cover_the_rest_exactly_once_in_order(start, extra, size):
    total = start + extra
    ranges = plan_ranges(start, total, size)
    pos = start
    for off, length in ranges:
        assert off == pos and 0 < length <= size
        pos += length
    assert pos == total


def test_chunk_ttl_outlives_the_blob_by_the_resume_window():
    assert chunk_ttl_s(-1, 86400) == 86400
    assert chunk_ttl_s(3600, 86400) == 3600 + 86400
    with pytest.raises(ValueError):
        chunk_ttl_s(-1, 0)


def test_content_range_parsing():
    assert parse_content_range("bytes 0-9/100") == (0, 9, 100)
    assert parse_content_range("bytes */100") is None
    assert parse_content_range(None) is None


def test_a_range_reply_must_be_the_range_and_blob_asked_for():
    h = {"Content-Range": "bytes 10-19/100", "ETag": f'"{ID}"'}
    assert check_range_reply(206, h, 10, 10, ID, "x") == 100
    with pytest.raises(IntegrityError):
        check_range_reply(206, h, 0, 10, ID, "x")  # another range
    with pytest.raises(IntegrityError):
        check_range_reply(206, h, 10, 10, "B" * 43, "x")  # another blob
    # a server that ignores Range is fine only when the range was the whole blob
    assert check_range_reply(200, {"Content-Length": "5"}, 0, 5, None, "x") == 5
    with pytest.raises(IntegrityError):
        check_range_reply(200, {"Content-Length": "100"}, 0, 5, None, "x")


async def test_ordered_ranges_keep_order_and_bound_the_window():
    inflight = 0
    peak = 0

    async def fetch(off: int, n: int) -> bytes:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.001 * ((off * 7) % 5))  # finish out of order
        inflight -= 1
        return bytes([off % 256]) * n

    ranges = plan_ranges(0, 100, 7)
    got = [(off, data) async for off, data in ordered_ranges(fetch, ranges, 3)]
    assert [o for o, _ in got] == [o for o, _ in ranges]
    assert peak <= 3


async def test_ordered_ranges_cancel_the_rest_on_failure():
    started: list[int] = []
    cancelled: list[int] = []

    async def fetch(off: int, n: int) -> bytes:
        started.append(off)
        if off == 0:
            await asyncio.sleep(0.01)
            raise RuntimeError("boom")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(off)
            raise
        return b""

    with pytest.raises(RuntimeError):
        async for _ in ordered_ranges(fetch, plan_ranges(0, 100, 10), 4):
            pass
    assert started == [0, 10, 20, 30]  # the window: no more than 4 started
    assert sorted(cancelled) == [10, 20, 30]


# ------------------------------------------------------------------ journal
KEY = {"path": "/x", "size": 10, "mtime_ns": 1}


def test_journal_keeps_finished_parts_across_opens(tmp_path: Path):
    j = ResumeJournal.open(tmp_path, KEY, 4, max_age_s=100, now_s=1000)
    j.append(FinishedPart(0, "c0", "h0", 4))
    j.append(FinishedPart(2, "c2", "h2", 2))
    j.close()
    again = ResumeJournal.open(tmp_path, KEY, 4, max_age_s=100, now_s=1050)
    assert again.parts == {0: FinishedPart(0, "c0", "h0", 4), 2: FinishedPart(2, "c2", "h2", 2)}
    again.remove()
    assert not again.path.exists()


def test_journal_drops_a_torn_tail_and_appends_on_a_new_line(tmp_path: Path):
    # a kill -9 in the middle of a write leaves half a line
    j = ResumeJournal.open(tmp_path, KEY, 4, max_age_s=100, now_s=1000)
    j.append(FinishedPart(0, "c0", "h0", 4))
    j.close()
    with open(j.path, "a") as f:
        f.write('{"i": 1, "id": "c1", "xx')
    j2 = ResumeJournal.open(tmp_path, KEY, 4, max_age_s=100, now_s=1000)
    assert set(j2.parts) == {0}
    j2.append(FinishedPart(1, "c1", "h1", 4))
    j2.close()
    assert set(ResumeJournal.open(tmp_path, KEY, 4, max_age_s=100, now_s=1000).parts) == {0, 1}


@pytest.mark.parametrize("change", ["other part size", "too old", "garbage header"])
def test_journal_starts_over_when_it_cannot_be_trusted(tmp_path: Path, change):
    j = ResumeJournal.open(tmp_path, KEY, 4, max_age_s=100, now_s=1000)
    j.append(FinishedPart(0, "c0", "h0", 4))
    j.close()
    part, now = 4, 1000.0
    if change == "other part size":
        part = 8
        # another part size is another key, hence another file: the old one is not read
    elif change == "too old":
        now = 1101.0
    else:
        j.path.write_text("not json\n" + json.dumps({"i": 0, "id": "c0", "xxh3": "h",
                                                     "n": 4}) + "\n")
    assert ResumeJournal.open(tmp_path, KEY, part, max_age_s=100, now_s=now).parts == {}


def test_prune_deletes_only_journals_untouched_for_the_window(tmp_path: Path):
    import os

    old = ResumeJournal.open(tmp_path, KEY, 4, max_age_s=100)
    new = ResumeJournal.open(tmp_path, {**KEY, "size": 11}, 4, max_age_s=100)
    other = tmp_path / "unrelated.txt"
    other.write_text("keep")
    os.utime(old.path, (1000, 1000))
    os.utime(other, (1000, 1000))
    assert ResumeJournal.prune(tmp_path, max_age_s=3600) == 1
    assert not old.path.exists() and new.path.exists() and other.exists()


def test_journal_file_names_differ_by_key(tmp_path: Path):
    a = ResumeJournal.file_for(tmp_path, KEY)
    b = ResumeJournal.file_for(tmp_path, {**KEY, "mtime_ns": 2})
    assert a != b and a.parent == tmp_path


# ------------------------------------------------------------------ sources
async def read_all(src: Source, n: int) -> list[bytes]:
    out = []
    while piece := await src.read(n):
        out.append(piece)
    return out


@pytest.fixture
def executor():
    with ThreadPoolExecutor(2) as ex:
        yield ex


@given(st.lists(st.binary(max_size=40), max_size=12), st.integers(1, 50))
def test_iterator_sources_are_cut_into_exact_parts(pieces, n):
    async def go() -> list[bytes]:
        with ThreadPoolExecutor(1) as ex:
            src = open_source(iter(pieces), ex)
            assert src.size is None and not src.can_restart()
            return await read_all(src, n)

    parts = asyncio.run(go())
    data = b"".join(pieces)
    assert parts == split_parts(data, n)


async def test_async_iterator_source(executor):
    async def gen():
        for i in range(5):
            yield bytes([i]) * 3

    assert b"".join(await read_all(open_source(gen(), executor), 4)) == \
        b"".join(bytes([i]) * 3 for i in range(5))


async def test_path_source_knows_size_and_identity_and_restarts(tmp_path: Path, executor):
    p = tmp_path / "f.bin"
    p.write_bytes(b"0123456789")
    src = open_source(str(p), executor)
    try:
        assert src.size == 10 and src.path == p.resolve() and src.stat is not None
        assert await read_all(src, 4) == [b"0123", b"4567", b"89"]
        await src.restart()
        assert await src.read(3) == b"012"
    finally:
        await src.aclose()


async def test_file_object_source_starts_at_its_position(executor):
    f = io.BytesIO(b"headerPAYLOAD")
    f.seek(6)
    src = open_source(f, executor)
    assert src.size == 7
    assert await read_all(src, 100) == [b"PAYLOAD"]
    await src.restart()
    assert await src.read(3) == b"PAY"


async def test_text_files_and_odd_types_are_refused(executor):
    with pytest.raises(TypeError):
        await open_source(io.StringIO("text"), executor).read(10)
    with pytest.raises(TypeError):
        open_source(12345, executor)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await open_source(iter(["str, not bytes"]), executor).read(10)


async def test_bytes_source_restarts(executor):
    src = open_source(memoryview(b"abcdef"), executor)
    assert await src.read(4) == b"abcd"
    await src.restart()
    assert await read_all(src, 4) == [b"abcd", b"ef"]


# ------------------------------------------------------------------ headers and verifier
def test_blob_ids_are_checked_before_they_become_paths():
    assert check_blob_id("/" + ID) == ID
    for bad in ["", "a/b", "id with space", "../x", "x?y"]:
        with pytest.raises(InvalidBlobId):
            check_blob_id(bad)


def test_info_from_headers():
    info = info_from_headers({
        "ETag": f'"{ID}"', "x-ambry-blob-size": "12", "x-ambry-content-type": "text/plain",
        "x-ambry-service-id": "svc", "x-ambry-creation-time": "Tue, 14 Nov 2023 22:13:20 GMT",
        "x-ambry-ttl": "60", "x-ambry-um-run": "42", "X-Ambry-Um-Ambry-Content-Xxh3": "ABC",
        "x-ambry-deleted": "true", "x-ambry-life-version": "2",
        "x-ambry-target-account-name": "default", "x-ambry-target-container-name": "models"})
    assert info.blob_id == ID and info.size == 12 and info.content_type == "text/plain"
    assert info.user_metadata == {"run": "42"} and info.content_xxh3 == "abc"
    assert info.ttl_s == 60 and info.expires is not None
    assert (info.expires - info.created).total_seconds() == 60
    assert info.deleted and info.life_version == 2 and info.container == "models"
    assert info_from_headers({"x-ambry-ttl": "-1"}).ttl_s is None


def _info(data: bytes, xxh3: str | None) -> BlobInfo:
    return info_from_headers({"ETag": f'"{ID}"', "x-ambry-blob-size": str(len(data)),
                              **({"x-ambry-um-ambry-content-xxh3": xxh3} if xxh3 else {})})


def test_verifier_checks_size_and_xxh3():
    data = b"hello world"
    good = xxhash.xxh3_64_hexdigest(data)
    v = Verifier(_info(data, good))
    v.update(data[:5])
    v.update(data[5:])
    v.finish()
    v = Verifier(_info(data, good))
    v.update(b"hello WORLD")
    with pytest.raises(IntegrityError):
        v.finish()
    v = Verifier(_info(data, None))  # uploaded without a checksum: the size still counts
    v.update(data[:3])
    with pytest.raises(IntegrityError):
        v.finish()
