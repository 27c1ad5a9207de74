"""`ambry admin ...`: operator tools to inspect and verify on-disk data."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from typing import Any

import click

from ambry.cli.args import cluster_config_option
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
    """Check every record's checksum and the index snapshots under DATA_DIR: one replica
    directory, a node's data directory, or a data root holding one directory per node (what
    `ambry cluster up --data-dir DATA_DIR` writes), reported node by node. Exit 1 if anything
    is damaged."""
    reports = verify_path(data_dir)
    if not reports:
        raise click.ClickException(
            f"no replicas under {data_dir} (expected a replica directory p<N>, a node "
            f"directory holding p<N> directories, or a data root with one per node)")
    if as_json:
        click.echo(json.dumps([asdict(r) | {"ok": r.ok} | _where(data_dir, r.path)
                               for r in reports], indent=2))
        sys.exit(0 if all(r.ok for r in reports) else 1)
    by_node: dict[str, list[Any]] = {}
    for r in reports:
        by_node.setdefault(_where(data_dir, r.path)["node"], []).append(r)
    for node, rs in by_node.items():
        bad = sum(1 for r in rs if not r.ok)
        click.echo(f"node {node}: {len(rs)} replica(s), "
                   f"{'OK' if not bad else f'{bad} DAMAGED'}")
        click.echo(f"  {'replica':<12} {'segs':>4} {'bytes':>12} {'records':>8} {'live':>8} "
                   f"{'deleted':>8} {'damage':>6} {'snapshot':<8} {'idx!=':>5}  status")
        for r in rs:
            click.echo(f"  {_where(data_dir, r.path)['replica']:<12} {r.segments:>4} "
                       f"{r.log_bytes:>12} {sum(r.records.values()):>8} {r.live_blobs:>8} "
                       f"{r.deleted_blobs:>8} {len(r.damage):>6} {r.snapshot:<8} "
                       f"{r.index_mismatches:>5}  "
                       f"{'OK' if r.ok else 'DAMAGED'}{' ' + r.error if r.error else ''}")
            for d in r.damage:
                click.echo(f"      node {node} {_where(data_dir, r.path)['replica']} segment "
                           f"{d['segment']} offset {d['offset']}: {d['kind']} "
                           f"({d['reason']}, {d['length']} bytes)")
    sys.exit(0 if all(r.ok for r in reports) else 1)


def _where(data_dir: str, replica_path: str) -> dict[str, str]:
    """The node (its directory relative to DATA_DIR, or the name of DATA_DIR when it is the
    node's own directory) and the replica directory name of a report."""
    rel = os.path.relpath(replica_path, data_dir)
    node, replica = os.path.split(rel)
    if rel == ".":  # DATA_DIR is the replica directory itself
        node, replica = os.path.split(os.path.abspath(replica_path))
        node = os.path.basename(node)
    return {"node": node or os.path.basename(os.path.abspath(data_dir)), "replica": replica}


def _fetch_json(url: str, timeout_s: float = 3.0) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return json.loads(r.read())


@admin.command("replication-status")
@cluster_config_option
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
@cluster_config_option
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


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError


@admin.command("ec-status")
@cluster_config_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--verify", is_flag=True, help="Also have every fragment node check every "
              "block of its fragment files against their checksums (reads them all).")
@click.option("--partition", "partitions", type=int, multiple=True,
              help="Only this partition (repeatable).")
@click.option("--timeout-ms", default=5000, show_default=True, type=click.IntRange(1))
def ec_status(config_path: str, as_json: bool, verify: bool, partitions: tuple[int, ...],
              timeout_ms: int) -> None:
    """The warm tier (erasure coding) per partition and datacenter: state (replicated,
    encoding, encoded, degraded), encoded segments, each fragment's node and health, the
    encode backlog and the bytes freed on replicas. Exit 1 if a partition is degraded or a
    node does not answer."""
    import asyncio

    from ambry.common.config import load_config
    from ambry.protocol.client import NodeClient
    from ambry.warm.status import summarize, survey

    cfg = load_config(config_path)
    cmap = cfg.cluster_map

    async def collect() -> Any:
        clients: dict[str, NodeClient] = {}

        def client(node_id: str) -> NodeClient:
            if node_id not in clients:
                n = cmap.node(node_id)
                clients[node_id] = NodeClient(n.host, n.port, pool_size=1,
                                              connect_timeout_ms=timeout_ms)
            return clients[node_id]

        try:
            return await survey(cmap, client, verify=verify, timeout_ms=timeout_ms)
        finally:
            for c in clients.values():
                await c.close()

    sv = asyncio.run(collect())
    rows = [r for r in summarize(cmap, sv) if not partitions or r["partition"] in partitions]
    bad = any(r["state"] == "degraded" for r in rows) or bool(sv.errors)
    if as_json:
        click.echo(json.dumps({"partitions": rows, "unreachable": sv.errors,
                               "fragment_bytes": {n: {str(p): b for p, b in d.items()}
                                                  for n, d in sv.fragment_bytes.items()}},
                              indent=2))
        sys.exit(1 if bad else 0)
    for r in rows:
        pol = r["policy"]
        policy = f"ec k={pol['ec']['k']} m={pol['ec']['m']}" if isinstance(pol, dict) \
            else "replicated"
        click.echo(f"partition {r['partition']} {r['datacenter']} ({policy}): {r['state']}; "
                   f"{len(r['segments'])} segment(s) encoded ({_size(r['encoded_bytes'])}), "
                   f"backlog {_size(r['backlog_bytes'])}, coordinator {r['coordinator']}")
        if r.get("left_small_segments"):
            click.echo(f"  left replicated: small records: {r['left_small_segments']} "
                       f"segment(s) ({_size(r['left_small_bytes'])}): freeing them would give "
                       f"back less than their fragments cost")
        if r["replicas"] and isinstance(pol, dict):
            click.echo("  replicas: " + ", ".join(
                f"{n} freed {len(v['freed_segments'])} seg ({_size(v['freed_segment_bytes'])}"
                f" -> {_size(v['freed_allocated_bytes'])} on disk)"
                for n, v in sorted(r["replicas"].items())))
        for s in r["segments"]:
            frags = ", ".join(f"{f['fragment']}{'d' if f['role'] == 'data' else 'p'}@"
                              f"{f['node']} {f['health']}"
                              + (f" ({f['detail']})" if f.get("detail") else "")
                              for f in s["fragments"])
            click.echo(f"  segment {s['segment']}.{s['generation']} of {s['source'][:8]} "
                       f"{_size(s['bytes'])}, {s['blobs']} blobs: {frags}")
        for s in r.get("replaced_segments", []):
            click.echo(f"  segment {s['segment']}.{s['generation']} of {s['source'][:8]} "
                       f"{_size(s['bytes'])}: re-encoded without its dead blobs; "
                       f"{s['fragments_left']} old fragment(s) left to drop")
    for node, err in sorted(sv.errors.items()):
        click.echo(f"unreachable: {node} ({err})")
    sys.exit(1 if bad else 0)


@admin.command("ec-dump")
@click.argument("fragment", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def ec_dump(fragment: str, as_json: bool) -> None:
    """Print a fragment FILE's header, layout and health (every block checked against its
    checksum). Exit 1 if it is damaged or torn."""
    from ambry.ec import fragfile

    if as_json:
        r = fragfile.verify(fragment)
        h = r.header
        click.echo(json.dumps({"path": r.path, "ok": r.ok, "torn": r.torn,
                               "problems": list(r.problems),
                               "bad_stripes": list(r.bad_stripes),
                               "header": None if h is None else {
                                   **asdict(h), "stripe_count": h.stripe_count,
                                   "block_bytes": h.layout.block_bytes,
                                   "fragment_bytes": h.layout.fragment_bytes,
                                   "data_offset": h.data_offset}}, indent=2))
        sys.exit(0 if r.ok else 1)
    text = fragfile.dump(fragment)
    click.echo(text)
    sys.exit(0 if text.rstrip().splitlines()[-1].strip() == "OK" else 1)


def _render_clustermap(doc: dict[str, Any], header: str) -> str:
    """YAML in the style of config/local.yaml: one flow-style line per datacenter, node,
    partition and frontend; other sections in block style."""
    import yaml

    def line(item: Any) -> str:
        return str(yaml.safe_dump(item, default_flow_style=True, sort_keys=False,
                                  width=1 << 20)).strip()

    parts = [header.rstrip("\n") + "\n"]
    for key, value in doc.items():
        if key in ("datacenters", "nodes", "partitions", "frontends") and isinstance(value,
                                                                                     list):
            parts.append(f"\n{key}:\n" + "".join(f"  - {line(v)}\n" for v in value))
        else:
            parts.append("\n" + str(yaml.safe_dump({key: value}, default_flow_style=False,
                                                   sort_keys=False)))
    return "".join(parts)


def _write_atomically(path: str, text: str) -> None:
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777  # replacing a map keeps its permissions
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # as open() would create it (mkstemp makes 0600)
    fd, tmp = tempfile.mkstemp(prefix=".clustermap-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _split_assignment(text: str, option: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name or not value:
        raise click.BadParameter(f"expected DC=VALUE, got {text!r}", param_hint=option)
    return name.strip(), value.strip()


@admin.command("build-clustermap")
@click.option("--dc", "dcs", multiple=True, metavar="DC=NODE,NODE,...",
              help="A datacenter and its storage nodes, each [id@]host[:port[:http_port]] "
                   "(repeat per datacenter; ids default to <dc>-n1, <dc>-n2, ...).")
@click.option("--partitions", type=int, default=None, help="Number of partitions.")
@click.option("--replicas-per-dc", type=int, default=3, show_default=True)
@click.option("--capacity", default=None, metavar="SIZE",
              help="Capacity of each new replica, e.g. 100GiB [default: 100GiB, or the "
                   "largest existing one with --from].")
@click.option("--node-port", type=int, default=6670, show_default=True,
              help="Node protocol port of nodes given without one.")
@click.option("--http-port", type=int, default=6680, show_default=True,
              help="/healthCheck + /metrics port of nodes given without one.")
@click.option("--frontend", "frontends", multiple=True, metavar="DC=HOST:PORT",
              help="A frontend endpoint (repeatable).")
@click.option("--name", default="ambry", show_default=True, help="Cluster name.")
@click.option("--data-dir", default="data", show_default=True,
              help="data_dir of the map (each node keeps <data_dir>/<node id>).")
@click.option("--settings-from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Copy every non-topology section (storage, frontend, accounts, "
                   "replication, ...) from this config.")
@click.option("--from", "from_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Grow this existing map instead of building a new one; "
                                 "no existing replica moves.")
@click.option("--add-partitions", type=int, default=0,
              help="With --from: partitions to add (placed on the least loaded nodes).")
@click.option("--add-node", "add_nodes", multiple=True, metavar="DC=NODE",
              help="With --from: a storage node to add (repeatable).")
@click.option("-o", "--output", default="-", show_default=True,
              help="Where to write the map (written atomically; '-' = stdout).")
def build_clustermap(dcs: tuple[str, ...], partitions: int | None, replicas_per_dc: int,
                     capacity: str | None, node_port: int, http_port: int,
                     frontends: tuple[str, ...], name: str, data_dir: str,
                     settings_from: str | None, from_path: str | None, add_partitions: int,
                     add_nodes: tuple[str, ...], output: str) -> None:
    """Write a cluster map (the YAML config every daemon reads) for the given datacenters,
    nodes and partitions, or grow an existing one (--from) by nodes and partitions.

    \b
    ambry admin build-clustermap --dc dc1=h1,h2,h3 --dc dc2=h4,h5,h6 --partitions 16 \\
        --frontend dc1=fe1:1174 --frontend dc2=fe2:1174 -o cluster.yaml
    ambry admin build-clustermap --from cluster.yaml --add-node dc1=h7 --add-node dc2=h8 \\
        --add-partitions 8 -o cluster.yaml
    """
    import shlex

    import yaml

    from ambry.common.config import config_from_dict, parse_size
    from ambry.common.errors import AmbryError
    from ambry.common.placement import (
        build_document,
        grow_document,
        parse_node_spec,
        replica_counts,
    )

    fe_specs = [_split_assignment(f, "--frontend") for f in frontends]
    try:
        cap = parse_size(capacity) if capacity is not None else None
        if from_path is None:
            if add_partitions or add_nodes:
                raise click.UsageError("--add-partitions / --add-node need --from")
            if not dcs or partitions is None:
                raise click.UsageError("give --dc (once per datacenter) and --partitions, "
                                       "or --from to grow an existing map")
            settings: dict[str, Any] = {}
            if settings_from is not None:
                with open(settings_from, encoding="utf-8") as fh:
                    settings = yaml.safe_load(fh) or {}
            datacenters = []
            for d in dcs:
                dc, members = _split_assignment(d, "--dc")
                datacenters.append((dc, [parse_node_spec(m) for m in members.split(",")
                                         if m.strip()]))
            doc = build_document(datacenters, partitions, replicas_per_dc,
                                 cap if cap is not None else 100 * 1024**3, name=name,
                                 data_dir=data_dir, frontends=fe_specs, node_port=node_port,
                                 http_port=http_port, settings=settings)
            before: dict[str, int] = {}
            new_ids = list(range(partitions))
        else:
            if dcs or partitions is not None or settings_from is not None:
                raise click.UsageError("--dc / --partitions / --settings-from build a new map; "
                                       "with --from use --add-node / --add-partitions")
            with open(from_path, encoding="utf-8") as fh:
                existing = yaml.safe_load(fh) or {}
            old = config_from_dict(existing).cluster_map
            before = replica_counts([n.id for n in old.nodes],
                                    {p.id: p.replicas for p in old.partitions})
            adds = []
            for a in add_nodes:
                dc, spec = _split_assignment(a, "--add-node")
                adds.append((dc, parse_node_spec(spec)))
            doc = grow_document(existing, {p.id: p.replicas for p in old.partitions},
                                {p.id: p.capacity_bytes for p in old.partitions},
                                add_partitions=add_partitions, add_nodes=adds,
                                capacity_bytes=cap, frontends=fe_specs,
                                node_port=node_port, http_port=http_port)
            new_ids = sorted({doc_p["id"] for doc_p in doc["partitions"]}
                             - old.partition_ids)
            if adds and not add_partitions:
                click.echo("warning: the new nodes hold no replicas until partitions are "
                           "added (--add-partitions N); existing replicas never move", err=True)
        new = config_from_dict(doc).cluster_map  # the loader must accept what we write
    except AmbryError as e:
        raise click.ClickException(e.message) from None
    args = sys.argv[sys.argv.index("build-clustermap") + 1:] \
        if "build-clustermap" in sys.argv else []
    header = (f"# Cluster map written by `ambry admin build-clustermap {shlex.join(args)}`.\n"
              "# Replicas are placed on the least loaded nodes; grow it with --from (existing\n"
              "# replicas never move), then send SIGHUP to every node and frontend "
              "(docs/operations.md).\n")
    text = _render_clustermap(doc, header)
    if output == "-":
        click.echo(text, nl=False)
    else:
        _write_atomically(output, text)
    after = replica_counts([n.id for n in new.nodes],
                           {p.id: p.replicas for p in new.partitions})
    click.echo(f"{len(new.nodes)} nodes, {len(new.partitions)} partitions "
               f"({len(new_ids)} new); replicas per node:", err=True)
    for datacenter in new.datacenters:
        row = [f"{n.id}={after[n.id]}" + (f"(+{after[n.id] - before.get(n.id, 0)})"
                                          if before and after[n.id] != before.get(n.id, 0)
                                          else "")
               for n in new.nodes if n.datacenter == datacenter.name]
        click.echo(f"  {datacenter.name}: " + " ".join(row), err=True)
