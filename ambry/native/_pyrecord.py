"""A log record's bytes in one call: the pure-Python twin of ``ambry.native._crecord``.

Same functions, same bytes, same errors as the C module (its header comment is the contract;
the layout is ``ambry/storage/format.py``'s, version 1). Used when the extension is not built
or ``AMBRY_NO_EXTENSIONS=1`` is set.
"""

from __future__ import annotations

import struct

import xxhash

__all__ = ["FORMAT_VERSION", "HEADER_SIZE", "body_xxh3", "encode_record"]

HEADER_SIZE = 64
FORMAT_VERSION = 1
_MAX_KEY_BYTES = 0xFFFF
_REC = struct.Struct("<4sBBBBHHIIIQQQQ")  # the first 56 bytes; then their xxh3_64
_U64 = struct.Struct("<Q")

Buffer = bytes | bytearray | memoryview


def body_xxh3(*parts: Buffer) -> int:
    """xxh3_64 of the parts' concatenation (a record's body checksum), without joining them."""
    if len(parts) == 1:
        return xxhash.xxh3_64_intdigest(parts[0])
    h = xxhash.xxh3_64()
    for p in parts:
        h.update(p)
    return h.intdigest()


def encode_record(rtype: int, blob_flags: int, state_flags: int, life_version: int,
                  sequence: int, time_ms: int, expiry_ms: int, body_xxh3: int, key: Buffer,
                  props: Buffer, usermeta: Buffer, payload: Buffer) -> bytes:
    """The whole record: header (lengths from the parts, header checksum) + the body."""
    if len(key) > _MAX_KEY_BYTES:
        raise ValueError("record key too long")
    for v in (rtype, blob_flags, state_flags, life_version, sequence, time_ms, expiry_ms,
              body_xxh3):
        if not isinstance(v, int):
            raise TypeError("record header fields must be ints")
    try:
        head = _REC.pack(b"AMBR", FORMAT_VERSION, rtype, blob_flags, state_flags, life_version,
                         len(key), len(props), len(usermeta), len(payload), sequence, time_ms,
                         expiry_ms, body_xxh3)
    except struct.error as e:
        raise OverflowError(str(e)) from None
    return b"".join((head, _U64.pack(xxhash.xxh3_64_intdigest(head)), key, props, usermeta,
                     payload))
