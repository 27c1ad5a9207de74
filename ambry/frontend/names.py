"""Named blobs: reading, listing and writing names, and the blobs they point to.

Owns :class:`Names`: which partition holds a container's names (:func:`name_partition`);
reads merged from 2 local replicas of it, the 3rd asked when one fails or is slow
(:meth:`Names.lookup_name`, :meth:`Names.list_named`); the conditional write of a name
(:meth:`Names.write_name`): reserve it on a majority of its local replicas (the pure tally is
``namewrite``), decide on the entry that majority holds, write under the reservation; and the
operations built on it: put a blob and bind a name to it, stitch into a name, delete a name,
and deleting the blob a name pointed to before. Does not own the blobs themselves
(``uploads``, ``stitching``, ``mutations``) nor the replica side of reservations
(``ambry.storage.namelocks``).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import xxhash

from ambry.common.blobid import BlobId, BlobType
from ambry.common.clock import Clock
from ambry.common.config import FrontendConfig
from ambry.common.errors import AmbryError, BlobDeleted, BlobNotFound, NameBusy, Unavailable
from ambry.common.properties import BlobProperties
from ambry.frontend.clusterview import ClusterView
from ambry.frontend.failure import HedgeDelay
from ambry.frontend.fanout import NODE_ERRORS, FanOut
from ambry.frontend.mutations import Mutator
from ambry.frontend.namewrite import (
    ClaimTally,
    ReservationTally,
    Verdict,
    backoff_s,
    name_version,
    superseded,
    worth_an_early_409,
)
from ambry.frontend.quorum import Outcome
from ambry.frontend.reads import Reader
from ambry.frontend.stitching import Stitcher
from ambry.frontend.uploads import ReadBody, StoredBlob, Uploader
from ambry.frontend.verdicts import raise_for
from ambry.protocol.client import NodeClient
from ambry.protocol.messages import NameRecord

__all__ = ["NameConflict", "Names", "name_partition", "require_absent"]


class NameConflict(AmbryError):
    """PUT of a name that exists, without upsert (HTTP 409)."""

    code = "NAME_ALREADY_EXISTS"


def require_absent(current: NameRecord | None) -> None:
    """The condition of a create: no live entry (REST without upsert; 409 otherwise)."""
    if current is not None and not current.deleted:
        raise NameConflict(f"name {current.name!r} exists (send x-ambry-named-upsert: true)")


def name_partition(partition_ids: Sequence[int], account_id: int, container_id: int) -> int:
    """All names of a container live on one partition, chosen by xxh3(account, container)."""
    pids = sorted(partition_ids)
    h = xxhash.xxh3_64_intdigest(struct.pack(">HH", account_id, container_id))
    return pids[h % len(pids)]


class Names:
    def __init__(self, fe: FrontendConfig, view: ClusterView, fanout: FanOut, clock: Clock,
                 rnd: random.Random, hedge: HedgeDelay, *, reader: Reader, uploader: Uploader,
                 stitcher: Stitcher, mutator: Mutator) -> None:
        self.fe = fe
        self.view = view
        self.fanout = fanout
        self.clock = clock
        self.rnd = rnd
        self.hedge = hedge
        self.reader = reader
        self.uploader = uploader
        self.stitcher = stitcher
        self.mutator = mutator
        self.metrics_name_busy = 0  # reservation rounds lost to another writer

    # ------------------------------------------------------------------ reads
    def _name_nodes(self, account_id: int, container_id: int, *, spread: bool = False
                    ) -> tuple[int, list[str]]:
        """The name partition and its local replicas, available ones first; with ``spread``
        in a random order (reads: any 2 of 3 overlap every acknowledged write, and a fixed
        order sent every name read of a container to the same two replicas)."""
        pid = name_partition(self.view.cmap.name_partition_ids, account_id, container_id)
        replicas = [n.id for n in self.view.local_replicas(pid)]
        if spread:
            self.rnd.shuffle(replicas)
        return pid, self.fanout.detector.order(replicas)

    async def _name_read(self, account_id: int, container_id: int,
                         call: Callable[[NodeClient, int], Awaitable[Any]], rid: str
                         ) -> list[Any]:
        """Answers of 2 local replicas of the container's name partition: 2 are asked, the
        3rd too when one fails or both have not answered within the hedge delay (waiting
        for both made every name read wait for a stopped replica's node timeout). Not a
        :meth:`FanOut.fan_out`: replicas are asked one by one as needed, not all at once.
        The answers are taken from the calls' done callbacks into one future (an
        ``asyncio.wait`` per step cost every named GET a future, a timer and a set of
        callbacks per wait)."""
        fanout = self.fanout
        pid, nodes = self._name_nodes(account_id, container_id, spread=True)
        need = min(2, len(nodes))
        answers: list[Any] = []
        if not need:
            return answers
        asked: dict[asyncio.Future[Any], str] = {}
        waiting = list(nodes)
        failures: list[BaseException] = []  # an unexpected error: raised to the caller
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        outstanding = 0  # asked, and not yet seen by on_done

        def settle() -> None:
            if not finished.done():
                finished.set_result(None)

        def on_done(t: asyncio.Future[Any]) -> None:
            nonlocal outstanding
            outstanding -= 1
            if finished.done() or t.cancelled():
                return  # a straggler: watch_stragglers has it
            nid = asked[t]
            exc = t.exception()
            if exc is None:
                fanout.note(nid, "name_read", None)
                answers.append(t.result())
                if len(answers) >= need:
                    settle()
            elif not isinstance(exc, (AmbryError, OSError, asyncio.TimeoutError)):
                failures.append(exc)
                settle()
                return
            else:
                fanout.note(nid, "name_read", exc)
                if waiting:
                    ask()
            if not outstanding and not waiting:
                settle()  # nobody left to ask

        def ask() -> None:
            nonlocal outstanding
            nid = waiting.pop(0)
            t = asyncio.ensure_future(call(fanout.client(nid), pid))
            t.add_done_callback(_retrieve)  # a straggler's late error is nobody's
            asked[t] = nid
            outstanding += 1
            t.add_done_callback(on_done)

        def hedge() -> None:
            if not finished.done() and waiting:
                ask()  # no 2 answers in time: ask the 3rd as well

        for _ in range(need):
            ask()
        timer = loop.call_later(self.hedge.delay(), hedge) if waiting else None
        try:
            await finished
        finally:
            if timer is not None:
                timer.cancel()
            settle()  # (cancelled: late answers are stragglers)
            fanout.watch_stragglers([(nid, t) for t, nid in asked.items() if not t.done()])
        if failures:
            raise failures[0]
        if len(answers) < need:
            raise Unavailable("too few replicas of the name partition answered")
        return answers

    async def lookup_name(self, account_id: int, container_id: int, name: str,
                          rid: str = "") -> NameRecord | None:
        """The newest entry for a name across 2 local replicas (deleted ones included)."""
        answers = await self._name_read(
            account_id, container_id,
            lambda c, pid: c.name_get(pid, account_id, container_id, name, rid=rid), rid)
        best: NameRecord | None = None
        for e in answers:
            if e is not None and (best is None or name_version(e) > name_version(best)):
                best = e
        return best

    async def resolve_name(self, account_id: int, container_id: int, name: str,
                           rid: str = "") -> BlobId:
        e = await self.lookup_name(account_id, container_id, name, rid)
        if e is None:
            raise BlobNotFound(f"no blob named {name!r}")
        if e.deleted:  # "as for ids" (DESIGN.md section 4): a deleted name is gone, 410
            raise BlobDeleted(f"the blob named {name!r} is deleted")
        return BlobId.from_bytes(e.blob_id)

    async def list_named(self, *, account_id: int, container_id: int, prefix: str,
                         start_after: str, limit: int, rid: str
                         ) -> tuple[list[NameRecord], bool]:
        """Live names under ``prefix`` after ``start_after``, merged from 2 replicas; and
        whether more follow.

        The replicas answer with deleted names too and the newest entry of each name wins the
        merge, so a delete that only one of the two has (the other missed it: a straggler
        cancelled at the quorum, replication not there yet) hides the name, as a read of that
        name would. (Merging live names only brought a name deleted a moment ago back into
        the listing.) A page of deleted names only is read past here."""
        out: list[NameRecord] = []
        after = start_after
        while True:
            def ask(c: NodeClient, pid: int, after: str = after
                    ) -> Awaitable[list[NameRecord]]:
                return c.name_list(pid, account_id, container_id, prefix, after, limit + 1,
                                   rid=rid, include_deleted=True)

            answers = await self._name_read(account_id, container_id, ask, rid)
            merged: dict[str, NameRecord] = {}
            for entries in answers:
                for e in entries:
                    cur = merged.get(e.name)
                    if cur is None or name_version(e) > name_version(cur):
                        merged[e.name] = e
            names = sorted(merged)
            # each replica returned at most limit+1 names: beyond the smallest "last name" of
            # a replica that was cut short, the merge may miss names; stop there.
            cut = min((entries[-1].name for entries in answers if len(entries) > limit),
                      default=None)
            if cut is not None:
                names = [n for n in names if n <= cut]
            out += [merged[n] for n in names if not merged[n].deleted]
            if len(out) > limit:
                return out[:limit], True
            if cut is None:
                return out, False
            after = cut  # more follow on some replica: read on from where this page ended

    # ------------------------------------------------------------------ the conditional write
    async def _reserve_name(self, pid: int, nodes: Sequence[str], account_id: int,
                            container_id: int, name: str, token: bytes, rid: str
                            ) -> ReservationTally:
        """Hold the name on a majority of its local replicas (retrying with backoff while
        another writer holds it); the round that won (its ``current``: the name's entry as
        that majority sees it). Each
        round is one fan-out, stopped on the tally's verdict (not on a count of successes);
        a late answer only holds a lease that our release ends, so stragglers just run out
        in the background (their errors are still noted)."""
        fanout = self.fanout
        deadline = time.monotonic() + self.fe.name_busy_wait_ms / 1000
        lease_ms = self.fe.name_lease_ms
        attempt = 0

        async def reserve(nid: str) -> tuple[bool, NameRecord | None]:
            try:
                return await fanout.client(nid).name_reserve(
                    pid, account_id, container_id, name, token, lease_ms, rid=rid)
            except NODE_ERRORS as e:
                fanout.note(nid, "name_reserve", e)
                raise

        while True:
            tally = ReservationTally(len(nodes))

            def decided(nid: str, ans: tuple[bool, NameRecord | None] | None,
                        exc: BaseException | None, tally: ReservationTally = tally) -> bool:
                if ans is None:
                    tally.record(nid, None)
                else:
                    fanout.note(nid, "name_reserve", None)
                    tally.record(nid, ans[0], ans[1])
                return tally.verdict() is not Verdict.PENDING

            await fanout.fan_out(nodes, reserve, decided)
            verdict = tally.verdict()
            if verdict is Verdict.HELD:
                return tally
            fanout.spawn(self._release_name(pid, nodes, account_id, container_id, name,
                                            token, rid))
            if verdict is Verdict.UNAVAILABLE:
                raise Unavailable("too few replicas of the name partition answered")
            wait = backoff_s(attempt, self.rnd)
            if time.monotonic() + wait > deadline:
                raise Unavailable(f"name {name!r} is busy: other writers hold it")
            attempt += 1
            self.metrics_name_busy += 1
            await asyncio.sleep(wait)

    async def _release_name(self, pid: int, nodes: Sequence[str], account_id: int,
                            container_id: int, name: str, token: bytes, rid: str) -> None:
        async def one(nid: str) -> None:
            try:
                await self.fanout.client(nid).name_release(pid, account_id, container_id,
                                                           name, token, rid=rid)
            except (TimeoutError, AmbryError, OSError):
                pass  # the lease ends on its own

        await asyncio.gather(*(one(n) for n in nodes))

    async def write_name(self, account_id: int, container_id: int, name: str,
                         decide: Callable[[NameRecord | None], NameRecord | None], rid: str,
                         seen: list[NameRecord] | None = None
                         ) -> tuple[NameRecord | None, NameRecord | None]:
        """Change a name as one conditional write decided at its replicas: reserve it on a
        majority of the local replicas, let ``decide(current)`` build the new entry (or raise,
        e.g. NameConflict; or return None to write nothing), and write it under the
        reservation. Returns (the entry it was based on, the entry written). Of concurrent
        writers of one name in this datacenter, each decides on the entry the one before it
        wrote (see ``namewrite``), so "create if absent" has exactly one winner. ``seen``
        gets every entry the replicas answered the reservation with."""
        fanout = self.fanout
        pid, nodes = self._name_nodes(account_id, container_id)
        token = secrets.token_bytes(16)
        tally = await self._reserve_name(pid, nodes, account_id, container_id, name, token,
                                         rid)
        current = tally.current
        if seen is not None:
            seen += tally.seen
        try:
            record = decide(current)
        except BaseException:
            fanout.spawn(self._release_name(pid, nodes, account_id, container_id, name,
                                            token, rid))
            raise
        if record is None:
            fanout.spawn(self._release_name(pid, nodes, account_id, container_id, name,
                                            token, rid))
            return current, None
        base = name_version(current) if current is not None else None
        verdict, _, errors = await fanout.quorum(
            nodes, "name_put",
            lambda c: c.name_put(pid, record, rid=rid, token=token, base=base))
        if verdict is not Outcome.SUCCESS:
            fanout.spawn(self._release_name(pid, nodes, account_id, container_id, name,
                                            token, rid))
            # NameBusy from a replica means the reservation was lost there (lease ended and
            # another writer took it): the outcome is unknown, as for any failed quorum
            raise_for(Outcome.UNAVAILABLE if verdict is Outcome.ERROR else verdict,
                      f"name {name!r}", errors)
        return current, record

    async def _claim_name(self, record: NameRecord, rid: str) -> ClaimTally:
        """One round of ``name_claim`` (an upsert decided at each replica, no reservation):
        stopped as soon as a majority took it or that is out of reach. Replicas that answer
        later are only noted."""
        fanout = self.fanout
        pid, nodes = self._name_nodes(record.account_id, record.container_id)
        tally = ClaimTally(len(nodes))

        async def claim(nid: str) -> NameRecord | None:
            try:
                return await fanout.client(nid).name_claim(pid, record, rid=rid)
            except NODE_ERRORS as e:
                if not isinstance(e, NameBusy):
                    fanout.note(nid, "name_claim", e)
                raise

        def decided(nid: str, prev: NameRecord | None, exc: BaseException | None) -> bool:
            if exc is None:
                fanout.note(nid, "name_claim", None)
            tally.record(nid, exc is None, prev)
            return tally.verdict() is not Verdict.PENDING

        await fanout.fan_out(nodes, claim, decided)
        return tally

    def _next_name_ts(self, current: NameRecord | None) -> int:
        return max(self.clock.now_ms(), (current.ts_ms + 1) if current is not None else 0)

    # ------------------------------------------------------------------ operations on names
    async def put_named(self, name: str, read: ReadBody, *, account_id: int, container_id: int,
                        props: BlobProperties, usermeta: bytes, declared_size: int | None,
                        content_xxh3: str | None, upsert: bool, rid: str,
                        body_bytes_hint: int | None = None) -> StoredBlob:
        """Store the blob, then point the name at it (the name only once the blob is
        durable). Without upsert an existing live name is a 409, decided at the name's
        replicas (two concurrent creates: one 201, one 409); with upsert the blob it pointed
        to is deleted afterwards so it does not leak disk. ``body_bytes_hint`` (the request's
        Content-Length, when it has one) decides :func:`worth_an_early_409`."""
        if not upsert and worth_an_early_409(body_bytes_hint, self.fe.chunk_size_bytes):
            old = await self.lookup_name(account_id, container_id, name, rid)
            if old is not None and not old.deleted:
                raise NameConflict(f"name {name!r} exists (send x-ambry-named-upsert: true)")
        stored = await self.uploader.put(read, account_id=account_id,
                                         container_id=container_id, props=props,
                                         usermeta=usermeta, declared_size=declared_size,
                                         content_xxh3=content_xxh3, rid=rid)
        await self.bind_name(name, stored, account_id=account_id, container_id=container_id,
                             content_type=props.content_type, rid=rid,
                             condition=None if upsert else require_absent)
        return stored

    async def stitch_named(self, name: str, chunk_ids: Sequence[str], *, account_id: int,
                           container_id: int, props: BlobProperties, usermeta: bytes,
                           upsert: bool, rid: str) -> StoredBlob:
        """Stitch chunks (as ``Stitcher.stitch``) into a blob and point ``name`` at it, with
        the rules of :meth:`put_named` (409 without upsert, decided at the name's replicas).

        A retry of a stitch that already landed (the name points to a composite of exactly
        these chunks) answers that blob again and changes nothing: a second composite of
        the same chunks would replace it, and deleting the replaced one deleted the chunks
        under the new one. For the same reason the chunks the new blob lists are never
        deleted with the blob it replaces, nor with the new blob when the name is refused
        (the client may stitch them again)."""
        current = await self.lookup_name(account_id, container_id, name, rid)
        if current is not None and not current.deleted:
            landed = await self._stitched_from(current, chunk_ids, rid)
            if landed is not None:
                return landed
            if not upsert:  # fail fast, before any chunk TTL is lifted
                raise NameConflict(f"name {name!r} exists (send x-ambry-named-upsert: true)")
        stored = await self.stitcher.stitch(chunk_ids, account_id=account_id,
                                            container_id=container_id, props=props,
                                            usermeta=usermeta, rid=rid)
        keep = frozenset(self.view.parse_id(c).to_str() for c in chunk_ids)
        await self.bind_name(name, stored, account_id=account_id, container_id=container_id,
                             content_type=props.content_type, rid=rid,
                             condition=None if upsert else require_absent, keep_chunks=keep)
        return stored

    async def _stitched_from(self, entry: NameRecord, chunk_ids: Sequence[str], rid: str
                             ) -> StoredBlob | None:
        """The blob of ``entry`` if it is a composite of exactly ``chunk_ids``."""
        bid = BlobId.from_bytes(entry.blob_id)
        if bid.blob_type is not BlobType.METADATA:
            return None
        try:
            wanted = [self.view.parse_id(c).to_str() for c in chunk_ids]
            info = await self.reader.get(bid, info_only=True, rid=rid)
        except AmbryError:
            return None  # bad ids get their 400 from the stitch; a gone blob is not ours
        if [r.blob_id for r in info.chunks] != wanted:
            return None
        return StoredBlob(bid, info.total_size, info.properties.created_ms)

    async def bind_name(self, name: str, stored: StoredBlob, *, account_id: int,
                        container_id: int, content_type: str, rid: str,
                        condition: Callable[[NameRecord | None], None] | None = None,
                        keep_chunks: frozenset[str] = frozenset()
                        ) -> NameRecord | None:
        """Point a name at a blob already stored (and durable); the blob the name pointed to
        before is deleted afterwards. ``condition(current)`` raises (NameConflict, an S3
        PreconditionFailed, ...) to refuse the write; it is decided under the name's
        reservation, so it holds against concurrent writers of this datacenter.
        ``content_type`` goes into the name entry (listings show it). If the name is not
        written, the new blob is deleted. Returns the entry the name had before.

        Without a condition (an upsert: S3 PutObject, REST with upsert) the write is first
        tried as one ``name_claim`` round, decided at each replica (``ClaimTally``): one
        round of node requests where the reservation takes two. When a majority does not
        take it (another writer holds or is writing the name, a replica is down or lags),
        it takes the reservation path."""
        dc_id = self.view.dc.id
        ours = stored.blob_id.to_bytes()
        seen: list[NameRecord] = []
        claimed = False  # some replica took a claim: the name may point at the blob already

        def decide(current: NameRecord | None) -> NameRecord:
            if condition is not None:
                condition(current)
            return NameRecord(account_id, container_id, name, ours,
                              self._next_name_ts(current), dc_id, False, stored.size,
                              content_type, stored.created_ms)

        try:
            if condition is None:
                tally = await self._claim_name(decide(None), rid)
                if tally.verdict() is Verdict.HELD:
                    old = superseded(tally.took.values(), ours)
                    self._free(old, rid, keep_chunks)
                    return old
                claimed = bool(tally.took)
                seen += [e for e in tally.took.values() if e is not None]
            old, record = await self.write_name(account_id, container_id, name, decide, rid,
                                                seen)
        except BaseException:
            if not claimed:  # (else keep it: a replica's claim may yet win the name)
                self.fanout.spawn(self.mutator.delete(stored.blob_id, rid, keep_chunks))
            raise
        assert record is not None
        self._free(superseded([*seen, *([old] if old is not None else [])], ours), rid,
                   keep_chunks)
        return old

    def _free(self, old: NameRecord | None, rid: str, keep_chunks: frozenset[str]) -> None:
        """Delete, in the background, the blob of an entry a write replaced."""
        if old is not None:
            self.fanout.spawn(self.mutator.delete_ignoring_missing(
                BlobId.from_bytes(old.blob_id), rid, keep_chunks))

    async def delete_named(self, name: str, *, account_id: int, container_id: int,
                           rid: str) -> None:
        dc_id = self.view.dc.id

        def decide(current: NameRecord | None) -> NameRecord | None:
            if current is None:
                raise BlobNotFound(f"no blob named {name!r}")
            if current.deleted:
                return None  # as for ids: deleting a deleted blob is a 202
            return NameRecord(account_id, container_id, name, b"",
                              self._next_name_ts(current), dc_id, True)

        old, record = await self.write_name(account_id, container_id, name, decide, rid)
        if record is not None and old is not None:
            await self.mutator.delete_ignoring_missing(BlobId.from_bytes(old.blob_id), rid)


def _retrieve(t: asyncio.Future[Any]) -> None:
    if not t.cancelled():
        t.exception()
