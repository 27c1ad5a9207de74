#!/usr/bin/env python3
"""Docker HEALTHCHECK of the Ambry image: exit 0 iff this container's daemon answers GOOD.

One image runs both daemons, on ports that come from the cluster config, so the check reads
the daemon's own command line (``ambry server --config C --node N`` or ``ambry frontend
--config C --datacenter D [--host H] [--port P]``) from /proc, looks its address up in the
config, and asks ``/healthCheck`` there (a node's ``http_port``, a frontend's port).
``AMBRY_HEALTH_URL`` overrides all of that. Standard library + ``ambry.common.config`` only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def _daemon_argv() -> list[str] | None:
    """The argv after ``ambry`` of the first ``ambry server|frontend`` process found."""
    for proc in sorted(Path("/proc").iterdir(), key=lambda p: (len(p.name), p.name)):
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for i, arg in enumerate(argv):
            if os.path.basename(arg) == "ambry" or arg == "ambry.cli":
                rest = argv[i + 1:]
                if rest and rest[0] in ("server", "frontend"):
                    return rest
                break
    return None


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def health_url() -> str:
    url = os.environ.get("AMBRY_HEALTH_URL")
    if url:
        return url
    argv = _daemon_argv()
    if argv is None:
        raise SystemExit("no `ambry server` or `ambry frontend` process in this container")
    from ambry.common.config import load_config

    config = _option(argv, "--config")
    if config is None:
        raise SystemExit("the daemon has no --config")
    cfg = load_config(config)
    if argv[0] == "server":
        node = cfg.cluster_map.node(_option(argv, "--node") or "")
        host, port = node.host, node.http_port
    else:
        fe = cfg.frontend_of(_option(argv, "--datacenter") or "")
        host = _option(argv, "--host") or fe.host
        port = int(_option(argv, "--port") or fe.port)
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/healthCheck"


def main() -> int:
    url = health_url()
    try:
        with urllib.request.urlopen(url, timeout=2.0) as r:
            body = r.read(64).decode(errors="replace").strip()
            print(f"{url}: {r.status} {body}")
            return 0 if r.status == 200 else 1
    except urllib.error.HTTPError as e:
        print(f"{url}: {e.code}")
    except OSError as e:
        print(f"{url}: {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
