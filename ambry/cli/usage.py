"""`ambry admin usage`: live bytes and blobs per account/container of one datacenter, and the
bytes on their way out: live chunks with a TTL (uploads not complete yet among them) and
expired blobs not compacted yet.

Owns asking every storage node of a datacenter for its replicas' usage counters (the node
protocol's ``stats`` op) and printing the sum. Each partition is counted once, not once per
replica: :func:`ambry.storage.usage.aggregate_usage` takes the fullest ready replica of each
(partition, account, container). Does not own how a node counts (``ambry.storage.usage``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from ambry.cli.args import cluster_config_option

__all__ = ["usage"]


async def _collect(cfg: Any, datacenter: str, timeout_ms: int
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    from ambry.protocol.client import NodeClient

    reports: list[dict[str, Any]] = []
    unreachable: list[str] = []

    async def one(node: Any) -> None:
        try:
            async with NodeClient(node.host, node.port, pool_size=1,
                                  connect_timeout_ms=min(2000, timeout_ms),
                                  request_timeout_ms=timeout_ms) as c:
                replicas = await c.stats()
        except Exception as e:  # noqa: BLE001 - reported in the output
            unreachable.append(f"{node.id} ({e})")
            return
        for r in replicas:
            if "error" in r:
                continue  # a replica that failed to open
            reports.append({"node": node.id, "partition": r["partition_id"],
                            "ready": bool(r.get("usage_ready")), "usage": r.get("usage", [])})

    await asyncio.gather(*(one(n) for n in cfg.cluster_map.nodes
                           if n.datacenter == datacenter))
    return reports, unreachable


@click.command("usage")
@cluster_config_option
@click.option("--datacenter", default=None,
              help="The datacenter to count [default: the first of the config].")
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout-ms", default=10_000, show_default=True)
def usage(config_path: str, datacenter: str | None, as_json: bool, timeout_ms: int) -> None:
    """Live bytes and blobs per account/container in one datacenter (bytes: record bytes of
    each live blob's PUT in one replica of its partition; blobs: chunks of composite blobs
    not counted). Also: "ttl chunks", the part of bytes in chunks that carry a TTL (chunks
    of uploads that have not completed, or never will: they expire after
    frontend.pending_chunk_ttl_s; unstitched chunk uploads; S3 multipart parts; chunks of
    blobs with a TTL), and "expired", bytes of expired blobs that compaction has not freed
    yet (not in bytes). Exit 1 if a node did not answer or a partition has no replica whose
    counters are complete yet (the numbers are then too low)."""
    from ambry.common.config import load_config
    from ambry.common.errors import AmbryError
    from ambry.storage.usage import aggregate_usage

    try:
        cfg = load_config(config_path)
        dc = datacenter or cfg.cluster_map.datacenters[0].name
        cfg.cluster_map.datacenter(dc)
    except AmbryError as e:
        raise click.ClickException(e.message) from None
    reports, unreachable = asyncio.run(_collect(cfg, dc, timeout_ms))
    totals = aggregate_usage(reports)
    counted = {r["partition"] for r in reports if r["ready"]}
    incomplete = sorted(p.id for p in cfg.cluster_map.partitions
                        if cfg.cluster_map.replicas_in(p.id, dc) and p.id not in counted)
    rows: list[dict[str, Any]] = []
    for (aid, cid), t in totals.items():
        account = cfg.account_by_id(aid)
        container = account.container_by_id(cid) if account is not None else None
        rows.append({"account": account.name if account is not None else str(aid),
                     "container": container.name if container is not None else str(cid),
                     "account_id": aid, "container_id": cid, "bytes": t.bytes,
                     "blobs": t.blobs, "expiring_chunk_bytes": t.expiring_chunk_bytes,
                     "expired_bytes": t.expired_bytes})
    if as_json:
        click.echo(json.dumps({"datacenter": dc, "containers": rows,
                               "incomplete_partitions": incomplete,
                               "unreachable": sorted(unreachable)}, indent=2))
    else:
        click.echo(f"{'account':<16} {'container':<16} {'bytes':>16} {'blobs':>12} "
                   f"{'ttl chunks':>14} {'expired':>14}")
        for r in rows:
            click.echo(f"{r['account']:<16} {r['container']:<16} {r['bytes']:>16} "
                       f"{r['blobs']:>12} {r['expiring_chunk_bytes']:>14} "
                       f"{r['expired_bytes']:>14}")
        click.echo(f"{'total':<33} {sum(r['bytes'] for r in rows):>16} "
                   f"{sum(r['blobs'] for r in rows):>12} "
                   f"{sum(r['expiring_chunk_bytes'] for r in rows):>14} "
                   f"{sum(r['expired_bytes'] for r in rows):>14}")
        if incomplete:
            click.echo(f"incomplete: partitions {incomplete} have no replica with complete "
                       f"counters yet")
        for u in sorted(unreachable):
            click.echo(f"unreachable: {u}")
    sys.exit(1 if unreachable or incomplete else 0)
