"""Replica answers to verdicts, and verdicts to typed errors.

Owns two pure mappings the router's operations share: :func:`outcome_of` (what one replica's
answer, a result or the error it raised, counts as in a quorum) and :func:`raise_for` (the
typed error of a quorum's or a GET plan's verdict, so the HTTP layers map errors in exactly
one table each). Does not own the quorum rules themselves (``quorum``) nor any I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ambry.common.errors import (
    BadRequest,
    BlobAlreadyExists,
    BlobDeleted,
    BlobExpired,
    BlobNotDeleted,
    BlobNotFound,
    DataCorrupt,
    LifeVersionConflict,
    PartitionReadOnly,
    ProtocolError,
    ReplicaUnavailable,
    Unavailable,
)
from ambry.frontend.quorum import Outcome

__all__ = ["outcome_of", "raise_for", "reason"]


def reason(exc: BaseException | None) -> str:
    """One line on why a node call failed, for the operator."""
    if exc is None:
        return "no error"
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def outcome_of(exc: BaseException | None) -> Outcome:
    """What a replica's answer counts as: SUCCESS when it raised nothing."""
    if exc is None:
        return Outcome.SUCCESS
    if isinstance(exc, BlobNotFound):
        return Outcome.NOT_FOUND
    if isinstance(exc, BlobDeleted):
        return Outcome.DELETED
    if isinstance(exc, BlobExpired):
        return Outcome.EXPIRED
    if isinstance(exc, BlobAlreadyExists):
        return Outcome.ALREADY_EXISTS
    if isinstance(exc, (BlobNotDeleted, LifeVersionConflict)):
        return Outcome.CONFLICT
    if isinstance(exc, PartitionReadOnly):
        return Outcome.READ_ONLY
    if isinstance(exc, (Unavailable, ReplicaUnavailable, OSError, asyncio.TimeoutError,
                        ProtocolError)):
        return Outcome.UNAVAILABLE
    return Outcome.ERROR


def raise_for(verdict: Outcome, what: str, errors: Sequence[BaseException] = ()) -> None:
    """Raise the typed error of ``verdict`` (nothing for SUCCESS); ``errors`` are the
    replicas' errors, whose own type and message are passed on where they are the client's
    (a conflict, a bad request) or tell rot on every replica from an outage."""
    if verdict is Outcome.SUCCESS:
        return
    if verdict is Outcome.NOT_FOUND:
        raise BlobNotFound(f"{what} not found")
    if verdict is Outcome.DELETED:
        raise BlobDeleted(f"{what} is deleted")
    if verdict is Outcome.EXPIRED:
        raise BlobExpired(f"{what} has expired")
    if verdict is Outcome.ALREADY_EXISTS:
        raise BlobAlreadyExists(f"{what} already exists")
    if verdict is Outcome.CONFLICT:
        for e in errors:
            if isinstance(e, (BlobNotDeleted, LifeVersionConflict)):
                raise type(e)(e.message)
        raise BlobNotDeleted(f"{what}: conflicting state")
    if verdict is Outcome.ERROR:
        for e in errors:  # a client error the node found (bad range, ...) is the client's
            if isinstance(e, BadRequest):
                raise type(e)(e.message)
        corrupt = [e for e in errors if isinstance(e, DataCorrupt)]
        if corrupt and len(corrupt) == len(errors):
            # rot on every replica that answered: say so (a retry elsewhere will not help
            # until the scrubber repairs it), rather than "too few replicas answered"
            raise DataCorrupt(f"{what}: corrupt on every replica that answered "
                              f"({corrupt[0].message})")
    raise Unavailable(f"{what}: too few replicas answered")
