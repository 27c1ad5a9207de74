"""The ``ambry`` command: daemons (``server``) and operator tools (``admin ...``).

Owns argument parsing and process setup (logging, event loop). Does not own what the daemons
do: ``server`` hands over to :class:`ambry.storage.node.StorageNode`.
"""

from __future__ import annotations

import os
import sys

import click

from ambry.cli.admin import admin
from ambry.cli.logs import setup_logging

__all__ = ["LOG_FORMAT_OPTION", "main", "setup_logging"]

#: ``--log-format`` of every daemon command (default: ``daemon.log_format`` of the config).
LOG_FORMAT_OPTION = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default=None,
    help="Log lines as text or one JSON object per line [default: daemon.log_format of the "
         "config, else text].")


@click.group()
def main() -> None:
    """Ambry-py: a distributed immutable blob store."""


@main.command("server")
@click.option("--config", "config_path", required=True, envvar="AMBRY_CONFIG",
              show_envvar=True,
              type=click.Path(exists=True, dir_okay=False), help="Cluster config (YAML).")
@click.option("--node", "node_id", required=True, help="This node's id in the cluster map.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Data root (overrides data_dir of the config); the node's data lives in "
                   "<data root>/<node id>.")
@click.option("--log-level", default=lambda: os.environ.get("AMBRY_LOG_LEVEL", "INFO"),
              show_default="INFO or $AMBRY_LOG_LEVEL")
@LOG_FORMAT_OPTION
def server(config_path: str, node_id: str, data_dir: str | None, log_level: str,
           log_format: str | None) -> None:
    """Run a storage node until SIGTERM / SIGINT (graceful shutdown, exit 0). SIGHUP
    reloads the cluster map from --config (docs/operations.md)."""
    from ambry.common.config import load_config
    from ambry.common.daemon import DaemonConfig
    from ambry.common.errors import AmbryError
    from ambry.replication.manager import attach
    from ambry.storage.node import run_node
    from ambry.warm import attach as attach_warm_tier

    try:
        cfg = load_config(config_path, data_root=data_dir)
        cfg.cluster_map.node(node_id)
        daemon = DaemonConfig.from_sections(cfg.sections)
    except AmbryError as e:
        setup_logging(f"node={node_id}", log_level, log_format or "text")
        raise click.ClickException(e.message) from None
    setup_logging(f"node={node_id}", log_level, log_format or daemon.log_format)
    sys.exit(run_node(cfg, node_id, replication_factory=attach,
                      warm_factory=attach_warm_tier,
                      reload_config=lambda: load_config(config_path, data_root=data_dir),
                      config_path=config_path))


main.add_command(server, "node")  # the same command under the name the docs use for it


main.add_command(admin)


def _add_admin_commands() -> None:
    from ambry.cli.usage import usage

    admin.add_command(usage)


_add_admin_commands()


def _add_cluster_commands() -> None:
    from ambry.cli.cluster import cluster, frontend

    main.add_command(cluster)
    main.add_command(frontend)


_add_cluster_commands()


def _add_blob_commands() -> None:
    from ambry.cli.blobs import BLOB_COMMANDS

    for command in BLOB_COMMANDS:
        main.add_command(command)


_add_blob_commands()
