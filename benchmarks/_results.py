"""What every benchmark result must say about itself: the commit it measured, the machine, the
load before the run and the exact command.

Each benchmark calls :func:`print_run_header` first thing in ``main`` (so the load is the load
*before* its run, and a table copied from its output carries its provenance), and
``run_all.py`` writes that output to ``benchmarks/results/`` unchanged. This module owns the
header only; the tables are each benchmark's.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunInfo", "machine", "print_run_header"]

ROOT = Path(__file__).resolve().parents[1]
_DIRTY_SHOWN = 8


def machine() -> str:
    """Host, cores, RAM, OS and Python of this machine."""
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    return (f"{platform.node()}: {os.cpu_count()} CPUs{mem}, {platform.platform()}, "
            f"Python {platform.python_version()}")


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.rstrip("\n") if out.returncode == 0 else ""  # porcelain: keep 1st col


def commit() -> str:
    """HEAD, plus the code files that differ from it (the shared checkout often holds
    others' uncommitted work, which the run measured too)."""
    head = _git("log", "-1", "--format=%h %cI %s")[:100] or "unknown (not a git checkout)"
    changed = [line[3:] for line in _git("status", "--porcelain", "--", "ambry", "benchmarks",
                                         "config").splitlines() if line.strip()]
    if not changed:
        return head
    shown = ", ".join(changed[:_DIRTY_SHOWN])
    more = f" and {len(changed) - _DIRTY_SHOWN} more" if len(changed) > _DIRTY_SHOWN else ""
    return f"{head}; plus uncommitted changes in {shown}{more}"


@dataclass(frozen=True)
class RunInfo:
    commit: str
    machine: str
    load_before: tuple[float, float, float]
    command: str
    started: str

    @classmethod
    def capture(cls, script: str, args: list[str] | None = None) -> RunInfo:
        """``script``: the benchmark's ``__file__``; ``args``: its arguments (default: this
        process's command line after the script)."""
        args = sys.argv[1:] if args is None else args
        path = Path(script).resolve()
        shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        return cls(commit=commit(), machine=machine(), load_before=os.getloadavg(),
                   command=shlex.join(["python", shown, *args]),
                   started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))

    def markdown(self) -> str:
        l1, l5, l15 = self.load_before
        return (f"- Commit: {self.commit}\n"
                f"- Machine: {self.machine}\n"
                f"- Load average before the run (1/5/15 min): {l1:.2f} / {l5:.2f} / {l15:.2f}"
                f" on {os.cpu_count()} CPUs\n"
                f"- Command: `{self.command}`\n"
                f"- Started: {self.started}\n")


def print_run_header(script: str, args: list[str] | None = None) -> RunInfo:
    """Print the provenance block (the first thing a benchmark prints) and return it."""
    info = RunInfo.capture(script, args)
    print(info.markdown(), flush=True)
    return info
