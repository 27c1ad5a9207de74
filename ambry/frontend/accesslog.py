"""The frontend's optional access log (``frontend.access_log``): one line per request.

Owns the logger name and the line format that both ports use, handed to aiohttp's own access
logger (``AppRunner(access_log=..., access_log_format=...)``), which times each request from
its first byte to the last byte of its reply. Does not own where the lines go: they are records
of the ``ambry.access`` logger at INFO, formatted like every other log line of the daemon
(plain or ``--log-format json``).
"""

from __future__ import annotations

import logging
from typing import Any

from ambry.common.config import FrontendConfig

__all__ = ["ACCESS_LOGGER", "access_log_options"]

#: The logger every access line goes to.
ACCESS_LOGGER = "ambry.access"


def _line_format(api: str, request_id_header: str, worker: int | None) -> str:
    # aiohttp's access log directives: %a client address, %r request line, %s status,
    # %b body bytes sent, %Tf duration in seconds (microsecond precision), %{H}o a reply
    # header, %{H}i a request header
    return (f'{api} %a "%r" %s %b %Tfs rid=%{{{request_id_header}}}o '
            f'"%{{User-Agent}}i"' + ("" if worker is None else f" worker={worker}"))


def access_log_options(fe: FrontendConfig, api: str, worker: int | None = None
                       ) -> dict[str, Any]:
    """Keyword arguments of ``web.AppRunner`` for ``api`` ("rest" or "s3"): aiohttp's access
    logger when ``fe.access_log`` is on, none otherwise (aiohttp's default is on). A line of
    one worker of several (``frontend.workers``) ends with ``worker=<index>``."""
    if not fe.access_log:
        return {"access_log": None}
    rid = "x-ambry-request-id" if api == "rest" else "x-amz-request-id"
    return {"access_log": logging.getLogger(ACCESS_LOGGER),
            "access_log_format": _line_format(api, rid, worker)}
