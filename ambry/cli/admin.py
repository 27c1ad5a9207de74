"""`ambry admin ...`: operator tools to inspect and verify on-disk data."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

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
