"""The run-time container registry (DESIGN.md section 3): containers created while the cluster
runs (S3 buckets), visible to every frontend in every datacenter.

Owns the registry records, the pure rule that turns any set of them into one table
(:func:`resolve_records`), container id allocation (:func:`candidate_ids`), and a
frontend-side cache with a short TTL. Does not own HTTP (the S3 and Ambry REST apps call
:meth:`ContainerRegistry.lookup` / :meth:`~ContainerRegistry.create` / ...), nor
accounts: accounts, and the containers listed with them, come from the config only.

Records are named blobs of a system account and container (ids outside the config's
range), so they live on one partition, replicate like any name record, and every frontend
reads them the same way::

    name  c/<account id>/<container name>/<created_ms>.<dc id>.<container id>.<nonce>
    blob  JSON {"account_id", "name", "container_id", "created_ms", "dc_id", "nonce"}

Every creation writes a record of its own (the nonce makes the name unique), so concurrent
creations never overwrite each other: all of them replicate everywhere, and the table is a
pure function of the set of records, identical on every frontend once they have the same
records. The rule (:func:`resolve_records`): sort every live record by
``(created_ms, dc_id, nonce)``; a record is accepted when neither its name nor its container
id is taken by an accepted record before it. So the first creation of a name wins, and two
names can never share an id.

Ids are allocated in ``[FIRST_RUNTIME_CONTAINER_ID, LAST_RUNTIME_CONTAINER_ID]``, above every
id the config may use, by probing a hash of (account, name): the same name gets the same id in
every datacenter unless that id is taken, so two datacenters creating the same bucket at once
(before either has seen the other's record) normally pick the same id, and the objects written
through either land in the one container whichever record wins. See docs/s3.md for what is
left to chance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import xxhash

from ambry.common.clock import Clock
from ambry.common.config import Account, ClusterConfig, Container, Datacenter
from ambry.common.errors import AmbryError, BlobNotFound, InvalidArgument, Unavailable
from ambry.common.properties import BlobProperties
from ambry.protocol.messages import NameRecord

__all__ = [
    "FIRST_RUNTIME_CONTAINER_ID",
    "LAST_RUNTIME_CONTAINER_ID",
    "REGISTRY_CONTAINER_ID",
    "SYSTEM_ACCOUNT_ID",
    "UPLOADS_CONTAINER_ID",
    "ContainerNotEmpty",
    "ContainerRegistry",
    "NameOps",
    "RegistryRecord",
    "candidate_ids",
    "choose_container_id",
    "resolve_records",
]

log = logging.getLogger(__name__)

#: The account of the system containers; config accounts must not use it.
SYSTEM_ACCOUNT_ID = 0xFFFF
#: System container holding the registry records.
REGISTRY_CONTAINER_ID = 0xFFFF
#: System container holding S3 multipart upload state (``ambry.frontend.s3.multipart``).
UPLOADS_CONTAINER_ID = 0xFFFE
#: Run-time container ids; config containers must stay below the first.
FIRST_RUNTIME_CONTAINER_ID = 0x8000
LAST_RUNTIME_CONTAINER_ID = 0xFFFD
_ID_SPACE = LAST_RUNTIME_CONTAINER_ID - FIRST_RUNTIME_CONTAINER_ID + 1
_MAX_CREATE_ATTEMPTS = 8
_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", re.ASCII)
_RECORD = re.compile(r"c/([0-9]+)/(.+)/([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9a-f]+)", re.ASCII)
_SERVICE = "ambry-registry"


class ContainerNotEmpty(AmbryError):
    """Deleting a container that still holds named blobs (S3 ``BucketNotEmpty``)."""

    code = "CONTAINER_NOT_EMPTY"


@dataclass(frozen=True, slots=True)
class RegistryRecord:
    account_id: int
    name: str
    container_id: int
    created_ms: int
    dc_id: int
    nonce: str

    @property
    def order(self) -> tuple[int, int, str]:
        """Lower wins: the first creation, then the lower datacenter id, then the nonce."""
        return (self.created_ms, self.dc_id, self.nonce)

    @property
    def record_name(self) -> str:
        return (f"c/{self.account_id}/{self.name}/{self.created_ms:015d}.{self.dc_id}."
                f"{self.container_id}.{self.nonce}")

    @classmethod
    def parse(cls, record_name: str) -> RegistryRecord | None:
        m = _RECORD.fullmatch(record_name)
        if m is None:
            return None
        return cls(int(m[1]), m[2], int(m[5]), int(m[3]), int(m[4]), m[6])

    def payload(self) -> bytes:
        return json.dumps({"account_id": self.account_id, "name": self.name,
                           "container_id": self.container_id, "created_ms": self.created_ms,
                           "dc_id": self.dc_id, "nonce": self.nonce}).encode()


def resolve_records(records: Iterable[RegistryRecord], reserved_ids: Iterable[int] = ()
                    ) -> dict[str, RegistryRecord]:
    """The registry table: container name -> the winning record. Pure and order-independent:
    records sorted by :attr:`RegistryRecord.order`; one is accepted when its name and its id
    are both still free (``reserved_ids`` are never free)."""
    accepted: dict[str, RegistryRecord] = {}
    used = set(reserved_ids)
    for r in sorted(set(records), key=lambda r: (r.order, r.name, r.container_id)):
        if r.name in accepted or r.container_id in used:
            continue
        accepted[r.name] = r
        used.add(r.container_id)
    return accepted


def candidate_ids(account_id: int, name: str) -> Iterator[int]:
    """The probe sequence of a container name's id: the same in every datacenter."""
    k = 0
    while True:
        h = xxhash.xxh3_64_intdigest(f"{account_id}/{name}/{k}".encode())
        yield FIRST_RUNTIME_CONTAINER_ID + h % _ID_SPACE
        k += 1


def choose_container_id(account_id: int, name: str, taken: set[int]) -> int:
    """The first id of the probe sequence not in ``taken``."""
    if len(taken) >= _ID_SPACE:
        raise Unavailable("no run-time container id left in this account")
    for cid in candidate_ids(account_id, name):
        if cid not in taken:
            return cid
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class _Table:
    fetched_at: float
    records: list[RegistryRecord]
    accepted: dict[str, RegistryRecord]
    by_id: dict[int, str] = field(default_factory=dict)


class NameOps(Protocol):
    """What the registry needs of the router: the config (as of the last reload), its clock
    and datacenter, and the named-blob operations its records are kept with."""

    @property
    def config(self) -> ClusterConfig: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def dc(self) -> Datacenter: ...

    async def list_named(self, *, account_id: int, container_id: int, prefix: str,
                         start_after: str, limit: int, rid: str
                         ) -> tuple[list[NameRecord], bool]: ...

    async def put_named(self, name: str, read: Callable[[int], Awaitable[bytes]], *,
                        account_id: int, container_id: int, props: BlobProperties,
                        usermeta: bytes, declared_size: int | None, content_xxh3: str | None,
                        upsert: bool, rid: str) -> object: ...

    async def delete_named(self, name: str, *, account_id: int, container_id: int,
                           rid: str) -> None: ...


class ContainerRegistry:
    """Config containers plus run-time ones, for every frontend API. One per router."""

    def __init__(self, router: NameOps, *, cache_ttl_s: float = 2.0,
                 miss_refresh_s: float = 0.2,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.router = router
        self.cache_ttl_s = cache_ttl_s
        self.miss_refresh_s = miss_refresh_s
        self._monotonic = monotonic
        self._tables: dict[int, _Table] = {}
        self._loading: dict[int, asyncio.Future[_Table]] = {}
        check_config_ids(router.config.accounts)

    # ------------------------------------------------------------------ lookups
    def account(self, name: str) -> Account | None:
        return self.router.config.account(name)

    async def resolve(self, account_name: str, container_name: str, rid: str = ""
                      ) -> tuple[Account, Container]:
        """Account and container by name (config first, then the registry); 400 if unknown,
        as for config containers."""
        account = self.account(account_name)
        if account is None:
            raise InvalidArgument(f"unknown account {account_name!r}")
        c = await self.lookup(account, container_name, rid)
        if c is None:
            raise InvalidArgument(f"unknown container {container_name!r} in account "
                                  f"{account_name!r}")
        return account, c

    async def lookup(self, account: Account, name: str, rid: str = "") -> Container | None:
        c = account.container(name)
        if c is not None:
            return c
        table = await self._table(account.id, rid)
        rec = table.accepted.get(name)
        if rec is None and self._monotonic() - table.fetched_at >= self.miss_refresh_s:
            # a miss re-reads (rate-limited): a bucket made a moment ago through another
            # frontend is found at once, not after the TTL
            table = await self._table(account.id, rid, fresh=True)
            rec = table.accepted.get(name)
        return Container(rec.name, rec.container_id) if rec is not None else None

    def cached_name(self, account_id: int, container_id: int) -> str | None:
        """The name of a container id from config or the cache (no I/O; None if unknown)."""
        account = self.router.config.account_by_id(account_id)
        if account is not None:
            c = account.container_by_id(container_id)
            if c is not None:
                return c.name
        table = self._tables.get(account_id)
        return table.by_id.get(container_id) if table is not None else None

    async def name_of(self, account_id: int, container_id: int, rid: str = "") -> str | None:
        name = self.cached_name(account_id, container_id)
        if name is not None or container_id < FIRST_RUNTIME_CONTAINER_ID:
            return name
        if self.router.config.account_by_id(account_id) is None:
            return None
        table = await self._table(account_id, rid)
        return table.by_id.get(container_id)

    async def list(self, account: Account, rid: str = "") -> list[tuple[Container, int]]:
        """Every container of the account with its creation time (0 for config ones)."""
        table = await self._table(account.id, rid, fresh=True)
        out = [(c, 0) for c in account.containers]
        names = {c.name for c in account.containers}
        out += [(Container(r.name, r.container_id), r.created_ms)
                for r in table.accepted.values() if r.name not in names]
        return sorted(out, key=lambda x: x[0].name)

    async def created_ms(self, account: Account, name: str, rid: str = "") -> int:
        table = await self._table(account.id, rid)
        rec = table.accepted.get(name)
        return rec.created_ms if rec is not None else 0

    # ------------------------------------------------------------------ changes
    async def create(self, account: Account, name: str, rid: str = "") -> tuple[Container, bool]:
        """Create a run-time container; ``(container, created)``: False when the name exists
        already (in config, or created before, here or in another datacenter)."""
        if _NAME.fullmatch(name) is None:
            raise InvalidArgument(f"container name {name!r} must be 3-63 characters of "
                                  f"a-z, 0-9, '.', '-'")
        existing = account.container(name)
        if existing is not None:
            return existing, False
        router = self.router
        table = await self._table(account.id, rid, fresh=True)
        for _attempt in range(_MAX_CREATE_ATTEMPTS):
            won = table.accepted.get(name)
            if won is not None:
                return Container(won.name, won.container_id), False
            taken = {r.container_id for r in table.records} | \
                {c.id for c in account.containers}
            rec = RegistryRecord(account.id, name, choose_container_id(account.id, name, taken),
                                 router.clock.now_ms(), router.dc.id, os.urandom(4).hex())
            await self._write(rec, rid)
            table = await self._table(account.id, rid, fresh=True)
            won = table.accepted.get(name)
            if won == rec:
                log.info("rid=%s created container %s/%s id %d", rid, account.name, name,
                         rec.container_id)
                return Container(name, rec.container_id), True
            # lost: to a creation of the same name (it exists now), or our id was taken by
            # another name at the same moment (try the next id). Either way ours goes.
            await self._remove(rec, rid)
            table.records = [r for r in table.records if r != rec]
        raise Unavailable(f"could not allocate a container id for {name!r}")

    async def delete(self, account: Account, name: str, rid: str = "") -> None:
        """Delete a run-time container that holds no named blob. BlobNotFound if it does not
        exist, InvalidArgument for a config container, ContainerNotEmpty if not empty."""
        if account.container(name) is not None:
            raise InvalidArgument(f"container {name!r} comes from the config; it cannot be "
                                  f"deleted at run time")
        table = await self._table(account.id, rid, fresh=True)
        rec = table.accepted.get(name)
        if rec is None:
            raise BlobNotFound(f"no container {name!r}")
        names, _ = await self.router.list_named(account_id=account.id,
                                                container_id=rec.container_id, prefix="",
                                                start_after="", limit=1, rid=rid)
        if names:
            raise ContainerNotEmpty(f"container {name!r} is not empty")
        for r in [r for r in table.records if r.name == name]:
            await self._remove(r, rid)
        self._tables.pop(account.id, None)

    # ------------------------------------------------------------------ storage
    async def _write(self, rec: RegistryRecord, rid: str) -> None:
        payload = rec.payload()
        props = BlobProperties(size=len(payload), created_ms=rec.created_ms,
                               content_type="application/json", service_id=_SERVICE,
                               account_id=SYSTEM_ACCOUNT_ID,
                               container_id=REGISTRY_CONTAINER_ID)
        sent = [False]

        async def read(n: int) -> bytes:
            if sent[0]:
                return b""
            sent[0] = True
            return payload

        await self.router.put_named(rec.record_name, read, account_id=SYSTEM_ACCOUNT_ID,
                                    container_id=REGISTRY_CONTAINER_ID, props=props,
                                    usermeta=b"", declared_size=len(payload),
                                    content_xxh3=None, upsert=False, rid=rid)

    async def _remove(self, rec: RegistryRecord, rid: str) -> None:
        try:
            await self.router.delete_named(rec.record_name, account_id=SYSTEM_ACCOUNT_ID,
                                           container_id=REGISTRY_CONTAINER_ID, rid=rid)
        except BlobNotFound:
            pass

    async def _table(self, account_id: int, rid: str = "", *, fresh: bool = False) -> _Table:
        t = self._tables.get(account_id)
        if t is not None and not fresh and self._monotonic() - t.fetched_at < self.cache_ttl_s:
            return t
        loading = self._loading.get(account_id)
        if loading is not None and not fresh:
            return await asyncio.shield(loading)
        fut: asyncio.Future[_Table] = asyncio.get_running_loop().create_future()
        self._loading[account_id] = fut
        try:
            t = await self._load(account_id, rid)
            fut.set_result(t)
            self._tables[account_id] = t
            return t
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-raise it; nobody else must log it
            raise
        finally:
            if self._loading.get(account_id) is fut:
                del self._loading[account_id]

    async def _load(self, account_id: int, rid: str) -> _Table:
        started = self._monotonic()
        prefix = f"c/{account_id}/"
        records: list[RegistryRecord] = []
        after = ""
        while True:
            entries, more = await self.router.list_named(
                account_id=SYSTEM_ACCOUNT_ID, container_id=REGISTRY_CONTAINER_ID,
                prefix=prefix, start_after=after, limit=1000, rid=rid)
            for e in entries:
                rec = RegistryRecord.parse(e.name)
                if rec is not None and rec.account_id == account_id:
                    records.append(rec)
            if not more or not entries:
                break
            after = entries[-1].name
        account = self.router.config.account_by_id(account_id)
        reserved = {c.id for c in account.containers} if account is not None else set()
        accepted = resolve_records(records, reserved)
        by_id = {r.container_id: r.name for r in accepted.values()}
        return _Table(started, records, accepted, by_id)


def check_config_ids(accounts: Iterable[Account]) -> None:
    """Config accounts and containers must stay out of the system and run-time id ranges."""
    for a in accounts:
        if a.id == SYSTEM_ACCOUNT_ID:
            raise InvalidArgument(f"account id {SYSTEM_ACCOUNT_ID} is reserved for the system "
                                  f"account")
        for c in a.containers:
            if c.id >= FIRST_RUNTIME_CONTAINER_ID:
                raise InvalidArgument(f"container {a.name}/{c.name}: ids from "
                                      f"{FIRST_RUNTIME_CONTAINER_ID} up are reserved for "
                                      f"containers created at run time")
