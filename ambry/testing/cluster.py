"""Real storage node processes on loopback, for tests and local experiments.

Owns writing a small cluster config (free ports, a temp data root) and starting, killing
(``kill -9``), terminating and restarting ``ambry server`` processes from the source tree, with
each process's output in a log file the test can print. Plain synchronous code (``subprocess``),
so it works from sync and async pytest fixtures alike; :meth:`NodeProcess.wait_ready_async`
waits without blocking an event loop. Does not own any assertion about what the nodes do.

    with LocalCluster(tmp_path, partitions=2, storage={"segment_size_bytes": "8MiB"}) as c:
        node = c.nodes["dc1-n1"]
        client = node.client()
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from ambry.protocol.client import NodeClient

__all__ = ["DaemonProcess", "LocalCluster", "NodeProcess", "free_ports", "write_config"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_LIVE: set[DaemonProcess] = set()


#: Ports are handed out below the kernel's ephemeral range (Linux: 32768-60999 by default):
#: a port the OS picked with bind(0) is also a port it may give the next outgoing connection
#: (every node and frontend opens many), which then sits on it before the daemon that was
#: told to listen there starts ("address in use": a frontend once landed on a port a node
#: had taken). A port handed out once in this process is never handed out again.
_PORT_RANGE = (20000, 32000)
_HANDED_OUT: set[int] = set()
_rng = random.Random()


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports, free a moment ago and never handed out before by this process,
    from below the ephemeral range (see ``_PORT_RANGE``)."""
    out: list[int] = []
    for _ in range(50 * n + 1000):
        if len(out) == n:
            return out
        port = _rng.randrange(*_PORT_RANGE)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        out.append(port)
    raise RuntimeError(f"no {n} free ports in {_PORT_RANGE} on {host}")


def write_config(path: str | os.PathLike[str], data_root: str | os.PathLike[str], *,
                 datacenters: int = 1, nodes_per_dc: int = 1, partitions: int = 2,
                 replicas_per_dc: int | None = None, capacity: str = "1GiB",
                 storage: dict[str, Any] | None = None, host: str = "127.0.0.1",
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a cluster config with free ports; returns the dict written. Node ids are
    ``dc<i>-n<j>`` (1-based), as in config/local.yaml."""
    ports = free_ports(2 * datacenters * nodes_per_dc, host)
    nodes = []
    for d in range(1, datacenters + 1):
        for j in range(1, nodes_per_dc + 1):
            nodes.append({"id": f"dc{d}-n{j}", "datacenter": f"dc{d}", "host": host,
                          "port": ports.pop(), "http_port": ports.pop()})
    raw: dict[str, Any] = {
        "cluster": {"name": "test",
                    "replicas_per_datacenter": replicas_per_dc or nodes_per_dc},
        "data_dir": str(data_root),
        "datacenters": [{"name": f"dc{d}", "id": d} for d in range(1, datacenters + 1)],
        "nodes": nodes,
        "partitions": {"count": partitions, "capacity_bytes": capacity},
        "storage": dict(storage or {}),
    }
    raw.update(extra or {})
    Path(path).write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw


class DaemonProcess:
    """One ``ambry`` daemon process from the source tree, restartable with the same
    arguments: start, ``kill -9``, SIGTERM, wait for its /healthCheck, read its log. Subclasses
    say which command and health URL."""

    name: str
    log_path: Path
    env: dict[str, str]

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def health_url(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        assert not self.running, f"{self.name} is already running"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.update(self.env)
        self.starts += 1
        with open(self.log_path, "ab") as logf:
            logf.write(f"---- start #{self.starts} of {self.name} ----\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT), env=env)
        _LIVE.add(self)
        return self

    def _health(self) -> int | None:
        try:
            with urllib.request.urlopen(self.health_url(), timeout=0.5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (OSError, ValueError):
            return None

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc is not None else None
            raise RuntimeError(f"{self.name} exited (code {code}) before it was ready;"
                               f" log tail:\n{self.log_tail()}")

    def wait_ready(self, timeout_s: float = 30.0) -> Self:
        """Block until /healthCheck says 200 (raises with the log tail if the process died)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if self._health() == 200:
                return self
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout_s} s; log tail:\n"
                           f"{self.log_tail()}")

    async def wait_ready_async(self, timeout_s: float = 30.0) -> Self:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if await asyncio.to_thread(self._health) == 200:
                return self
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout_s} s; log tail:\n"
                           f"{self.log_tail()}")

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        _LIVE.discard(self)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait for the exit code (graceful shutdown). Kills it after the timeout
        and raises."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise TimeoutError(f"{self.name} ignored SIGTERM for {timeout_s} s; "
                                   f"log tail:\n{self.log_tail()}") from None
        _LIVE.discard(self)
        return int(self.proc.returncode)

    def restart(self, wait: bool = True) -> Self:
        if self.running:
            self.terminate()
        self.start()
        return self.wait_ready() if wait else self

    def rss_bytes(self) -> int:
        """Resident set size of the process now (psutil; a test dependency)."""
        import psutil

        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])


class NodeProcess(DaemonProcess):
    """One ``ambry server`` process (started again by :meth:`restart` with the same data)."""

    def __init__(self, node_id: str, config_path: Path, data_root: Path, host: str, port: int,
                 http_port: int, log_path: Path, log_level: str = "INFO",
                 env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.node_id = node_id
        self.name = f"node {node_id}"
        self.config_path = config_path
        self.data_root = data_root
        self.host = host
        self.port = port
        self.http_port = http_port
        self.log_path = log_path
        self.log_level = log_level
        self.env = env or {}

    @property
    def data_dir(self) -> Path:
        return self.data_root / self.node_id

    def command(self) -> list[str]:
        return [sys.executable, "-m", "ambry.cli", "server", "--config", str(self.config_path),
                "--node", self.node_id, "--data-dir", str(self.data_root),
                "--log-level", self.log_level]

    def health_url(self) -> str:
        return self.http_url("/healthCheck")

    def client(self, **kw: Any) -> NodeClient:
        """A NodeClient for this node (create it inside the event loop that will use it)."""
        kw.setdefault("connect_timeout_ms", 2000)
        kw.setdefault("request_timeout_ms", 15000)
        return NodeClient(self.host, self.port, **kw)

    def http_url(self, path: str) -> str:
        return f"http://{self.host}:{self.http_port}{path}"


class LocalCluster:
    """A config and the node processes of a small cluster under ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, datacenters: int = 1,
                 nodes_per_dc: int = 1, partitions: int = 2, replicas_per_dc: int | None = None,
                 capacity: str = "1GiB", storage: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None, log_level: str = "INFO",
                 env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_root = self.root / "data"
        self.config_path = self.root / "cluster.yaml"
        self.config = write_config(self.config_path, self.data_root, datacenters=datacenters,
                                   nodes_per_dc=nodes_per_dc, partitions=partitions,
                                   replicas_per_dc=replicas_per_dc, capacity=capacity,
                                   storage=storage, extra=extra)
        self.nodes: dict[str, NodeProcess] = {}
        for n in self.config["nodes"]:
            self.nodes[n["id"]] = NodeProcess(n["id"], self.config_path, self.data_root,
                                              n["host"], n["port"], n["http_port"],
                                              self.root / f"{n['id']}.log", log_level, env)

    def start(self, wait: bool = True) -> LocalCluster:
        for n in self.nodes.values():
            n.start()
        if wait:
            for n in self.nodes.values():
                n.wait_ready()
        return self

    def stop(self) -> None:
        """SIGTERM every node (kill -9 the ones that do not stop)."""
        for n in self.nodes.values():
            if n.running:
                with contextlib.suppress(TimeoutError):
                    n.terminate()

    def kill_all(self) -> None:
        for n in self.nodes.values():
            n.kill()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is not None:
            self.kill_all()
        else:
            self.stop()


@atexit.register
def _kill_leftovers() -> None:
    for n in list(_LIVE):
        with contextlib.suppress(Exception):
            n.kill()
