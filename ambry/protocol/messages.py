"""The node protocol's messages: op names, the fields each request carries, reply shapes.

Owns what travels between a frontend (or a replicating peer) and a storage node: the request
schema checked by the node (:func:`parse_request`), the reply records the client rebuilds
(:class:`MutationReply`, ...; a name travels as ``ambry.common.namerecord.NameRecord``). Does
not own framing (``framing``), the connection pool (``client``) nor what the ops do
(``ambry.storage.ops``).

Wire format (one message; requests and replies alike)::

  +----------------------+----------------------------+------------------------------+
  | u32 big-endian  N    | N bytes: msgpack map       | L raw bytes (only if the     |
  | (1 <= N <= 1 MiB)    | (the header)               | header has payload_len L > 0)|
  +----------------------+----------------------------+------------------------------+

  request header  {"op": str, "corr": int, "rid": str, ...op fields[, "payload_len": L]}
  reply header    {"corr": int, "status": "OK" | <AmbryError.code>, "msg": str,
                   ...reply fields[, "payload_len": L]}

Payload bytes are never inside msgpack. Many requests may be in flight on one connection
(pipelining); the node serves them concurrently and replies may come back in any order, matched
by ``corr``. A reply and its payload are written contiguously. Error replies never carry a
payload. An error reply after which the node ends the connection says so with
``"closing": true`` (the client sends nothing more on it).

Requests (field: type; ``?`` = optional, default after ``=``)::

  op             fields                                           reply fields
  -------------  -----------------------------------------------  ------------------------------
  ping           -                                                node, time_ms
  put            partition: int, blob_id: bin32,                  result ("created" |
                 props: map (BlobProperties.to_wire()),           "duplicate"), life_version
                 usermeta?: bin = b"", payload_len: int (+ bytes)
  get            partition, blob_id, include_deleted? = false,    props: map, usermeta: bin,
                 include_expired? = false,                        state: STATE, blob_size: int,
                 range?: [start, length] = nil,                   range_start: int,
                 info_only? = false,                              payload_len (+ bytes),
                 client_verifies? = false                         [body_xxh3: int,
                                                                   body_prefix: bin]
  delete         partition, blob_id, time_ms?: int,               result, life_version
                 life_version?: int, tombstone_if_missing? = true
  ttl_update     partition, blob_id, time_ms?, life_version?      result, life_version
  undelete       partition, blob_id, time_ms?, life_version?      result, life_version
  name_put       partition, account_id, container_id, name: str,  -
                 blob_id?: bin = b"" (empty for a delete),
                 ts_ms: int, dc_id: int, deleted? = false,
                 size? = 0, content_type? = "", created_ms? = 0,
                 token?: bin = nil, base?: [ts_ms, dc_id, blob_id]
                 = nil (conditional write; NAME_BUSY when the token
                 does not hold the name and the entry moved on)
  name_claim     as name_put, without deleted, token and base      prev: NAME | nil
                 (an upsert decided at the replica in one step;
                 NAME_BUSY while the name is reserved or being
                 written, or its entry is newer)
  name_reserve   partition, account_id, container_id, name,       granted: bool,
                 token: bin, lease_ms? = 10000 (max 30000)        entry: NAME | nil
  name_release   partition, account_id, container_id, name, token -
  name_get       partition, account_id, container_id, name        entry: NAME | nil
  name_list      partition, account_id, container_id,             entries: [NAME],
                 prefix? = "", start_after? = "", limit? = 1000   truncated: bool
  entries_since  partition, token?: [incarnation: bin16, seq] |   entries: [Entry.to_wire()],
                 nil, max_entries? = 1000, max_bytes? = 4 MiB     token: [bin16, seq],
                                                                  remaining_bytes: int
  stats          -                                                node, replicas: [REPLICA]
  blob_state     partition, blob_id                               state: STATE | nil, has_put
  replicate      requests: [[partition, token | nil], ...],       results: [[partition,
                 max_entries?, max_bytes? (per partition),          entries, token,
                 wait_ms? = 0 (long poll: held until a record       remaining_bytes], ...]
                 arrives or wait_ms passes, when all are empty),
                 confirmed_on?: [[partition, incarnation], ...] = nil
                 (an intra-DC puller: PUTs confirmed durable on
                 that replica are skipped, its token moved past
                 them), hold_ms? = 0, hold_dc?: int = nil (young
                 unconfirmed PUTs of blobs from datacenter hold_dc
                 are held up to hold_ms; ambry.storage.confirms)
  confirm        - (carries only ``confirms``: a frontend's idle   -
                 flush)
  digest         partition                                        digest: hex, blobs, names
  ec_frag_write  partition, source: str (32 hex: the encoding     written: int; with finish:
                 replica's incarnation), segment, generation,     ok, problems: [str],
                 fragment, header: {code, k, m, original_bytes,   checksums: [u64] (per
                 stripe_bytes}, stripe: int, finish? = false,     stripe, as the node's
                 payload_len (+ the stripe's block)               verify read them back)
  ec_frag_read   partition, source, segment, generation,          length (+ bytes)
                 fragment, offset, length (<= 64 MiB), verify? =
                 false (check the blocks the window lies in
                 against the fragment's table first; DATA_CORRUPT
                 if one fails)
  ec_frag_stat   partition, source, segment, generation, fragment ok, problems, bad_stripes,
                 verify? = true (false: header and checksum table checksums, file_bytes
                 only, no blocks read)
  ec_frag_patch  partition, source, segment, generation,          patched: int
                 fragment, stripe, payload_len (+ the block; it
                 must match the file's checksum table)
  ec_frag_list   partition                                        fragments: [[source, segment,
                                                                  generation, fragment, bytes]],
                                                                  damaged: {name: {whole,
                                                                  stripes, problems}}
  ec_frag_delete partition, source, segment, generation, fragment deleted: bool
  ec_missing     partition, uuids: [bin16] (<= 10000)             missing: [bin16] (neither
                                                                  a PUT nor a tombstone here)
  ec_live        partition, uuids: [bin16] (<= 10000)             live: [bin16] (not dead here:
                                                                  deleted or expired longer
                                                                  than the retention ago)
  ec_status      -                                                partitions: [{partition,
                                                                  ec records, freed segments,
                                                                  their bytes on disk,
                                                                  coordinator job state}],
                                                                  fragment_bytes: [[partition,
                                                                  bytes of its fragment files]]

  STATE   = {life_version, deleted, permanent, delete_time_ms, expiry_ms}
            (expiry_ms is 0 = never, and only present when the node read the PUT record)
  NAME    = {account_id, container_id, name, blob_id, ts_ms, dc_id, deleted, size,
             content_type, created_ms}
  REPLICA = ReplicaStats fields + damage: [{kind, segment, offset, length, reason}]
            + usage_ready: bool, usage: [[account_id, container_id, bytes, blobs], ...]
            (live blobs, ambry.storage.usage; meaningless until usage_ready)
            (a replica that failed to open is {partition_id, error})

Any request may also carry ``confirms: [[blob_id: bin32, [incarnation: bin, ...]], ...]``
(at most ``MAX_CONFIRMS_PER_REQUEST`` entries, up to 8 incarnations each): a frontend tells the
node that each blob is durable on the replicas of those incarnations (ack'd puts, piggybacked
on its next request). A put reply carries ``incarnation`` (the replica's) when its ack is
durable by fsync (no such field under the page-cache policy).

Semantics worth knowing:

* ``range`` is clamped: ``[start, length]`` returns ``min(length, blob_size - start)`` bytes;
  ``start > blob_size`` is INVALID_ARGUMENT. The frontend does the HTTP 416 logic.
* A put whose ``payload_len`` is over the node's ``storage.max_record_bytes`` is answered
  PAYLOAD_TOO_LARGE (``closing``) and the connection is closed: the node will not store that
  payload just to resynchronise the stream. The close lingers: replies still owed go out, the
  node shuts its write side and drops what the client still sends for up to 2 s, so the client
  reads the error instead of a connection reset. Any other bad request that still has a
  well-formed header gets its error reply, its payload (if any) is read and dropped, and the
  connection goes on.
* A header that is not a msgpack map, or a bad length prefix, is answered PROTOCOL_ERROR (with
  ``corr`` 0 when it could not be read) and the connection is closed.
* A large GET payload is streamed and its checksum verified as it goes; if the check fails at
  the end the node aborts the connection, so the client sees a truncated reply, never a
  silently wrong body.
* ``name_list`` limit is clamped to 10000, ``entries_since`` to 10000 entries and 64 MiB.
  Both cut a batch short to keep the reply header under 1 MiB: ``entries_since`` returns the
  token of the last entry it sent (the rest counts in ``remaining_bytes``), ``name_list`` sets
  ``truncated`` (ask again with ``start_after`` = the last name received).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ambry.common.blobstate import BlobState
from ambry.common.errors import ProtocolError
from ambry.common.namerecord import NameRecord  # carried by name_put and name replies

__all__ = [
    "MAX_CONFIRMS_PER_REQUEST",
    "MAX_CONFIRM_INCARNATIONS",
    "MAX_ENTRIES_BATCH",
    "MAX_ENTRIES_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_LIST_LIMIT",
    "OPS",
    "STATUS_OK",
    "BadRequestFrame",
    "EntriesReply",
    "Field",
    "MutationReply",
    "NameRecord",
    "Request",
    "StateReply",
    "parse_request",
    "state_from_wire",
    "state_to_wire",
]

STATUS_OK = "OK"
MAX_HEADER_BYTES = 1 << 20
MAX_LIST_LIMIT = 10_000
MAX_ENTRIES_BATCH = 10_000
MAX_ENTRIES_BYTES = 64 * 1024 * 1024
DEFAULT_ENTRIES_BYTES = 4 * 1024 * 1024
#: blob confirmations one request may carry (``confirms``), and incarnations per blob
MAX_CONFIRMS_PER_REQUEST = 1024
MAX_CONFIRM_INCARNATIONS = 8

_INT = "int"
_BOOL = "bool"
_BYTES = "bytes"
_STR = "str"
_MAP = "map"
_LIST = "list"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str
    required: bool = True
    default: Any = None
    nullable: bool = False


def _partition() -> Field:
    return Field("partition", _INT)


def _blob_id() -> Field:
    return Field("blob_id", _BYTES)


_MUTATION = (_partition(), _blob_id(), Field("time_ms", _INT, False, None, True),
             Field("life_version", _INT, False, None, True))

#: names one fragment file of an erasure-coded segment (ambry.storage.fragments)
_FRAGMENT = (_partition(), Field("source", _STR), Field("segment", _INT),
             Field("generation", _INT), Field("fragment", _INT))

OPS: dict[str, tuple[Field, ...]] = {
    "ping": (),
    "put": (_partition(), _blob_id(), Field("props", _MAP), Field("usermeta", _BYTES, False, b"")),
    "get": (_partition(), _blob_id(), Field("include_deleted", _BOOL, False, False),
            Field("include_expired", _BOOL, False, False),
            Field("range", _LIST, False, None, True), Field("info_only", _BOOL, False, False),
            Field("client_verifies", _BOOL, False, False)),
    "delete": (*_MUTATION, Field("tombstone_if_missing", _BOOL, False, True)),
    "ttl_update": _MUTATION,
    "undelete": _MUTATION,
    "name_put": (_partition(), Field("account_id", _INT), Field("container_id", _INT),
                 Field("name", _STR), Field("blob_id", _BYTES, False, b""), Field("ts_ms", _INT),
                 Field("dc_id", _INT), Field("deleted", _BOOL, False, False),
                 Field("size", _INT, False, 0), Field("content_type", _STR, False, ""),
                 Field("created_ms", _INT, False, 0),
                 Field("token", _BYTES, False, None, True),
                 Field("base", _LIST, False, None, True)),
    "name_claim": (_partition(), Field("account_id", _INT), Field("container_id", _INT),
                   Field("name", _STR), Field("blob_id", _BYTES), Field("ts_ms", _INT),
                   Field("dc_id", _INT), Field("size", _INT, False, 0),
                   Field("content_type", _STR, False, ""), Field("created_ms", _INT, False, 0)),
    "name_reserve": (_partition(), Field("account_id", _INT), Field("container_id", _INT),
                     Field("name", _STR), Field("token", _BYTES),
                     Field("lease_ms", _INT, False, 10_000)),
    "name_release": (_partition(), Field("account_id", _INT), Field("container_id", _INT),
                     Field("name", _STR), Field("token", _BYTES)),
    "name_get": (_partition(), Field("account_id", _INT), Field("container_id", _INT),
                 Field("name", _STR)),
    "name_list": (_partition(), Field("account_id", _INT), Field("container_id", _INT),
                  Field("prefix", _STR, False, ""), Field("start_after", _STR, False, ""),
                  Field("limit", _INT, False, 1000),
                  Field("include_deleted", _BOOL, False, False)),
    "entries_since": (_partition(), Field("token", _LIST, False, None, True),
                      Field("max_entries", _INT, False, 1000),
                      Field("max_bytes", _INT, False, DEFAULT_ENTRIES_BYTES)),
    "stats": (),
    "blob_state": (_partition(), _blob_id()),
    "replicate": (Field("requests", _LIST), Field("max_entries", _INT, False, 1000),
                  Field("max_bytes", _INT, False, DEFAULT_ENTRIES_BYTES),
                  Field("wait_ms", _INT, False, 0),
                  Field("confirmed_on", _LIST, False, None, True),
                  Field("hold_ms", _INT, False, 0),
                  Field("hold_dc", _INT, False, None, True)),
    "digest": (_partition(),),
    "confirm": (),
    "ec_frag_write": (*_FRAGMENT, Field("header", _MAP), Field("stripe", _INT),
                      Field("finish", _BOOL, False, False)),
    "ec_frag_read": (*_FRAGMENT, Field("offset", _INT), Field("length", _INT),
                     Field("verify", _BOOL, False, False)),
    "ec_frag_stat": (*_FRAGMENT, Field("verify", _BOOL, False, True)),
    "ec_frag_patch": (*_FRAGMENT, Field("stripe", _INT)),
    "ec_frag_list": (_partition(),),
    "ec_frag_delete": _FRAGMENT,
    "ec_missing": (_partition(), Field("uuids", _LIST)),
    "ec_live": (_partition(), Field("uuids", _LIST)),
    "ec_status": (),
}

#: ops whose request carries a payload
PAYLOAD_OPS = frozenset({"put", "ec_frag_write", "ec_frag_patch"})


class BadRequestFrame(ProtocolError):
    """A request the node cannot serve. ``corr`` is the request's correlation id when known;
    ``fatal`` means the byte stream cannot be trusted any more (close the connection)."""

    def __init__(self, message: str, corr: int = 0, fatal: bool = False,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.corr = corr
        self.fatal = fatal
        if code is not None:
            self.code = code


def _is_kind(value: Any, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _BYTES:
        return isinstance(value, (bytes, bytearray))
    if kind == _STR:
        return isinstance(value, str)
    if kind == _MAP:
        return isinstance(value, dict)
    if kind == _LIST:
        return isinstance(value, (list, tuple))
    raise AssertionError(kind)


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    corr: int
    rid: str
    args: dict[str, Any]
    payload_len: int
    #: (blob id, incarnations it is durable on) a frontend piggybacked on this request
    confirms: tuple[tuple[bytes, tuple[bytes, ...]], ...] = ()


def payload_len_of(header: dict[str, Any]) -> int:
    """The header's payload length; raises a fatal BadRequestFrame if it is not usable (the
    stream position is then unknown)."""
    c: Any = header.get("corr")
    corr = int(c) if _is_kind(c, _INT) else 0
    n = header.get("payload_len", 0)
    if n is None:
        return 0
    if not _is_kind(n, _INT) or n < 0:
        raise BadRequestFrame("payload_len must be an integer >= 0", corr, fatal=True)
    return int(n)


def parse_request(header: dict[str, Any]) -> Request:
    """Check a request header against the op's schema; fill in defaults.

    Raises :class:`BadRequestFrame` (non-fatal: the header itself was well framed) for an
    unknown op or a missing / ill-typed field.
    """
    plen = payload_len_of(header)
    c: Any = header.get("corr")
    if not _is_kind(c, _INT):
        raise BadRequestFrame("request has no integer corr", 0)
    corr = int(c)
    rid = header.get("rid", "")
    if not isinstance(rid, str):
        rid = str(rid)
    op = header.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise BadRequestFrame(f"unknown op {op!r}", corr)
    if plen and op not in PAYLOAD_OPS:
        raise BadRequestFrame(f"op {op} takes no payload", corr)
    args: dict[str, Any] = {}
    for f in OPS[op]:
        if f.name not in header or (header[f.name] is None and not f.required):
            if f.required:
                raise BadRequestFrame(f"{op}: missing field {f.name!r}", corr)
            args[f.name] = f.default
            continue
        v = header[f.name]
        if v is None and f.nullable:
            args[f.name] = None
            continue
        if not _is_kind(v, f.kind):
            raise BadRequestFrame(f"{op}: field {f.name!r} must be {f.kind}, "
                                  f"not {type(v).__name__}", corr)
        args[f.name] = bytes(v) if f.kind == _BYTES else v
    raw = header.get("confirms")
    return Request(op, corr, rid, args, plen, _confirms(raw, corr) if raw else ())


def _confirms(raw: Any, corr: int) -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    bad = BadRequestFrame(f"confirms must be at most {MAX_CONFIRMS_PER_REQUEST} "
                          f"[blob id, [incarnation, ...]] pairs", corr)
    if not isinstance(raw, (list, tuple)) or len(raw) > MAX_CONFIRMS_PER_REQUEST:
        raise bad
    out = []
    for item in raw:
        if not (isinstance(item, (list, tuple)) and len(item) == 2
                and isinstance(item[0], (bytes, bytearray)) and len(item[0]) == 32
                and isinstance(item[1], (list, tuple))
                and 1 <= len(item[1]) <= MAX_CONFIRM_INCARNATIONS
                and all(isinstance(i, (bytes, bytearray)) and 1 <= len(i) <= 64
                        for i in item[1])):
            raise bad
        out.append((bytes(item[0]), tuple(bytes(i) for i in item[1])))
    return tuple(out)


# ---------------------------------------------------------------------------------- replies
def state_to_wire(state: BlobState, expiry_ms: int | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"life_version": state.life_version, "deleted": state.deleted,
                         "permanent": state.permanent, "delete_time_ms": state.delete_time_ms}
    if expiry_ms is not None:
        m["expiry_ms"] = expiry_ms
    return m


def state_from_wire(m: dict[str, Any]) -> BlobState:
    return BlobState(int(m["life_version"]), bool(m["deleted"]), bool(m["permanent"]),
                     int(m.get("delete_time_ms", 0)))


@dataclass(frozen=True, slots=True)
class MutationReply:
    """Reply to put / delete / ttl_update / undelete. ``result`` is the replica's status word
    (created, duplicate, deleted, already_deleted, tombstoned, updated, already_permanent,
    marked, undeleted)."""

    result: str
    life_version: int
    #: put only: the replica's incarnation when the ack is durable (fsync policy)
    incarnation: bytes | None = None


@dataclass(frozen=True, slots=True)
class StateReply:
    state: BlobState | None
    has_put: bool


@dataclass(frozen=True, slots=True)
class EntriesReply:
    """A batch of a replica's log for replication. ``entries`` are ``Entry.to_wire()`` maps
    (``ambry.storage.api.Entry.from_wire`` rebuilds them)."""

    entries: list[dict[str, Any]]
    token: tuple[bytes, int]
    remaining_bytes: int
