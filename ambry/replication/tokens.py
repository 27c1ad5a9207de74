"""Replication tokens: how far each local replica has pulled from each peer replica.

Owns a node's token table in rocksdict (``<node data dir>/replication-tokens``). A token is
(peer incarnation, peer sequence number); it is stored with the *local* replica's incarnation,
so a wiped and recreated local replica starts pulling from zero again. Tokens are written only
after the records they cover are durable locally; they are written with sync off: losing the
latest ones after a crash only means re-applying a batch, which is idempotent.
"""

from __future__ import annotations

import msgpack
from rocksdict import Options, Rdict, WriteOptions

__all__ = ["TokenStore"]

Token = tuple[bytes, int]


class TokenStore:
    def __init__(self, path: str) -> None:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_max_background_jobs(1)
        self._db = Rdict(path, opts)
        wo = WriteOptions()
        wo.sync = False
        self._db.set_write_options(wo)

    @staticmethod
    def _key(partition_id: int, peer: str) -> bytes:
        return partition_id.to_bytes(8, "big") + peer.encode()

    def get(self, partition_id: int, peer: str, local_incarnation: bytes) -> Token | None:
        raw = self._db.get(self._key(partition_id, peer))
        if raw is None:
            return None
        inc, peer_inc, seq = msgpack.unpackb(raw)
        if inc != local_incarnation:
            return None  # the local replica was recreated: pull everything again
        return (bytes(peer_inc), int(seq))

    def put(self, partition_id: int, peer: str, local_incarnation: bytes, token: Token) -> None:
        self._db.put(self._key(partition_id, peer),
                     msgpack.packb([local_incarnation, token[0], token[1]]))

    def close(self) -> None:
        self._db.close()
