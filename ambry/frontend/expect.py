"""The ``Expect`` request header, answered without aiohttp's default handler.

aiohttp's default answers an unknown expectation with ``417 "Unknown Expect: <value>"``; a value
with a byte that is not UTF-8 (aiohttp decodes header bytes with surrogate escapes) could not be
encoded into that text, and the request got a 500. This handler echoes nothing. Owns only that;
routes opt in with ``expect_handler=answer_expect``.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http import HttpVersion11

__all__ = ["answer_expect"]


async def answer_expect(request: web.Request) -> None:
    """``100-continue`` (case-insensitive): send ``100 Continue``, then the handler runs; any
    other expectation: 417. HTTP/1.0 requests have no expectations (RFC 9110 10.1.1)."""
    if request.version != HttpVersion11:
        return
    if request.headers.get("Expect", "").strip(" \t").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not part of the reply's size
        return
    raise web.HTTPExpectationFailed(text="only Expect: 100-continue is supported\n")
