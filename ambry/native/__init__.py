"""ambry.native: the in-memory blob index (blob key -> where its PUT record lives).

This package owns the blob index described in ``ambry/native/SPEC.md``: a map from the 16-byte
UUID of a blob id to a packed 40-byte entry (``ENTRY_STRUCT``: log segment, offset, size,
expiry, delete time, life version, flags), kept in insertion order so that snapshots can be
written in slices (``dump``) and read back in bulk (``load``).  It does not interpret the
values; the storage layer does.

Two implementations with the same API and behaviour:

* ``ambry.native._cindex.CBlobIndex`` -- C extension, <= 48 bytes per entry, incremental
  growth (no long pauses), fast bulk load.  Used by default.
* ``ambry.native._pyindex.PyBlobIndex`` -- pure-Python twin (dict-based); used when the
  extension is not built or fails to import, or when ``AMBRY_NO_EXTENSIONS=1`` is set.

Exports: ``implementation`` ("c" or "python": the one ``BlobIndex`` is), ``BlobIndex``,
``ENTRY_SIZE`` and ``ENTRY_STRUCT``.

It also owns the bytes of one log record built in one call, for the node's append path
(``encode_record``, ``body_xxh3``; layout: ``ambry/storage/format.py``), chosen the same way:
``ambry.native._crecord`` (C) or ``ambry.native._pyrecord`` (its pure-Python twin);
``record_implementation`` says which.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from ambry.native import _pyrecord
from ambry.native._pyindex import ENTRY_SIZE, ENTRY_STRUCT, EntryValues, PyBlobIndex

__all__ = ["ENTRY_SIZE", "ENTRY_STRUCT", "BlobIndex", "EntryValues", "body_xxh3",
           "encode_record", "implementation", "record_implementation"]

_log = logging.getLogger(__name__)

#: Why the C extension is not used (None when it is).
extension_unavailable_reason: str | None = None


def _extensions_disabled() -> bool:
    return os.environ.get("AMBRY_NO_EXTENSIONS", "").strip().lower() in {"1", "true", "yes", "on"}


if TYPE_CHECKING:
    # Both classes have the same API; type-check callers against the Python one.
    BlobIndex = PyBlobIndex
    implementation: str
elif _extensions_disabled():
    BlobIndex = PyBlobIndex
    implementation = "python"
    extension_unavailable_reason = "disabled by AMBRY_NO_EXTENSIONS"
else:
    try:
        from ambry.native._cindex import ENTRY_SIZE as _C_ENTRY_SIZE
        from ambry.native._cindex import CBlobIndex
    except ImportError as exc:
        BlobIndex = PyBlobIndex
        implementation = "python"
        extension_unavailable_reason = f"ambry.native._cindex failed to import: {exc}"
        _log.debug("using the pure-Python blob index: %s", extension_unavailable_reason)
    else:
        if _C_ENTRY_SIZE != ENTRY_SIZE:  # a stale build of an older layout
            raise ImportError(
                f"ambry.native._cindex has ENTRY_SIZE {_C_ENTRY_SIZE}, expected {ENTRY_SIZE}; "
                "rebuild it (python setup.py build_ext --inplace)"
            )
        BlobIndex = CBlobIndex
        implementation = "c"

if TYPE_CHECKING or _extensions_disabled():
    body_xxh3 = _pyrecord.body_xxh3
    encode_record = _pyrecord.encode_record
    record_implementation = "python"
else:
    try:
        from ambry.native import _crecord
    except ImportError as exc:
        body_xxh3 = _pyrecord.body_xxh3
        encode_record = _pyrecord.encode_record
        record_implementation = "python"
        _log.debug("using the pure-Python record codec: %s", exc)
    else:
        body_xxh3 = _crecord.body_xxh3
        encode_record = _crecord.encode_record
        record_implementation = "c"
