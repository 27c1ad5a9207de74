"""HTTP to the frontends: one aiohttp session, retries with backoff, endpoint failover, and
error replies turned into typed exceptions.

Owns sending one logical request (one ``x-ambry-request-id`` for all its attempts) to the
first frontend that answers, following ``_retry``'s rules, and reporting each attempt to an
optional ``on_request`` hook. Does not own what a request means (``_client``), nor retrying a
reply body that breaks while the caller is reading it (the caller re-asks with a range).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ambry.client._errors import ApiError, ConnectionFailed, error_from_reply
from ambry.client._retry import Endpoints, Failure, RetryPolicy, endpoint_for_attempt, may_retry

__all__ = ["Body", "Reply", "RequestEvent", "Transport", "classify"]

T = TypeVar("T")

#: A request body: bytes, or a factory that makes a fresh stream for each attempt.
Body = bytes | memoryview | Callable[[], AsyncIterable[bytes]] | None

_MAX_ERROR_BODY_BYTES = 4096


@dataclass(frozen=True)
class RequestEvent:
    """One attempt of one request, as reported to ``on_request`` (for logging, metrics and
    tests that count what was sent). ``status`` is 0 when no reply came (``error`` says why);
    ``attempt`` counts from 0."""

    method: str
    path: str
    endpoint: str
    status: int
    error: str
    attempt: int
    request_id: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Reply:
    """A complete, successful reply."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    endpoint: str


class _Failed(Exception):
    """One attempt failed: the kind decides on a retry, ``error`` is what the caller sees."""

    def __init__(self, kind: Failure, error: BaseException) -> None:
        super().__init__(str(error))
        self.kind = kind
        self.error = error


def classify(exc: BaseException) -> Failure:
    """The failure kind of an exception raised while sending or reading a request."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
        return Failure.CONNECT
    if isinstance(exc, TimeoutError):
        return Failure.TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | OSError):
        return Failure.CUT
    if isinstance(exc, ApiError) and exc.status in (502, 503, 504):
        return Failure.UNAVAILABLE
    return Failure.FINAL


def encode_path(path: str) -> str:
    """Percent-encode a request path (named blobs may hold spaces, ``%``, ``?``, unicode);
    ``/`` stays a separator."""
    return quote(path, safe="/")


class Transport:
    """Sends requests to a list of frontend endpoints (see :class:`~ambry.client.Client`
    for the arguments). Must be used from one event loop; :meth:`aclose` when done."""

    def __init__(self, endpoints: list[str], *, retry: RetryPolicy, connect_timeout_s: float,
                 read_timeout_s: float, max_connections: int,
                 default_headers: Mapping[str, str] | None = None,
                 on_request: Callable[[RequestEvent], None] | None = None,
                 rnd: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.endpoints = Endpoints(endpoints, retry.endpoint_cooldown_s)
        self.retry = retry
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s,
                                              sock_read=read_timeout_s)
        self._max_connections = max_connections
        self._default_headers = dict(default_headers or {})
        self._on_request = on_request
        self._rnd = rnd or random.Random()
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, auto_decompress=False,
                connector=aiohttp.TCPConnector(limit=self._max_connections))
            # aiohttp silently re-sends a PUT/DELETE once when a pooled connection breaks;
            # this class decides every retry (a named PUT without upsert is not idempotent
            # here), so turn that off. A private attribute: without it, behaviour is only
            # less strict, never wrong for the idempotent steps.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @staticmethod
    def new_request_id() -> str:
        return os.urandom(8).hex()

    def url(self, endpoint: str, path: str, params: Mapping[str, str] | None) -> URL:
        text = endpoint + encode_path(path)
        if params:
            text += "?" + urlencode(params, quote_via=quote, safe="")
        return URL(text, encoded=True)

    async def call(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                   params: Mapping[str, str] | None = None, body: Body = None,
                   idempotent: bool, what: str, rid: str | None = None,
                   replayable: bool = True,
                   done_codes: frozenset[str] = frozenset()) -> Reply:
        """Send a request and read its whole reply (small replies only: metadata, listings,
        ranges of bounded size). Raises the typed error of the last attempt. A body that
        cannot be made again (``replayable=False``: a one-shot iterator) is sent once.

        ``done_codes``: error codes that mean "already done" when they answer a retry of an
        attempt whose outcome was unknown (an undelete that landed but whose reply was lost
        is answered BLOB_NOT_DELETED the second time); such a reply counts as success."""

        async def attempt(endpoint: str, hdrs: dict[str, str], n: int) -> Reply:
            async with self.session.request(method, self.url(endpoint, path, params),
                                            headers=hdrs, data=_fresh(body)) as resp:
                await self._check(resp, method, path, endpoint, hdrs, n, what)
                data = await resp.read()
                return Reply(resp.status, resp.headers, data, endpoint)

        def already_done(e: ApiError) -> Reply | None:
            if e.code not in done_codes:
                return None
            return Reply(200, CIMultiDictProxy(CIMultiDict()), b"", e.endpoint)

        return await self._run(attempt, method, path, headers, idempotent=idempotent,
                               what=what, rid=rid, replayable=replayable,
                               after_unknown=already_done)

    async def open(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                   params: Mapping[str, str] | None = None, what: str,
                   rid: str | None = None) -> tuple[aiohttp.ClientResponse, str]:
        """Send an idempotent request and return its open response (status < 400) and the
        endpoint that answered; the caller reads the body and must ``release()`` it."""

        async def attempt(endpoint: str, hdrs: dict[str, str], n: int
                          ) -> tuple[aiohttp.ClientResponse, str]:
            resp = await self.session.request(method, self.url(endpoint, path, params),
                                              headers=hdrs)
            try:
                await self._check(resp, method, path, endpoint, hdrs, n, what)
            except BaseException:
                resp.release()
                raise
            return resp, endpoint

        return await self._run(attempt, method, path, headers, idempotent=True, what=what,
                               rid=rid, replayable=True)

    async def _check(self, resp: aiohttp.ClientResponse, method: str, path: str,
                     endpoint: str, hdrs: Mapping[str, str], n: int, what: str) -> None:
        """Report the attempt; raise the typed error of an error reply."""
        if resp.status < 400:
            self._report(method, path, endpoint, resp.status, "", n, hdrs)
            return
        text = ""
        if method != "HEAD":
            try:
                text = (await resp.content.read(_MAX_ERROR_BODY_BYTES)).decode(
                    "utf-8", "replace")
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
        err = error_from_reply(resp.status, resp.headers, text, endpoint=endpoint, what=what)
        self._report(method, path, endpoint, resp.status, err.code, n, hdrs)
        raise err

    def _report(self, method: str, path: str, endpoint: str, status: int, error: str, n: int,
                hdrs: Mapping[str, str]) -> None:
        if self._on_request is not None:
            self._on_request(RequestEvent(method, path, endpoint, status, error, n,
                                          hdrs.get("x-ambry-request-id", ""), dict(hdrs)))

    async def _run(self, attempt: Callable[[str, dict[str, str], int], Awaitable[T]],
                   method: str, path: str, headers: Mapping[str, str] | None, *,
                   idempotent: bool, what: str, rid: str | None, replayable: bool,
                   after_unknown: Callable[[ApiError], T | None] | None = None) -> T:
        hdrs = {**self._default_headers, **(headers or {})}
        hdrs["x-ambry-request-id"] = rid or self.new_request_id()
        order = self.endpoints.order()
        last: _Failed | None = None
        unknown_outcome = False  # an earlier attempt may have been carried out
        attempts = self.retry.attempts if replayable else 1
        for n in range(attempts):
            index, backoff_round = endpoint_for_attempt(n, len(order))
            if backoff_round is not None:
                await self._sleep(self.retry.delay_s(backoff_round, self._rnd))
            endpoint = order[index]
            try:
                result = await attempt(endpoint, hdrs, n)
            except ApiError as e:
                kind = classify(e)
                if kind is Failure.FINAL:
                    self.endpoints.mark_ok(endpoint)  # it answered
                    if unknown_outcome and after_unknown is not None:
                        done = after_unknown(e)
                        if done is not None:
                            return done
                    raise
                last = _Failed(kind, e)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                kind = classify(e)
                if kind is Failure.FINAL:
                    raise  # a bad URL or the like: a bug to see as it is, not "unavailable"
                self._report(method, path, endpoint, 0, f"{type(e).__name__}: {e}", n, hdrs)
                if kind in (Failure.CONNECT, Failure.TIMEOUT):
                    self.endpoints.mark_failed(endpoint)
                last = _Failed(kind, e)
            else:
                self.endpoints.mark_ok(endpoint)
                return result
            if last.kind in (Failure.TIMEOUT, Failure.CUT):
                unknown_outcome = True
            if not may_retry(last.kind, idempotent):
                break
        assert last is not None
        if isinstance(last.error, ApiError):
            raise last.error
        raise ConnectionFailed(
            f"{what}: {type(last.error).__name__}: {last.error} (after {n + 1} attempt(s) "
            f"over {', '.join(order)})", request_id=hdrs["x-ambry-request-id"],
            endpoint=order[index]) from last.error


def _fresh(body: Body) -> Any:
    if body is None or isinstance(body, bytes | memoryview):
        return body
    return body()
