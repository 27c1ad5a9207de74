"""`ambry cluster up|status|down` and `ambry frontend`: run a whole cluster from one config.

Owns starting every storage node and frontend of a config as separate processes on this
machine, waiting until all are healthy, the state file (``<data root>/cluster.json``: role,
datacenter, id, pid, ports of every process) that ``status`` and ``down`` read, and stopping
them all cleanly on Ctrl-C / SIGTERM. A restart reuses the data.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ambry.cli.args import cluster_config_option

if TYPE_CHECKING:
    from ambry.common.config import ClusterConfig

__all__ = ["cluster", "frontend"]

STATE_FILE = "cluster.json"


@dataclass
class Proc:
    role: str  # "node" | "frontend"
    id: str
    datacenter: str
    host: str
    port: int
    health_port: int
    pid: int = 0
    log: str = ""

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.health_port}/healthCheck"


def _health(url: str, timeout_s: float = 0.5) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def with_signed_url_secret(cfg: ClusterConfig) -> ClusterConfig:
    """``cfg`` with ``frontend.signed_url_secret`` set to the secret a frontend signs with
    (from $AMBRY_SIGNED_URL_SECRET, the config, or the secret file, created on first use when
    the config says to generate it). Raises InvalidArgument when there is none or it is weak."""
    from ambry.common.urlsecret import resolve_secret

    fe = cfg.frontend
    secret = resolve_secret(fe.signed_url_secret, fe.signed_url_secret_file,
                            fe.signed_url_secret_generate, Path(cfg.data_root))
    return replace(cfg, frontend=replace(fe, signed_url_secret=secret, signed_url_secret_file="",
                                         signed_url_secret_generate=False))


def _procs_of(cfg: Any) -> list[Proc]:
    out = [Proc("node", n.id, n.datacenter, n.host, n.port, n.http_port)
           for n in cfg.cluster_map.nodes]
    out += [Proc("frontend", f"frontend-{f.datacenter}", f.datacenter, f.host, f.port, f.port)
            for f in cfg.frontends]
    return out


@click.group()
def cluster() -> None:
    """Run the whole cluster of a config on this machine."""


@cluster.command("up")
@cluster_config_option
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Data root (default: data_dir of the config).")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log format of every process [default: daemon.log_format of the config].")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True,
              help="Seconds to wait for every process to become healthy.")
def up(config_path: str, data_dir: str | None, log_level: str, log_format: str | None,
       timeout_s: float) -> None:
    """Start every storage node and frontend; stop them all on Ctrl-C / SIGTERM."""
    from ambry.common.config import load_config
    from ambry.common.daemon import DaemonConfig
    from ambry.common.errors import AmbryError

    try:
        cfg = load_config(config_path, data_root=data_dir)
        grace_s = DaemonConfig.from_sections(cfg.sections).shutdown_grace_s
        if cfg.frontends:  # refused here, before anything starts; created once if generated
            with_signed_url_secret(cfg)
    except AmbryError as e:
        raise click.ClickException(e.message) from None
    fmt_args = ["--log-format", log_format] if log_format else []
    root = Path(cfg.data_root)
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    state_path = root / STATE_FILE
    if state_path.exists():
        old = json.loads(state_path.read_text())
        if any(_alive(p["pid"]) for p in old.get("processes", [])):
            raise click.ClickException(f"a cluster is already running from {root} "
                                       f"(see `ambry cluster status --data-dir {root}`)")
    procs = _procs_of(cfg)
    busy = [f"{p.id} {p.host}:{port}" for p in procs for port in {p.port, p.health_port}
            if not _port_free(p.host, port)]
    if busy:
        raise click.ClickException("ports already in use: " + ", ".join(busy))
    env = dict(os.environ)
    children: list[tuple[Proc, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop_all(*_: Any) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        click.echo("stopping the cluster ...")
        for _p, child in reversed(children):  # frontends first
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s + 20  # the daemons drain for grace_s
        for p, child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                click.echo(f"{p.id} did not stop in time: killing it")
                child.kill()
        state_path.unlink(missing_ok=True)

    def on_sigterm(*_: object) -> None:
        stop_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for p in procs:
            if p.role == "node":
                cmd = [sys.executable, "-m", "ambry.cli", "server", "--config", config_path,
                       "--node", p.id, "--data-dir", str(root), "--log-level", log_level,
                       *fmt_args]
            else:
                cmd = [sys.executable, "-m", "ambry.cli", "frontend", "--config", config_path,
                       "--datacenter", p.datacenter, "--data-dir", str(root),
                       "--log-level", log_level, *fmt_args]
            p.log = str(logs / f"{p.id}.log")
            with open(p.log, "ab") as logf:
                child = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
            p.pid = child.pid
            children.append((p, child))
        state_path.write_text(json.dumps({"config": os.path.abspath(config_path),
                                          "data_dir": str(root.resolve()),
                                          "processes": [asdict(p) for p in procs]}, indent=2))
        deadline = time.monotonic() + timeout_s
        pending = list(children)
        while pending:
            for p, child in list(pending):
                if child.poll() is not None:
                    tail = Path(p.log).read_text(errors="replace").splitlines()[-20:]
                    raise click.ClickException(f"{p.id} exited with {child.returncode}:\n"
                                               + "\n".join(tail))
                if _health(p.health_url) == 200:
                    pending.remove((p, child))
            if time.monotonic() > deadline:
                raise click.ClickException("not healthy in time: " +
                                           ", ".join(p.id for p, _ in pending))
            time.sleep(0.1)
        click.echo(f"cluster '{cfg.name}' is up ({len(cfg.cluster_map.nodes)} storage nodes, "
                   f"{len(cfg.frontends)} frontends); data in {root}, logs in {logs}")
        for p in procs:
            if p.role == "frontend":
                click.echo(f"  {p.datacenter}: Ambry REST API at http://{p.host}:{p.port}/")
        _echo_s3(cfg)
        click.echo("try:  curl -i -X POST http://127.0.0.1:1174/ -H 'x-ambry-service-id: me' "
                   "-H 'x-ambry-content-type: text/plain' --data-binary 'hello'")
        click.echo("press Ctrl-C to stop")
        while True:
            for p, child in children:
                if child.poll() is not None and not stopping:
                    click.echo(f"warning: {p.id} exited with {child.returncode}; see {p.log}")
                    children.remove((p, child))
                    break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop_all()


def _load_state(data_dir: str | None, config_path: str) -> dict[str, Any]:
    if data_dir is None:
        from ambry.common.config import load_config
        from ambry.common.errors import AmbryError

        try:
            data_dir = str(load_config(config_path).data_root)
        except (OSError, AmbryError) as e:
            reason = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
            raise click.ClickException(f"cannot read the config {config_path}: {reason} "
                                       f"(give --config, $AMBRY_CONFIG or --data-dir)"
                                       ) from None
    path = Path(data_dir) / STATE_FILE
    if not path.exists():
        raise click.ClickException(f"no running cluster found under {data_dir}")
    return dict(json.loads(path.read_text()))


@cluster.command("status")
@click.option("--config", "config_path", default="config/local.yaml", show_default=True,
              envvar="AMBRY_CONFIG", show_envvar=True)
@click.option("--data-dir", default=None)
@click.option("--json", "as_json", is_flag=True)
def status(config_path: str, data_dir: str | None, as_json: bool) -> None:
    """Every process of the running cluster: role, datacenter, id, pid, ports, health."""
    state = _load_state(data_dir, config_path)
    rows = []
    for raw in state["processes"]:
        p = Proc(**raw)
        alive = _alive(p.pid)
        code = _health(p.health_url) if alive else None
        health = "GOOD" if code == 200 else ("BAD" if code else ("DOWN" if not alive
                                                                  else "NO ANSWER"))
        rows.append(asdict(p) | {"alive": alive, "health": health})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'role':<9} {'dc':<5} {'id':<14} {'pid':>7} {'port':>6} {'health':>6}  status")
    for r in rows:
        click.echo(f"{r['role']:<9} {r['datacenter']:<5} {r['id']:<14} {r['pid']:>7} "
                   f"{r['port']:>6} {r['health_port']:>6}  {r['health']}")
    if any(r["health"] != "GOOD" for r in rows):
        sys.exit(1)


@cluster.command("down")
@click.option("--config", "config_path", default="config/local.yaml", show_default=True,
              envvar="AMBRY_CONFIG", show_envvar=True)
@click.option("--data-dir", default=None)
def down(config_path: str, data_dir: str | None) -> None:
    """SIGTERM every process of the running cluster."""
    state = _load_state(data_dir, config_path)
    for raw in state["processes"]:
        if _alive(raw["pid"]):
            os.kill(raw["pid"], signal.SIGTERM)
    click.echo("sent SIGTERM to every process")


@click.command("frontend")
@click.option("--config", "config_path", required=True, envvar="AMBRY_CONFIG",
              show_envvar=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--datacenter", required=True, help="The datacenter this frontend serves.")
@click.option("--host", default=None, help="Listen address (default: from the config).")
@click.option("--port", default=None, type=int, help="Port (default: from the config).")
@click.option("--s3-port", default=None, type=int,
              help="S3 API port (default: frontends[].s3_port of the config, else 1175; "
                   "0 turns S3 off).")
@click.option("--data-dir", default=None, help="Data root (default: data_dir of the config); "
              "a frontend keeps no data, only looks for frontend.signed_url_secret_file "
              "there.")
@click.option("--log-level", default=lambda: os.environ.get("AMBRY_LOG_LEVEL", "INFO"))
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or one JSON object per line [default: "
                   "daemon.log_format of the config, else text].")
@click.option("--workers", "workers_opt", default=None,
              help="Frontend processes on the same ports: a number, or 'auto' for one per "
                   "core [default: frontend.workers of the config, else 1].")
@click.option("--worker", "worker_opt", default=None, hidden=True,
              help="INDEX/COUNT/START/READY_FD/CONTROL_DIR: run as one worker of a "
                   "supervisor (set by the supervisor itself).")
def frontend(config_path: str, datacenter: str, host: str | None, port: int | None,
             s3_port: int | None, data_dir: str | None, log_level: str,
             log_format: str | None, workers_opt: str | None, worker_opt: str | None) -> None:
    """Run a frontend (Ambry REST API) until SIGTERM / SIGINT (in-flight requests finish
    within daemon.shutdown_grace_s, exit 0). SIGHUP reloads the cluster map from --config.
    With frontend.workers (or --workers) above 1, this process supervises that many
    frontend processes serving the same ports (docs/operations.md, "Frontend workers")."""
    from ambry.cli.logs import setup_logging
    from ambry.common.config import FrontendConfig, load_config
    from ambry.common.daemon import DaemonConfig
    from ambry.common.errors import AmbryError
    from ambry.frontend.server import run_frontend
    from ambry.frontend.supervisor import resolve_workers

    def load() -> ClusterConfig:
        return with_signed_url_secret(load_config(config_path, data_root=data_dir))

    worker = _parse_worker(worker_opt) if worker_opt is not None else None
    try:
        cfg = load()
        cfg.cluster_map.datacenter(datacenter)
        daemon = DaemonConfig.from_sections(cfg.sections)
        configured = cfg.frontend.workers
        if workers_opt is not None:
            raw: int | str = workers_opt if workers_opt == "auto" else _int_or(workers_opt)
            configured = FrontendConfig(workers=raw).workers  # type: ignore[arg-type]
    except AmbryError as e:
        setup_logging(f"frontend={datacenter}", log_level, log_format or "text")
        raise click.ClickException(e.message) from None
    workers = resolve_workers(configured)
    setup_logging(f"frontend={datacenter}", log_level, log_format or daemon.log_format,
                  worker=worker.index if worker is not None else None)
    if worker is None and workers > 1:
        _supervise(workers, daemon.shutdown_grace_s, config_path, datacenter, host, port,
                   s3_port, data_dir, log_level, log_format)
        return
    run_frontend(cfg, datacenter, host, port, reload_config=load,
                 config_path=config_path, s3_port=s3_port, worker=worker)


def _int_or(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text  # FrontendConfig says what is wrong with it


def _parse_worker(text: str) -> Any:
    from ambry.frontend.supervisor import WorkerSpec

    index, count, start, fd, control = text.split("/", 4)
    return WorkerSpec(int(index), int(count), int(start), Path("/" + control), int(fd))


def _supervise(workers: int, grace_s: float, config_path: str, datacenter: str,
               host: str | None, port: int | None, s3_port: int | None, data_dir: str | None,
               log_level: str, log_format: str | None) -> None:
    """Run the supervisor of ``workers`` frontend processes; exit with its code."""
    import asyncio

    from ambry.frontend.supervisor import Supervisor, WorkerSpec

    base = [sys.executable, "-m", "ambry.cli", "frontend", "--config",
            os.path.abspath(config_path), "--datacenter", datacenter, "--log-level", log_level]
    for flag, value in (("--host", host), ("--port", port), ("--s3-port", s3_port),
                        ("--data-dir", data_dir and os.path.abspath(data_dir)),
                        ("--log-format", log_format)):
        if value is not None:
            base += [flag, str(value)]

    def command(spec: WorkerSpec) -> list[str]:
        control = str(spec.control_dir.resolve()).lstrip("/")
        return [*base, "--workers", "1", "--worker",
                f"{spec.index}/{spec.count}/{spec.start}/{spec.ready_fd}/{control}"]

    sup = Supervisor(command, workers, grace_s, name=f"frontend {datacenter}")
    sys.exit(asyncio.run(sup.run()))


def _echo_s3(cfg: Any) -> None:
    """The S3 endpoints and the access keys of the config (the development key pairs of
    config/local.yaml, one per account), ready to paste."""
    from ambry.common.config import DEFAULT_S3_PORT
    from ambry.common.errors import AmbryError
    from ambry.frontend.s3.config import s3_config_of

    for f in cfg.frontends:
        port = f.s3_port if f.s3_port is not None else DEFAULT_S3_PORT
        if port:
            click.echo(f"  {f.datacenter}: S3 API at http://{f.host}:{port}/")
    try:
        keys = s3_config_of(cfg).access_keys
    except AmbryError as e:
        click.echo(f"warning: s3 section: {e.message}")
        return
    for k in keys:
        click.echo(f"S3 access key (account {k.account}): AWS_ACCESS_KEY_ID={k.access_key} "
                   f"AWS_SECRET_ACCESS_KEY={k.secret_key}")
