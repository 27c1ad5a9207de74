"""HTTP helpers shared by the frontend integration tests (imported by the test modules).

Owns small wrappers over aiohttp for the Ambry REST API (post a blob, fetch a URL into a
:class:`Got`), deterministic test bodies that stream without being held in memory
(:class:`PatternBody`), and the store fixture's body (:func:`store_fixture`). Does not own any
assertion beyond "this call had the expected status".
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis
import xxhash
from hypothesis import HealthCheck, Phase
from multidict import CIMultiDictProxy

from ambry.common.blobid import BlobType, decode
from ambry.common.errors import BlobNotFound
from ambry.testing.frontend import StoreCluster, replica_records

KIB = 1024
MIB = 1024 * 1024
CHUNK = MIB  # frontend.chunk_size_bytes of every test store (TEST_FRONTEND)
SERVICE = {"x-ambry-service-id": "itest", "x-ambry-content-type": "application/x-itest"}
# Test stores trade durability for speed: durability is the storage tests' subject, and a
# kill -9 of a node process keeps the page cache, so acked writes still survive it.
FAST_STORAGE: dict[str, Any] = {"durability": "page-cache", "segment_size_bytes": "64MiB"}
TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=5)


@dataclass
class Got:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    @property
    def location_id(self) -> str:
        loc = self.headers["Location"]
        assert loc.startswith("/"), loc
        return loc[1:]

    def expect(self, status: int) -> Got:
        assert self.status == status, (f"expected {status}, got {self.status} "
                                       f"{self.headers.get('x-ambry-error-code')}: {self.text}")
        return self


async def call(http: aiohttp.ClientSession, method: str, url: str,
               headers: Mapping[str, str] | None = None, data: Any = None,
               **kw: Any) -> Got:
    async with http.request(method, url, headers=dict(headers or {}), data=data, **kw) as r:
        body = await r.read()
        return Got(r.status, r.headers, body)


async def post_blob(http: aiohttp.ClientSession, base: str, data: Any,
                    headers: Mapping[str, str] | None = None) -> str:
    """POST a blob with the service headers (plus ``headers``); its id (asserts 201)."""
    got = await call(http, "POST", base + "/", {**SERVICE, **(headers or {})}, data)
    return got.expect(201).location_id


def blob_bytes(n: int, seed: int | str) -> bytes:
    return random.Random(seed).randbytes(n)


class PatternBody:
    """``size`` deterministic bytes, produced piece by piece and never held whole.

    Piece i is a fixed random block with i stamped over its first 8 bytes, so swapped or
    repeated pieces change the hash."""

    def __init__(self, size: int, piece_bytes: int = MIB, seed: int = 0) -> None:
        self.size = size
        self.piece_bytes = piece_bytes
        self._block = random.Random(seed).randbytes(piece_bytes)

    def pieces(self) -> Iterator[bytes]:
        sent = 0
        i = 0
        while sent < self.size:
            n = min(self.piece_bytes, self.size - sent)
            piece = (i.to_bytes(8, "big") + self._block[8:])[:n]
            yield piece
            sent += n
            i += 1

    async def stream(self) -> AsyncIterator[bytes]:
        for p in self.pieces():
            yield p

    def xxh3(self) -> str:
        h = xxhash.xxh3_64()
        for p in self.pieces():
            h.update(p)
        return h.hexdigest()


async def fetch_hash(http: aiohttp.ClientSession, url: str,
                     headers: Mapping[str, str] | None = None) -> tuple[int, int, str]:
    """GET ``url`` streaming: (status, bytes received, xxh3 hex) without holding the body."""
    h = xxhash.xxh3_64()
    n = 0
    async with http.get(url, headers=dict(headers or {})) as r:
        async for piece in r.content.iter_chunked(256 * KIB):
            h.update(piece)
            n += len(piece)
        return r.status, n, h.hexdigest()


class PausedBody:
    """A request body that sends ``first`` bytes of ``body``, sets ``reached``, waits for
    ``resume`` (a test may never set it: the request then hangs until something is killed or
    times out), then sends the rest."""

    def __init__(self, body: PatternBody, first: int) -> None:
        self.body = body
        self.first = first
        self.sent = 0
        self.reached = asyncio.Event()
        self.resume = asyncio.Event()

    async def stream(self) -> AsyncIterator[bytes]:
        for piece in self.body.pieces():
            if self.sent >= self.first:
                self.reached.set()
                await self.resume.wait()
            self.sent += len(piece)
            yield piece


def store_fixture(root: Path, **kw: Any) -> Iterator[StoreCluster]:
    """Body of a module-scoped store fixture: start, yield, stop; print every log at the end
    (pytest shows it when something in the module failed)."""
    kw.setdefault("storage", FAST_STORAGE)
    store = StoreCluster(root, **kw)
    with store:
        try:
            yield store
        finally:
            print(store.logs())


async def node_records(store: StoreCluster, datacenter: str = "dc1"
                       ) -> dict[tuple[str, str], set[str]]:
    """(node id, blob id) -> the record kinds (PUT, DELETE, ...) that node holds for it, over
    every running node of ``datacenter``."""
    out: dict[tuple[str, str], set[str]] = {}
    for node in store.nodes_in(datacenter):
        if node.running:
            for r in await replica_records(node, store.partition_ids):
                out.setdefault((node.node_id, r.blob_id), set()).add(r.record)
    return out


async def new_chunk_ids(store: StoreCluster, before: dict[tuple[str, str], set[str]]
                        ) -> set[str]:
    """Ids of the chunk blobs stored in dc1 since ``before`` (composites' chunks are not
    visible through the API)."""
    return {b for k in await node_records(store) if k not in before
            for b in [k[1]] if decode(b).blob_type is BlobType.CHUNK}


def port_refused(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` any more (a connect is refused; blocking)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


async def until(cond: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    """Poll an async predicate (for background work: chunk deletes, upsert cleanup)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s} s")
        await asyncio.sleep(0.1)


async def on_every_replica(store: StoreCluster, blob_id: str, datacenter: str = "dc1",
                           timeout_s: float = 30.0) -> None:
    """Wait until every node of ``datacenter`` holds ``blob_id``. A PUT is acked by 2 of 3
    replicas: the third may get it later (a straggling write, or replication when the
    frontend skipped a node), so a test that reads or damages a given replica's copy waits
    for this first."""
    bid = decode(blob_id)
    deadline = time.monotonic() + timeout_s
    for node in store.nodes_in(datacenter):
        async with node.client() as client:
            while True:
                try:
                    await client.get(bid, info_only=True, include_deleted=True,
                                     include_expired=True)
                    break
                except BlobNotFound:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{blob_id} never reached {node.node_id} in "
                                             f"{timeout_s} s") from None
                    await asyncio.sleep(0.05)


async def assert_no_new_reachable_blob(store: StoreCluster,
                                       before: dict[tuple[str, str], set[str]]) -> None:
    """Since ``before``: no new simple or composite blob on any node, and every chunk stored
    meanwhile is deleted on each node that holds it (the router deletes them in the
    background, so this polls)."""
    async def clean() -> bool:
        new = {k: v for k, v in (await node_records(store)).items() if k not in before}
        assert all(decode(b).blob_type is BlobType.CHUNK for _, b in new), new
        return all("DELETE" in kinds for kinds in new.values())

    await until(clean, what="chunks of the failed upload deleted")


def seed_from_env(name: str = "AMBRY_TEST_SEED") -> int:
    seed = int(os.environ.get(name) or random.SystemRandom().randrange(1 << 32))
    print(f"seed={seed} (replay with {name}={seed})")
    return seed


def fuzz_settings(examples: int, *also_suppress: HealthCheck, **kw: Any
                  ) -> hypothesis.settings:
    """Hypothesis settings of the fuzzers (REST, S3, node protocol): ``examples`` cases, no
    deadline or example database (a real cluster is slow and fresh each run), and the health
    checks that a network fuzzer trips by design suppressed (plus ``also_suppress``)."""
    return hypothesis.settings(
        max_examples=examples, deadline=None, database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture, *also_suppress],
        **kw)


def stop_gracefully(proc: subprocess.Popen[Any] | None, timeout_s: float = 90) -> bool:
    """SIGTERM ``proc`` and wait for it; SIGKILL it after ``timeout_s``. Whether it stopped
    on its own (False: it had to be killed)."""
    if proc is None or proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
