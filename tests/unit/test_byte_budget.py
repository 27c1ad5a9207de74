"""ByteBudget: FIFO for whole reservations (the storage node), and units grown piece by piece
as their bytes arrive (the frontend's upload chunks) that can never wait for each other forever
and take the budget over its limit by less than one unit."""

from __future__ import annotations

import asyncio
import random

import pytest

from ambry.runtime.budget import ByteBudget


async def test_plain_acquires_are_fifo_and_never_over_the_limit() -> None:
    b = ByteBudget(10)
    assert await b.acquire(6) == 6
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await b.acquire(n)
        order.append(name)

    big = asyncio.ensure_future(take("big", 8))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(take("small", 1))  # fits, but waits behind "big"
    await asyncio.sleep(0)
    assert order == [] and b.used == 6
    b.release(6)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and b.used == 9


async def test_growing_units_filling_the_budget_do_not_wait_for_each_other_forever() -> None:
    # What broke: reserving a chunk's bytes as they arrive lets partial chunks fill the whole
    # budget; each then waits for more budget that only another partial chunk could free.
    unit, piece, limit = 64, 8, 100
    b = ByteBudget(limit)
    peak = [0]

    async def upload(seed: int) -> None:
        rnd = random.Random(seed)
        for _chunk in range(3):
            held = 0
            while held < unit:
                held += await b.acquire(piece, held=held)
                peak[0] = max(peak[0], b.used)
                await asyncio.sleep(rnd.random() / 1000)  # the next piece "arrives"
            await asyncio.sleep(rnd.random() / 1000)  # the chunk is "written"
            b.release(held)

    await asyncio.wait_for(asyncio.gather(*(upload(i) for i in range(12))), timeout=20)
    assert b.used == 0
    assert peak[0] < limit + unit, peak[0]


async def test_a_unit_nearer_completion_goes_first() -> None:
    b = ByteBudget(10)
    await b.acquire(4)  # a partial unit "a" of 4 bytes
    await b.acquire(5)  # something else in use (a chunk being written)
    got: list[str] = []

    async def take(name: str, n: int, held: int) -> None:
        await b.acquire(n, held=held)
        got.append(name)

    new = asyncio.ensure_future(take("new", 2, 0))
    await asyncio.sleep(0)
    grow = asyncio.ensure_future(take("a", 2, 4))
    await asyncio.sleep(0)
    assert got == []
    b.release(2)  # room for one of them: the partial unit, though it asked later
    await asyncio.sleep(0)
    assert got == ["a"]
    b.release(3)
    await asyncio.gather(new, grow)
    assert got == ["a", "new"]


async def test_a_cancelled_wait_gives_its_place_and_bytes_back() -> None:
    b = ByteBudget(10)
    await b.acquire(10)
    t = asyncio.ensure_future(b.acquire(5))
    await asyncio.sleep(0)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert b.waiting == 0
    b.release(10)
    assert b.used == 0
