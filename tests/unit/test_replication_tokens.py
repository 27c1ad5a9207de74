"""TokenStore: tokens survive a close/reopen, a recreated local replica starts over, and
token moves reach rocksdict at most once per flush interval (plus on close)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ambry.replication.tokens import TokenStore


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class CountingDb:
    """The real rocksdict, with its writes recorded."""

    def __init__(self, db: Any, writes: list[bytes]) -> None:
        self.db, self.writes = db, writes

    def put(self, key: bytes, value: bytes) -> None:
        self.writes.append(key)
        self.db.put(key, value)

    def get(self, key: bytes) -> Any:
        return self.db.get(key)

    def close(self) -> None:
        self.db.close()


def test_tokens_survive_close_and_reopen(tmp_path: Path) -> None:
    s = TokenStore(str(tmp_path / "t"))
    s.put(3, "peer-a", b"inc1", (b"peer-inc", 42))
    s.put(3, "peer-a", b"inc1", (b"peer-inc", 43))
    assert s.get(3, "peer-a", b"inc1") == (b"peer-inc", 43)
    s.close()
    s = TokenStore(str(tmp_path / "t"))
    assert s.get(3, "peer-a", b"inc1") == (b"peer-inc", 43)
    assert s.get(3, "peer-b", b"inc1") is None
    assert s.get(3, "peer-a", b"other-incarnation") is None  # recreated replica: start over
    s.close()


def test_token_moves_are_written_at_most_once_per_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    s = TokenStore(str(tmp_path / "t"), flush_interval_s=1.0, monotonic=clock)
    writes: list[bytes] = []
    s._db = CountingDb(s._db, writes)  # type: ignore[assignment]
    for seq in range(100):
        s.put(1, "p", b"i", (b"pi", seq))
    assert writes == []  # all within the interval: memory only
    assert s.get(1, "p", b"i") == (b"pi", 99)
    clock.t = 1.5
    s.put(1, "p", b"i", (b"pi", 100))
    assert len(writes) == 1  # one write for the key, with its latest value
    s.close()
    s = TokenStore(str(tmp_path / "t"))
    assert s.get(1, "p", b"i") == (b"pi", 100)
    s.close()
