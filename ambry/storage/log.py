"""A replica's append-only log: segment files, appends, reads, group commit and the tail scan.

Owns the segment files of one replica directory: opening them, appending records at the end
(rolling to a new segment when the active one is full), reading byte ranges back, making
appends durable (group commit: concurrent appends share one ``fdatasync``), and scanning
records in order while telling a torn tail (truncate) from damage in the middle (quarantine and
report). Does not own what records mean (``replica``) nor how they are laid out (``format``).

Thread safety: ``append`` and ``roll`` must be called with ``Log.lock`` held (the replica holds
it across index update + append so that log order equals sequence order). Reads need no lock:
segments are append-only and a reader holds a reference to the file it reads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import xxhash

from ambry.common.errors import DataCorrupt, DiskFull, StorageError
from ambry.storage import filenames
from ambry.storage.disk import Disk, DiskFile
from ambry.storage.format import (
    RECORD_HEADER_SIZE,
    RECORD_MAGIC,
    SEGMENT_HEADER_SIZE,
    RecordHeader,
    SegmentHeader,
    decode_record_header,
)
from ambry.storage.skeleton import open_segment

__all__ = ["Damage", "Log", "Position", "ScannedRecord", "Segment"]

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (segment number, byte offset); compares in log order
_VERIFY_BUF_BYTES = 4 * 1024 * 1024
_JOIN_PARTS_MAX_BYTES = 256 * 1024
# scan reads the log through a window that grows while records are small (one pread for many
# records instead of 2-3 per record) and shrinks when they are large (a big record's header
# must not cost a read of the window)
_SCAN_WINDOW_MIN = 4 * 1024
_SCAN_WINDOW_START = 64 * 1024
_SCAN_WINDOW_MAX = 1024 * 1024


class _ScanWindow:
    """A read-ahead window over one segment for :meth:`Log.scan` (bytes below the scan's
    ``end`` do not change while it runs)."""

    def __init__(self) -> None:
        self.seg: Segment | None = None
        self.off = 0
        self.buf = b""
        self.size = _SCAN_WINDOW_START
        self.used = 0  # records served from the current window

    def get(self, seg: Segment, off: int, n: int, limit: int) -> memoryview | None:
        """``n`` bytes at ``off`` (reading at most up to ``limit``), or None when they are
        not all in a window and larger than its maximum (the caller reads them directly)."""
        rel = off - self.off
        if self.seg is seg and rel >= 0 and rel + n <= len(self.buf):
            self.used += 1
            return memoryview(self.buf)[rel:rel + n]
        if n > _SCAN_WINDOW_MAX:
            return None
        if self.seg is not None:
            self.size = min(_SCAN_WINDOW_MAX, self.size * 2) if self.used >= 4 else \
                max(_SCAN_WINDOW_MIN, self.size // 2)
        self.seg, self.off, self.used = seg, off, 1
        self.buf = seg.file.pread(max(n, min(self.size, limit - off)), off)
        return memoryview(self.buf)[:n] if len(self.buf) >= n else None


@dataclass
class Segment:
    number: int
    generation: int
    file: DiskFile
    size: int  # bytes written (the append point)
    synced_size: int = 0

    @property
    def name(self) -> str:
        return filenames.segment_name(self.number, self.generation)


@dataclass(frozen=True)
class ScannedRecord:
    position: Position
    header: RecordHeader
    key: bytes


@dataclass(frozen=True)
class Damage:
    """A range of the log that recovery could not use. ``kind`` is torn_tail or corrupt."""

    kind: str
    segment: int
    generation: int
    offset: int
    length: int
    reason: str
    quarantined_as: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class Log:
    def __init__(self, directory: str, disk: Disk, segment_size_bytes: int,
                 durability: str = "fsync", flush_interval_ms: int = 1000) -> None:
        self.dir = directory
        self.disk = disk
        self.segment_size = segment_size_bytes
        self.durability = durability
        self.flush_interval_s = flush_interval_ms / 1000.0
        self.lock = threading.RLock()
        self.segments: list[Segment] = []
        self.failed: StorageError | None = None  # set after a write/sync error: read-only
        self._durable: Position = (0, 0)
        self._cv = threading.Condition()
        # (position, future) per waiter: concurrent futures (threads) or asyncio futures
        self._waiters: list[tuple[Position, _Waiter]] = []
        self._closing = False
        self._committer: threading.Thread | None = None
        self.syncs = 0  # number of fdatasync calls made by group commit (for stats)
        self.pending_damage: list[Damage] = []  # found while opening read-only

    # -- opening -----------------------------------------------------------------------------
    def open_existing(self, readonly: bool = False) -> None:
        """Open the segment files present (highest generation of each number wins).
        ``readonly`` (inspection tools): change nothing on disk, fail instead of repairing."""
        best: dict[int, int] = {}
        for name in self.disk.listdir(self.dir):
            parsed = filenames.parse_segment_name(name)
            if parsed is not None:
                num, gen = parsed
                best[num] = max(gen, best.get(num, -1))
        for num in sorted(best):
            gen = best[num]
            path = os.path.join(self.dir, filenames.segment_name(num, gen))
            # a freed segment may have been rewritten as its skeleton (read as the segment)
            f = open_segment(self.disk, path, readonly=readonly)
            size = f.size()
            try:
                hdr = SegmentHeader.decode(f.pread(SEGMENT_HEADER_SIZE, 0))
                if (hdr.number, hdr.generation) != (num, gen):
                    raise DataCorrupt("segment header does not match its file name")
            except DataCorrupt as e:
                if num == max(best) and size < SEGMENT_HEADER_SIZE and readonly:
                    # a crash between creating the next segment and writing its header:
                    # recovery will complete it; an inspection reports it as a torn tail
                    self.pending_damage.append(Damage(
                        "torn_tail", num, gen, 0, size, "segment created but its header "
                        "was never written (crash while rolling to a new segment)"))
                    f.close()
                    continue
                if num == max(best) and size < SEGMENT_HEADER_SIZE and not readonly:
                    # a segment created but never completed before a crash: nothing in it
                    f.truncate(0)
                    f.pwrite(SegmentHeader(num, gen).encode(), 0)
                    f.fdatasync()
                    size = SEGMENT_HEADER_SIZE
                else:
                    raise StorageError(f"{path}: {e.message}") from None
            self.segments.append(Segment(num, gen, f, size, size))
        if not self.segments:
            if readonly:
                raise StorageError(f"{self.dir}: no log segments")
            self._create_segment(1, 0)
        self._durable = self.end

    def _create_segment(self, number: int, generation: int) -> Segment:
        path = os.path.join(self.dir, filenames.segment_name(number, generation))
        f = self.disk.open(path, create=True)
        f.truncate(0)
        f.pwrite(SegmentHeader(number, generation).encode(), 0)
        f.fdatasync()
        self.disk.fsync_dir(self.dir)
        seg = Segment(number, generation, f, SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE)
        self.segments.append(seg)
        return seg

    def start(self) -> None:
        self._committer = threading.Thread(target=self._commit_loop, daemon=True,
                                           name=f"group-commit:{self.dir}")
        self._committer.start()

    # -- positions ---------------------------------------------------------------------------
    @property
    def active(self) -> Segment:
        return self.segments[-1]

    @property
    def end(self) -> Position:
        seg = self.segments[-1]
        return (seg.number, seg.size)

    @property
    def durable(self) -> Position:
        return self._durable

    def segment(self, number: int) -> Segment:
        for seg in self.segments:
            if seg.number == number:
                return seg
        raise DataCorrupt(f"no segment {number}")

    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    # -- appending ---------------------------------------------------------------------------
    def append(self, parts: list[bytes | memoryview], length: int) -> Position:
        """Write one record (given as byte parts totalling ``length``) at the end of the log.

        Caller holds ``self.lock``. Returns the record's start position. On error the partial
        record is cut off again and the log becomes read-only (``failed``).
        """
        if self.failed is not None:
            raise self.failed
        if length > self.segment_size - SEGMENT_HEADER_SIZE:
            raise StorageError(f"record of {length} bytes does not fit in a segment")
        seg = self.active
        if seg.size + length > self.segment_size:
            seg = self._roll()
        start = seg.size
        try:
            if length <= _JOIN_PARTS_MAX_BYTES:  # one syscall for small records
                seg.file.pwrite(b"".join(parts), start)
            else:  # a large record: its parts in one pwritev, never joined
                seg.file.pwritev(parts, start)
        except OSError as e:
            self._fail_write(seg, start, e)
        seg.size = start + length
        if self.durability != "fsync":
            self._durable = (seg.number, seg.size)
        return (seg.number, start)

    def _fail_write(self, seg: Segment, start: int, e: OSError) -> None:
        """Cut a failed append off again. Disk full with a clean cut is not fatal (small
        records such as deletes may still fit later); any other error, or a cut that fails,
        makes the log read-only for good (until restart and recovery)."""
        cut = True
        try:
            seg.file.truncate(start)
        except OSError:
            cut = False
            log.exception("could not cut a failed append off %s", seg.name)
        if e.errno == errno.ENOSPC:
            err: StorageError = DiskFull(f"disk full writing {seg.name}")
            if not cut:
                self.failed = err
            raise err from e
        self.failed = StorageError(f"I/O error writing {seg.name}: {e}")
        raise self.failed from e

    def _roll(self) -> Segment:
        """Seal the active segment (made durable first) and start the next one."""
        old = self.active
        try:
            old.file.fdatasync()
            old.synced_size = old.size
            return self._create_segment(old.number + 1, 0)
        except OSError as e:
            self._fail_write(old, old.size, e)
            raise AssertionError("unreachable") from None

    # -- durability (group commit) ------------------------------------------------------------
    def durable_future(self, pos_end: Position) -> concurrent.futures.Future[None]:
        """A future that completes once every byte before ``pos_end`` is durable."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._add_waiter(pos_end, fut)
        return fut

    def durable_async(self, pos_end: Position) -> asyncio.Future[None]:
        """The same, as a future of the running event loop. The commit thread completes all
        the waiters of one loop with one ``call_soon_threadsafe`` per group commit (a
        wrapped concurrent future costs a wake-up of the loop per waiter)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._add_waiter(pos_end, fut)
        return fut

    def _add_waiter(self, pos_end: Position, fut: _Waiter) -> None:
        """Complete ``fut`` now if it can be (from the caller's thread, so an asyncio future
        is set in its own loop), else queue it for the commit thread."""
        with self._cv:
            if self.failed is not None and pos_end > self._durable:
                fut.set_exception(self.failed)
            elif pos_end <= self._durable:
                fut.set_result(None)
            else:
                self._waiters.append((pos_end, fut))
                if len(self._waiters) == 1:
                    # the commit thread only sleeps with no waiters; with some, it is
                    # already syncing and picks this one up on its next round
                    self._cv.notify()

    def wait_durable(self, pos_end: Position) -> None:
        self.durable_future(pos_end).result()

    def sync_now(self) -> Position:
        """fdatasync everything written so far (used by snapshots and shutdown)."""
        with self.lock:
            target = self.end
            pending = [s for s in self.segments if s.synced_size < s.size]
        for s in pending:
            s.file.fdatasync()
            s.synced_size = max(s.synced_size, s.size)
        self._advance(target)
        return target

    def _advance(self, target: Position) -> None:
        with self._cv:
            self._durable = max(self._durable, target)
            done = [w for w in self._waiters if w[0] <= self._durable]
            self._waiters = [w for w in self._waiters if w[0] > self._durable]
        _settle([fut for _, fut in done], None)

    def commit(self, target: Position) -> StorageError | None:
        """Make every byte before ``target`` durable now, from the caller's thread (the node's
        batch writer: one call per batch instead of a wake of the commit thread per write):
        one ``fdatasync`` per segment with unsynced bytes, then every waiter up to the new
        durable position is settled. Returns the error that makes the log read-only if the
        sync failed (those bytes may be gone: never ack them), else None."""
        if target <= self._durable:
            return None
        if self.failed is not None:
            return self.failed
        with self.lock:
            end = self.end
            pending = [(s, s.size) for s in self.segments if s.synced_size < s.size]
        try:
            for s, size in pending:
                s.file.fdatasync()
                s.synced_size = max(s.synced_size, size)
        except OSError as e:
            return self._fail_sync(e)
        self.syncs += 1
        self._advance(end)
        return None

    def _fail_sync(self, e: OSError) -> StorageError:
        """An fdatasync failed: the log turns read-only and every waiter gets the error."""
        err = StorageError(f"fdatasync failed: {e}")
        with self._cv:
            if self.failed is None:
                self.failed = err
            err = self.failed
            waiters, self._waiters = self._waiters, []
        _settle([fut for _, fut in waiters], err)
        log.error("replica log %s is read-only after fdatasync error: %s", self.dir, e)
        return err

    def _commit_loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiters and not self._closing:
                    timeout = self.flush_interval_s if self.durability != "fsync" else None
                    if not self._cv.wait(timeout) and self.durability != "fsync":
                        break  # periodic flush for the page-cache policy
                if self._closing and not self._waiters:
                    return
            try:
                with self.lock:
                    target = self.end
                    pending = [(s, s.size) for s in self.segments if s.synced_size < s.size]
                for s, size in pending:
                    s.file.fdatasync()
                    s.synced_size = max(s.synced_size, size)
                self.syncs += 1
                self._advance(target)
            except OSError as e:  # fsync failed: the data may be gone; never ack it
                self._fail_sync(e)
                return

    # -- reading -----------------------------------------------------------------------------
    def read(self, pos: Position, length: int) -> bytes:
        seg = self.segment(pos[0])
        data = seg.file.pread(length, pos[1])
        if len(data) != length:
            raise DataCorrupt(f"short read at {pos}")
        return data

    def read_header(self, pos: Position) -> RecordHeader:
        return decode_record_header(self.read(pos, RECORD_HEADER_SIZE))

    def verify_body(self, seg: Segment, offset: int, header: RecordHeader,
                    buf: bytearray | None = None) -> bool:
        """Re-read a record body in bounded pieces and compare its checksum."""
        import xxhash

        h = xxhash.xxh3_64()
        buf = buf if buf is not None else bytearray(min(_VERIFY_BUF_BYTES, max(1, header.body_len)))
        view = memoryview(buf)
        pos = offset + RECORD_HEADER_SIZE
        left = header.body_len
        while left > 0:
            n = seg.file.preadinto(view[:min(left, len(view))], pos)
            if n <= 0:
                return False
            h.update(view[:n])
            pos += n
            left -= n
        return h.intdigest() == header.body_xxh3

    # -- scanning and recovery ----------------------------------------------------------------
    def scan(self, start: Position, on_damage: Callable[[Damage], None] | None = None,
             verify: bool = True, repair: bool = False,
             end: Position | None = None) -> Iterator[ScannedRecord]:
        """Yield valid records from ``start`` to the end of the log (or ``end``) in order.

        Damage is reported through ``on_damage``. With ``repair`` (only during recovery, before
        the log takes appends) a torn tail of the last segment is copied to quarantine and cut
        off; damage elsewhere is copied to quarantine and skipped, never removed.
        """
        buf = bytearray(_VERIFY_BUF_BYTES) if verify else None
        win = _ScanWindow()
        for seg in list(self.segments):
            if seg.number < start[0]:
                continue
            off = start[1] if seg.number == start[0] else SEGMENT_HEADER_SIZE
            off = max(off, SEGMENT_HEADER_SIZE)
            is_last = seg is self.segments[-1]
            while off < seg.size:
                if end is not None and (seg.number, off) >= end:
                    return
                damage_reason = ""
                header: RecordHeader | None = None
                if seg.size - off < RECORD_HEADER_SIZE:
                    damage_reason = "truncated record header"
                else:
                    try:
                        raw = win.get(seg, off, RECORD_HEADER_SIZE, seg.size)
                        header = decode_record_header(
                            raw if raw is not None else seg.file.pread(RECORD_HEADER_SIZE, off))
                    except DataCorrupt as e:
                        damage_reason = e.message
                rec: memoryview | None = None
                if header is not None:
                    if off + header.total_len > seg.size:
                        damage_reason, header = "record runs past end of segment", None
                    elif verify:
                        rec = win.get(seg, off, header.total_len, seg.size)
                        if rec is not None:
                            ok = xxhash.xxh3_64_intdigest(
                                rec[RECORD_HEADER_SIZE:]) == header.body_xxh3
                        else:
                            ok = self.verify_body(seg, off, header, buf)
                        if not ok:
                            damage_reason = "record body checksum mismatch"
                if not damage_reason and header is not None:
                    if rec is not None:
                        key = bytes(rec[RECORD_HEADER_SIZE:RECORD_HEADER_SIZE + header.key_len])
                    else:
                        raw = win.get(seg, off + RECORD_HEADER_SIZE, header.key_len, seg.size)
                        key = bytes(raw) if raw is not None else \
                            seg.file.pread(header.key_len, off + RECORD_HEADER_SIZE)
                    yield ScannedRecord((seg.number, off), header, key)
                    off += header.total_len
                    continue
                # Damage. Where does the next valid record start?
                if header is not None:
                    nxt = off + header.total_len  # lengths are trusted: header checksum held
                else:
                    nxt = self._resync(seg, off + 1)
                if nxt >= seg.size and is_last:
                    kind = "torn_tail"
                else:
                    kind = "corrupt"
                dmg = Damage(kind, seg.number, seg.generation, off, min(nxt, seg.size) - off,
                             damage_reason)
                if repair:
                    dmg = self._quarantine(seg, dmg, cut=(kind == "torn_tail"))
                if on_damage is not None:
                    on_damage(dmg)
                if kind == "torn_tail":
                    if repair:
                        seg.size = off
                        seg.synced_size = min(seg.synced_size, off)
                    break
                off = nxt

    def _resync(self, seg: Segment, start: int) -> int:
        """Find the next offset >= start holding a record header that verifies."""
        window = 1 << 20
        off = start
        while off < seg.size:
            chunk = seg.file.pread(min(window + RECORD_HEADER_SIZE, seg.size - off), off)
            i = chunk.find(RECORD_MAGIC)
            while i != -1:
                cand = off + i
                if seg.size - cand >= RECORD_HEADER_SIZE:
                    try:
                        h = decode_record_header(seg.file.pread(RECORD_HEADER_SIZE, cand))
                        if cand + h.total_len <= seg.size:
                            return cand
                    except DataCorrupt:
                        pass
                i = chunk.find(RECORD_MAGIC, i + 1)
            off += window
        return seg.size

    def _quarantine(self, seg: Segment, dmg: Damage, cut: bool) -> Damage:
        qdir = os.path.join(self.dir, filenames.QUARANTINE_DIR)
        self.disk.makedirs(qdir)
        name = filenames.quarantine_name(seg.number, seg.generation, dmg.offset, dmg.length)
        data = seg.file.pread(dmg.length, dmg.offset)
        self.disk.write_file_atomic(os.path.join(qdir, name), data)
        if cut:
            seg.file.truncate(dmg.offset)
            seg.file.fdatasync()
        dmg = Damage(dmg.kind, dmg.segment, dmg.generation, dmg.offset, dmg.length, dmg.reason,
                     os.path.join(filenames.QUARANTINE_DIR, name), dmg.extra)
        self.append_report(dmg)
        return dmg

    def append_report(self, dmg: Damage) -> None:
        line = json.dumps({"time": time.time(), "kind": dmg.kind, "segment": dmg.segment,
                           "generation": dmg.generation, "offset": dmg.offset,
                           "length": dmg.length, "reason": dmg.reason,
                           "quarantined_as": dmg.quarantined_as, **dmg.extra}) + "\n"
        path = os.path.join(self.dir, filenames.QUARANTINE_LOG)
        f = self.disk.open(path, create=True)
        try:
            f.pwrite(line.encode(), f.size())
            f.fdatasync()
        finally:
            f.close()
        log.warning("replica %s: %s at segment %d offset %d (%d bytes): %s", self.dir, dmg.kind,
                    dmg.segment, dmg.offset, dmg.length, dmg.reason)

    # -- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._committer is not None:
            self._committer.join(timeout=10)
        if self.failed is None:
            try:
                self.sync_now()
            except OSError:
                log.exception("final sync of %s failed", self.dir)
        for s in self.segments:
            s.file.close()


_Waiter = concurrent.futures.Future[None] | asyncio.Future[None]


def _settle(futs: list[_Waiter], exc: BaseException | None) -> None:
    """Complete waiters from any thread: concurrent futures directly, asyncio futures in
    their own loop, one hand-over per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for fut in futs:
        if isinstance(fut, concurrent.futures.Future):
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
        else:
            by_loop.setdefault(fut.get_loop(), []).append(fut)
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle_in_loop, group, exc)


def _settle_in_loop(futs: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    for fut in futs:
        if not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
