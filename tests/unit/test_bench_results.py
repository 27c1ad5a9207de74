"""Every benchmark states what it measured: commit, machine, load before the run, command.

What broke: results files carried the machine only when run_all.py wrote them (not when a
benchmark's output was pasted by hand), never the commit, and bench_compare printed the
15-minute load average as the load "before" the run.
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

from benchmarks._results import RunInfo

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def test_run_header_names_commit_machine_load_and_command() -> None:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()
    text = RunInfo.capture(str(BENCH / "bench_compare.py"), ["--compare", "swift"]).markdown()
    assert f"- Commit: {head} " in text
    assert f"{os.cpu_count()} CPUs" in text
    assert "- Load average before the run (1/5/15 min): " in text
    assert "- Command: `python benchmarks/bench_compare.py --compare swift`" in text


def test_every_benchmark_prints_the_run_header() -> None:
    # a new benchmark that forgets the header would write results nobody can trace to a commit
    scripts = sorted(BENCH.glob("bench_*.py")) + [BENCH / "profile_ops.py"]
    missing = []
    for script in scripts:
        tree = ast.parse(script.read_text())
        calls = {n.func.id for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if "print_run_header" not in calls:
            missing.append(script.name)
    assert not missing, f"benchmarks without print_run_header(): {missing}"
