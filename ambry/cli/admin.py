"""`ambry admin ...`: operator tools to inspect and verify on-disk data."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

import click

from ambry.storage.inspect import dump_segment, verify_path


@click.group()
def admin() -> None:
    """Inspect and verify on-disk data and the cluster."""


@admin.command("dump-log")
@click.argument("segment", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dump_log(segment: str, as_json: bool) -> None:
    """Print every record of a log SEGMENT file (and any damaged range)."""
    bad = 0
    for row in dump_segment(segment):
        if row.get("type") == "DAMAGE":
            bad += 1
        if as_json:
            click.echo(json.dumps(row))
        elif "segment" in row and "offset" not in row:
            click.echo(f"segment {row['segment']} generation {row['generation']} "
                       f"({row['file']}, {row['size']} bytes)")
            click.echo(f"{'offset':>10} {'type':<11} {'seq':>8} {'lv':>3} {'flags':<5} "
                       f"{'bytes':>9}  key")
        elif row["type"] == "DAMAGE":
            click.echo(f"{row['offset']:>10} DAMAGE      {row['kind']}: {row['reason']} "
                       f"({row['length']} bytes)")
        else:
            flags = ("D" if row["deleted"] else "-") + ("P" if row["permanent"] else "-")
            click.echo(f"{row['offset']:>10} {row['type']:<11} {row['seq']:>8} "
                       f"{row['life_version']:>3} {flags:<5} {row['payload_len']:>9}  "
                       f"{row['key']}")
    sys.exit(1 if bad else 0)


@admin.command("verify")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def verify(data_dir: str, as_json: bool) -> None:
    """Check every record's checksum and the index snapshots under DATA_DIR (a node's data
    directory or one replica directory). Exit 1 if anything is damaged."""
    reports = verify_path(data_dir)
    if not reports:
        raise click.ClickException(f"no replicas under {data_dir}")
    if as_json:
        click.echo(json.dumps([asdict(r) | {"ok": r.ok} for r in reports], indent=2))
    else:
        click.echo(f"{'replica':<40} {'segs':>4} {'bytes':>12} {'records':>8} {'live':>8} "
                   f"{'deleted':>8} {'damage':>6} {'snapshot':<8} {'idx!=':>5}  status")
        for r in reports:
            click.echo(f"{r.path[-40:]:<40} {r.segments:>4} {r.log_bytes:>12} "
                       f"{sum(r.records.values()):>8} {r.live_blobs:>8} {r.deleted_blobs:>8} "
                       f"{len(r.damage):>6} {r.snapshot:<8} {r.index_mismatches:>5}  "
                       f"{'OK' if r.ok else 'DAMAGED'}{' ' + r.error if r.error else ''}")
            for d in r.damage:
                click.echo(f"    segment {d['segment']} offset {d['offset']}: {d['kind']} "
                           f"({d['reason']}, {d['length']} bytes)")
    sys.exit(0 if all(r.ok for r in reports) else 1)


def _fetch_json(url: str, timeout_s: float = 3.0) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return json.loads(r.read())


@admin.command("replication-status")
@click.option("--config", "config_path", default="config/local.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@click.option("--all-peers", is_flag=True, help="Also rows of peers a replica does not pull "
              "from (cross-DC standby peers).")
def replication_status(config_path: str, as_json: bool, all_peers: bool) -> None:
    """The cluster's replication lag table: per node, partition and peer, bytes and seconds
    behind, blobs fetched, errors. Exit 1 if a node does not answer."""
    from ambry.common.config import load_config

    cfg = load_config(config_path)
    table: list[dict[str, Any]] = []
    unreachable = []
    for n in cfg.cluster_map.nodes:
        try:
            st = _fetch_json(f"http://{n.host}:{n.http_port}/replication")
        except OSError as e:
            unreachable.append(f"{n.id} ({e})")
            continue
        for row in st["peers"]:
            if row["pulling"] or all_peers:
                table.append({"node": n.id, "datacenter": n.datacenter,
                              "rebuilding": row["partition"] in st["rebuilding"], **row})
    if as_json:
        click.echo(json.dumps({"rows": table, "unreachable": unreachable}, indent=2))
    else:
        click.echo(f"{'node':<10} {'part':>4} {'peer':<10} {'xdc':<3} {'lag bytes':>12} "
                   f"{'lag s':>8} {'fetched':>8} {'errors':>6}  state")
        for r in table:
            state = "rebuilding" if r["rebuilding"] else (
                "peer down" if r["peer_down_s"] else ("caught up" if r["lag_bytes"] == 0
                                                      else "behind"))
            click.echo(f"{r['node']:<10} {r['partition']:>4} {r['peer']:<10} "
                       f"{'yes' if r['cross_dc'] else 'no':<3} {r['lag_bytes']:>12} "
                       f"{r['lag_seconds']:>8.1f} {r['blobs_fetched']:>8} {r['errors']:>6}"
                       f"  {state}")
        for u in unreachable:
            click.echo(f"unreachable: {u}")
    sys.exit(1 if unreachable else 0)


@admin.command("digests")
@click.option("--config", "config_path", default="config/local.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def digests(config_path: str, as_json: bool) -> None:
    """Per-replica content digests of every partition on every node; exit 1 unless all
    replicas of each partition agree (converged)."""
    import asyncio

    from ambry.common.config import load_config
    from ambry.protocol.client import NodeClient

    cfg = load_config(config_path)

    async def collect() -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for n in cfg.cluster_map.nodes:
            async with NodeClient(n.host, n.port, pool_size=1) as c:
                for p in cfg.cluster_map.partitions_of(n.id):
                    try:
                        d = await c.digest(p.id)
                        out.setdefault(p.id, {})[n.id] = {k: d[k] for k in
                                                          ("digest", "blobs", "names")}
                    except Exception as e:  # noqa: BLE001 - shown in the table
                        out.setdefault(p.id, {})[n.id] = {"error": str(e)}
        return out

    result = asyncio.run(collect())
    converged = all(len({v.get("digest") for v in reps.values()}) == 1
                    and all("digest" in v for v in reps.values())
                    for reps in result.values())
    if as_json:
        click.echo(json.dumps({"converged": converged, "partitions": result}, indent=2))
    else:
        for pid, reps in sorted(result.items()):
            same = len({v.get("digest") for v in reps.values()}) == 1
            click.echo(f"partition {pid}: {'converged' if same else 'DIFFERENT'}")
            for nid, v in sorted(reps.items()):
                click.echo(f"   {nid:<10} {v.get('digest', v.get('error'))} "
                           f"blobs={v.get('blobs', '-')} names={v.get('names', '-')}")
    sys.exit(0 if converged else 1)
