"""The node's fragment store (issue 17, step 2) against a real ``ambry server``: a fragment
file streamed stripe by stripe, published only when its last block came, read by window,
verified, listed and deleted; out-of-order or bad requests are clear errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from ec_helpers import one_node

from ambry.common.errors import AmbryError, BlobNotFound, InvalidArgument, ProtocolError
from ambry.ec.layout import SegmentLayout
from ambry.protocol.client import NodeClient
from ambry.testing.cluster import NodeProcess

SOURCE = "ab" * 16


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with one_node(tmp_path_factory.mktemp("frag")) as n:
        yield n


def _names(seg: int, frag: int) -> dict[str, Any]:
    return {"partition": 0, "source": SOURCE, "segment": seg, "generation": 0,
            "fragment": frag}


async def _call(c: NodeClient, op: str, fields: dict[str, Any], payload: bytes | None = None
                ) -> tuple[dict[str, Any], bytes]:
    reply = await c.request(op, fields, payload)
    data = bytes(await reply.read()) if reply.payload_len else b""
    await reply.release()
    return reply.header, data


async def test_fragment_written_block_by_block_is_published_verified_and_readable(
        node: NodeProcess) -> None:
    # before step 2 a node had no fragment ops at all (unknown op)
    layout = SegmentLayout.plan(2, 1, 10_000, 4096)  # 3 stripes: 2 full, 1 short
    blocks = [os.urandom(st.block_bytes) for st in layout.stripes()]
    header = {"code": 1, "k": 2, "m": 1, "original_bytes": 10_000,
              "stripe_bytes": layout.stripe_bytes}
    frag_dir = node.data_root / node.node_id / "fragments" / "p0"
    async with node.client() as c:
        for s, b in enumerate(blocks):
            last = s == len(blocks) - 1
            h, _ = await _call(c, "ec_frag_write", {**_names(7, 1), "header": header,
                                                    "stripe": s, "finish": last}, b)
            published = [x for x in os.listdir(frag_dir) if not x.endswith(".tmp")]
            assert bool(published) == last  # only a complete file goes under its name
        assert h["ok"] and len(h["checksums"]) == 3
        whole = b"".join(blocks)
        h, data = await _call(c, "ec_frag_read", {**_names(7, 1), "offset": 100,
                                                  "length": 4000})
        assert data == whole[100:4100]
        st, _ = await _call(c, "ec_frag_stat", _names(7, 1))
        assert st["ok"] and st["checksums"] == h.get("checksums", st["checksums"])
        ls, _ = await _call(c, "ec_frag_list", {"partition": 0})
        assert [f[:4] for f in ls["fragments"]] == [[SOURCE, 7, 0, 1]]

        # the liar: a window past the fragment, a stripe out of order, a foreign name
        with pytest.raises(InvalidArgument):
            await _call(c, "ec_frag_read", {**_names(7, 1), "offset": len(whole),
                                            "length": 1})
        with pytest.raises(InvalidArgument):
            await _call(c, "ec_frag_write", {**_names(8, 0), "header": header, "stripe": 1},
                        blocks[1])
        with pytest.raises(InvalidArgument):
            await _call(c, "ec_frag_stat", {**_names(7, 1), "source": "../../etc"})
        with pytest.raises(BlobNotFound):
            await _call(c, "ec_frag_read", {**_names(9, 0), "offset": 0, "length": 1})

        # the rot: a flipped byte on disk is named by stat
        path = frag_dir / f"{SOURCE}_00000007_0.frag1"
        raw = bytearray(path.read_bytes())
        raw[-10] ^= 0x40
        path.write_bytes(bytes(raw))
        st, _ = await _call(c, "ec_frag_stat", _names(7, 1))
        assert not st["ok"] and st["bad_stripes"] == [2]

        h, _ = await _call(c, "ec_frag_delete", _names(7, 1))
        assert h["deleted"]
        ls, _ = await _call(c, "ec_frag_list", {"partition": 0})
        assert ls["fragments"] == []


@pytest.mark.parametrize("op", ["ec_missing", "ec_live"])
async def test_blob_questions_refuse_hostile_uuid_lists(node: NodeProcess, op: str) -> None:
    # the coordinator's questions to a replica (ec_missing before encoding, ec_live before
    # re-encoding without dead blobs): not a list of 16-byte uuids, or too many, is a clean
    # InvalidArgument or protocol error; an unknown partition a clean error; the node
    # answers on after each
    async with node.client() as c:
        for uuids in (["x" * 16], [b"short"], [None], [b"\0" * 16] * 10_001, "not a list",
                      [[b"\0" * 16]]):
            with pytest.raises((InvalidArgument, ProtocolError)):  # 4xx-like, typed
                await _call(c, op, {"partition": 0, "uuids": uuids})
        with pytest.raises(AmbryError):
            await _call(c, op, {"partition": 999, "uuids": [b"\0" * 16]})
        h, _ = await _call(c, op, {"partition": 0, "uuids": [b"\1" * 16]})
        # an unknown blob: missing here, and not dead here (it stays in any re-encoding)
        assert h["missing" if op == "ec_missing" else "live"] == [b"\1" * 16], h
