"""The ``Expect`` request header, answered without aiohttp's default handler, on every path.

aiohttp's default answers an unknown expectation with ``417 "Unknown Expect: <value>"``; a value
with a byte that is not UTF-8 (aiohttp decodes header bytes with surrogate escapes) could not be
encoded into that text, and the request got a 500. :func:`answer_expect` echoes nothing; routes
opt in with ``expect_handler=answer_expect`` (the S3 API with
:func:`answer_expect_ignoring_others`: AWS serves a request whatever else it expects).
aiohttp's own 404 and 405 (a path or method no route serves) use the default handler whatever
the routes say, so :func:`add_unrouted` adds a last route that answers those itself. Owns only
that.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http import HttpVersion11

__all__ = ["add_unrouted", "answer_expect", "answer_expect_ignoring_others"]


async def answer_expect(request: web.Request) -> None:
    """``100-continue`` (case-insensitive): send ``100 Continue``, then the handler runs; any
    other expectation: 417 (RFC 9110 10.1.1 allows it; the Ambry REST API answers so). HTTP/1.0
    requests have no expectations."""
    if not await _continue(request):
        raise web.HTTPExpectationFailed(text="only Expect: 100-continue is supported\n")


async def answer_expect_ignoring_others(request: web.Request) -> None:
    """As :func:`answer_expect`, but an expectation other than ``100-continue`` is ignored and
    the request goes on: AWS S3 does so (``Expect: 200`` on PutObject or CreateBucket is
    served), and S3 clients are written against it."""
    await _continue(request)


async def _continue(request: web.Request) -> bool:
    """Send ``100 Continue`` for ``Expect: 100-continue``; False for another expectation."""
    if request.version != HttpVersion11:
        return True
    expect = request.headers.get("Expect")
    if expect is None:
        return True
    if expect.strip(" \t").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not part of the reply's size
        return True
    return False


def add_unrouted(router: web.UrlDispatcher) -> None:
    """Register last: a route for whatever no other route serves, answered 404, or 405 with
    ``Allow`` when the path exists for other methods (as aiohttp would), through
    :func:`answer_expect`."""
    catch_all = router.add_resource("/{unrouted:.*}")

    async def unrouted(request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in router.resources():
            if resource is not catch_all:
                _, methods = await resource.resolve(request)
                allowed |= methods
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    catch_all.add_route("*", unrouted, expect_handler=answer_expect)
