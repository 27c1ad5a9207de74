"""Which fragment files on this node are damaged, and the scrub that finds out.

Owns the node's table of damaged fragment files (docs/erasure-coding.md, "Scrub"): per file,
the stripes whose block fails its checksum, or ``whole`` when the header or the checksum
table is bad or the file is torn. It is filled by the scrub pass (``fragfile.verify`` over
every fragment file, paced at ``ec.scrub_bytes_per_s``), by ``ec_frag_stat`` (a reader that
got bytes failing the blob's checksum asks the fragment's node to verify it) and by a checked
read that failed; it is cleared when a fragment is rewritten or a stripe patched.
``ec_frag_list`` reports it, and the partition's repair (``ambry.warm.repair``, which knows
where the other fragments are) rebuilds what it names. Kept in memory: after a restart the
next scrub finds the damage again.

Also removes the ``<fragment>.tmp`` files a killed process left behind: no writer survives a
restart, and a coordinator always restarts a fragment from stripe 0.

Does not own rebuilding, the file format (``ambry.ec.fragfile``) or file names
(``filenames``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ambry.ec.fragfile import VerifyReport, verify
from ambry.storage import filenames

__all__ = ["FragmentDamage", "FragmentHealth"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FragmentDamage:
    whole: bool  # header, table or length bad: the file must be rebuilt whole
    stripes: tuple[int, ...]  # else: the stripes whose block fails its checksum
    problems: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"whole": self.whole, "stripes": list(self.stripes),
                "problems": list(self.problems)}


class FragmentHealth:
    """The damaged fragment files under ``root`` (``<data dir>/fragments``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._damaged: dict[Path, FragmentDamage] = {}
        self._lock = threading.Lock()
        self.scrub_passes = 0
        self.scrubbed_bytes = 0
        self.damage_found = 0  # files found damaged (metrics)

    # ---------------------------------------------------------------- the table
    def record(self, path: Path, report: VerifyReport) -> None:
        if report.ok:
            self.clear(path)
            return
        whole = report.header is None or report.torn or not report.bad_stripes
        d = FragmentDamage(whole, () if whole else tuple(report.bad_stripes),
                           tuple(report.problems))
        with self._lock:
            new = self._damaged.get(path) != d
            self._damaged[path] = d
        if new:
            self.damage_found += 1
            log.error("fragment %s is damaged: %s", path, "; ".join(report.problems))

    def check(self, path: Path) -> VerifyReport:
        """Verify one fragment file now (blocking) and record what it says."""
        report = verify(path)
        self.record(path, report)
        return report

    def clear(self, path: Path) -> None:
        with self._lock:
            self._damaged.pop(path, None)

    def clear_stripe(self, path: Path, stripe: int) -> None:
        with self._lock:
            d = self._damaged.get(path)
            if d is None or d.whole:
                return
            rest = tuple(s for s in d.stripes if s != stripe)
            if rest:
                self._damaged[path] = FragmentDamage(False, rest, d.problems)
            else:
                del self._damaged[path]

    def damaged_in(self, directory: Path) -> dict[str, dict[str, Any]]:
        """File name -> its damage, for the fragment files of one partition directory."""
        with self._lock:
            return {p.name: d.to_wire() for p, d in self._damaged.items()
                    if p.parent == directory and p.exists()}

    # ---------------------------------------------------------------- files
    def fragment_files(self) -> list[Path]:
        out: list[Path] = []
        if not self.root.is_dir():
            return out
        for d in sorted(os.listdir(self.root)):
            if filenames.parse_replica_dir_name(d) is None:
                continue
            for name in sorted(os.listdir(self.root / d)):
                if filenames.parse_fragment_name(name) is not None:
                    out.append(self.root / d / name)
        return out

    def remove_stale_tmp(self) -> int:
        """Remove ``.tmp`` fragments (call before the node serves: no writer is open)."""
        n = 0
        if not self.root.is_dir():
            return n
        for d in os.listdir(self.root):
            if filenames.parse_replica_dir_name(d) is None:
                continue
            for name in os.listdir(self.root / d):
                if name.endswith(".tmp") and \
                        filenames.parse_fragment_name(name[:-4]) is not None:
                    os.remove(self.root / d / name)
                    n += 1
        if n:
            log.info("removed %d unfinished fragment files a previous run left", n)
        return n

    # ---------------------------------------------------------------- the scrub
    async def scrub_pass(self, run: Callable[..., Any], bytes_per_s: int) -> int:
        """Verify every fragment file here (``run`` puts the blocking work on an executor),
        pacing whole files at ``bytes_per_s``; returns the files found damaged."""
        started = time.monotonic()
        done = damaged = 0
        for path in await run(self.fragment_files):
            try:
                report = await run(self.check, path)
                size = await run(lambda p=path: p.stat().st_size)
            except FileNotFoundError:
                continue  # deleted or replaced meanwhile
            damaged += not report.ok
            done += size
            self.scrubbed_bytes += size
            ahead = done / bytes_per_s - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        self.scrub_passes += 1
        return damaged

    async def scrub_loop(self, settings: Callable[[], tuple[float, int]]) -> None:
        """Scrub every ``settings()[0]`` seconds at ``settings()[1]`` bytes per second, on a
        thread of its own (a file's verify reads it whole; the fragment ops' threads serve
        reads meanwhile)."""
        io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fragment-scrub")
        loop = asyncio.get_running_loop()

        async def run(fn: Callable[..., Any], *args: Any) -> Any:
            return await loop.run_in_executor(io, fn, *args)

        try:
            while True:
                interval_s, rate = settings()
                await asyncio.sleep(interval_s)
                try:
                    await self.scrub_pass(run, rate)
                except OSError as e:
                    log.warning("fragment scrub failed: %r", e)
        finally:
            io.shutdown(wait=False)
