"""Requests being served by one frontend process, on both of its ports (REST and S3).

Owns one count, shared by the two apps as a declared collaborator: the REST app creates it
and its middleware counts REST requests, the S3 app is handed it and counts S3 requests.
The daemon's drain (``ambry.frontend.server``) waits for it to reach zero, and ``/metrics``
shows it (``ambry_frontend_inflight_requests``). Does not own the byte budget of uploads
(``frontend.inflight_budget_bytes``, kept by the router).
"""

from __future__ import annotations

__all__ = ["InFlight"]


class InFlight:
    """A count of requests in progress: every :meth:`begin` is paired with one :meth:`end`
    (in a ``finally``)."""

    def __init__(self) -> None:
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def begin(self) -> None:
        self._count += 1

    def end(self) -> None:
        assert self._count > 0, "InFlight.end without a begin"
        self._count -= 1
