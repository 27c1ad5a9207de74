"""Bulk work of the ``ambry`` blob commands over the names of a directory: walking every name
under it, page by page, and running one operation per item with a bounded number in flight.

Owns what "the names under a directory" means to ``rm -r`` and ``cp -r`` (the name itself,
and every name under ``<name>/``), and the bounded, failure-collecting concurrency they share.
Does not own reporting the failures (``output.report_failures``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from ambry.cli.output import failure_of
from ambry.common.location import Location

if TYPE_CHECKING:
    from ambry.client import AsyncClient, NamedEntry

__all__ = ["for_each", "has_names", "name_in", "names_under"]

T = TypeVar("T")

async def for_each(items: Iterable[T] | AsyncIterable[T], fn: Callable[[T], Awaitable[None]],
                jobs: int) -> list[tuple[T, BaseException]]:
    """``fn(item)`` for every item, at most ``jobs`` at once (items are drawn as slots free
    up, so a long listing is never held whole); the failures, in the order they happened."""
    failures: list[tuple[T, BaseException]] = []
    slots = asyncio.Semaphore(jobs)
    stopped: Exception | None = None

    async def one(item: T) -> None:
        try:
            await fn(item)
        except Exception as e:  # noqa: BLE001 - reported with the item, the others go on
            failures.append((item, e))
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tg:
        try:
            async for item in _aiter(items):
                await slots.acquire()
                tg.create_task(one(item))
        except Exception as e:  # noqa: BLE001 - the listing failed: finish, then say so
            stopped = e
    if stopped is not None:
        raise stopped
    return failures


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item



async def has_names(c: AsyncClient, loc: Location) -> bool:
    """Whether some name starts with ``loc.name`` (False when that cannot be told)."""
    from ambry.client import ApiError

    try:
        async for _ in c.list_named(loc.name, account=loc.account, container=loc.container,
                                    page_size=1):
            return True
    except ApiError:
        pass
    return False


async def names_under(c: AsyncClient, loc: Location) -> AsyncIterator[NamedEntry]:
    """Every name of the directory ``loc`` (``loc`` itself, and every name under ``loc/``;
    the whole container for its root), sorted, page by page."""
    from ambry.client import ApiError

    d = loc.name.rstrip("/")
    try:
        async for e in c.list_named(d, account=loc.account, container=loc.container):
            if not d or e.name == d or e.name.startswith(d + "/"):
                yield e
    except ApiError as err:
        raise failure_of(err, str(loc)) from err


def name_in(loc: Location, e: NamedEntry) -> str:
    return str(loc.with_name(e.name))
