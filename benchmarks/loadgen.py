"""The load generator behind the API benchmarks: Ambry REST API, Swift API, or a null server.

Several client processes (one asyncio loop and ``connections`` keep-alive connections each),
started together at a barrier, drive one phase for a fixed time and report back:

* PUT: every body is unique to its object and has a stamp (object tag, offset) at each MiB
  over a random filler made once per process (benchmarks/_payload.py: no generation cost in
  the timed loop, large bodies go out as pieces without a copy); each stored object is
  remembered with its tag, size and xxh3.
* GET: every object stored by the PUT phase of the same process, round robin; each body is
  streamed, hashed and its stamps checked against the object it was PUT as, so a swapped,
  duplicated or misplaced chunk, or another object's body, is caught. A body that does not
  match counts as an error, never as throughput.
* MIX: ``get_fraction`` GETs of the objects stored so far, the rest PUTs, sizes drawn from a
  weighted size mix (model-artifact sizes).

Targets are plain dicts (picklable: they cross the process boundary):
``{"kind": "ambry", "url": "http://127.0.0.1:1174"}``,
``{"kind": "swift", "auth_url": "http://127.0.0.1:8080/auth/v1.0", "user": "test:tester",
"key": "testing"}``, ``{"kind": "null", "url": ...}`` (see :func:`serve_null`: an aiohttp
server that stores nothing; it measures the generator's own ceiling).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import xxhash

from benchmarks._payload import STAMP_BYTES, Verifier, body_bytes, filler, hashed_pieces, object_tag

__all__ = ["PhaseResult", "run_phases", "serve_null", "swift_setup"]

READ_PIECE = 1 << 20
AMBRY_HEADERS = {"x-ambry-service-id": "loadgen", "x-ambry-content-type": "application/octet-stream"}
SWIFT_CONTAINER = "loadgen"


@dataclass
class PhaseResult:
    ops: int = 0
    bytes: int = 0
    errors: int = 0
    verified: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    first_error: str = ""

    def merge(self, other: PhaseResult) -> None:
        self.ops += other.ops
        self.bytes += other.bytes
        self.errors += other.errors
        self.verified += other.verified
        self.seconds = max(self.seconds, other.seconds)
        self.latencies += other.latencies
        self.client_cpu_s += other.client_cpu_s
        self.first_error = self.first_error or other.first_error


# ---------------------------------------------------------------------------------- targets
class _Target:
    async def open(self, s: aiohttp.ClientSession) -> None:
        pass

    async def put(self, s: aiohttp.ClientSession, body: Any, size: int, key: str) -> str:
        raise NotImplementedError

    def get_url(self, locator: str) -> str:
        raise NotImplementedError

    def get_headers(self) -> dict[str, str]:
        return {}


class _Ambry(_Target):
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def put(self, s: aiohttp.ClientSession, body: Any, size: int, key: str) -> str:
        async with s.post(self.url + "/", data=body, headers=_with_length(AMBRY_HEADERS, size)
                          ) as r:
            await r.read()
            if r.status != 201:
                raise RuntimeError(f"PUT {r.status} {r.headers.get('x-ambry-error-code')}")
            return self.url + r.headers["Location"]

    def get_url(self, locator: str) -> str:
        return locator


class _AmbryNamed(_Ambry):
    """``PUT /named/<account>/<container>/<name>``, read back by name: the like-for-like
    counterpart of Swift's ``PUT /<container>/<object>`` (a blob write plus a name record)."""

    def __init__(self, url: str, account: str, container: str) -> None:
        super().__init__(url)
        self.prefix = f"{self.url}/named/{account}/{container}/"

    async def put(self, s: aiohttp.ClientSession, body: Any, size: int, key: str) -> str:
        url = self.prefix + key
        async with s.put(url, data=body, headers=_with_length(AMBRY_HEADERS, size)) as r:
            await r.read()
            if r.status != 201:
                raise RuntimeError(f"PUT {r.status} {r.headers.get('x-ambry-error-code')}")
        return url


def _with_length(headers: dict[str, str], size: int) -> dict[str, str]:
    """A body sent as pieces still goes out with Content-Length (never chunked), as a
    ``bytes`` body does: the servers see the same request either way."""
    return {**headers, "Content-Length": str(size)}


class _Swift(_Target):
    def __init__(self, auth_url: str, user: str, key: str) -> None:
        self.auth_url, self.user, self.key = auth_url, user, key
        self.storage = ""
        self.token = ""

    async def open(self, s: aiohttp.ClientSession) -> None:
        self.storage, self.token = await _swift_auth(s, self.auth_url, self.user, self.key)

    async def put(self, s: aiohttp.ClientSession, body: Any, size: int, key: str) -> str:
        url = f"{self.storage}/{SWIFT_CONTAINER}/{key}"
        async with s.put(url, data=body, headers=_with_length({"X-Auth-Token": self.token}, size)
                         ) as r:
            await r.read()
            if r.status != 201:
                raise RuntimeError(f"PUT {r.status}")
        return url

    def get_url(self, locator: str) -> str:
        return locator

    def get_headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token}


class _Null(_Ambry):
    pass


def _target(spec: dict[str, Any]) -> _Target:
    if spec["kind"] == "swift":
        return _Swift(spec["auth_url"], spec["user"], spec["key"])
    if spec["kind"] == "null":
        return _Null(spec["url"])
    if spec["kind"] == "ambry-named":
        return _AmbryNamed(spec["url"], spec.get("account", "default"),
                           spec.get("container", "default"))
    return _Ambry(spec["url"])


async def _swift_auth(s: aiohttp.ClientSession, auth_url: str, user: str, key: str
                      ) -> tuple[str, str]:
    async with s.get(auth_url, headers={"X-Auth-User": user, "X-Auth-Key": key}) as r:
        if r.status // 100 != 2:
            raise RuntimeError(f"swift auth: {r.status}")
        return r.headers["X-Storage-Url"], r.headers["X-Auth-Token"]


def swift_setup(spec: dict[str, Any]) -> None:
    """Create the benchmark container (once, before the client processes start)."""
    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            storage, token = await _swift_auth(s, spec["auth_url"], spec["user"], spec["key"])
            async with s.put(f"{storage}/{SWIFT_CONTAINER}",
                             headers={"X-Auth-Token": token}) as r:
                if r.status not in (201, 202):
                    raise RuntimeError(f"swift container PUT: {r.status}")
    asyncio.run(go())


# ---------------------------------------------------------------------------------- clients
def _body(fill: bytes, key: str, size: int) -> tuple[Any, int, int]:
    """(request body, object tag, xxh3) of the object stored under ``key``. A body of up to
    1 MiB is one ``bytes`` (hashed here); a larger one an async iterator of pieces, whose xxh3
    is known once it has been sent (the returned 0 is replaced by the caller)."""
    tag = object_tag(key)
    if size <= STAMP_BYTES:
        body = body_bytes(fill, tag, size)
        return body, tag, xxhash.xxh3_64_intdigest(body)
    return None, tag, 0


async def _client(spec: dict[str, Any], op: str, sizes: list[tuple[int, float]],
                  fill: bytes, connections: int, start_at: float,
                  seconds: float, get_fraction: float,
                  stored: list[tuple[str, int, int, int]], proc: int) -> PhaseResult:
    target = _target(spec)
    size_list = [sz for sz, _w in sizes]
    weights = [w for _s, w in sizes]
    res = PhaseResult()
    rnd = random.Random(proc)
    conn = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        await target.open(s)
        pause = start_at - time.time()
        if pause > 0:
            await asyncio.sleep(pause)
        cpu0 = time.process_time()
        t_start = time.perf_counter()
        stop = t_start + seconds
        counter = 0
        run_id = os.urandom(6).hex()

        async def do_put() -> None:
            nonlocal counter
            size = rnd.choices(size_list, weights)[0]
            counter += 1
            # unique across phases and runs: a reused key would overwrite an earlier object
            key = f"p{proc}-{run_id}-{counter}"
            body, tag, digest = _body(fill, key, size)
            if body is None:
                hasher = xxhash.xxh3_64()
                loc = await target.put(s, hashed_pieces(fill, tag, size, hasher), size, key)
                digest = hasher.intdigest()
            else:
                loc = await target.put(s, body, size, key)
            stored.append((loc, size, tag, digest))
            res.bytes += size

        async def do_get(k: int) -> None:
            loc, size, tag, digest = stored[k % len(stored)]
            v = Verifier(tag, size, digest)
            async with s.get(target.get_url(loc), headers=target.get_headers()) as r:
                if r.status != 200:
                    raise RuntimeError(f"GET {r.status}")
                async for piece in r.content.iter_chunked(READ_PIECE):
                    v.update(piece)
            if err := v.error():
                raise RuntimeError(f"GET body does not match what was PUT: {err}")
            res.bytes += size
            res.verified += size

        async def worker(w: int) -> None:
            k = w * 7919
            while time.perf_counter() < stop:
                k += 1
                t0 = time.perf_counter()
                try:
                    if op == "PUT" or (op == "MIX" and (not stored or
                                                        rnd.random() >= get_fraction)):
                        await do_put()
                    else:
                        await do_get(k)
                except (aiohttp.ClientError, RuntimeError, TimeoutError) as e:
                    res.errors += 1
                    res.first_error = res.first_error or repr(e)
                    await asyncio.sleep(0.01)
                    continue
                res.latencies.append(time.perf_counter() - t0)
                res.ops += 1

        await asyncio.gather(*(worker(w) for w in range(connections)))
        res.seconds = time.perf_counter() - t_start
        res.client_cpu_s = time.process_time() - cpu0
    return res


def _proc_main(spec: dict[str, Any], phases: list[dict[str, Any]], connections: int,
               proc: int, conn: Any) -> None:
    """One client process. Per phase: say "ready", wait for the start
    time from the parent, run, send the result. Objects stored are kept for later GETs."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    stored: list[tuple[str, int, int, int]] = []
    fill = filler(proc)
    for ph in phases:
        if ph.get("fresh"):
            stored = []
        conn.send(("ready", None))
        start_at = conn.recv()
        r = asyncio.run(_client(spec, ph["op"], ph["sizes"], fill, connections, start_at,
                                ph["seconds"], ph.get("get_fraction", 0.0), stored, proc))
        conn.send(("phase", r))


def run_phases(spec: dict[str, Any], phases: list[dict[str, Any]], clients: int,
               processes: int = 1, on_phase: Callable[[int, str], None] | None = None
               ) -> list[PhaseResult]:
    """Run ``phases`` (each: op PUT/GET/MIX, sizes [(bytes, weight)], seconds, optional
    get_fraction, and fresh=True to forget earlier objects) with ``clients`` connections
    spread over ``processes`` processes, every process starting each phase at the same
    moment. ``on_phase(i, 'start'|'end')`` runs around each phase (to sample server CPU).
    Returns one merged result per phase."""
    processes = max(1, min(processes, clients))
    per = [clients // processes + (1 if i < clients % processes else 0)
           for i in range(processes)]
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for i, n in enumerate(per):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_proc_main, args=(spec, phases, n, i, child), daemon=True)
        pipes.append(parent)
        procs.append(p)
    for p in procs:
        p.start()
    results: list[PhaseResult] = []
    try:
        for i in range(len(phases)):
            for pipe in pipes:
                kind, _ = pipe.recv()
                assert kind == "ready", kind
            start_at = time.time() + 0.3
            for pipe in pipes:
                pipe.send(start_at)
            time.sleep(max(0.0, start_at - time.time()))
            if on_phase:
                on_phase(i, "start")
            merged = PhaseResult()
            for pipe in pipes:
                kind, r = pipe.recv()
                assert kind == "phase", kind
                merged.merge(r)
            if on_phase:
                on_phase(i, "end")
            results.append(merged)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return results


# ---------------------------------------------------------------------------------- null server
def serve_null(port: int) -> None:
    """A server that stores nothing but what it needs to answer: a PUT/POST body is read,
    the random filler behind its first stamp is kept once (the generator's bodies differ only
    in their stamps, benchmarks/_payload.py), and a GET rebuilds the body from the filler, the
    object tag and the size named in its key. What it sustains is the load generator's own
    ceiling here; its memory does not grow with the number of objects."""
    from aiohttp import web

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    fills: dict[str, bytes] = {}

    async def put(request: web.Request) -> web.Response:
        body = await request.read()
        size = len(body)
        tag = int.from_bytes(body[:8], "big")
        fill = body[16:min(size, STAMP_BYTES)]
        fkey = f"{xxhash.xxh3_64_intdigest(fill):x}{len(fill)}"
        fills.setdefault(fkey, fill)
        return web.Response(status=201, headers={"Location": f"/{fkey}-{tag:x}-{size}"})

    async def get(request: web.Request) -> web.Response:
        fkey, _, rest = request.match_info["key"].partition("-")
        tag, _, size = rest.partition("-")
        fill = fills.get(fkey)
        if fill is None or not size:
            return web.Response(status=404)
        return web.Response(body=body_bytes(fill, int(tag, 16), int(size)))

    app = web.Application(client_max_size=1 << 40)
    app.router.add_post("/", put)
    app.router.add_get("/{key}", get)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
