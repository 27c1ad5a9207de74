"""Prometheus metrics of one storage node, in a registry of its own.

Owns the metric names and labels the node exports on ``/metrics``: per-op request counts by
status, latency histograms, protocol bytes in and out, connection and internal-error counts,
per-replica gauges read from ``Replica.stats()`` at scrape time, live usage per account and
container (``ambry.storage.usage``), the outcome of cluster-map reloads, and the process's
own ``process_*`` family (CPU, memory, open files: prometheus_client's ``ProcessCollector``).
A per-node ``CollectorRegistry`` (never the global one) lets tests run several nodes in one
process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["CONTENT_TYPE", "NodeMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                      2.5, 5.0, 10.0)


class _ReplicaCollector:
    """Per-replica gauges, computed when scraped (stats are cheap counters)."""

    def __init__(self, source: Callable[[], Iterable[Any]]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        fams = {
            "blobs": GaugeMetricFamily("ambry_replica_blobs", "Blob ids in the index",
                                       labels=["partition"]),
            "log_bytes": GaugeMetricFamily("ambry_replica_log_bytes", "Bytes of log segments",
                                           labels=["partition"]),
            "capacity_bytes": GaugeMetricFamily("ambry_replica_capacity_bytes",
                                                "Capacity from the cluster map",
                                                labels=["partition"]),
            "segments": GaugeMetricFamily("ambry_replica_segments", "Log segment files",
                                          labels=["partition"]),
            "last_seq": GaugeMetricFamily("ambry_replica_last_sequence",
                                          "Sequence number of the last record",
                                          labels=["partition"]),
            "read_only": GaugeMetricFamily("ambry_replica_read_only",
                                           "1 if the replica refuses puts",
                                           labels=["partition"]),
            "damage_reports": GaugeMetricFamily("ambry_replica_damage_reports",
                                                "Damaged log ranges found since open",
                                                labels=["partition"]),
            "group_commit_syncs": GaugeMetricFamily("ambry_replica_group_commit_syncs",
                                                    "fdatasync calls made by group commit",
                                                    labels=["partition"]),
        }
        for st in self._source():
            pid = str(st.partition_id)
            for key, fam in fams.items():
                v = st.read_only if key == "read_only" else getattr(st, key)
                fam.add_metric([pid], float(1 if (key == "read_only" and v) else
                                            (0 if key == "read_only" else v)))
        yield from fams.values()


class _ReplicationCollector:
    """Lag and progress of replication per (partition, peer)."""

    def __init__(self, source: Callable[[], list[dict[str, Any]]]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["partition", "peer", "cross_dc"]
        fams = {
            "lag_bytes": GaugeMetricFamily("ambry_replication_lag_bytes",
                                           "Durable log bytes of the peer not yet pulled "
                                           "(-1: never reached)", labels=labels),
            "lag_seconds": GaugeMetricFamily("ambry_replication_lag_seconds",
                                             "Age of the newest record not yet pulled",
                                             labels=labels),
            "blobs_fetched": GaugeMetricFamily("ambry_replication_blobs_fetched",
                                               "Blobs fetched from the peer", labels=labels),
            "bytes_fetched": GaugeMetricFamily("ambry_replication_bytes_fetched",
                                               "Blob bytes fetched from the peer",
                                               labels=labels),
            "errors": GaugeMetricFamily("ambry_replication_errors",
                                        "Failed pulls from the peer", labels=labels),
        }
        for row in self._source():
            lv = [str(row["partition"]), row["peer"], str(bool(row["cross_dc"])).lower()]
            for k, fam in fams.items():
                fam.add_metric(lv, float(row[k]))
        yield from fams.values()


class _UsageCollector:
    """Live bytes and blobs per account/container, summed over this node's replicas (so a
    cluster-wide sum counts every replica; ``ambry admin usage`` counts each partition
    once), and whether each replica's counters are complete."""

    def __init__(self, source: Callable[[], tuple[list[tuple[str, str, int, int]],
                                                  list[tuple[int, bool]]]]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        rows, ready = self._source()
        size = GaugeMetricFamily("ambry_container_usage_bytes",
                                 "Record bytes of live blobs in this node's replicas",
                                 labels=["account", "container"])
        blobs = GaugeMetricFamily("ambry_container_usage_blobs",
                                  "Live blobs (chunks not counted) in this node's replicas",
                                  labels=["account", "container"])
        for account, container, b, n in rows:
            size.add_metric([account, container], float(b))
            blobs.add_metric([account, container], float(n))
        done = GaugeMetricFamily("ambry_replica_usage_ready",
                                 "1 once the replica's usage counters are complete",
                                 labels=["partition"])
        for pid, ok in ready:
            done.add_metric([str(pid)], 1.0 if ok else 0.0)
        yield from (size, blobs, done)


def _ceil_page(n: int) -> int:
    return -(-n // 4096) * 4096


#: the coordinator's rows of the warm tier's metrics: (kind, name, help, ec_status job field)
_COORDINATOR = [
    ("gauge", "ambry_ec_encode_backlog_bytes", ("Bytes of sealed segments old enough to encode "
     "and not encoded yet (the partition's coordinator only)"), "backlog_bytes"),
    ("gauge", "ambry_ec_encoding", "1 while this node encodes a segment of the partition",
     "encoding"),
    ("counter", "ambry_ec_encoded_bytes", "Segment bytes this node encoded (since start)",
     "encoded_bytes"),
    ("counter", "ambry_ec_encoded_segments", "Segments this node encoded (since start)",
     "encoded_segments"),
    ("counter", "ambry_ec_encode_cpu_seconds", ("CPU seconds spent in the erasure code "
     "encoding them"), "encode_cpu_s"),
    # compaction of encoded segments (ambry/warm/recode.py)
    ("counter", "ambry_ec_recoded_segments", ("Encoded segments this node re-encoded without "
     "their dead blobs (since start)"), "recoded_segments"),
    ("counter", "ambry_ec_recode_reclaimed_bytes", ("Encoded segment bytes re-encoding gave up "
     "(dead blobs; times (k+m)/k on disk, per datacenter)"), "recode_reclaimed_bytes"),
    ("counter", "ambry_ec_dropped_fragments", ("Fragment files of replaced (re-encoded) "
     "segments deleted once no replica read through them"), "dropped_fragments"),
    ("counter", "ambry_ec_recode_cpu_seconds", ("CPU seconds spent in the erasure code "
     "re-encoding"), "recode_cpu_s"),
]


class _WarmTierCollector:
    """The warm tier (erasure coding, docs/erasure-coding.md) per partition on this node:
    disk given back and held, the encode backlog and progress, reads through fragments.
    Rows come from ``FragmentOps.metric_rows``, refreshed off the loop at scrape time."""

    def __init__(self, source: Callable[[], list[dict[str, Any]]]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        lab = ["partition"]
        g = GaugeMetricFamily
        c = CounterMetricFamily
        freed = g("ambry_ec_freed_bytes", "Disk bytes hole punching gave back in this node's "
                  "replica (payloads of segments now read through fragments)", labels=lab)
        frag = g("ambry_ec_fragment_bytes", "Disk bytes of the partition's fragment files on "
                 "this node", labels=lab)
        saved = g("ambry_ec_bytes_saved", "Freed minus fragment bytes on this node (summed over "
                  "the cluster: what erasure coding saves; negative on a node holding "
                  "fragments of a partition it has no replica of)", labels=lab)
        # the partition's coordinator only: (family, the ec_status job row's field)
        coord = [(g(name, text, labels=lab) if kind == "gauge" else
                  c(name, text, labels=lab), field) for kind, name, text, field in _COORDINATOR]
        recon = c("ambry_ec_reconstruction_reads", "Windows of encoded blobs rebuilt from k "
                  "other fragments (a fragment node down, slow or corrupt)", labels=lab)
        reads = c("ambry_ec_fragment_reads", "Fragment windows read for blobs of encoded "
                  "segments", labels=lab)
        read_bytes = c("ambry_ec_fragment_read_bytes", "Bytes of those windows", labels=lab)
        errors = c("ambry_ec_fragment_read_errors", "Failed fragment reads by reason "
                   "(unavailable: down, slow or refused; corrupt: a checksum failed)",
                   labels=["partition", "reason"])
        for row in self._source():
            pid = [str(row["partition"])]
            given = max(0, _ceil_page(row.get("freed_segment_bytes", 0))
                        - row.get("freed_allocated_bytes", 0))
            freed.add_metric(pid, float(given))
            frag.add_metric(pid, float(row.get("fragment_bytes", 0)))
            saved.add_metric(pid, float(given - row.get("fragment_bytes", 0)))
            if row.get("coordinator"):
                for fam, field in coord:
                    # "encoding" is the segment being encoded, or None: 1 or 0
                    v = row.get(field) or 0
                    fam.add_metric(pid, 1.0 if field == "encoding" and v else float(v))
            if "reconstruction_reads" in row:
                recon.add_metric(pid, float(row["reconstruction_reads"]))
                reads.add_metric(pid, float(row["fragment_reads"]))
                read_bytes.add_metric(pid, float(row["fragment_read_bytes"]))
                for reason, n in row["fragment_read_errors"].items():
                    errors.add_metric([*pid, reason], float(n))
        yield from (freed, frag, saved, *(fam for fam, _ in coord), recon, reads, read_bytes,
                    errors)


class NodeMetrics:
    def __init__(self, node_id: str, replica_stats: Callable[[], Iterable[Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("ambry_node_requests", "Requests served, by op and status",
                                ["op", "status"], registry=r)
        self.latency = Histogram("ambry_node_request_seconds", "Request latency by op",
                                 ["op"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.bytes_in = Counter("ambry_node_payload_bytes_in", "Payload bytes received",
                                registry=r)
        self.bytes_out = Counter("ambry_node_payload_bytes_out", "Payload bytes sent",
                                 registry=r)
        self.read_batches = Counter(
            "ambry_node_read_batches",
            "Trips of the batch reader to its threads (GETs located and read together)",
            registry=r)
        self.read_batch_requests = Counter(
            "ambry_node_read_batch_requests",
            "GETs served by the batch reader (divided by read_batches: GETs per trip)",
            registry=r)
        self.sendfile_bytes = Counter(
            "ambry_node_payload_bytes_sendfile",
            "Of the payload bytes sent, those sent unread from the page cache (sendfile; the "
            "reader verified them)", registry=r)
        self.internal_errors = Counter("ambry_node_internal_errors",
                                       "Requests that failed with an unexpected exception",
                                       registry=r)
        self.protocol_errors = Counter("ambry_node_protocol_errors",
                                       "Malformed frames or requests", registry=r)
        self.connections = Gauge("ambry_node_connections", "Open protocol connections",
                                 registry=r)
        self.idle_frames_closed = Counter(
            "ambry_node_idle_frames_closed",
            "Connections closed for stalling inside a frame (storage.frame_idle_timeout_s)",
            registry=r)
        self.inflight = Gauge("ambry_node_inflight_requests", "Requests being served",
                              registry=r)
        self.inflight_payload_bytes = Gauge("ambry_node_inflight_payload_bytes",
                                            "Put payload bytes held in memory", registry=r)
        self.snapshots = Counter("ambry_node_index_snapshots", "Index snapshots written",
                                 registry=r)
        self.compactions = Counter("ambry_node_compaction_runs", "Compaction passes",
                                   registry=r)
        self.compaction_reclaimed = Counter("ambry_node_compaction_reclaimed_bytes",
                                            "Bytes given back by compaction", registry=r)
        info = Gauge("ambry_node_info", "Node identity", ["node"], registry=r)
        info.labels(node=node_id).set(1)
        # process_*: CPU seconds, resident memory, open and max file descriptors, start time
        ProcessCollector(registry=r)
        r.register(_ReplicaCollector(replica_stats))
        self._replication_rows: list[dict[str, Any]] = []
        r.register(_ReplicationCollector(lambda: self._replication_rows))
        self._usage: tuple[list[tuple[str, str, int, int]], list[tuple[int, bool]]] = ([], [])
        r.register(_UsageCollector(lambda: self._usage))
        self._warm_rows: list[dict[str, Any]] = []
        r.register(_WarmTierCollector(lambda: self._warm_rows))

    def set_replication(self, rows: list[dict[str, Any]]) -> None:
        """Replication lag per partition and peer, as of this scrape."""
        self._replication_rows = rows

    def set_usage(self, rows: list[tuple[str, str, int, int]],
                  ready: list[tuple[int, bool]]) -> None:
        """Usage rows (account, container, bytes, blobs) and per-replica readiness, as of
        this scrape (computed off the event loop: it takes each replica's lock)."""
        self._usage = (rows, ready)

    def set_warm_tier(self, rows: list[dict[str, Any]]) -> None:
        """The warm tier's rows per partition (``FragmentOps.metric_rows``), as of this
        scrape (computed off the event loop: it stats files)."""
        self._warm_rows = rows

    def render(self) -> bytes:
        return generate_latest(self.registry)
