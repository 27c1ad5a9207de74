"""CPU per request, per process role, sampled from /proc (psutil) around each benchmark phase.

A benchmark names its server processes (``{"frontend dc1-fe": pid, "node dc1-n1": pid, ...}``),
wraps each phase in :meth:`CpuSampler.start` / :meth:`CpuSampler.stop`, adds its own client
CPU, and prints :func:`cpu_table`: milliseconds of CPU per request for each role (frontend or
proxy, each storage node or OSD, the client), the server sum, and per MiB for large bodies.
CPU per request is the figure that survives a shared, loaded machine: ops/s moves with the load,
the CPU a request costs much less. Children are counted with their parent (Swift's servers
fork workers). This module measures and prints; it starts and stops nothing.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import psutil

__all__ = ["CpuSampler", "PhaseCpu", "cpu_table", "role_of"]

# the first word of a process name -> its role in the table
_FRONT = {"frontend", "proxy", "rgw", "null"}
_NODE = {"node", "object", "osd"}


def role_of(name: str) -> str:
    """'front' (the HTTP tier), 'node' (stores the bytes) or 'other' (Swift's account and
    container servers, memcached, Ceph's mon and mgr)."""
    word = name.split(" ")[0].split(".")[0]
    return "front" if word in _FRONT else "node" if word in _NODE else "other"


@dataclass
class PhaseCpu:
    """CPU seconds each server process used over one phase, and the phase's wall time."""
    seconds: float = 0.0
    by_process: dict[str, float] = field(default_factory=dict)

    def cores(self) -> dict[str, float]:
        return {k: v / self.seconds for k, v in self.by_process.items()} if self.seconds else {}


class CpuSampler:
    """CPU seconds (user + system, children included) of named processes over a phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs: dict[str, psutil.Process] = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                self.procs[name] = psutil.Process(pid)
        self._t0 = 0.0
        self._c0: dict[str, float] = {}

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            try:
                t = sum(p.cpu_times()[:2])
                for c in p.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        t += sum(c.cpu_times()[:2])
                out[name] = t
            except psutil.Error:
                out[name] = 0.0
        return out

    def start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), self._cpu()

    def stop(self) -> PhaseCpu:
        dt = time.perf_counter() - self._t0
        c1 = self._cpu()
        return PhaseCpu(dt, {k: max(0.0, c1[k] - self._c0.get(k, 0.0)) for k in c1})


def cpu_table(rows: list[dict[str, object]]) -> str:
    """Markdown: one line per (workload, system) with CPU ms per request per role.

    Each row: ``workload``, ``system``, ``api`` (the request), ``ops`` (count), ``size``
    (bytes per request, 0 for a mix), ``cpu`` (:class:`PhaseCpu`), ``client_cpu_s``."""
    out = [("| workload | system | request | requests | front (frontend / proxy / rgw) | "
           "storage nodes, each | nodes sum | other server | **server total** | client | "
           "server per MiB |"),
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n = int(r["ops"])  # type: ignore[call-overload]
        cpu = r["cpu"]
        assert isinstance(cpu, PhaseCpu)
        if n <= 0:
            continue

        def ms(v: float, n: int = n) -> float:
            return v / n * 1e3
        front = sum(v for k, v in cpu.by_process.items() if role_of(k) == "front")
        nodes = {k: v for k, v in cpu.by_process.items() if role_of(k) == "node"}
        other = sum(v for k, v in cpu.by_process.items() if role_of(k) == "other")
        total = front + sum(nodes.values()) + other
        each = ", ".join(f"{k.removeprefix('node ')} {ms(v):.2f}" for k, v in sorted(nodes.items()))
        size = int(r.get("size") or 0)  # type: ignore[call-overload]
        per_mib = f"{ms(total) / (size / (1 << 20)):.2f} ms" if size >= 1 << 20 else ""
        client = float(r["client_cpu_s"])  # type: ignore[arg-type]
        out.append(f"| {r['workload']} | {r['system']} | {r.get('api', '')} | {n:,} | "
                   f"{ms(front):.2f} | {each} | {ms(sum(nodes.values())):.2f} | "
                   f"{ms(other):.2f} | **{ms(total):.2f}** | {ms(client):.2f} | {per_mib} |")
    return "\n".join(out)
