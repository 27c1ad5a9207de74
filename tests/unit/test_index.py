"""Unit tests for the blob index (ambry.native, contract in ambry/native/SPEC.md).

Every API test runs against each available implementation (the pure-Python twin always, the C
extension when it is built).  A hypothesis state machine drives both side by side with a
reference model and compares every result.
"""

from __future__ import annotations

import array
import gc
import mmap
import os
import random
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ambry import native
from ambry.native import ENTRY_SIZE, ENTRY_STRUCT
from ambry.native._pyindex import PyBlobIndex

try:
    if native._extensions_disabled():  # the AMBRY_NO_EXTENSIONS pass tests the twin alone
        raise ImportError("disabled by AMBRY_NO_EXTENSIONS")
    from ambry.native import _cindex
    from ambry.native._cindex import CBlobIndex
except ImportError:  # extension not built or disabled: the C-only tests skip
    _cindex = None  # type: ignore[assignment]
    CBlobIndex = None  # type: ignore[assignment,misc]

IMPLS: list[Any] = [PyBlobIndex] + ([CBlobIndex] if CBlobIndex is not None else [])
needs_c = pytest.mark.skipif(CBlobIndex is None, reason="C extension not built or disabled")

U32 = 0xFFFFFFFF
VALUES = (1, 2, 3, 4, 5, 6, 7)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=IMPLS, ids=lambda cls: cls.__name__)
def cls(request: pytest.FixtureRequest) -> Any:
    return request.param


def rkey(rng: random.Random) -> bytes:
    return rng.randbytes(16)


def rvalues(rng: random.Random) -> tuple[int, ...]:
    return (
        rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32),
        rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(8),
    )


def pack_all(entries: list[tuple[bytes, tuple[int, ...]]]) -> bytes:
    return b"".join(ENTRY_STRUCT.pack(k, *v) for k, v in entries)


# ------------------------------------------------------------------------------------------
# module surface


def test_module_exports() -> None:
    assert native.ENTRY_SIZE == ENTRY_SIZE == 40 == ENTRY_STRUCT.size
    assert ENTRY_STRUCT.format == "<16sIIIIIHBx"
    assert native.implementation in ("c", "python")
    expected = CBlobIndex if native.implementation == "c" else PyBlobIndex
    assert native.BlobIndex is expected
    if CBlobIndex is not None and not native._extensions_disabled():
        assert native.implementation == "c"
        assert _cindex.ENTRY_SIZE == ENTRY_SIZE


def _implementation_in_subprocess(code: str, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport ambry.native as n; print(n.implementation)"],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    return out.stdout.strip()


def test_env_var_forces_python() -> None:
    assert _implementation_in_subprocess("", AMBRY_NO_EXTENSIONS="1") == "python"


def test_falls_back_to_python_when_extension_fails_to_import() -> None:
    code = "import sys; sys.modules['ambry.native._cindex'] = None"  # makes the import fail
    assert _implementation_in_subprocess(code, AMBRY_NO_EXTENSIONS="0") == "python"


# ------------------------------------------------------------------------------------------
# basic behaviour


def test_empty(cls: Any) -> None:
    ix = cls()
    assert len(ix) == 0
    assert ix.get(bytes(16)) is None
    assert bytes(16) not in ix
    assert list(ix.items()) == []
    assert ix.dump(0, 10) == b""
    assert ix.load(b"") == 0
    assert ix.memory_bytes() > 0


def test_put_get_overwrite_keeps_position(cls: Any) -> None:
    ix = cls(capacity_hint=10)
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    ix.put(a, *VALUES)
    ix.put(b, 10, 20, 30, 40, 50, 60, 70)
    ix.put(c, U32, U32, U32, U32, U32, 0xFFFF, 0xFF)
    assert len(ix) == 3 and a in ix and b"d" * 16 not in ix
    assert ix.get(a) == VALUES
    assert ix.get(c) == (U32, U32, U32, U32, U32, 0xFFFF, 0xFF)
    ix.put(a, 0, 0, 0, 0, 0, 0, 0)
    assert len(ix) == 3
    assert ix.get(a) == (0,) * 7
    assert [k for k, _ in ix.items()] == [a, b, c]
    assert ix.dump(0, 1) == ENTRY_STRUCT.pack(a, 0, 0, 0, 0, 0, 0, 0)


def test_keywords(cls: Any) -> None:
    ix = cls(capacity_hint=4)
    k = os.urandom(16)
    ix.put(key=k, segment=1, offset=2, size=3, expiry_s=4, delete_s=5, life_version=6, flags=7)
    ix.put(k, 1, 2, 3, 4, 5, life_version=9, flags=8)
    assert ix.get(key=k) == (1, 2, 3, 4, 5, 9, 8)
    assert ix.dump(start=0, count=1) == ENTRY_STRUCT.pack(k, 1, 2, 3, 4, 5, 9, 8)
    assert cls().load(buf=ix.dump(0, 1)) == 1
    with pytest.raises(TypeError):
        ix.put(k, 1, 2, 3, 4, 5, 6)  # missing flags
    with pytest.raises(TypeError):
        ix.put(k, 1, 2, 3, 4, 5, 6, 7, 8)  # too many
    with pytest.raises(TypeError):
        ix.put(k, 1, 2, 3, 4, 5, 6, 7, segment=1)  # given twice
    with pytest.raises(TypeError):
        ix.put(k, 1, 2, 3, 4, 5, 6, 7, colour=1)  # unknown
    with pytest.raises(TypeError):
        ix.get()


def test_key_types(cls: Any) -> None:
    ix = cls()
    k = bytes(range(16))
    ix.put(bytearray(k), *VALUES)
    assert ix.get(k) == VALUES
    assert ix.get(memoryview(k)) == VALUES
    assert memoryview(k) in ix
    assert ix.get(array.array("I", k)) == VALUES  # 4 items of 4 bytes: 16 bytes
    noncontig = memoryview(bytes(x for b in k for x in (b, 0)))[::2]
    assert not noncontig.contiguous
    assert ix.get(noncontig) == VALUES
    ix.put(memoryview(bytearray(k)), 9, 9, 9, 9, 9, 9, 9)
    assert len(ix) == 1 and ix.get(k) == (9,) * 7
    key, _ = next(ix.items())
    assert type(key) is bytes and key == k


@pytest.mark.parametrize(
    "key, exc",
    [
        (b"", ValueError), (b"x" * 15, ValueError), (b"x" * 17, ValueError),
        (bytearray(15), ValueError), (memoryview(b"x" * 32), ValueError),
        (array.array("I", [0] * 5), ValueError),
        ("x" * 16, TypeError), (None, TypeError), (12345, TypeError), ([0] * 16, TypeError),
    ],
)
def test_bad_keys(cls: Any, key: object, exc: type[Exception]) -> None:
    ix = cls()
    ix.put(b"k" * 16, *VALUES)
    before = ix.dump(0, 10)
    with pytest.raises(exc):
        ix.put(key, *VALUES)
    with pytest.raises(exc):
        ix.get(key)
    with pytest.raises(exc):
        key in ix  # noqa: B015
    assert ix.dump(0, 10) == before and len(ix) == 1


class Idx:
    """An integer-like object that is not an int (like numpy.uint32)."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __index__(self) -> int:
        return self.v


LIMITS = [U32, U32, U32, U32, U32, 0xFFFF, 0xFF]


@pytest.mark.parametrize("field", range(7))
@pytest.mark.parametrize("delta", ["negative", "max+1", "huge", "-huge"])
def test_value_overflow(cls: Any, field: int, delta: str) -> None:
    bad = {"negative": -1, "max+1": LIMITS[field] + 1, "huge": 2**100, "-huge": -(2**100)}[delta]
    ix = cls()
    k = os.urandom(16)
    vals: list[object] = list(VALUES)
    vals[field] = bad
    with pytest.raises(OverflowError):
        ix.put(k, *vals)
    vals[field] = Idx(bad)
    with pytest.raises(OverflowError):
        ix.put(k, *vals)
    assert len(ix) == 0 and k not in ix


@pytest.mark.parametrize("bad", [1.0, "1", None, b"1"])
def test_value_type_errors(cls: Any, bad: object) -> None:
    ix = cls()
    for field in range(7):
        vals: list[object] = list(VALUES)
        vals[field] = bad
        with pytest.raises(TypeError):
            ix.put(os.urandom(16), *vals)
    assert len(ix) == 0


def test_first_bad_argument_decides_the_exception(cls: Any) -> None:
    ix = cls()
    with pytest.raises(ValueError):
        ix.put(b"short", -1, 1.5, 0, 0, 0, 0, 0)
    with pytest.raises(OverflowError):
        ix.put(bytes(16), -1, 1.5, 0, 0, 0, 0, 0)
    with pytest.raises(TypeError):
        ix.put(bytes(16), 1.5, -1, 0, 0, 0, 0, 0)


def test_integer_likes_and_bools(cls: Any) -> None:
    ix = cls()
    k = os.urandom(16)
    ix.put(k, Idx(U32), True, False, Idx(0), 5, Idx(0xFFFF), Idx(0xFF))
    assert ix.get(k) == (U32, 1, 0, 0, 5, 0xFFFF, 0xFF)


def test_capacity_hint_validation(cls: Any) -> None:
    with pytest.raises(ValueError):
        cls(-1)
    with pytest.raises(TypeError):
        cls(1.5)
    ix = cls(100_000)
    ix.put(bytes(16), *VALUES)
    assert len(ix) == 1


def test_dump_clamps_and_validates(cls: Any) -> None:
    ix = cls()
    rng = random.Random(3)
    entries = [(rkey(rng), rvalues(rng)) for _ in range(10)]
    for k, v in entries:
        ix.put(k, *v)
    assert ix.dump(0, 10) == pack_all(entries)
    assert ix.dump(3, 4) == pack_all(entries[3:7])
    assert ix.dump(8, 100) == pack_all(entries[8:])
    assert ix.dump(10, 5) == b"" == ix.dump(11, 5) == ix.dump(2**70, 2**70)
    assert ix.dump(0, 0) == b""
    assert ix.dump(0, 2**70) == pack_all(entries)
    for args in [(-1, 1), (0, -1)]:
        with pytest.raises(ValueError):
            ix.dump(*args)
    with pytest.raises(TypeError):
        ix.dump(0.0, 1)
    assert ix.dump(Idx(1), Idx(1)) == pack_all(entries[1:2])


def test_load_semantics(cls: Any) -> None:
    rng = random.Random(4)
    a, b, c = rkey(rng), rkey(rng), rkey(rng)
    ix = cls()
    ix.put(b, *VALUES)
    buf = pack_all([(a, (1,) * 7), (b, (2,) * 7), (c, (3,) * 7), (a, (4,) * 7)])
    assert ix.load(buf) == 4  # records read, duplicates included
    assert len(ix) == 3
    assert [k for k, _ in ix.items()] == [b, a, c]  # positions: first occurrence
    assert ix.get(a) == (4,) * 7  # later wins
    assert ix.get(b) == (2,) * 7


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "mmap", "array", "strided"])
def test_load_buffer_kinds(cls: Any, kind: str) -> None:
    rng = random.Random(5)
    entries = [(rkey(rng), rvalues(rng)) for _ in range(50)]
    raw = pack_all(entries)
    buf: Any
    if kind == "bytes":
        buf = raw
    elif kind == "bytearray":
        buf = bytearray(raw)
    elif kind == "memoryview":
        buf = memoryview(bytearray(raw))
    elif kind == "mmap":
        buf = mmap.mmap(-1, len(raw))
        buf.write(raw)
    elif kind == "array":
        buf = array.array("I", raw)
    else:
        buf = memoryview(bytes(x for b in raw for x in (b, 0xAA)))[::2]
    ix = cls()
    assert ix.load(buf) == 50
    assert ix.dump(0, 50) == raw
    if kind == "mmap":
        buf.close()


def test_load_errors(cls: Any) -> None:
    ix = cls()
    ix.put(bytes(16), *VALUES)
    for bad_len in (1, 39, 41, 79):
        with pytest.raises(ValueError):
            ix.load(bytes(bad_len))
    for bad in ("x" * 40, None, 40, [b"x" * 40]):
        with pytest.raises(TypeError):
            ix.load(bad)
    assert len(ix) == 1


def test_reserved_byte_is_normalized(cls: Any) -> None:
    rec = bytearray(ENTRY_STRUCT.pack(os.urandom(16), *VALUES))
    rec[39] = 0x5A
    ix = cls()
    ix.load(rec)
    assert ix.dump(0, 1)[39] == 0
    ix.load(rec)  # overwrite path
    assert ix.dump(0, 1)[39] == 0
    assert ix.dump(0, 1)[:39] == rec[:39]


def test_items_iteration_under_mutation(cls: Any) -> None:
    ix = cls()
    rng = random.Random(6)
    keys = [rkey(rng) for _ in range(5)]
    for i, k in enumerate(keys[:3]):
        ix.put(k, i, 0, 0, 0, 0, 0, 0)
    it = ix.items()
    assert next(it) == (keys[0], (0,) * 7)
    ix.put(keys[1], 9, 9, 9, 9, 9, 9, 9)  # not yet passed: visible
    ix.put(keys[0], 8, 8, 8, 8, 8, 8, 8)  # already passed
    ix.put(keys[3], 3, 0, 0, 0, 0, 0, 0)  # appended: yielded
    assert next(it) == (keys[1], (9,) * 7)
    assert [k for k, _ in it] == keys[2:4]
    ix.put(keys[4], 4, 0, 0, 0, 0, 0, 0)
    assert list(it) == []  # exhausted iterators stay exhausted
    assert iter(it) is it


def test_items_survive_growth(cls: Any) -> None:
    ix = cls()
    rng = random.Random(7)
    first = rkey(rng)
    ix.put(first, *VALUES)
    it = ix.items()
    seen = [next(it)[0]]
    keys = [first]
    for _ in range(20_000):  # many growths and migrations while the iterator is live
        k = rkey(rng)
        keys.append(k)
        ix.put(k, *VALUES)
        if len(keys) % 3 == 0:
            seen.append(next(it)[0])
    seen.extend(k for k, _ in it)
    assert seen == keys


def test_memory_bytes_grows(cls: Any) -> None:
    ix = cls()
    empty = ix.memory_bytes()
    rng = random.Random(8)
    for _ in range(10_000):
        ix.put(rkey(rng), *VALUES)
    assert ix.memory_bytes() > empty + 10_000 * ENTRY_SIZE


def test_lookups_stay_correct_through_growth(cls: Any) -> None:
    """Every key stays readable after every put across many growth points (with the C index,
    migrations span several puts from ~350 entries on)."""
    ix = cls()
    rng = random.Random(9)
    keys: list[bytes] = []
    expected: list[tuple[int, ...]] = []
    absent = [rkey(rng) for _ in range(20)]
    for i in range(2700):
        k = rkey(rng)
        v = (i, i + 1, 0, 0, 0, i & 0xFFFF, i & 0xFF)
        ix.put(k, *v)
        keys.append(k)
        expected.append(v)
        if i % 5 == 4:  # overwrite an older key, possibly one not yet migrated
            j = rng.randrange(len(keys))
            expected[j] = rvalues(rng)
            ix.put(keys[j], *expected[j])
        assert len(ix) == i + 1
        assert [ix.get(k) for k in keys] == expected
        assert all(k in ix for k in keys)
        assert not any(k in ix for k in absent)
    assert [(k, v) for k, v in ix.items()] == list(zip(keys, expected))


def test_bulk_load_matches_put_path(cls: Any) -> None:
    """Loads on both paths (into empty / small index: bulk; into a bigger index: per entry),
    with duplicates inside the buffer and against existing keys."""
    rng = random.Random(10)
    pool = [rkey(rng) for _ in range(30_000)]
    model: dict[bytes, tuple[int, ...]] = {}
    ix = cls()
    for size in (20_000, 25_000, 3_000, 50, 40_000):
        entries = [(rng.choice(pool), rvalues(rng)) for _ in range(size)]
        assert ix.load(pack_all(entries)) == size
        for k, v in entries:
            model[k] = v
        assert len(ix) == len(model)
        assert ix.dump(0, len(model)) == pack_all(list(model.items()))
        assert all(ix.get(k) == v for k, v in model.items())


# ------------------------------------------------------------------------------------------
# C-only properties


@needs_c
def test_c_memory_per_entry_3m() -> None:
    n = 3_000_000
    raw = os.urandom(16 * n)
    ix = CBlobIndex()
    put = ix.put
    for i in range(n):
        put(raw[16 * i:16 * i + 16], 1, i, 4096, 0, 0, 0, 0)
    assert len(ix) == n
    per_entry = ix.memory_bytes() / n
    assert per_entry <= 48, per_entry
    assert ix.get(raw[16 * 1234:16 * 1235]) == (1, 1234, 4096, 0, 0, 0, 0)
    loaded = CBlobIndex()
    assert loaded.load(ix.dump(0, n)) == n
    assert loaded.memory_bytes() / n <= 48
    assert loaded.get(raw[-16:]) == (1, n - 1, 4096, 0, 0, 0, 0)


@needs_c
def test_c_incremental_migration_keeps_every_key() -> None:
    """Large growths migrate over many puts.  memory_bytes() shows a growth start (a new slot
    table, not a whole number of pages) and a migration end (the old table freed).  Verify the
    whole table at both, samples plus overwrites on every put in between, and that no
    migration outlives len/MIGRATE_BATCH + 1 puts (bounded work per put)."""
    page_bytes = _cindex.PAGE_ENTRIES * ENTRY_SIZE
    batch = _cindex.MIGRATE_BATCH
    ix = CBlobIndex()
    rng = random.Random(11)
    keys: list[bytes] = []
    expected: dict[bytes, tuple[int, ...]] = {}
    mem = ix.memory_bytes()
    puts_left = 0  # > 0 while a multi-put migration is running
    migrations = 0

    def table_event(delta: int) -> bool:
        """A slot table was allocated or freed (as opposed to only pages and the page
        directory, whose growth is 64..1024 bytes at these sizes)."""
        r = delta % page_bytes
        return min(r, page_bytes - r) > 1024

    def put(k: bytes, v: tuple[int, ...]) -> int:
        nonlocal mem
        ix.put(k, *v)
        expected[k] = v
        now = ix.memory_bytes()
        delta, mem = now - mem, now
        return delta

    for i in range(300_000):
        k = rkey(rng)
        keys.append(k)
        n_before = len(ix)
        delta = put(k, (i, 0, 0, 0, 0, 0, 0))
        if delta > 0 and table_event(delta) and n_before > batch and not puts_left:
            puts_left = n_before // batch + 1
            assert all(ix.get(key) == v for key, v in expected.items())
            continue
        if puts_left:
            if table_event(delta):  # the old table was freed (maybe with a page allocated)
                puts_left = 0
                migrations += 1
                assert all(ix.get(key) == v for key, v in expected.items())
                continue
            puts_left -= 1
            assert puts_left > 0, "migration did not finish within len/MIGRATE_BATCH + 1 puts"
            for key in rng.sample(keys, 32):
                assert ix.get(key) == expected[key]
            j = rng.randrange(len(keys))  # an overwrite also advances the migration
            if table_event(put(keys[j], rvalues(rng))):
                puts_left = 0
                migrations += 1
                assert all(ix.get(key) == v for key, v in expected.items())
                continue
            puts_left -= 1
            assert puts_left > 0
            assert ix.get(keys[j]) == expected[keys[j]]
    assert migrations >= 8
    assert len(ix) == len(expected)
    assert all(ix.get(key) == v for key, v in expected.items())


@needs_c
def test_c_threads_share_an_index() -> None:
    ix = CBlobIndex()
    rng = random.Random(13)
    per_thread = {s: [rkey(rng) for _ in range(20_000)] for s in range(4)}

    def worker(seed: int) -> None:
        for i, k in enumerate(per_thread[seed]):
            ix.put(k, seed, i, 0, 0, 0, 0, 0)
            if i % 100 == 0:
                ix.dump(max(0, len(ix) - 50), 50)
                ix.get(per_thread[seed][i // 2])

    threads = [threading.Thread(target=worker, args=(s,)) for s in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ix) == 80_000  # a worker that raised would leave entries missing
    for seed, keys in per_thread.items():
        assert all(ix.get(k) == (seed, i, 0, 0, 0, 0, 0) for i, k in enumerate(keys))
    assert sorted(k for k, _ in ix.items()) == sorted(k for ks in per_thread.values() for k in ks)


@needs_c
def test_c_subclass_and_gc() -> None:
    class Sub(CBlobIndex):
        pass

    s = Sub(10)
    s.put(bytes(16), *VALUES)
    s.cycle = s.items()  # type: ignore[attr-defined]  # index -> iterator -> index
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None


@needs_c
def test_c_sizeof() -> None:
    ix = CBlobIndex()
    ix.put(bytes(16), *VALUES)
    assert sys.getsizeof(ix) >= ix.memory_bytes()


@needs_c
def test_c_reentrant_index_conversion_is_safe() -> None:
    """__index__ may run arbitrary code, including puts on the same index."""
    ix = CBlobIndex()
    rng = random.Random(12)
    others = [rkey(rng) for _ in range(2000)]

    class Sneaky:
        def __index__(self) -> int:
            for k in others:  # forces a growth while the outer put is converting arguments
                ix.put(k, *VALUES)
            return 5

    k = rkey(rng)
    ix.put(k, Sneaky(), 1, 1, 1, 1, 1, 1)  # type: ignore[arg-type]
    assert ix.get(k) == (5, 1, 1, 1, 1, 1, 1)
    assert all(ix.get(o) == VALUES for o in others)
    assert [key for key, _ in ix.items()][-1] == k


# ------------------------------------------------------------------------------------------
# differential state machine: C and Python side by side, checked against a plain model

u32 = st.integers(0, U32)
values_st = st.tuples(u32, u32, u32, u32, u32, st.integers(0, 0xFFFF), st.integers(0, 0xFF))
key_st = st.binary(min_size=16, max_size=16)


class IndexMachine(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.impls = [c() for c in IMPLS]
        self.model: dict[bytes, tuple[int, ...]] = {}
        # live iterators: (one per implementation, position in the model, exhausted?)
        self.iters: list[list[Any]] = []

    @initialize(hint=st.integers(0, 100))
    def init(self, hint: int) -> None:
        self.impls = [c(hint) for c in IMPLS]

    def all_equal(self, results: list[Any]) -> Any:
        assert all(r == results[0] for r in results), results
        return results[0]

    @rule(target=keys, key=key_st)
    def new_key(self, key: bytes) -> bytes:
        return key

    @rule(key=keys, vals=values_st, kind=st.sampled_from([bytes, bytearray, memoryview]))
    def put(self, key: bytes, vals: tuple[int, ...], kind: type) -> None:
        for ix in self.impls:
            ix.put(kind(key), *vals)
        self.model[key] = vals

    @rule(key=keys, field=st.integers(0, 6), bad=st.sampled_from([-1, 2**32, 2**64]))
    def put_overflow(self, key: bytes, field: int, bad: int) -> None:
        vals = list(VALUES)
        vals[field] = bad if bad != 2**32 else LIMITS[field] + 1
        for ix in self.impls:
            with pytest.raises(OverflowError):
                ix.put(key, *vals)

    @rule(key=st.one_of(st.binary(max_size=15), st.binary(min_size=17, max_size=40)))
    def bad_key(self, key: bytes) -> None:
        for ix in self.impls:
            with pytest.raises(ValueError):
                ix.get(key)
            with pytest.raises(ValueError):
                ix.put(key, *VALUES)

    @rule(seed=st.integers(0, 2**32), n=st.integers(1, 3000), overwrite=st.floats(0, 0.5))
    def put_many(self, seed: int, n: int, overwrite: float) -> None:
        rng = random.Random(seed)
        existing = list(self.model)
        for _ in range(n):
            if existing and rng.random() < overwrite:
                k = rng.choice(existing)
            else:
                k = rkey(rng)
            v = rvalues(rng)
            for ix in self.impls:
                ix.put(k, *v)
            self.model[k] = v

    @rule(key=st.one_of(keys, key_st))
    def get(self, key: bytes) -> None:
        assert self.all_equal([ix.get(key) for ix in self.impls]) == self.model.get(key)
        assert self.all_equal([key in ix for ix in self.impls]) == (key in self.model)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def get_sample(self, data: st.DataObject) -> None:
        keys = list(self.model)
        for k in data.draw(st.lists(st.sampled_from(keys), max_size=50)):
            assert self.all_equal([ix.get(k) for ix in self.impls]) == self.model[k]

    @rule(start=st.integers(0, 5000), count=st.integers(0, 5000))
    def dump(self, start: int, count: int) -> None:
        expected = pack_all(list(self.model.items())[start:start + count])
        assert self.all_equal([ix.dump(start, count) for ix in self.impls]) == expected

    @rule(
        entries=st.lists(st.tuples(st.one_of(keys, key_st), values_st), max_size=60),
        kind=st.sampled_from([bytes, bytearray, memoryview]),
    )
    def load(self, entries: list[tuple[bytes, tuple[int, ...]]], kind: type) -> None:
        buf = pack_all(entries)
        assert self.all_equal([ix.load(kind(buf)) for ix in self.impls]) == len(entries)
        for k, v in entries:
            self.model[k] = v

    @rule(seed=st.integers(0, 2**32), n=st.integers(1, 5000), dup=st.floats(0, 0.5))
    def load_many(self, seed: int, n: int, dup: float) -> None:
        rng = random.Random(seed)
        existing = list(self.model)
        entries: list[tuple[bytes, tuple[int, ...]]] = []
        for _ in range(n):
            if rng.random() >= dup or not (existing or entries):
                k = rkey(rng)
            elif existing and (not entries or rng.random() < 0.5):
                k = rng.choice(existing)  # overwrite an entry already in the index
            else:
                k = rng.choice(entries)[0]  # duplicate within the buffer
            entries.append((k, rvalues(rng)))
        assert self.all_equal([ix.load(pack_all(entries)) for ix in self.impls]) == n
        for k, v in entries:
            self.model[k] = v

    @rule(bad=st.integers(1, 39))
    def load_bad_length(self, bad: int) -> None:
        for ix in self.impls:
            with pytest.raises(ValueError):
                ix.load(bytes(bad))

    @rule()
    def items(self) -> None:
        expected = list(self.model.items())
        for ix in self.impls:
            assert list(ix.items()) == expected

    @rule(target_impl=st.sampled_from(IMPLS))
    def roundtrip(self, target_impl: Any) -> None:
        buf = self.impls[0].dump(0, len(self.model))
        fresh = target_impl()
        assert fresh.load(buf) == len(self.model)
        assert list(fresh.items()) == list(self.model.items())

    @rule()
    def start_iterator(self) -> None:
        if len(self.iters) < 4:
            self.iters.append([[ix.items() for ix in self.impls], 0, False])

    @precondition(lambda self: self.iters)
    @rule(which=st.integers(0, 3), steps=st.integers(1, 20))
    def advance_iterator(self, which: int, steps: int) -> None:
        state = self.iters[which % len(self.iters)]
        its: list[Iterator[Any]] = state[0]
        for _ in range(steps):
            got = [next(it, None) for it in its]
            if state[2] or state[1] >= len(self.model):
                state[2] = True  # once exhausted, always exhausted
                assert got == [None] * len(its)
                continue
            key = list(self.model)[state[1]]
            state[1] += 1
            assert got == [(key, self.model[key])] * len(its)

    @invariant()
    def lengths(self) -> None:
        assert self.all_equal([len(ix) for ix in self.impls]) == len(self.model)


IndexMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("AMBRY_INDEX_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestIndexMachine = IndexMachine.TestCase
