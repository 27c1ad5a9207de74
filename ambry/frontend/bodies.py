"""Sending a blob's bytes as an HTTP response body, for the REST and the S3 API alike.

Owns the one rule for a body that fails half-way: once the status line and a Content-Length
have gone out, an error cannot become an error reply any more (a second response written into
the body made the client wait forever for bytes that never came). So the first piece of the body
is fetched *before* the headers are sent (an error there is still an ordinary error reply, e.g.
503 DATA_CORRUPT for a chunk rotten on every replica), and a failure after that closes the
connection at once: the client sees a body shorter than its Content-Length, a cut it can
detect and resume from, never a hang. Each such abort is logged with the blob and the cause
(the router's message names the chunk) and counted in /metrics by reason, apart from clients
that went away by themselves.

Does not own choosing the headers or the status (the API modules do), nor fetching the bytes
(the router's ``BlobRead.body``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ambry.common.errors import AmbryError
from ambry.frontend.aborts import note_client_gone

__all__ = ["CLIENT_GONE", "first_piece", "send_body"]

log = logging.getLogger(__name__)

#: The abort reason of a client that closed its connection mid-body (not a server fault).
CLIENT_GONE = "CLIENT_GONE"


async def first_piece(body: AsyncIterator[bytes | bytearray]) -> bytes | bytearray:
    """The first piece of ``body`` (``b""`` when it is empty). Call it before the response is
    prepared, so that an error it raises is still answered with an error status."""
    try:
        return await anext(body)
    except StopAsyncIteration:
        return b""


async def send_body(request: web.Request, resp: web.StreamResponse,
                    body: AsyncIterator[bytes | bytearray], first: bytes | bytearray, *,
                    blob: str, rid: str, on_abort: Callable[[str], None]) -> int:
    """Prepare ``resp`` and send ``first`` then the rest of ``body``; returns the bytes sent.

    When ``body`` fails, the connection is closed (the bytes already written are flushed, then
    the client reads a short body) and ``on_abort`` gets the error code; when the client goes
    away, ``on_abort`` gets :data:`CLIENT_GONE`. Either way ``resp`` is returned normally
    (aiohttp then finds the transport closed and stops), never an exception that a middleware
    would turn into a second response on the same connection."""
    total = resp.content_length
    sent = 0
    await resp.prepare(request)
    try:
        if first:
            await resp.write(first)
            sent += len(first)
        async for piece in body:
            await resp.write(piece)
            sent += len(piece)
        await resp.write_eof()
    except (ConnectionError, OSError) as e:  # the client closed its end
        log.info("rid=%s %s %s: client went away after %d of %s bytes of blob %s (%s)",
                 rid, request.method, request.path, sent, total, blob,
                 type(e).__name__)
        on_abort(CLIENT_GONE)
        note_client_gone(request)  # the request metrics count it as 499, not a 200
    except AmbryError as e:
        log.error("rid=%s %s %s: aborting the response after %d of %s bytes of blob %s: "
                  "%s %s", rid, request.method, request.path, sent, total,
                  blob, e.code, e.message)
        _close(request)
        on_abort(e.code)
    except Exception:
        log.exception("rid=%s %s %s: aborting the response after %d of %s bytes of blob %s",
                      rid, request.method, request.path, sent, total, blob)
        _close(request)
        on_abort("INTERNAL")
    return sent


def _close(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()  # flushes what was written, then EOF: a short body, at once
