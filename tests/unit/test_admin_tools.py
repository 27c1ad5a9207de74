"""`ambry admin dump-log` and `ambry admin verify` on real replica directories."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from ambry.cli.admin import admin
from ambry.common.namerecord import NameRecord
from ambry.storage import filenames
from ambry.storage.format import RECORD_HEADER_SIZE
from tests.unit.conftest import ReplicaHarness


def _segments(h: ReplicaHarness) -> list[str]:
    return sorted(os.path.join(h.dir, n) for n in os.listdir(h.dir)
                  if filenames.parse_segment_name(n))


def test_dump_log_lists_every_record(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    bid = harness.put(b"hello")
    r.delete(bid)
    r.name_put(NameRecord(1, 2, "runs/1/model.pt", bid.to_bytes(), 5, 1, False)).result(5)
    harness.close()
    res = CliRunner().invoke(admin, ["dump-log", _segments(harness)[0]])
    assert res.exit_code == 0, res.output
    assert "PUT" in res.output and "DELETE" in res.output
    assert bid.to_str() in res.output and "name 1/2/runs/1/model.pt" in res.output
    res = CliRunner().invoke(admin, ["dump-log", "--json", _segments(harness)[0]])
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [r.get("type") for r in rows[1:]] == ["PUT", "DELETE", "NAME_PUT"]
    assert [r["seq"] for r in rows[1:]] == [1, 2, 3]


def test_verify_reports_clean_replica_and_flipped_bit(harness: ReplicaHarness) -> None:
    r = harness.replica
    assert r is not None
    ids = [harness.put(os.urandom(1500)) for _ in range(60)]
    r.delete(ids[0])
    harness.close()
    res = CliRunner().invoke(admin, ["verify", "--json", harness.dir])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)[0]
    assert rep["ok"] and rep["snapshot"] == "ok" and rep["index_mismatches"] == 0
    assert rep["records"] == {"PUT": 60, "DELETE": 1}
    assert rep["live_blobs"] == 59 and rep["deleted_blobs"] == 1
    # flip one payload bit in the first segment
    seg = _segments(harness)[0]
    with open(seg, "r+b") as f:
        f.seek(32 + RECORD_HEADER_SIZE + 300)
        b = f.read(1)
        f.seek(32 + RECORD_HEADER_SIZE + 300)
        f.write(bytes([b[0] ^ 4]))
    res = CliRunner().invoke(admin, ["verify", harness.dir])
    assert res.exit_code == 1
    assert "DAMAGED" in res.output and "checksum" in res.output
    res = CliRunner().invoke(admin, ["dump-log", seg])
    assert res.exit_code == 1 and "DAMAGE" in res.output


def test_verify_after_crash_while_rolling_segment_reports_torn_tail(
        harness: ReplicaHarness) -> None:
    # kill -9 between creating the next segment file and writing its header: recovery
    # completes it; the read-only verify must call it a torn tail, not an error.
    harness.put(b"x")
    harness.close()
    with open(os.path.join(harness.dir, filenames.segment_name(2, 0)), "wb") as f:
        f.write(b"AMBRYSEG\x01")
    res = CliRunner().invoke(admin, ["verify", "--json", harness.dir])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)[0]
    assert [d["kind"] for d in rep["damage"]] == ["torn_tail"]
    r = harness.open()  # and recovery makes it a proper empty segment
    assert r.log.segments[-1].number == 2
