"""The warm tier's policy in the cluster map and its `ec` settings (issue 17, step 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ambry.common.config import EcConfig, EcPolicy, config_from_dict, load_config
from ambry.common.errors import InvalidArgument

ROOT = Path(__file__).resolve().parents[2]


def _raw(nodes_per_dc: int, partitions: Any, ec: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    nodes = [{"id": f"dc{d}-n{j}", "datacenter": f"dc{d}", "host": "127.0.0.1",
              "port": 20000 + 10 * d + j, "http_port": 21000 + 10 * d + j}
             for d in (1, 2) for j in range(1, nodes_per_dc + 1)]
    raw: dict[str, Any] = {"cluster": {"replicas_per_datacenter": 3},
                           "datacenters": [{"name": "dc1", "id": 1}, {"name": "dc2", "id": 2}],
                           "nodes": nodes, "partitions": partitions}
    if ec is not None:
        raw["ec"] = ec
    return raw


def test_policy_defaults_to_replicated_and_ec_applies_per_class_or_partition() -> None:
    # before: the cluster map had no notion of a storage policy
    cfg = config_from_dict(_raw(3, {"count": 2, "policy": {"ec": {"k": 2, "m": 1}}}))
    assert all(p.policy == EcPolicy(2, 1) for p in cfg.cluster_map.partitions)
    listed = [{"id": 1, "replicas": ["dc1-n1", "dc1-n2", "dc1-n3"]},
              {"id": 2, "replicas": ["dc1-n1", "dc1-n2", "dc1-n3"],
               "policy": {"ec": {"k": 2, "m": 1}}}]
    cfg = config_from_dict(_raw(3, listed))
    assert [p.policy for p in cfg.cluster_map.partitions] == [None, EcPolicy(2, 1)]


@pytest.mark.parametrize("policy", [{"ec": {"k": 4, "m": 2}},  # 6 fragments, 3 nodes per DC
                                    {"ec": {"k": 0, "m": 1}}, {"ec": {"k": 2}},
                                    "mirrored", {"ec": {"k": 2, "m": 1}, "x": 1}])
def test_a_policy_the_datacenters_cannot_hold_is_refused_at_load(policy: Any) -> None:
    with pytest.raises(InvalidArgument):
        config_from_dict(_raw(3, {"count": 1, "policy": policy}))


def test_ec_settings_have_units_and_bad_ones_fail_at_load() -> None:
    cfg = config_from_dict(_raw(3, {"count": 1}, {"stripe_bytes": "1MiB", "min_age_s": 0,
                                                  "encode_rate_bytes_per_s": "10MiB"}))
    ec = EcConfig.from_sections(cfg.sections)
    assert (ec.stripe_bytes, ec.min_age_s, ec.encode_rate_bytes_per_s) == \
        (1 << 20, 0, 10 << 20)
    for bad in ({"stripe_bytes": 0}, {"min_age_s": -1}, {"encode_rate_bytes_per_s": 0},
                {"stripe_size": 1}):
        with pytest.raises(InvalidArgument):
            config_from_dict(_raw(3, {"count": 1}, bad))


def test_shipped_configs_load_with_their_policies() -> None:
    local = load_config(ROOT / "config" / "local.yaml")
    assert EcConfig.from_sections(local.sections).min_age_s > 0
    bench = load_config(ROOT / "config" / "bench-ec.yaml")
    assert {p.policy for p in bench.cluster_map.partitions} == {EcPolicy(4, 2)}
