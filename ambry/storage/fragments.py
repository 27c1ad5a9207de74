"""The node's fragment store: the op handlers that keep fragment files of erasure-coded
segments (docs/erasure-coding.md) on this node, whoever encoded them.

Owns the ``ec_frag_*`` ops of the node protocol (schemas in ``ambry.protocol.messages``):
writing a fragment file streamed block by block (``ec_frag_write``: one request per stripe's
block, in order; ``fragfile.FragmentWriter`` writes ``<name>.tmp`` and the last block
publishes it, verified, under its name), reading a window of one (``ec_frag_read``), verifying
one (``ec_frag_stat``), listing (``ec_frag_list``, with the damage ``fraghealth`` knows of),
rewriting one stripe's block in place (``ec_frag_patch``: the repair) and deleting
(``ec_frag_delete``); the scrub of fragment files (``fraghealth``). File
names come from ``filenames``; the byte layout is ``ambry.ec.fragfile``'s.

File work runs on an executor of its own (not the node's I/O threads): a replica's read of an
encoded blob waits, on an I/O thread, for fragment reads, which must never queue behind it.
Does not own encoding, placement or the reads of blobs through fragments (``ecstate`` and the
node's warm-tier component).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from ambry.common.errors import BlobNotFound, DataCorrupt, InvalidArgument, ReplicaUnavailable
from ambry.ec.codec import block_checksum
from ambry.ec.fragfile import FragmentHeader, FragmentWriter, read_header
from ambry.protocol.messages import Request
from ambry.storage import filenames
from ambry.storage.fraghealth import FragmentHealth

__all__ = ["MAX_FRAGMENT_READ_BYTES", "FragmentOps"]

#: one ec_frag_read answers at most this many bytes (a piece lies inside one block)
MAX_FRAGMENT_READ_BYTES = 64 * 1024 * 1024
#: a fragment write that has not sent its next block for this long is abandoned (its .tmp
#: removed): the coordinator died or gave up, and starts over from stripe 0
_WRITER_IDLE_S = 300.0

Handler = Callable[[Request, Any], Awaitable[tuple[dict[str, Any], Any]]]


class _OpenWrite:
    def __init__(self, writer: FragmentWriter) -> None:
        self.writer = writer
        self.next_stripe = 0
        self.touched = time.monotonic()


class FragmentOps:
    """The ``ec_frag_*`` handlers of one node, over ``<data dir>/fragments``."""

    def __init__(self, data_dir: str | os.PathLike[str], threads: int = 2, *,
                 replicas: Mapping[int, Any] | None = None,
                 warm_status: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.replicas: Mapping[int, Any] = replicas if replicas is not None else {}
        self.warm_status = warm_status
        self.root = Path(data_dir) / filenames.FRAGMENTS_DIR
        self._io = concurrent.futures.ThreadPoolExecutor(max(1, threads),
                                                         thread_name_prefix="fragments")
        self._writes: dict[str, _OpenWrite] = {}
        self._lock = threading.Lock()
        # damaged fragment files (scrub, checks at read); .tmp files of a killed run go now
        self.health = FragmentHealth(self.root)
        self.health.remove_stale_tmp()
        self.table: dict[str, Handler] = {
            "ec_frag_patch": self._op_patch,
            "ec_frag_write": self._op_write, "ec_frag_read": self._op_read,
            "ec_frag_stat": self._op_stat, "ec_frag_list": self._op_list,
            "ec_frag_delete": self._op_delete, "ec_missing": self._op_missing,
            "ec_live": self._op_live,
            "ec_status": self._op_status,
        }

    def shutdown(self) -> None:
        with self._lock:
            for w in self._writes.values():
                w.writer.abort()
            self._writes.clear()
        self._io.shutdown(wait=False)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _path(self, a: dict[str, Any]) -> Path:
        try:
            name = filenames.fragment_name(a["source"], a["segment"], a["generation"],
                                           a["fragment"])
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        if a["segment"] < 0 or a["generation"] < 0 or not 0 <= a["fragment"] < 32:
            raise InvalidArgument("segment, generation and fragment must be >= 0, "
                                  "fragment < 32")
        return self.root / filenames.replica_dir_name(a["partition"]) / name

    # ---------------------------------------------------------------- write
    async def _op_write(self, req: Request, payload: Any) -> tuple[dict[str, Any], None]:
        a = req.args
        path = self._path(a)
        h = a["header"]
        try:
            header = FragmentHeader(int(h["code"]), int(h["k"]), int(h["m"]), a["fragment"],
                                    a["partition"], a["segment"], a["generation"],
                                    int(h["original_bytes"]), int(h["stripe_bytes"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgument(f"ec_frag_write: bad header {h!r}: {e}") from None
        return await self._run(self._write, path, header, a["stripe"], bytes(payload or b""),
                               a["finish"]), None

    def _write(self, path: Path, header: FragmentHeader, stripe: int, block: bytes,
               finish: bool) -> dict[str, Any]:
        key = str(path)
        with self._lock:
            self._sweep_idle()
            w = self._writes.get(key)
            if stripe == 0:  # (re)start: a coordinator that died mid-way starts over
                if w is not None:
                    w.writer.abort()
                path.parent.mkdir(parents=True, exist_ok=True)
                w = self._writes[key] = _OpenWrite(FragmentWriter(path, header))
            elif w is None or w.next_stripe != stripe or w.writer.header != header:
                raise InvalidArgument(f"{path.name}: stripe {stripe} out of order (expected "
                                      f"{w.next_stripe if w else 0})")
            del self._writes[key]  # held by this call alone while it writes
        try:
            w.writer.add(block)
            w.next_stripe += 1
            w.touched = time.monotonic()
            if not finish:
                with self._lock:
                    self._writes[key] = w
                return {"written": w.next_stripe}
            w.writer.finish()
        except ValueError as e:
            w.writer.abort()
            raise InvalidArgument(f"{path.name}: {e}") from None
        except BaseException:
            w.writer.abort()
            raise
        report = self.health.check(path)
        return {"written": w.next_stripe, "ok": report.ok, "problems": list(report.problems),
                "checksums": list(report.checksums)}

    def _sweep_idle(self) -> None:
        now = time.monotonic()
        for key, w in list(self._writes.items()):
            if now - w.touched > _WRITER_IDLE_S:
                w.writer.abort()
                del self._writes[key]

    def disk_usage(self) -> dict[int, int]:
        """Partition -> bytes its fragment files allocate on this node (blocking)."""
        out: dict[int, int] = {}
        if not self.root.is_dir():
            return out
        for d in os.listdir(self.root):
            pid = filenames.parse_replica_dir_name(d)
            if pid is None:
                continue
            total = 0
            for name in os.listdir(self.root / d):
                if filenames.parse_fragment_name(name) is not None:
                    try:
                        total += (self.root / d / name).stat().st_blocks * 512
                    except OSError:
                        continue  # deleted meanwhile
            out[pid] = total
        return out

    def metric_rows(self) -> list[dict[str, Any]]:
        """Per partition with a replica or fragments here: the warm tier's figures for
        ``/metrics`` (blocking: it stats files)."""
        jobs = {j["partition"]: j for j in (self.warm_status() if self.warm_status else [])}
        frags = self.disk_usage()
        rows: dict[int, dict[str, Any]] = {}
        for pid in sorted(set(self.replicas) | set(frags) | set(jobs)):
            r = self.replicas.get(pid)
            disk = r.ec_disk() if r is not None and hasattr(r, "ec_disk") else {}
            rows[pid] = {"partition": pid, "fragment_bytes": frags.get(pid, 0),
                         "freed_segment_bytes": disk.get("freed_segment_bytes", 0),
                         "freed_allocated_bytes": disk.get("freed_allocated_bytes", 0),
                         **{k: v for k, v in (jobs.get(pid) or {}).items()
                            if k != "partition"}}
        return list(rows.values())

    # ---------------------------------------------------------------- read, stat, list, delete
    async def _op_read(self, req: Request, _p: Any) -> tuple[dict[str, Any], bytes]:
        a = req.args
        path = self._path(a)
        off, n, check = a["offset"], a["length"], a["verify"]
        if off < 0 or not 0 <= n <= MAX_FRAGMENT_READ_BYTES:
            raise InvalidArgument(f"ec_frag_read: offset >= 0 and 0 <= length <= "
                                  f"{MAX_FRAGMENT_READ_BYTES} needed")

        def read() -> bytes:
            try:
                f = open(path, "rb")  # noqa: SIM115 -- closed below
            except FileNotFoundError:
                raise BlobNotFound(f"no fragment {path.name} of partition "
                                   f"{a['partition']} here") from None
            with f:
                h, sums = read_header(f)
                if off + n > h.layout.fragment_bytes:
                    raise InvalidArgument(f"[{off}, {off + n}) outside the fragment of "
                                          f"{h.layout.fragment_bytes} bytes")
                if not check:
                    return os.pread(f.fileno(), n, h.data_offset + off)
                return _read_checked_window(f.fileno(), h, sums, off, n, path.name)

        try:
            data = await self._run(read)
        except DataCorrupt:  # a block failed its checksum: the repair will rebuild it
            await self._run(self.health.check, path)
            raise
        return {"length": len(data)}, data

    async def _op_stat(self, req: Request, _p: Any) -> tuple[dict[str, Any], None]:
        path = self._path(req.args)
        if not await self._run(path.exists):
            raise BlobNotFound(f"no fragment {path.name} here")
        if not req.args["verify"]:  # header and checksum table only (the repair's read)
            return await self._run(_table, path), None
        r = await self._run(self.health.check, path)  # recorded: the repair sees it
        return {"ok": r.ok, "problems": list(r.problems), "bad_stripes": list(r.bad_stripes),
                "checksums": list(r.checksums),
                "file_bytes": await self._run(lambda: path.stat().st_size)}, None

    async def _op_list(self, req: Request, _p: Any) -> tuple[dict[str, Any], None]:
        d = self.root / filenames.replica_dir_name(req.args["partition"])

        def listing() -> list[list[Any]]:
            out: list[list[Any]] = []
            if d.is_dir():
                for name in sorted(os.listdir(d)):
                    parsed = filenames.parse_fragment_name(name)
                    if parsed is not None:
                        out.append([*parsed, (d / name).stat().st_size])
            return out

        return {"fragments": await self._run(listing),
                "damaged": await self._run(self.health.damaged_in, d)}, None

    async def _op_patch(self, req: Request, payload: Any) -> tuple[dict[str, Any], None]:
        """Rewrite one stripe's block of a fragment in place (the repair rebuilt it from k
        other fragments): it must match the file's own checksum table, which is intact."""
        a = req.args
        path = self._path(a)
        return await self._run(self._patch, path, a["stripe"], bytes(payload or b"")), None

    def _patch(self, path: Path, stripe: int, block: bytes) -> dict[str, Any]:
        try:
            f = open(path, "r+b")  # noqa: SIM115 -- closed below
        except FileNotFoundError:
            raise BlobNotFound(f"no fragment {path.name} here") from None
        with f:
            h, sums = read_header(f)
            if not 0 <= stripe < h.stripe_count:
                raise InvalidArgument(f"{path.name}: no stripe {stripe}")
            st = h.layout.stripe(stripe)
            if len(block) != st.block_bytes or block_checksum(block) != sums[stripe]:
                raise InvalidArgument(f"{path.name}: the block for stripe {stripe} does not "
                                      f"match the fragment's checksum table")
            os.pwrite(f.fileno(), block, h.data_offset + st.fragment_offset)
            os.fsync(f.fileno())
        self.health.clear_stripe(path, stripe)
        return {"patched": stripe}

    async def scrub_loop(self, settings: Callable[[], tuple[float, int]]) -> None:
        """The node's fragment scrub (``fraghealth``): every ``settings()[0]`` s at
        ``settings()[1]`` bytes per second."""
        await self.health.scrub_loop(settings)

    async def _op_delete(self, req: Request, _p: Any) -> tuple[dict[str, Any], None]:
        path = self._path(req.args)

        def delete() -> bool:
            try:
                os.remove(path)
                return True
            except FileNotFoundError:
                return False

        return {"deleted": await self._run(delete)}, None

    # ---------------------------------------------------------------- replicas' side
    def _replica_uuids(self, a: dict[str, Any]) -> tuple[Any, list[bytes]]:
        r = self.replicas.get(a["partition"])
        if r is None:
            raise ReplicaUnavailable(f"no open replica of partition {a['partition']} here")
        uuids = a["uuids"]
        if len(uuids) > 10_000 or not all(isinstance(u, bytes) and len(u) == 16
                                          for u in uuids):
            raise InvalidArgument("uuids must be at most 10000 16-byte blob uuids")
        return r, list(uuids)

    async def _op_missing(self, req: Request, _p: Any) -> tuple[dict[str, Any], None]:
        """Which of these blobs this node's replica lacks (the encoding coordinator asks every
        replica before it encodes a segment: nobody may still need to pull it)."""
        r, uuids = self._replica_uuids(req.args)
        return {"missing": await self._run(r.ec_missing, uuids)}, None

    async def _op_live(self, req: Request, _p: Any) -> tuple[dict[str, Any], None]:
        """Which of these blobs this node's replica does not hold dead (the coordinator asks
        every replica of its datacenter before it re-encodes a segment without them)."""
        r, uuids = self._replica_uuids(req.args)
        return {"live": await self._run(r.ec_live, uuids)}, None

    async def _op_status(self, req: Request, _p: Any) -> tuple[dict[str, Any], None]:
        """Per replica here: its EC_SEGMENT records, freed segments and their bytes on disk,
        the coordinator job's state; and the bytes of fragment files here per partition."""
        jobs = {j["partition"]: j for j in (self.warm_status() if self.warm_status else [])}

        def collect() -> list[dict[str, Any]]:
            return [{"partition": pid, **r.ec_status(), "job": jobs.get(pid)}
                    for pid, r in sorted(self.replicas.items())]

        return {"partitions": await self._run(collect),
                "fragment_bytes": sorted((await self._run(self.disk_usage)).items())}, None


def _table(path: Path) -> dict[str, Any]:
    """A fragment file's header and per-stripe checksum table, both checked (no blocks)."""
    with open(path, "rb") as f:
        try:
            _h, sums = read_header(f)
        except DataCorrupt as e:
            return {"ok": False, "problems": [str(e)], "bad_stripes": [], "checksums": [],
                    "file_bytes": os.fstat(f.fileno()).st_size}
        return {"ok": True, "problems": [], "bad_stripes": [], "checksums": list(sums),
                "file_bytes": os.fstat(f.fileno()).st_size}


def _read_checked_window(fd: int, h: FragmentHeader, sums: tuple[int, ...], off: int, n: int,
                         name: str) -> bytes:
    """Bytes ``[off, off + n)`` of the fragment, after checking every block they touch
    against the fragment's checksum table (one block in memory at a time): a ranged read of
    an encoded blob is then trusted without reading the whole record for its checksum."""
    layout = h.layout
    out = bytearray()
    pos, end = off, off + n
    while pos < end:
        st = layout.stripe(min(pos // layout.block_bytes, layout.stripe_count - 1))
        block = os.pread(fd, st.block_bytes, h.data_offset + st.fragment_offset)
        if len(block) != st.block_bytes or block_checksum(block) != sums[st.index]:
            raise DataCorrupt(f"{name}: stripe {st.index} fails its checksum")
        take = min(end, st.fragment_offset + st.block_bytes) - pos
        out += block[pos - st.fragment_offset:pos - st.fragment_offset + take]
        pos += take
    return bytes(out)
