"""The on-disk record and segment formats of a replica's log. The one place bytes are laid out.

Owns encoding, decoding and checksum verification of segment headers and log records, for
every known format version. Does not own files (see ``_log``) or what records mean for a blob
(see ``replica``). Integers are little-endian. Checksums are xxh3_64.

Segment file header (32 bytes, at offset 0 of every segment file)::

  offset size field
  0      8    magic           b"AMBRYSEG"
  8      2    version         u16 = 1
  10     2    reserved        0
  12     4    segment number  u32, position of the segment in the replica's log
  16     4    generation      u32, bumped each time compaction rewrites this segment
  20     4    reserved        0
  24     8    header_xxh3     xxh3_64 of bytes [0, 24)

Log record (version 1): a 64-byte fixed header followed by the body::

  offset size field
  0      4    magic           b"AMBR"
  4      1    format version  1
  5      1    record type     1 PUT, 2 DELETE, 3 TTL_UPDATE, 4 UNDELETE, 5 NAME_PUT, 6 NAME_DELETE,
                              7 EC_SEGMENT
  6      1    blob flags      blob id flags byte (type, encrypted) for blob records, else 0
  7      1    state flags     bit 0 deleted, bit 1 permanent: the blob's state at life_version
                              as the writer saw it (conflict rules merge these)
  8      2    life_version    u16
  10     2    key length      u16
  12     4    props length    u32
  16     4    usermeta length u32
  20     4    payload length  u32
  24     8    sequence        u64, per-replica, assigned at append, kept by compaction
  32     8    time_ms         u64: PUT = blob creation; DELETE = delete time; NAME_* = the
                              name's last-writer-wins timestamp; others = operation time
  40     8    expiry_ms       u64, PUT only: creation + TTL, 0 = never
  48     8    body_xxh3       xxh3_64 of key | props | usermeta | payload
  56     8    header_xxh3     xxh3_64 of bytes [0, 56) (so it covers body_xxh3 too)
  64     ...  key             blob id (32 bytes) or name key (u16 account, u16 container, name)
                              or EC_SEGMENT key (b"EC", encoding replica's incarnation 16 bytes,
                              u32 segment number, u32 generation: 26 bytes)
  ...    ...  props           PUT: msgpack BlobProperties; NAME_*: msgpack name entry;
                              EC_SEGMENT: msgpack of the encoded segment (ambry/storage/ecstate.py:
                              datacenter, k, m, code, stripe size, length, placement, checksum
                              tables' hash, directory of its PUT records; version 2 also the key
                              of the record it replaces: docs/erasure-coding.md); else empty
  ...    ...  usermeta        PUT only: opaque bytes (msgpack map from the frontend)
  ...    ...  payload         PUT only: the blob's bytes

A record is valid when both checksums match. The separate header checksum lets recovery trust
the lengths (and so skip to the next record) even when a payload bit has flipped.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import xxhash

from ambry.common.errors import DataCorrupt

__all__ = [
    "FORMAT_VERSION",
    "RECORD_HEADER_SIZE",
    "RECORD_MAGIC",
    "SEGMENT_HEADER_SIZE",
    "STATE_DELETED",
    "STATE_PERMANENT",
    "RecordHeader",
    "RecordType",
    "SegmentHeader",
    "body_checksum",
    "decode_record_header",
    "encode_record_header",
    "name_key",
    "split_name_key",
]

FORMAT_VERSION = 1
RECORD_MAGIC = b"AMBR"
SEGMENT_MAGIC = b"AMBRYSEG"
RECORD_HEADER_SIZE = 64
SEGMENT_HEADER_SIZE = 32
MAX_KEY_BYTES = 0xFFFF

STATE_DELETED = 0x01
STATE_PERMANENT = 0x02

_SEG = struct.Struct("<8sHHIII")  # 24 bytes, then u64 checksum
_REC = struct.Struct("<4sBBBBHHIIIQQQQ")  # 56 bytes, then u64 checksum
_U64 = struct.Struct("<Q")
_NAME_PREFIX = struct.Struct("<HH")

assert _SEG.size == 24 and _REC.size == 56


class RecordType(enum.IntEnum):
    PUT = 1
    DELETE = 2
    TTL_UPDATE = 3
    UNDELETE = 4
    NAME_PUT = 5
    NAME_DELETE = 6
    #: a segment of some replica of the partition was erasure-coded (docs/erasure-coding.md)
    EC_SEGMENT = 7

    @property
    def is_blob(self) -> bool:
        return self <= RecordType.UNDELETE

    @property
    def is_name(self) -> bool:
        return self in (RecordType.NAME_PUT, RecordType.NAME_DELETE)

    @property
    def carries_props(self) -> bool:
        """Records whose props travel with their replication entry (no payload to fetch)."""
        return self.is_name or self == RecordType.EC_SEGMENT


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    number: int
    generation: int

    def encode(self) -> bytes:
        head = _SEG.pack(SEGMENT_MAGIC, 1, 0, self.number, self.generation, 0)
        return head + _U64.pack(xxhash.xxh3_64_intdigest(head))

    @classmethod
    def decode(cls, raw: bytes) -> SegmentHeader:
        if len(raw) < SEGMENT_HEADER_SIZE:
            raise DataCorrupt("segment header truncated")
        magic, version, _r, number, generation, _r2 = _SEG.unpack_from(raw)
        if magic != SEGMENT_MAGIC:
            raise DataCorrupt("not an Ambry segment (bad magic)")
        (check,) = _U64.unpack_from(raw, 24)
        if check != xxhash.xxh3_64_intdigest(raw[:24]):
            raise DataCorrupt("segment header checksum mismatch")
        if version != 1:
            raise DataCorrupt(f"unsupported segment format version {version}")
        return cls(number, generation)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    type: RecordType
    blob_flags: int
    state_flags: int
    life_version: int
    key_len: int
    props_len: int
    usermeta_len: int
    payload_len: int
    sequence: int
    time_ms: int
    expiry_ms: int
    body_xxh3: int

    @property
    def body_len(self) -> int:
        return self.key_len + self.props_len + self.usermeta_len + self.payload_len

    @property
    def total_len(self) -> int:
        return RECORD_HEADER_SIZE + self.body_len

    @property
    def props_offset(self) -> int:
        """Offset of props relative to the record start."""
        return RECORD_HEADER_SIZE + self.key_len

    @property
    def usermeta_offset(self) -> int:
        return self.props_offset + self.props_len

    @property
    def payload_offset(self) -> int:
        return self.usermeta_offset + self.usermeta_len

    @property
    def deleted(self) -> bool:
        return bool(self.state_flags & STATE_DELETED)

    @property
    def permanent(self) -> bool:
        return bool(self.state_flags & STATE_PERMANENT)


def encode_record_header(h: RecordHeader) -> bytes:
    if h.key_len > MAX_KEY_BYTES:
        raise ValueError("record key too long")
    head = _REC.pack(RECORD_MAGIC, FORMAT_VERSION, int(h.type), h.blob_flags, h.state_flags,
                     h.life_version, h.key_len, h.props_len, h.usermeta_len, h.payload_len,
                     h.sequence, h.time_ms, h.expiry_ms, h.body_xxh3)
    return head + _U64.pack(xxhash.xxh3_64_intdigest(head))


def decode_record_header(raw: bytes | memoryview) -> RecordHeader:
    """Decode and verify a 64-byte record header; :class:`DataCorrupt` if it is not one."""
    if len(raw) < RECORD_HEADER_SIZE:
        raise DataCorrupt("record header truncated")
    (magic, version, rtype, bflags, sflags, lv, klen, plen, ulen, dlen, seq, t, exp,
     body) = _REC.unpack_from(raw)
    if magic != RECORD_MAGIC:
        raise DataCorrupt("bad record magic")
    (check,) = _U64.unpack_from(raw, 56)
    if check != xxhash.xxh3_64_intdigest(bytes(raw[:56])):
        raise DataCorrupt("record header checksum mismatch")
    if version != FORMAT_VERSION:
        raise DataCorrupt(f"unsupported record format version {version}")
    try:
        rt = RecordType(rtype)
    except ValueError:
        raise DataCorrupt(f"unknown record type {rtype}") from None
    return RecordHeader(rt, bflags, sflags, lv, klen, plen, ulen, dlen, seq, t, exp, body)


def body_checksum(*parts: bytes | memoryview) -> int:
    h = xxhash.xxh3_64()
    for p in parts:
        h.update(p)
    return h.intdigest()


def name_key(account_id: int, container_id: int, name: str) -> bytes:
    """The record key of a named blob: u16 account, u16 container, UTF-8 name."""
    return _NAME_PREFIX.pack(account_id, container_id) + name.encode("utf-8")


def split_name_key(key: bytes) -> tuple[int, int, str]:
    account, container = _NAME_PREFIX.unpack_from(key)
    return account, container, key[4:].decode("utf-8")
