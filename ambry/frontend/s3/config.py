"""The ``s3:`` section of the cluster config: access keys, anonymous access, limits.

Owns its schema and validation (clear :class:`~ambry.common.errors.InvalidArgument` errors at
frontend start). The S3 *port* of each frontend is ``frontends[].s3_port`` in the cluster
config itself (``ambry.common.config``), next to the REST API's ``port``.

    s3:
      region: us-east-1               # reported by GetBucketLocation / HeadBucket
      access_keys:                    # SigV4 key pairs, each acting for one config account
        - {access_key: AKIA..., secret_key: ..., account: default}
      anonymous_account: null         # unsigned requests act (read-only) as this account;
                                      # null (default): unsigned requests are refused (403)
      multipart_ttl_s: 604800         # an upload not completed or aborted by then is freed
      min_part_size_bytes: 5MiB       # every part but the last (AWS: 5 MiB)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ambry.common.config import ClusterConfig, parse_size
from ambry.common.errors import InvalidArgument

__all__ = ["AccessKey", "S3Config", "s3_config_of"]


@dataclass(frozen=True)
class AccessKey:
    access_key: str
    secret_key: str
    account: str


@dataclass(frozen=True)
class S3Config:
    region: str = "us-east-1"
    access_keys: tuple[AccessKey, ...] = ()
    anonymous_account: str | None = None
    multipart_ttl_s: int = 7 * 24 * 3600
    min_part_size_bytes: int = 5 * 1024 * 1024
    max_part_size_bytes: int = 5 * 1024**3
    by_key: Mapping[str, AccessKey] = field(default_factory=dict, compare=False, repr=False)

    def secret_of(self, access_key: str) -> str | None:
        k = self.by_key.get(access_key)
        return k.secret_key if k is not None else None


_KEYS = {"region", "access_keys", "anonymous_account", "multipart_ttl_s",
         "min_part_size_bytes", "max_part_size_bytes"}


def s3_config_of(config: ClusterConfig) -> S3Config:
    """Parse and check ``config.sections["s3"]`` (absent: no keys, so every request is 403)."""
    raw: Mapping[str, Any] = config.sections.get("s3") or {}
    if not isinstance(raw, Mapping):
        raise InvalidArgument("s3: must be a mapping")
    unknown = set(raw) - _KEYS
    if unknown:
        raise InvalidArgument(f"s3: unknown keys {sorted(unknown)}")
    keys = []
    for i, k in enumerate(raw.get("access_keys") or []):
        if not isinstance(k, Mapping) or set(k) != {"access_key", "secret_key", "account"}:
            raise InvalidArgument(f"s3.access_keys[{i}] needs exactly access_key, secret_key, "
                                  f"account")
        ak = AccessKey(str(k["access_key"]), str(k["secret_key"]), str(k["account"]))
        if not ak.access_key or not ak.secret_key:
            raise InvalidArgument(f"s3.access_keys[{i}]: empty key")
        if config.account(ak.account) is None:
            raise InvalidArgument(f"s3.access_keys[{i}] names unknown account {ak.account!r}")
        keys.append(ak)
    by_key = {k.access_key: k for k in keys}
    if len(by_key) != len(keys):
        raise InvalidArgument("s3.access_keys: an access key is listed twice")
    anon = raw.get("anonymous_account")
    if anon is not None and config.account(str(anon)) is None:
        raise InvalidArgument(f"s3.anonymous_account names unknown account {anon!r}")
    try:
        out = S3Config(
            region=str(raw.get("region", "us-east-1")), access_keys=tuple(keys),
            anonymous_account=str(anon) if anon is not None else None,
            multipart_ttl_s=int(raw.get("multipart_ttl_s", 7 * 24 * 3600)),
            min_part_size_bytes=parse_size(raw.get("min_part_size_bytes", 5 * 1024 * 1024)),
            max_part_size_bytes=parse_size(raw.get("max_part_size_bytes", 5 * 1024**3)),
            by_key=by_key)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"s3: {e}") from None
    if out.multipart_ttl_s < 60:
        raise InvalidArgument("s3.multipart_ttl_s must be at least 60")
    if not 1 <= out.min_part_size_bytes <= out.max_part_size_bytes:
        raise InvalidArgument("s3: part size limits must satisfy 1 <= min <= max")
    return out
