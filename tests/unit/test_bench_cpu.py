"""CPU per request per process role (benchmarks/_cpu.py), as bench_compare and bench_s3 print it.

What broke: the benchmarks printed cores per process only, so "CPU per request" came from a
separate profiling run, and Swift's forked workers were listed beside their parents while the
sampler also added each parent's children: every Swift worker's CPU counted twice.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from benchmarks._cpu import PhaseCpu, cpu_table, role_of
from benchmarks.bench_compare import swift_pids


def test_roles_of_each_system() -> None:
    assert [role_of(n) for n in ("frontend dc1", "proxy 12", "rgw a", "null server")] == \
        ["front"] * 4
    assert [role_of(n) for n in ("node dc1-n1", "object 7", "osd 0")] == ["node"] * 3
    assert [role_of(n) for n in ("container 3", "account 4", "memcached 5", "mon a")] == \
        ["other"] * 4


def test_cpu_table_gives_ms_per_request_per_role() -> None:
    cpu = PhaseCpu(10.0, {"frontend dc1": 0.6, "node dc1-n1": 0.7, "node dc1-n2": 0.8,
                          "container 9": 0.1})
    table = cpu_table([{"workload": "1 MiB PUT", "system": "x", "ops": 1000, "size": 1 << 20,
                        "cpu": cpu, "client_cpu_s": 0.3}])
    row = table.splitlines()[-1]
    assert "| 0.60 | dc1-n1 0.70, dc1-n2 0.80 | 1.50 | 0.10 | **2.20** | 0.30 | 2.20 ms |" in row


def test_swift_workers_are_counted_with_their_parent_only() -> None:
    # a server forking a worker with its own command line: listing both counted the worker twice
    worker = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', "
              "'swift-object-server']); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", worker, "swift-object-server"])
    try:
        proc = psutil.Process(parent.pid)
        deadline = time.monotonic() + 20
        while not proc.children() and time.monotonic() < deadline:
            time.sleep(0.02)
        child = proc.children()[0].pid
        pids = set(swift_pids().values())
        assert parent.pid in pids
        assert child not in pids
    finally:
        for c in psutil.Process(parent.pid).children():
            c.kill()
        parent.kill()
        parent.wait(10)
