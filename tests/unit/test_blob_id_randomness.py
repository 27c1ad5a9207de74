"""Blob ids are read capabilities: the router must draw them from the OS's CSPRNG.

It drew them from ``random.Random()`` (a Mersenne Twister): 156 ids (624 32-bit words) give its
whole state away, so anyone who saw that many ids could compute every later id and read
blobs they were never given. These tests mount that attack on the ids the router makes.
"""

from __future__ import annotations

import os
import random
from typing import Any

from ambry.common.blobid import BlobType
from ambry.common.config import ClusterConfig, config_from_dict
from ambry.frontend.router import Router

_MT_WORDS = 624  # Mersenne Twister state size in 32-bit words


def _config() -> ClusterConfig:
    raw: dict[str, Any] = {
        "datacenters": [{"name": "dc1", "id": 1}],
        "nodes": [{"id": f"n{i}", "datacenter": "dc1", "host": "127.0.0.1",
                   "port": 1 + i, "http_port": 100 + i} for i in range(3)],
        "partitions": {"count": 4},
    }
    return config_from_dict(raw)


def _untemper(y: int) -> int:
    """Invert the Mersenne Twister output tempering: output word -> state word."""
    y ^= y >> 18
    y ^= (y << 15) & 0xEFC60000
    t = y
    for _ in range(5):
        t = y ^ ((t << 7) & 0x9D2C5680)
    y = t & 0xFFFFFFFF
    t = y
    for _ in range(3):
        t = y ^ (t >> 11)
    return t & 0xFFFFFFFF


def _predict_next_uuid(uuids: list[bytes]) -> bytes:
    """The 16 bytes a Mersenne Twister that produced ``uuids`` (each ``randbytes(16)``, i.e.
    four little-endian words) would produce next."""
    words = [int.from_bytes(u[i:i + 4], "little") for u in uuids for i in range(0, 16, 4)]
    assert len(words) == _MT_WORDS
    clone = random.Random()
    clone.setstate((3, tuple([_untemper(w) for w in words] + [_MT_WORDS]), None))
    return clone.randbytes(16)


def _router_uuids(router: Router, n: int) -> list[bytes]:
    return [router.new_id(1, 1, i % 4, BlobType.SIMPLE).uuid for i in range(n)]


def test_the_next_blob_id_cannot_be_computed_from_156_earlier_ones() -> None:
    # broke: with random.Random() behind the ids, the 157th id was exactly the prediction
    mt = random.Random()
    seen = [mt.randbytes(16) for _ in range(_MT_WORDS // 4)]
    assert _predict_next_uuid(seen) == mt.randbytes(16)  # the attack works on a Mersenne Twister

    router = Router(_config(), "dc1")
    ids = _router_uuids(router, _MT_WORDS // 4 + 1)
    assert _predict_next_uuid(ids[:-1]) != ids[-1]
    assert len(set(ids)) == len(ids)


def test_two_routers_forked_from_one_process_make_different_ids() -> None:
    # broke: a forked child copied the parent's Mersenne Twister state, so both processes
    # (e.g. pre-forked frontend workers) handed out the very same blob ids
    router = Router(_config(), "dc1")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id to the parent, then out without running any cleanup
        try:
            os.write(write_end, b"".join(_router_uuids(router, 4)))
        finally:
            os._exit(0)
    os.close(write_end)
    child = b""
    while len(child) < 64:
        piece = os.read(read_end, 64 - len(child))
        if not piece:
            break
        child += piece
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child) == 64
    assert child != b"".join(_router_uuids(router, 4))
