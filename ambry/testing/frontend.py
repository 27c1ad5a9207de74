"""Real frontend processes, and whole stores (storage nodes + one frontend per datacenter).

Owns starting, killing (``kill -9``), terminating and restarting ``ambry frontend`` processes
from the source tree (:class:`FrontendProcess`), and :class:`StoreCluster`: a config written
with ports that were free a moment ago (so parallel test runs do not collide), the storage node
processes of :class:`~ambry.testing.cluster.LocalCluster`, and one frontend per datacenter,
with their base URLs; a started store has also waited until no fresh replica is still
rebuilding from its peers (before that, nodes cannot say "not found"). Also a way to list
what a replica really holds (:func:`replica_records`), so a test can tell "never written" from
"written and deleted", and :class:`RssSampler` for memory bounds of a frontend process.

Does not own any assertion about the API (tests do), nor the storage node processes
themselves (``ambry.testing.cluster``). Plain synchronous code (``subprocess``), like
``ambry.testing.cluster``, so it works from sync and async fixtures alike.

    with StoreCluster(tmp_path, datacenters=1, nodes_per_dc=3) as store:
        url = store.url("dc1", "/healthCheck")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ambry.common.blobid import BlobId, BlobType
from ambry.common.config import FrontendConfig
from ambry.frontend.supervisor import resolve_workers
from ambry.testing.cluster import DaemonProcess, LocalCluster, NodeProcess, free_ports

__all__ = [
    "TEST_ACCOUNTS",
    "TEST_FRONTEND",
    "TEST_S3",
    "FrontendProcess",
    "RssSampler",
    "StoreCluster",
    "StoredRecord",
    "replica_records",
]


#: Accounts of a test store: a second container (403 checks) and a second account.
TEST_ACCOUNTS: list[dict[str, Any]] = [
    {"name": "default", "id": 1,
     "containers": [{"name": "default", "id": 1}, {"name": "models", "id": 2}]},
    {"name": "team", "id": 7, "containers": [{"name": "default", "id": 1}]},
]

#: The ``frontend:`` section of a test store; a :class:`StoreCluster` argument overrides keys.
#: Small chunks so that a 3 MiB blob is already a composite; a short failure backoff so a
#: restarted node is used again quickly.
TEST_FRONTEND: dict[str, Any] = {
    "chunk_size_bytes": "1MiB",
    "upload_window_chunks": 4,
    "download_prefetch_chunks": 2,
    "inflight_budget_bytes": "64MiB",
    "node_timeout_ms": 5000,
    "node_connect_timeout_ms": 1000,
    "failure_threshold_errors": 3,
    "failure_backoff_s": 1,
    "ttl_update_buffer_s": 1,
}


#: The ``s3:`` section of a test store: one key pair per test account.
TEST_S3: dict[str, Any] = {
    "region": "us-east-1",
    "access_keys": [
        {"access_key": "AKIDTESTDEFAULT00001", "secret_key": "test-secret-default",
         "account": "default"},
        {"access_key": "AKIDTESTTEAM00000001", "secret_key": "test-secret-team",
         "account": "team"},
    ],
}


class FrontendProcess(DaemonProcess):
    """One ``ambry frontend`` process for one datacenter (restartable, same port)."""

    def __init__(self, datacenter: str, config_path: Path, host: str, port: int,
                 log_path: Path, log_level: str = "INFO",
                 env: dict[str, str] | None = None, s3_port: int | None = None,
                 workers: int = 1) -> None:
        super().__init__()
        self.s3_port = s3_port
        # frontend.workers resolved: above 1, ``pid`` is the supervisor's and ready means
        # every worker is (worker_status)
        self.workers = workers
        self.datacenter = datacenter
        self.name = f"frontend-{datacenter}"
        self.config_path = config_path
        self.host = host
        self.port = port
        self.log_path = log_path
        self.log_level = log_level
        self.env = env or {}

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    @property
    def s3_url(self) -> str:
        """Base URL of this frontend's S3 API (no trailing slash)."""
        return f"http://{self.host}:{self.s3_port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "ambry.cli", "frontend", "--config",
               str(self.config_path), "--datacenter", self.datacenter, "--host", self.host,
               "--port", str(self.port), "--log-level", self.log_level]
        if self.s3_port is not None:
            cmd += ["--s3-port", str(self.s3_port)]
        return cmd

    def health_url(self) -> str:
        return self.url("/healthCheck")

    def worker_status(self) -> dict[int, tuple[int, bool]]:
        """Worker index -> (pid, ready), from one scrape of the shared port's /metrics
        (a worker of several answers for all of them); {} when it does not answer."""
        try:
            with urllib.request.urlopen(self.url("/metrics"), timeout=5) as r:
                text = r.read().decode()
        except (OSError, ValueError):
            return {}
        pids: dict[int, int] = {}
        ready: dict[int, bool] = {}
        for line in text.splitlines():
            name, _, rest = line.partition("{")
            if name in ("ambry_frontend_worker_pid", "ambry_frontend_worker_ready"):
                labels, value = rest.rsplit("} ", 1)
                idx = int(labels.split('worker="', 1)[1].split('"', 1)[0])
                if name == "ambry_frontend_worker_pid":
                    pids[idx] = int(float(value))
                else:
                    ready[idx] = float(value) == 1.0
        return {i: (pid, ready.get(i, False)) for i, pid in pids.items()}

    def wait_workers(self, timeout_s: float = 30.0) -> dict[int, tuple[int, bool]]:
        """Block until all ``workers`` are ready and are children of this process."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            status = self.worker_status()
            if len(status) == self.workers and all(r for _p, r in status.values()):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: workers {status} not all ready after "
                                   f"{timeout_s} s; log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def wait_ready(self, timeout_s: float = 30.0) -> Self:
        super().wait_ready(timeout_s)
        if self.workers > 1:
            self.wait_workers(timeout_s)
        return self

    async def wait_ready_async(self, timeout_s: float = 30.0) -> Self:
        await super().wait_ready_async(timeout_s)
        if self.workers > 1:
            await asyncio.to_thread(self.wait_workers, timeout_s)
        return self


class RssSampler:
    """Samples a process's resident set size every ``interval_s`` on a thread, while in a
    ``with`` block (so an event loop in the test keeps running). ``peak_bytes`` is the
    highest sample."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # the process may be gone
                self.samples.append(int(self._proc.memory_info().rss))
            self._stop.wait(self.interval_s)

    @property
    def peak_bytes(self) -> int:
        return max(self.samples, default=0)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class StoreCluster:
    """Storage nodes plus one frontend per datacenter under ``root``, from one config.

    ``frontend`` overrides keys of :data:`TEST_FRONTEND`; ``accounts`` replaces
    :data:`TEST_ACCOUNTS`; ``extra`` adds top-level config sections (e.g. ``replication``;
    ``s3`` replaces :data:`TEST_S3`). Each frontend also serves S3 on a port of its own.
    The signing secret is random per store. Every port (node protocol, node HTTP, frontends)
    is chosen free at construction and distinct from the others.
    """

    def __init__(self, root: str | os.PathLike[str], *, datacenters: int = 1,
                 nodes_per_dc: int = 3, partitions: int = 4, replicas_per_dc: int | None = None,
                 capacity: str = "2GiB", storage: dict[str, Any] | None = None,
                 frontend: dict[str, Any] | None = None,
                 accounts: list[dict[str, Any]] | None = None,
                 extra: dict[str, Any] | None = None, log_level: str = "INFO",
                 env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret = secrets.token_urlsafe(32)
        fe_section = {**TEST_FRONTEND, "signed_url_secret": self.secret, **(frontend or {})}
        dcs = [f"dc{d}" for d in range(1, datacenters + 1)]
        # write_config picks the node ports on its own: pick the frontend ports first and
        # retry the (cheap) config write in the unlikely case they overlap.
        host = "127.0.0.1"
        for _ in range(20):
            all_ports = free_ports(2 * len(dcs), host)
            fe_ports, s3_ports = all_ports[:len(dcs)], all_ports[len(dcs):]
            endpoints: list[dict[str, Any]] = [
                {"datacenter": dc, "host": host, "port": p, "s3_port": s3p}
                for dc, p, s3p in zip(dcs, fe_ports, s3_ports, strict=True)]
            self.nodes_cluster = LocalCluster(
                self.root, datacenters=datacenters, nodes_per_dc=nodes_per_dc,
                partitions=partitions, replicas_per_dc=replicas_per_dc, capacity=capacity,
                storage=storage, log_level=log_level, env=env,
                extra={"s3": TEST_S3, **(extra or {}), "frontends": endpoints,
                       "frontend": fe_section,
                       "accounts": accounts if accounts is not None else TEST_ACCOUNTS})
            node_ports = {p for n in self.nodes_cluster.config["nodes"]
                          for p in (n["port"], n["http_port"])}
            if not node_ports & set(all_ports):
                break
        else:  # pragma: no cover - the kernel hands out ports in sequence
            raise RuntimeError("could not find distinct free ports")
        self.config = self.nodes_cluster.config
        self.config_path = self.nodes_cluster.config_path
        workers = resolve_workers(FrontendConfig(workers=fe_section.get("workers", 1)).workers)
        self.frontends: dict[str, FrontendProcess] = {
            dc: FrontendProcess(dc, self.config_path, host, port,
                                self.root / f"frontend-{dc}.log", log_level, env, s3p,
                                workers)
            for dc, port, s3p in zip(dcs, fe_ports, s3_ports, strict=True)}

        self.extra_frontends: list[FrontendProcess] = []

    def add_frontend(self, datacenter: str = "dc1") -> FrontendProcess:
        """Start one more frontend of ``datacenter`` (REST and S3 on free ports of their own;
        frontends are stateless, so any number may serve a datacenter); stopped with the
        store."""
        port, s3p = free_ports(2, "127.0.0.1")
        n = len(self.extra_frontends) + 2
        f = FrontendProcess(datacenter, self.config_path, "127.0.0.1", port,
                            self.root / f"frontend-{datacenter}-{n}.log",
                            self.frontends[datacenter].log_level,
                            self.frontends[datacenter].env, s3p,
                            self.frontends[datacenter].workers)
        f.name = f"frontend-{datacenter}-{n}"
        self.extra_frontends.append(f)
        f.start()
        f.wait_ready()
        return f

    def _all_frontends(self) -> list[FrontendProcess]:
        return [*self.frontends.values(), *self.extra_frontends]

    @property
    def nodes(self) -> dict[str, NodeProcess]:
        return self.nodes_cluster.nodes

    def nodes_in(self, datacenter: str) -> list[NodeProcess]:
        return [n for nid, n in self.nodes.items() if self._node_dc(nid) == datacenter]

    def _node_dc(self, node_id: str) -> str:
        return str(next(n["datacenter"] for n in self.config["nodes"] if n["id"] == node_id))

    def url(self, datacenter: str = "dc1", path: str = "/") -> str:
        return self.frontends[datacenter].url(path)

    def s3_url(self, datacenter: str = "dc1") -> str:
        """Base URL of a datacenter's S3 API, for ``endpoint_url``."""
        return self.frontends[datacenter].s3_url

    @property
    def partition_ids(self) -> list[int]:
        parts = self.config["partitions"]
        if isinstance(parts, list):  # an explicit list (a map grown by build-clustermap)
            return sorted(int(p["id"]) for p in parts)
        return list(range(int(parts["count"])))

    def start(self, wait: bool = True) -> StoreCluster:
        self.nodes_cluster.start(wait=False)
        for f in self.frontends.values():
            f.start()
        if wait:
            for n in self.nodes.values():
                n.wait_ready()
            for f in self.frontends.values():
                f.wait_ready()
            self.wait_settled()
        return self

    @property
    def replication_enabled(self) -> bool:
        return bool((self.config.get("replication") or {}).get("enabled", True))

    def wait_settled(self, timeout_s: float = 30.0) -> None:
        """Block until no node reports a replica still rebuilding from its peers (a fresh
        replica answers "unavailable" instead of "not found" until it has caught up once, so
        a 404 is only possible after this). Nothing to wait for with replication off."""
        if not self.replication_enabled:
            return
        deadline = time.monotonic() + timeout_s
        for n in self.nodes.values():
            if not n.running:
                continue
            while True:
                try:
                    with urllib.request.urlopen(n.http_url("/replication"), timeout=2) as r:
                        if not json.loads(r.read()).get("rebuilding"):
                            break
                except urllib.error.HTTPError as e:
                    if e.code == 404:
                        break  # a node without replication status: nothing to wait for
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{n.node_id} still rebuilding after {timeout_s} s; "
                                       f"log tail:\n{n.log_tail()}")
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the frontends, then the nodes (kill -9 whatever does not stop)."""
        for f in self._all_frontends():
            if f.running:
                with contextlib.suppress(TimeoutError):
                    f.terminate()
        self.nodes_cluster.stop()

    def kill_all(self) -> None:
        for f in self._all_frontends():
            f.kill()
        self.nodes_cluster.kill_all()

    def logs(self, lines: int = 40) -> str:
        """The tail of every process's log, for printing at teardown."""
        out = []
        for f in self._all_frontends():
            out.append(f"==== log of {f.name} ====\n{f.log_tail(lines)}")
        for n in self.nodes.values():
            out.append(f"==== log of {n.node_id} ====\n{n.log_tail(lines)}")
        return "\n".join(out)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.kill_all()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is not None:
            self.kill_all()
        else:
            self.stop()


@dataclass(frozen=True)
class StoredRecord:
    """One blob record in a replica's log, as replication would see it."""

    blob_id: str
    blob_type: BlobType
    record: str  # PUT / DELETE / TTL_UPDATE / UNDELETE
    life_version: int
    expiry_ms: int


_BLOB_RECORD_TYPES = {1: "PUT", 2: "DELETE", 3: "TTL_UPDATE", 4: "UNDELETE"}


async def replica_records(node: NodeProcess, partitions: list[int]) -> list[StoredRecord]:
    """Every blob record the node's replicas of ``partitions`` hold, in log order (read through
    the node protocol's replication feed, so the node may keep running)."""
    out: list[StoredRecord] = []
    client = node.client()
    try:
        for pid in partitions:
            token: tuple[bytes, int] | None = None
            while True:
                batch = await client.entries_since(pid, token, max_entries=1000)
                for e in batch.entries:
                    rtype = _BLOB_RECORD_TYPES.get(int(e["t"]))
                    if rtype is None:
                        continue  # a name record
                    bid = BlobId.from_bytes(bytes(e["k"]))
                    out.append(StoredRecord(bid.to_str(), bid.blob_type, rtype, int(e["lv"]),
                                            int(e["ex"])))
                if not batch.entries or batch.token == token:
                    break
                token = batch.token
    finally:
        await client.close()
    return out
