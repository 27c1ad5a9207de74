"""The ``daemon:`` section of the cluster config: process settings shared by every daemon.

Owns the schema of the settings that storage nodes and frontends both read at start: log
format, the SIGTERM grace period, and the cluster-map file watch. Does not own logging setup
(``ambry.cli``), shutdown (each daemon) nor reloading (``ambry.runtime.reload``).

    daemon:
      log_format: text             # text | json (one JSON object per line)
      shutdown_grace_s: 10         # SIGTERM: in-flight requests get this long to finish
      config_watch_interval_s: 0   # > 0: also reload the cluster map when its file changes
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ambry.common.errors import InvalidArgument

__all__ = ["LOG_FORMATS", "DaemonConfig"]

LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class DaemonConfig:
    log_format: str = "text"
    shutdown_grace_s: float = 10.0
    config_watch_interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise InvalidArgument(f"daemon.log_format must be one of {LOG_FORMATS}, "
                                  f"not {self.log_format!r}")
        if self.shutdown_grace_s < 0:
            raise InvalidArgument("daemon.shutdown_grace_s must be >= 0")
        if self.config_watch_interval_s < 0:
            raise InvalidArgument("daemon.config_watch_interval_s must be >= 0")

    @classmethod
    def from_sections(cls, sections: Mapping[str, Any]) -> DaemonConfig:
        raw = dict(sections.get("daemon") or {})
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidArgument(f"daemon: unknown keys {sorted(unknown)}")
        try:
            return cls(**raw)
        except TypeError as e:
            raise InvalidArgument(f"daemon: {e}") from None
