"""The ``ambry`` command: daemons (``server``) and operator tools (``admin ...``).

Owns argument parsing and process setup (logging, event loop). Does not own what the daemons
do: ``server`` hands over to :class:`ambry.storage.node.StorageNode`.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from ambry.cli.admin import admin

__all__ = ["main"]

_LOG_FORMAT = "%(asctime)s %(levelname)s {who} %(name)s: %(message)s"


def setup_logging(who: str, level: str) -> None:
    """One line per event, tagged with the daemon's identity (``node=dc1-n1``)."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format=_LOG_FORMAT.format(who=who), stream=sys.stderr, force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@click.group()
def main() -> None:
    """Ambry-py: a distributed immutable blob store."""


@main.command("server")
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False), help="Cluster config (YAML).")
@click.option("--node", "node_id", required=True, help="This node's id in the cluster map.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Data root (overrides data_dir of the config); the node's data lives in "
                   "<data root>/<node id>.")
@click.option("--log-level", default=lambda: os.environ.get("AMBRY_LOG_LEVEL", "INFO"),
              show_default="INFO or $AMBRY_LOG_LEVEL")
def server(config_path: str, node_id: str, data_dir: str | None, log_level: str) -> None:
    """Run a storage node until SIGTERM / SIGINT (graceful shutdown, exit 0)."""
    from ambry.common.config import load_config
    from ambry.common.errors import AmbryError
    from ambry.replication.manager import attach
    from ambry.storage.node import run_node

    setup_logging(f"node={node_id}", log_level)
    try:
        cfg = load_config(config_path, data_root=data_dir)
        cfg.cluster_map.node(node_id)
    except AmbryError as e:
        raise click.ClickException(e.message) from None
    sys.exit(run_node(cfg, node_id, replication_factory=attach))


main.add_command(admin)


def _add_cluster_commands() -> None:
    from ambry.cli.cluster import cluster, frontend

    main.add_command(cluster)
    main.add_command(frontend)


_add_cluster_commands()
