"""The resume journal of a file upload: which parts are already stored as chunks.

Owns the journal's file name (built here and nowhere else), its format, loading it (dropping
a torn tail), appending one finished part, and deleting it once the blob is stitched. Does
not own deciding what to upload (``_upload``).

One journal per (file path, size, mtime, part size, account, container), in the resume
directory (default ``$XDG_CACHE_HOME/ambry/uploads``), as JSON lines::

    {"v": 1, "key": {...}, "created_s": 1700000000.0, "part_size": 4194304}   header
    {"i": 0, "id": "<chunk blob id>", "xxh3": "<hex of the part>", "n": 4194304}
    {"i": 3, ...}                                                              any order

Appending a line per finished part keeps the cost linear in the number of parts (rewriting
a JSON document per part was quadratic: 2,560 parts for a 10 GiB file). Lines are written
with one ``write`` and not fsynced: a journal is a cache, a lost line costs one re-sent part,
and a ``kill -9`` keeps what was written (the page cache survives the process). A file whose
size or mtime changed gets a new key, so stale parts are never stitched; each part is also
checked against its xxh3 when the file is read again. Chunks are uploaded with a TTL
(``resume_window_s``), so an upload that is never resumed does not leak disk forever; a
journal older than half that window is discarded, so its chunks cannot expire before the
blob that uses them is stitched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FinishedPart", "ResumeJournal", "default_resume_dir"]

_VERSION = 1


def default_resume_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ambry" / "uploads"


@dataclass(frozen=True)
class FinishedPart:
    index: int
    chunk_id: str
    xxh3: str
    size: int


class ResumeJournal:
    """The journal of one upload. Not thread-safe: used from the event loop only (each
    append is one small ``write``)."""

    def __init__(self, path: Path, key: dict[str, Any], part_size: int,
                 parts: dict[int, FinishedPart], created_s: float) -> None:
        self.path = path
        self.key = key
        self.part_size = part_size
        self.parts = parts
        self.created_s = created_s
        self._f: Any = None

    @staticmethod
    def file_for(directory: Path, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return directory / f"upload-{digest}.jsonl"

    @classmethod
    def open(cls, directory: Path, key: dict[str, Any], part_size: int, max_age_s: float,
             now_s: float | None = None) -> ResumeJournal:
        """The journal for ``key``: the finished parts of an earlier try, or a new one.
        A journal for another key (hash collision), of an unknown version, or older than
        ``max_age_s`` is replaced."""
        now = time.time() if now_s is None else now_s
        path = cls.file_for(directory, key)
        loaded = cls._load(path, key, part_size)
        if loaded is not None and now - loaded.created_s <= max_age_s:
            return loaded
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps({"v": _VERSION, "key": key, "created_s": now,
                                "part_size": part_size}) + "\n")
        os.replace(tmp, path)
        return cls(path, key, part_size, {}, now)

    @classmethod
    def _load(cls, path: Path, key: dict[str, Any], part_size: int) -> ResumeJournal | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        # a torn tail (killed mid-write) is dropped, and cut off so the next append
        # starts on a line of its own
        complete = raw[:raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            with open(path, "r+b") as f:
                f.truncate(len(complete))
        lines = complete.decode("utf-8", "replace").splitlines()
        try:
            head = json.loads(lines[0])
            if head.get("v") != _VERSION or head.get("key") != key or \
                    head.get("part_size") != part_size:
                return None
            created = float(head["created_s"])
        except (IndexError, ValueError, KeyError, TypeError, AttributeError):
            return None
        parts: dict[int, FinishedPart] = {}
        for line in lines[1:]:
            try:
                e = json.loads(line)
                p = FinishedPart(int(e["i"]), str(e["id"]), str(e["xxh3"]), int(e["n"]))
            except (ValueError, KeyError, TypeError):
                continue  # a damaged line costs one re-sent part
            parts[p.index] = p
        return cls(path, key, part_size, parts, created)

    @staticmethod
    def prune(directory: Path, max_age_s: float, now_s: float | None = None) -> int:
        """Delete journals not touched for ``max_age_s`` (uploads never resumed: their
        chunks have expired, so the journals are useless); how many were deleted."""
        now = time.time() if now_s is None else now_s
        removed = 0
        try:
            paths = list(directory.glob("upload-*.jsonl"))
        except OSError:
            return 0
        for p in paths:
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > max_age_s:
                    p.unlink()
                    removed += 1
        return removed

    def append(self, part: FinishedPart) -> None:
        self.parts[part.index] = part
        if self._f is None:
            self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()
        self._f.write(json.dumps({"i": part.index, "id": part.chunk_id, "xxh3": part.xxh3,
                                  "n": part.size}) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
