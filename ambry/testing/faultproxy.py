"""A fault-injecting TCP proxy, for tests that cut, heal or slow down links between processes.

Owns :class:`FaultProxy` (one listening port forwarding every connection to one target, with
``cut()`` / ``heal()`` / ``delay_ms`` and byte counters), :class:`ProxyLoop` (the daemon thread
and asyncio event loop the proxies run on, so a synchronous or asynchronous test can drive them
without sharing its own loop) and :class:`DcLink`: the set of proxies that carries every
connection from one datacenter to the nodes of another, built *before* the cluster config is
written (its ``routes()`` go into ``cross_dc_routes``), so cutting the link between two
datacenters is one call.

Does not own any process, nor any assertion. A cut has two flavours:

* ``reset`` (default): every open connection is aborted (RST) and new ones are accepted and
  aborted at once, as when a gateway drops its state: callers see fast errors.
* ``blackhole``: open connections stop moving bytes and new ones are accepted but not connected
  onward, as when packets are silently dropped: callers see timeouts. ``heal()`` lets the
  stalled bytes flow again (TCP would have retransmitted them).

    link = DcLink()                                 # binds the listening ports now
    routes = link.plan(nodes)                       # {from_dc: {node_id: "host:port"}}
    ... write the config with cross_dc_routes=routes, start the nodes ...
    link.start()
    link.cut(); ...; link.heal()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

__all__ = ["DcLink", "FaultProxy", "ProxyLoop", "ProxyStats"]

T = TypeVar("T")

_PIECE_BYTES = 64 * 1024
_DELAY_QUEUE_PIECES = 64  # per direction: bounds the bytes a delayed link holds in memory
_HALF_CLOSE_GRACE_S = 2.0  # after one side's EOF, how long the other may still send


class ProxyLoop:
    """An asyncio event loop on its own daemon thread (shared by many proxies)."""

    def __init__(self, name: str = "faultproxy") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # closing: cancel what is left, then close the loop
        pending = asyncio.all_tasks(self.loop)
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run ``coro`` on the proxy loop and wait for its result (from any other thread)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("ProxyLoop.call from its own thread would deadlock")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@dataclass
class ProxyStats:
    connections: int = 0        # accepted while healed and connected onward
    refused: int = 0            # accepted and aborted while cut (reset mode)
    aborted: int = 0            # open connections aborted by cut()
    bytes_forward: int = 0      # client -> target
    bytes_backward: int = 0     # target -> client

    @property
    def bytes_total(self) -> int:
        return self.bytes_forward + self.bytes_backward


class _Pair:
    """One proxied connection: the client side and the target side, pumped both ways."""

    def __init__(self, proxy: FaultProxy, c_reader: asyncio.StreamReader,
                 c_writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.c_reader, self.c_writer = c_reader, c_writer
        self.t_writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[bool]] = []
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        for w in (self.c_writer, self.t_writer):
            if w is not None and not w.transport.is_closing():
                w.transport.abort()
        for t in self.tasks:
            t.cancel()

    async def run(self) -> None:
        p = self.proxy
        try:
            await p._flowing()  # a blackholed link connects onward only after heal()
            if self.aborted:
                return
            assert p.target is not None
            t_reader, self.t_writer = await asyncio.open_connection(*p.target)
        except OSError:
            self.abort()
            return
        if self.aborted:  # cut while connecting
            self.abort()
            return
        p.stats.connections += 1
        self.tasks = [asyncio.ensure_future(self._pump(self.c_reader, self.t_writer, True)),
                      asyncio.ensure_future(self._pump(t_reader, self.c_writer, False))]
        # One side closed: its EOF has been passed on; the other side gets a moment to finish
        # (a reply still on its way). A reset on either side resets both at once (before, a
        # client whose target was killed kept a silent connection until its own timeout).
        await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        if not self.aborted:
            await asyncio.wait(self.tasks, timeout=_HALF_CLOSE_GRACE_S)
        if all(t.done() and not t.cancelled() and t.exception() is None and t.result()
               for t in self.tasks):
            for w in (self.c_writer, self.t_writer):  # clean: flush what is buffered, close
                w.close()
        else:
            self.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    forward: bool) -> bool:
        """Copy one direction; True when it ended with a clean EOF passed on."""
        p = self.proxy
        q: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_DELAY_QUEUE_PIECES)
        sender = asyncio.ensure_future(self._send(q, writer, forward))
        try:
            while True:
                try:
                    piece = await reader.read(_PIECE_BYTES)
                except (ConnectionError, OSError):
                    self.abort()
                    return False
                if not piece:
                    break
                await q.put((time.monotonic() + p.delay_ms / 1000, piece))
            await q.put((0.0, b""))  # EOF marker
            return await sender
        finally:
            sender.cancel()

    async def _send(self, q: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter,
                    forward: bool) -> bool:
        p = self.proxy
        try:
            while True:
                due, piece = await q.get()
                if not piece:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return True
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await p._flowing()  # a blackholed link holds the bytes until heal()
                writer.write(piece)
                if forward:
                    p.stats.bytes_forward += len(piece)
                else:
                    p.stats.bytes_backward += len(piece)
                await writer.drain()
        except (ConnectionError, OSError):
            self.abort()
            return False


class FaultProxy:
    """Listens on ``listen_host:listen_port`` (0: any free port, bound at construction, so the
    port is known and reserved before a config naming it is written) and forwards each
    connection to ``target`` (settable until :meth:`start`)."""

    def __init__(self, target: tuple[str, int] | None = None, *,
                 listen_host: str = "127.0.0.1", listen_port: int = 0, delay_ms: float = 0.0,
                 loop: ProxyLoop | None = None, name: str = "") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((listen_host, listen_port))
        self._sock.listen(256)
        self.host, self.port = self._sock.getsockname()[:2]
        self.target = target
        self.delay_ms = float(delay_ms)
        self.name = name or f"proxy:{self.port}"
        self.stats = ProxyStats()
        self._own_loop = loop is None
        self._loop = loop
        self._server: asyncio.AbstractServer | None = None
        self._pairs: set[_Pair] = set()
        self._mode = ""  # "" healed, "reset" or "blackhole"
        self._healed: asyncio.Event | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return bool(self._mode)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> FaultProxy:
        if self.target is None:
            raise ValueError(f"{self.name}: no target set")
        if self._loop is None:
            self._loop = ProxyLoop(self.name)
        self._loop.call(self._start())
        return self

    async def _start(self) -> None:
        self._healed = asyncio.Event()
        if not self._mode:
            self._healed.set()
        self._server = await asyncio.start_server(self._on_connect, sock=self._sock)

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call(self._stop())
            self._server = None
        if self._own_loop and self._loop is not None:
            self._loop.close()
            self._loop = None
        with contextlib.suppress(OSError):
            self._sock.close()

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for pair in list(self._pairs):
            pair.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ faults
    def cut(self, mode: str = "reset") -> None:
        """Stop all traffic: ``reset`` aborts open connections and refuses new ones;
        ``blackhole`` stalls them (see the module docstring)."""
        if mode not in ("reset", "blackhole"):
            raise ValueError(f"unknown cut mode {mode!r}")
        self._call(self._cut(mode))

    async def _cut(self, mode: str) -> None:
        self._mode = mode
        assert self._healed is not None
        self._healed.clear()
        if mode == "reset":
            for pair in list(self._pairs):
                pair.abort()
                self.stats.aborted += 1

    def heal(self) -> None:
        self._call(self._heal())

    async def _heal(self) -> None:
        self._mode = ""
        assert self._healed is not None
        self._healed.set()

    def set_delay(self, delay_ms: float) -> None:
        """Delay every piece of data by ``delay_ms`` each way (takes effect for new bytes)."""
        self.delay_ms = float(delay_ms)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None or self._server is None:
            coro.close()
            raise RuntimeError(f"{self.name} is not running")
        self._loop.call(coro)

    async def _flowing(self) -> None:
        assert self._healed is not None
        if not self._healed.is_set():
            await self._healed.wait()

    # ------------------------------------------------------------------ connections
    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if self._mode == "reset":
            self.stats.refused += 1
            writer.transport.abort()
            return
        pair = _Pair(self, reader, writer)
        self._pairs.add(pair)
        try:
            await pair.run()
        finally:
            self._pairs.discard(pair)


class DcLink:
    """The proxies that carry every connection between datacenters: one proxy per (from
    datacenter, node of another datacenter). Build it before writing the config: :meth:`plan`
    binds the ports and returns ``cross_dc_routes``; :meth:`start` needs the nodes' real
    addresses (``targets``)."""

    def __init__(self, delay_ms: float = 0.0) -> None:
        self.loop = ProxyLoop("dc-link")
        self.delay_ms = delay_ms
        self.proxies: dict[tuple[str, str], FaultProxy] = {}  # (from_dc, node_id) -> proxy
        self._node_dc: dict[str, str] = {}

    def plan(self, node_datacenters: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """``node_datacenters``: node id -> datacenter. Returns the ``cross_dc_routes``
        section: every process of one datacenter reaches a node of another via a proxy."""
        self._node_dc = dict(node_datacenters)
        dcs = sorted(set(node_datacenters.values()))
        routes: dict[str, dict[str, str]] = {}
        for from_dc in dcs:
            for nid, dc in sorted(node_datacenters.items()):
                if dc == from_dc:
                    continue
                p = FaultProxy(None, loop=self.loop, delay_ms=self.delay_ms,
                               name=f"{from_dc}->{nid}")
                self.proxies[(from_dc, nid)] = p
                routes.setdefault(from_dc, {})[nid] = p.address
        return routes

    def start(self, targets: Mapping[str, tuple[str, int]]) -> DcLink:
        """``targets``: node id -> (host, port) the node really listens on."""
        for (_dc, nid), p in self.proxies.items():
            p.target = targets[nid]
            p.start()
        return self

    def _select(self, between: Iterable[str] | None) -> list[FaultProxy]:
        if between is None:
            return list(self.proxies.values())
        dcs = set(between)
        return [p for (from_dc, nid), p in self.proxies.items()
                if from_dc in dcs and self._node_dc[nid] in dcs]

    def cut(self, mode: str = "reset", between: Iterable[str] | None = None) -> None:
        """Cut every cross-datacenter connection (or only those among ``between``)."""
        for p in self._select(between):
            p.cut(mode)

    def heal(self) -> None:
        for p in self.proxies.values():
            if p.is_cut:
                p.heal()

    def set_delay(self, delay_ms: float) -> None:
        for p in self.proxies.values():
            p.set_delay(delay_ms)

    def bytes_into(self, datacenter: str) -> int:
        """Bytes that crossed the link towards ``datacenter``'s processes (replies to their
        requests plus what other datacenters sent them), i.e. what it downloaded."""
        total = 0
        for (from_dc, nid), p in self.proxies.items():
            if from_dc == datacenter:
                total += p.stats.bytes_backward
            elif self._node_dc[nid] == datacenter:
                total += p.stats.bytes_forward
        return total

    def stats(self) -> dict[str, ProxyStats]:
        return {p.name: p.stats for p in self.proxies.values()}

    def close(self) -> None:
        for p in self.proxies.values():
            with contextlib.suppress(Exception):
                p.stop()
        self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
