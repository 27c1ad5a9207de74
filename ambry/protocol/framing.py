"""Frame codec of the node protocol over byte streams (``ambry.protocol.stream``, or asyncio's).

Owns the bytes of one message: a u32 big-endian header length, the msgpack header map, and the
raw payload that may follow it (layout table in ``messages``). Does not own what the header
means. Reading never trusts the peer: the length is bounded (``MAX_HEADER_BYTES``), the header
must decode to a map, and anything else raises :class:`BadRequestFrame` with ``fatal=True``
(the byte stream can no longer be followed, the caller closes the connection).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any, Protocol

import msgpack

from ambry.protocol.messages import MAX_HEADER_BYTES, BadRequestFrame

__all__ = ["LEN_PREFIX_BYTES", "ByteReader", "ByteWriter", "discard_exactly", "pack_header",
           "read_header", "write_message"]

_LEN = struct.Struct(">I")
LEN_PREFIX_BYTES = _LEN.size
_DISCARD_CHUNK_BYTES = 256 * 1024
#: A message whose payload is at most this goes out in one write (one send() syscall).
_COALESCE_WRITE_BYTES = 64 * 1024


class ByteReader(Protocol):
    """What reading a frame needs: ``ambry.protocol.stream.Reader`` or asyncio's."""

    async def readexactly(self, n: int, /) -> bytes | bytearray: ...
    async def read(self, n: int, /) -> bytes | bytearray: ...


class ByteWriter(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> None: ...


def pack_header(header: dict[str, Any]) -> bytes:
    """Length prefix + msgpack of ``header``, ready to write."""
    body: bytes = msgpack.packb(header, use_bin_type=True)
    if len(body) > MAX_HEADER_BYTES:
        raise ValueError(f"message header of {len(body)} bytes is over {MAX_HEADER_BYTES}")
    return _LEN.pack(len(body)) + body


def write_message(writer: ByteWriter, frame: bytes,
                  payload: bytes | bytearray | memoryview | None) -> None:
    """Put a packed header and its payload into the transport, with no await in between (a
    cancelled caller never leaves half a message on the wire). Small messages are joined
    first: header and payload in two writes cost two syscalls."""
    if payload and len(payload) <= _COALESCE_WRITE_BYTES:
        writer.write(frame + payload)
    else:
        writer.write(frame)
        if payload:
            writer.write(payload)


def _corr_of(obj: Any) -> int:
    if isinstance(obj, dict):
        c = obj.get("corr")
        if isinstance(c, int) and not isinstance(c, bool):
            return c
    return 0


async def read_header(reader: ByteReader, started: Callable[[], None] | None = None
                      ) -> dict[str, Any] | None:
    """Read one header map. ``None`` on a clean end of stream (at a message boundary).
    ``started`` is called once the length prefix is in: from then on the peer is inside a
    frame (a server times out a peer that stalls there, not one idle between frames).

    Raises :class:`BadRequestFrame` (fatal) for a bad length, bytes that are not msgpack, or
    msgpack that is not a map with string keys; ``asyncio.IncompleteReadError`` if the stream
    ends inside a message.
    """
    try:
        prefix = await reader.readexactly(LEN_PREFIX_BYTES)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    if started is not None:
        started()
    (n,) = _LEN.unpack(prefix)
    if n == 0 or n > MAX_HEADER_BYTES:
        raise BadRequestFrame(f"header length {n} outside [1, {MAX_HEADER_BYTES}]", fatal=True)
    raw = await reader.readexactly(n)
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # noqa: BLE001 -- msgpack raises a zoo of types (ExtraData, FormatError, ValueError,
        # UnicodeDecodeError, StackError...) for garbage; all mean the same thing here
        raise BadRequestFrame(f"header is not msgpack: {type(e).__name__}", fatal=True) from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise BadRequestFrame("header is not a msgpack map with string keys", _corr_of(obj),
                              fatal=True)
    return obj


async def discard_exactly(reader: ByteReader, n: int) -> None:
    """Read and drop ``n`` bytes in bounded pieces."""
    while n > 0:
        piece = await reader.read(min(n, _DISCARD_CHUNK_BYTES))
        if not piece:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(piece)
