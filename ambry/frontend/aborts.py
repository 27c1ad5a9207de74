"""Telling a client that went away from a server error, for the REST and the S3 API alike.

Owns the one rule both request handlers apply before they count and log a request: a request
that ended because its client closed the connection (a download cut short by the reader, a
client that gave up waiting) is not a server error. It is counted in the requests metrics of
both ports (``ambry_frontend_requests``, ``ambry_s3_requests``) with status ``499``, nginx's
"client closed request", so ``status=~"5.."`` counts only the server's own failures, and it is
logged at INFO without a traceback. Nothing is sent to the client (it is gone).

A ``ConnectionError`` (or a cancellation) counts as the client's only when the client's
transport is really closed: one raised while the client is still connected (a storage node's
socket, a bug) stays a 500. A body sender that swallows the client's disconnect itself (so
that no exception reaches the handler) says so with :func:`note_client_gone`.

Does not own sending bodies (``ambry.frontend.bodies``) nor the metrics themselves.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

__all__ = ["CLIENT_ABORT_STATUS", "client_abort_status", "client_gone", "note_client_gone"]

#: The status label of a request whose client went away (nginx's 499 "client closed request").
CLIENT_ABORT_STATUS = 499
_GONE_KEY = "ambry.client_gone"


def client_gone(request: web.BaseRequest) -> bool:
    """The client's connection is closed (or closing): nothing more can reach it."""
    transport = request.transport
    return transport is None or transport.is_closing()


def note_client_gone(request: web.BaseRequest) -> None:
    """Record that the client left while its response was being sent."""
    request[_GONE_KEY] = True


def client_abort_status(request: web.BaseRequest, exc: BaseException | None = None
                        ) -> int | None:
    """:data:`CLIENT_ABORT_STATUS` when the request ended because its client went away (it
    raised ``exc``, or a body sender noted it), else None."""
    if exc is None:
        return CLIENT_ABORT_STATUS if request.get(_GONE_KEY) else None
    if isinstance(exc, (ConnectionError, asyncio.CancelledError)) and client_gone(request):
        return CLIENT_ABORT_STATUS
    return None
