"""Type stub for the C extension ambry.native._crecord (source: _crecord.c; twin: _pyrecord)."""

from typing import TypeAlias

HEADER_SIZE: int
FORMAT_VERSION: int

_Buffer: TypeAlias = bytes | bytearray | memoryview

def body_xxh3(*parts: _Buffer) -> int: ...
def encode_record(rtype: int, blob_flags: int, state_flags: int, life_version: int,
                  sequence: int, time_ms: int, expiry_ms: int, body_xxh3: int, key: _Buffer,
                  props: _Buffer, usermeta: _Buffer, payload: _Buffer) -> bytes: ...
