"""Telling the replicas of a PUT which of them have it: the frontend's side of confirmations.

Each storage node pulls every record of its intra-DC peers and checks that it has it, although
the frontend already wrote almost every PUT to all of them (a third of a node's CPU per small
PUT). A frontend knows, as each replica acks a PUT durably, that replica's incarnation (in the
put reply, ``MutationReply.incarnation``). :class:`PutConfirmer` queues "blob K is durable on
incarnation i" on the node clients of the PUT's *other* target replicas; it rides on the next
request the frontend sends each of them (``NodeClient.confirm``, bounded per request), and a
short timer (``frontend.replica_confirm_flush_ms``) sends what an idle frontend still holds in
a ``confirm`` request of its own. The nodes then skip those records when that replica pulls
(``ambry.storage.confirms``, where the safety argument is).

Losing a confirmation (the frontend dies, a request fails) is harmless: the record is then
pulled and checked as before. Late acks (a straggler answering after the quorum) are
confirmed too, as they come. Does not own the quorum (``fanout``) nor the wire (``protocol``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ambry.common.errors import AmbryError
from ambry.protocol.client import NodeClient

__all__ = ["PutConfirmer"]

log = logging.getLogger(__name__)


class PutConfirmer:
    def __init__(self, flush_ms: int, spawn: Callable[[Awaitable[Any]], None]) -> None:
        """``flush_ms`` < 0: never tell (every record is checked by the peers, as before)."""
        self.flush_ms = flush_ms
        self._spawn = spawn
        self._timed: set[NodeClient] = set()
        self.flushes = 0  # confirm requests sent alone (tests, metrics)

    @property
    def enabled(self) -> bool:
        return self.flush_ms >= 0

    def acked(self, blob_id: bytes, acker: NodeClient, incarnation: bytes | None,
              targets: Sequence[NodeClient]) -> None:
        """``acker`` acked ``blob_id`` durably on its replica ``incarnation`` (None: not
        durably, or a node that does not say): tell the PUT's other ``targets``."""
        if incarnation is None or self.flush_ms < 0:
            return
        for c in targets:
            if c is not acker and c.confirm(blob_id, incarnation) and c not in self._timed:
                self._timed.add(c)
                asyncio.get_running_loop().call_later(self.flush_ms / 1000, self._due, c)

    def _due(self, c: NodeClient) -> None:
        self._timed.discard(c)
        if c.confirms_queued:  # nothing went to that node since: send them alone
            self.flushes += 1
            self._spawn(self._flush(c))

    @staticmethod
    async def _flush(c: NodeClient) -> None:
        try:
            await c.flush_confirms()
        except (AmbryError, OSError, TimeoutError) as e:
            log.debug("confirmations to %s lost (harmless): %r", c.peer, e)
