"""Per-replica reservations of names, for conditional name writes decided by a quorum.

Owns the in-memory table ``name key -> (holder token, lease expiry)`` and the count of name
records appended but not yet durable, and the rules that combine them. Does not own the log,
the name view or any I/O: ``Replica`` asks it under its own lock and appends the record.

Why: a conditional write ("create this name only if it does not exist", S3 ``If-Match``) must be
decided where the name lives. A frontend first *reserves* the name on a majority of the local
replicas; each replica grants at most one unexpired reservation per name, and none while a
record for that name is still on its way to durability, so two writers can never both hold a
majority. The holder reads the name's current entry from the replicas that granted it (a
majority, so it intersects the majority of every write acknowledged before), checks its
condition, and writes the record with its token; a replica accepts a tokened write only when the
token is the current holder, or, when it holds no reservation at all (it restarted, or the lease
was dropped), only if its current entry is still the one the writer based its decision on.

Leases end on their own (``lease_ms``), so a frontend that dies holding a reservation delays
other writers of that name by at most one lease. Everything here is pure: time comes in as an
argument.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["MAX_LEASE_MS", "NameLocks"]

#: a frontend may not hold a name longer than this, whatever it asks for
MAX_LEASE_MS = 30_000
#: above this many live entries, expired ones are swept on the next reserve
_SWEEP_ABOVE_ENTRIES = 4096


@dataclass(slots=True)
class _Lease:
    token: bytes
    expires_ms: int


class NameLocks:
    """Reservations and in-flight writes of one replica's names. Thread-safe."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._leases: dict[bytes, _Lease] = {}
        self._pending: dict[bytes, int] = {}

    def reserve(self, key: bytes, token: bytes, lease_ms: int, now_ms: int) -> bool:
        """Grant ``token`` the name unless another unexpired holder has it or a write of it is
        not yet durable. Asking again with the same token renews the lease."""
        lease_ms = max(1, min(lease_ms, MAX_LEASE_MS))
        with self._mu:
            if self._pending.get(key):
                return False
            cur = self._leases.get(key)
            if cur is not None and cur.token != token and cur.expires_ms > now_ms:
                return False
            if len(self._leases) > _SWEEP_ABOVE_ENTRIES:
                self._sweep(now_ms)
            self._leases[key] = _Lease(token, now_ms + lease_ms)
            return True

    def release(self, key: bytes, token: bytes) -> None:
        with self._mu:
            cur = self._leases.get(key)
            if cur is not None and cur.token == token:
                del self._leases[key]

    def holder(self, key: bytes) -> bytes | None:
        """The token holding ``key`` (expired leases included: an expired lease still blocks
        writes of other tokens until someone else reserves), None when nobody does."""
        with self._mu:
            cur = self._leases.get(key)
            return None if cur is None else cur.token

    def begin_write(self, key: bytes, token: bytes | None, based_on_current: bool) -> bool:
        """Whether a write of ``key`` may be appended now, and if so mark it in flight (ended
        by :meth:`end_write` once durable or failed).

        ``token`` None: an unconditional write (always allowed). With a token: allowed when the
        token holds the name; when nobody holds it, only if ``based_on_current`` (the caller's
        current entry is the one the writer decided on). The writer's lease ends here: the
        in-flight mark keeps others out until the record is durable."""
        with self._mu:
            if token is not None:
                cur = self._leases.get(key)
                if cur is None:
                    if not based_on_current:
                        return False
                elif cur.token != token:
                    return False
                else:
                    del self._leases[key]
            self._pending[key] = self._pending.get(key, 0) + 1
            return True

    def claim(self, key: bytes) -> bool:
        """Whether an unconditional write of ``key`` may be decided here in one step (no
        reservation: ``Replica.name_claim``), and if so mark it in flight (ended by
        :meth:`end_write`). Refused while any writer holds a reservation of the name, even
        an expired one (its holder may still write with its token), and while another write
        of it is not yet durable: the writer then takes the reservation path."""
        with self._mu:
            if self._pending.get(key) or key in self._leases:
                return False
            self._pending[key] = 1
            return True

    def end_write(self, key: bytes) -> None:
        with self._mu:
            left = self._pending.get(key, 0) - 1
            assert left >= 0, "end_write without begin_write"
            if left:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)

    def counts(self) -> tuple[int, int]:
        """(reserved names, names with a write in flight), for stats."""
        with self._mu:
            return len(self._leases), len(self._pending)

    def _sweep(self, now_ms: int) -> None:
        for k in [k for k, v in self._leases.items() if v.expires_ms <= now_ms]:
            del self._leases[k]
