"""Checking a replica's content: the scrub of sealed segments and the content digest.

Owns re-reading sealed segments to find rot (rate-limited; damage goes to the replica's
damage list and its quarantine report, never silently dropped) and naming the damaged PUT
records a peer's copy can repair, and the digest that tells whether two replicas converged.
Does not own the repair (``replica.Replica.repair_put``, driven by ``ambry.replication``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import xxhash

from ambry.common.errors import DataCorrupt
from ambry.storage.format import RECORD_HEADER_SIZE, RecordType, name_key
from ambry.storage.indexentry import put_location, state_of
from ambry.storage.log import Damage, Log
from ambry.storage.names import NameView

__all__ = ["content_digest", "scrub_sealed"]


def scrub_sealed(log: Log, index: Any, damage: list[Damage], bytes_per_s: int = 0,
                 skip: frozenset[int] = frozenset()) -> list[tuple[bytes, int]]:
    """Re-read every sealed segment, verifying checksums (at most ``bytes_per_s``).
    Damage is reported (``damage`` and the quarantine log); returns (blob key, body checksum)
    of the damaged PUT records whose header is intact and that ``index`` still points to, so
    a peer's copy can repair them. Segments in ``skip`` (payloads freed: erasure-coded,
    ``ecstate``) are not read."""
    out: list[tuple[bytes, int]] = []
    started = time.monotonic()
    done = 0
    for seg in list(log.segments[:-1]):
        if seg.number in skip:
            continue
        damages: list[Damage] = []
        for rec in log.scan((seg.number, 0), on_damage=damages.append, verify=True,
                            end=(seg.number + 1, 0)):
            done += rec.header.total_len
            if bytes_per_s > 0:
                ahead = done / bytes_per_s - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(min(ahead, 1.0))
        for dmg in damages:
            damage.append(dmg)
            log.append_report(dmg)
            try:
                h = log.read_header((dmg.segment, dmg.offset))
            except DataCorrupt:
                continue  # the header itself is gone: nothing tells what was there
            if h.type != RecordType.PUT:
                continue
            key = log.read((dmg.segment, dmg.offset + RECORD_HEADER_SIZE), 32)
            loc = put_location(index.get(key[16:]))
            if loc is not None and (loc[0], loc[1]) == (dmg.segment, dmg.offset):
                out.append((key, h.body_xxh3))
    return out


def content_digest(index: Any, lock: threading.RLock, view: NameView) -> dict[str, Any]:
    """A fingerprint of a replica's logical content: every blob's merged state and whether
    its PUT is here, and every name's current entry. Two replicas that converged have equal
    digests whatever order they received records in."""
    h = xxhash.xxh3_64()
    with lock:
        items = sorted((k, state_of(v), put_location(v) is not None)
                       for k, v in index.items())
    for key, st, has_put in items:
        assert st is not None
        h.update(key)
        h.update(bytes([st.deleted, st.permanent, has_put]))
        h.update(st.life_version.to_bytes(2, "big"))
    names = 0
    for e in view.iter_all():
        names += 1
        h.update(name_key(e.account_id, e.container_id, e.name))
        h.update(e.blob_id + e.ts_ms.to_bytes(8, "big") + bytes([e.dc_id, e.deleted]))
    return {"digest": h.hexdigest(), "blobs": len(items), "names": names}
