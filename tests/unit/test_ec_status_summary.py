"""``ambry admin ec-status``'s summary (ambry.warm.status.summarize): the state of a partition
in each datacenter from what the nodes answered, without nodes."""

from __future__ import annotations

from typing import Any

from ambry.common.config import config_from_dict
from ambry.warm.status import Survey, fragment_file_bytes, summarize

SOURCE = "ab" * 16


def _cmap() -> Any:
    nodes = [{"id": f"dc{d}-n{j}", "datacenter": f"dc{d}", "host": "127.0.0.1",
              "port": 20000 + 10 * d + j, "http_port": 21000 + 10 * d + j}
             for d in (1, 2) for j in (1, 2, 3)]
    return config_from_dict({
        "cluster": {"replicas_per_datacenter": 3},
        "datacenters": [{"name": "dc1", "id": 1}, {"name": "dc2", "id": 2}],
        "nodes": nodes, "partitions": {"count": 1, "policy": {"ec": {"k": 2, "m": 1}}},
    }).cluster_map


def _record(dc: str) -> dict[str, Any]:
    return {"source": SOURCE, "segment": 1, "generation": 0, "datacenter": dc, "k": 2,
            "m": 1, "bytes": 1 << 20, "stripe_bytes": 256 << 10, "blobs": 5,
            "placement": [f"{dc}-n2", f"{dc}-n3", f"{dc}-n1"]}


def _survey(encoding: bool = False) -> Survey:
    sv = Survey()
    size = fragment_file_bytes(2, 1, 256 << 10, 1 << 20)
    for d in ("dc1", "dc2"):
        for j in (1, 2, 3):
            node = f"{d}-n{j}"
            job = {"coordinator": True, "encoding": [2, 0] if encoding else None,
                   "backlog_bytes": 123} if j == 1 else None
            sv.status[node] = [{"partition": 0, "records": [_record(d)], "freed_segments": [1],
                                "freed_segment_bytes": 1 << 20, "freed_allocated_bytes": 8192,
                                "job": job}]
            sv.listings[node] = {0: {(SOURCE, 1, 0, i): size for i in range(3)
                                     if _record(d)["placement"][i] == node}}
    return sv


def test_healthy_fragments_read_encoded_and_a_running_job_reads_encoding() -> None:
    rows = summarize(_cmap(), _survey())
    assert [(r["datacenter"], r["state"]) for r in rows] == [("dc1", "encoded"),
                                                             ("dc2", "encoded")]
    assert rows[0]["backlog_bytes"] == 123 and rows[0]["coordinator"] == "dc1-n1"
    assert [f["node"] for f in rows[0]["segments"][0]["fragments"]] == \
        ["dc1-n2", "dc1-n3", "dc1-n1"]
    assert [r["state"] for r in summarize(_cmap(), _survey(encoding=True))] == \
        ["encoding"] * 2


def test_no_record_in_a_datacenter_reads_replicated() -> None:
    sv = _survey()
    for j in (1, 2, 3):
        sv.status[f"dc2-n{j}"][0]["records"] = [_record("dc1")]  # dc1's record, replicated
    rows = summarize(_cmap(), sv)
    assert [r["state"] for r in rows] == ["encoded", "replicated"]


def test_missing_torn_damaged_or_unreachable_fragment_reads_degraded() -> None:
    # each way a fragment can be unhealthy makes its partition degraded in that DC only
    sv = _survey()
    del sv.listings["dc1-n3"][0][(SOURCE, 1, 0, 1)]
    sv.listings["dc2-n1"][0][(SOURCE, 1, 0, 2)] -= 1
    rows = summarize(_cmap(), sv)
    assert [r["state"] for r in rows] == ["degraded", "degraded"]
    assert [f["health"] for f in rows[0]["segments"][0]["fragments"]] == ["ok", "missing", "ok"]
    assert [f["health"] for f in rows[1]["segments"][0]["fragments"]] == ["ok", "ok", "torn"]

    sv = _survey()
    sv.errors["dc1-n2"] = "connection refused"
    del sv.status["dc1-n2"], sv.listings["dc1-n2"]
    sv.stats[("dc2-n3", 0, SOURCE, 1, 0, 1)] = {"ok": False, "problems": ["stripes 2 fail"]}
    rows = summarize(_cmap(), sv)
    assert rows[0]["unreachable_replicas"] == ["dc1-n2"]
    assert [f["health"] for f in rows[0]["segments"][0]["fragments"]] == \
        ["unreachable", "ok", "ok"]
    assert rows[1]["segments"][0]["fragments"][1] == {
        "fragment": 1, "node": "dc2-n3", "health": "damaged", "role": "data",
        "detail": "stripes 2 fail"}
