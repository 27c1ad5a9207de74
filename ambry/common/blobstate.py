"""The conflict rule for a blob's lifecycle state: one pure function, used everywhere.

A blob's state at a replica is (life_version, deleted, permanent, delete_time_ms). Every record
that changes it (PUT, DELETE, TTL_UPDATE, UNDELETE) carries the state its writer produced, and
replicas merge states with :func:`merge`, so that any two replicas that have seen the same set of
records agree, whatever the order (DESIGN.md section 7):

* the higher life_version wins whole (an undelete starts a new life);
* at equal life_version, ``deleted`` and ``permanent`` are each the OR of both sides, and the
  delete time is the latest delete time of the deleted sides.

``merge`` is commutative, associative and idempotent (property-tested in tests/unit).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BlobState", "merge"]


@dataclass(frozen=True, slots=True)
class BlobState:
    life_version: int = 0
    deleted: bool = False
    permanent: bool = False
    delete_time_ms: int = 0  # meaningful only when deleted

    def __post_init__(self) -> None:
        if not self.deleted and self.delete_time_ms:
            object.__setattr__(self, "delete_time_ms", 0)


def merge(a: BlobState | None, b: BlobState | None) -> BlobState | None:
    if a is None:
        return b
    if b is None:
        return a
    if a.life_version != b.life_version:
        return a if a.life_version > b.life_version else b
    deleted = a.deleted or b.deleted
    return BlobState(
        a.life_version,
        deleted,
        a.permanent or b.permanent,
        max(a.delete_time_ms if a.deleted else 0, b.delete_time_ms if b.deleted else 0),
    )
