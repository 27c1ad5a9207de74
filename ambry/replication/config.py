"""The ``replication:`` section of the cluster config, checked once at start.

Owns the knobs of pull replication (batch bounds, long poll, standby delay, backoff, timeouts,
scrub pacing, fetch concurrency) with their defaults, sizes given with units
(``"4MiB"``), the keys older configs may still carry (accepted with a warning), and a clear
error for any other unknown key. Does not own what the knobs do (``manager``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ambry.common.config import parse_size
from ambry.common.errors import InvalidArgument

__all__ = ["ReplicationConfig"]

log = logging.getLogger(__name__)

#: keys older configs may still carry, and why they no longer mean anything
_OBSOLETE_KEYS = {"standby_wait_s": "standbys no longer wait for a failure detector to take "
                                    "over cross-DC fetches (see standby_fetch_delay_ms)"}


@dataclass(frozen=True)
class ReplicationConfig:
    """The ``replication:`` section of the cluster config."""

    enabled: bool = True
    batch_max_entries: int = 1000
    batch_max_bytes: int = 4 * 1024 * 1024
    long_poll_ms: int = 2000          # a peer holds an empty request this long
    # a standby replica fetches a remote blob itself once the record is this old and the blob
    # has not come from its own datacenter (x its rank: 1 s, 2 s, ...; see planner.py)
    standby_fetch_delay_ms: int = 1000
    backoff_max_s: float = 10.0       # retry interval for an unreachable peer, at most
    request_timeout_ms: int = 30_000
    scrub_interval_s: float = 3600.0  # one pass over the sealed segments per interval
    scrub_bytes_per_s: int = 32 * 1024 * 1024
    fetch_concurrency: int = 4        # missing blobs fetched at once from one peer
    # Pull from intra-DC peers without the PUTs a frontend confirmed durable here (this
    # replica acked them: docs/replication.md, "Skipping what a peer already has"); a young
    # PUT not confirmed yet is held back by the peer up to confirm_hold_ms, while its
    # confirmation is on its way. Cross-DC pulls are never filtered.
    skip_confirmed: bool = True
    confirm_hold_ms: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.confirm_hold_ms <= 10_000:
            raise InvalidArgument("replication.confirm_hold_ms must be in [0, 10000], got "
                                  f"{self.confirm_hold_ms}")
        if self.standby_fetch_delay_ms < 0:
            raise InvalidArgument("replication.standby_fetch_delay_ms must be >= 0, got "
                                  f"{self.standby_fetch_delay_ms}")

    @classmethod
    def from_sections(cls, sections: Mapping[str, Any]) -> ReplicationConfig:
        raw = dict(sections.get("replication") or {})
        for old in sorted(_OBSOLETE_KEYS.keys() & set(raw)):
            log.warning("replication.%s is obsolete and ignored: %s", old, _OBSOLETE_KEYS[old])
            del raw[old]
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise InvalidArgument(f"replication: unknown keys {sorted(unknown)}")
        for k in list(raw):
            if k.endswith(("_bytes", "_bytes_per_s")):
                raw[k] = parse_size(raw[k])
        return cls(**raw)
