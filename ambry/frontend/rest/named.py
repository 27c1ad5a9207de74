"""The REST routes of named blobs: ``PUT`` / ``POST`` / ``GET`` / ``HEAD`` / ``DELETE
/named/<a>/<c>/<name>``, the listing ``GET /named/<a>/<c>`` (paged, with an optional
delimiter) and the containers of an account, ``GET /named/<a>``.

Owns reading the name and the listing's query (page token, ``maxResults``, delimiter) and the
JSON a listing answers. Does not own what a name means in the store (``router``, ``names``)
or reading a blob (``blobs``, which a name's GET hands over to).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from ambry.common.blobid import BlobId
from ambry.common.config import Account, Container
from ambry.common.errors import InvalidArgument
from ambry.frontend.headers import (
    parse_blob_size,
    parse_bool_header,
    parse_content_xxh3,
    validate_blob_name,
)
from ambry.frontend.rest.base import Deps, RestRoutes
from ambry.frontend.rest.blobs import BlobRoutes
from ambry.frontend.s3.listing import ListEntry, ListingBuilder
from ambry.protocol.messages import NameRecord

__all__ = ["NamedRoutes"]

_MAX_LIST_RESULTS = 10_000
_MAX_DELIMITER_BYTES = 64


class NamedRoutes(RestRoutes):
    def __init__(self, deps: Deps, blobs: BlobRoutes) -> None:
        super().__init__(deps)
        self._blobs = blobs

    async def _named_target(self, request: web.Request) -> tuple[Account, Container, str]:
        account, container = await self._resolve(request.match_info["account"],
                                           request.match_info["container"])
        return account, container, validate_blob_name(request.match_info["name"])

    async def put_named(self, request: web.Request) -> web.Response:
        account, container, name = await self._named_target(request)
        props, um = self.props_from(request, account, container)
        h = request.headers
        stored = await self.router.put_named(
            name, self.body_reader(request), account_id=account.id,
            container_id=container.id, props=props, usermeta=um,
            declared_size=parse_blob_size(h.get("x-ambry-blob-size")),
            content_xxh3=parse_content_xxh3(h.get("x-ambry-content-xxh3")),
            upsert=parse_bool_header(h.get("x-ambry-named-upsert")), rid=request["rid"],
            body_bytes_hint=request.content_length)
        return self._created(stored.blob_id.to_str(), stored.size, stored.created_ms)

    async def stitch_named(self, request: web.Request) -> web.Response:
        """``POST /named/<a>/<c>/<name>``: stitch chunks into a blob under a name (the
        resumable, parallel upload of a named blob), as ``PUT`` would store it."""
        account, container, name = await self._named_target(request)
        props, um = self.props_from(request, account, container)
        chunk_ids = await self._stitch_ids(request)
        stored = await self.router.stitch_named(
            name, chunk_ids, account_id=account.id, container_id=container.id, props=props,
            usermeta=um, upsert=parse_bool_header(request.headers.get("x-ambry-named-upsert")),
            rid=request["rid"])
        return self._created(stored.blob_id.to_str(), stored.size, stored.created_ms)

    async def get_named(self, request: web.Request) -> web.StreamResponse:
        account, container, name = await self._named_target(request)
        bid = await self.router.resolve_name(account.id, container.id, name, request["rid"])
        return await self._blobs.get_blob(request, bid)

    async def delete_named(self, request: web.Request) -> web.Response:
        account, container, name = await self._named_target(request)
        await self.router.delete_named(name, account_id=account.id,
                                       container_id=container.id, rid=request["rid"])
        return web.Response(status=202)

    async def list_named(self, request: web.Request) -> web.Response:
        account, container = await self._resolve(request.match_info["account"],
                                           request.match_info["container"])
        q = request.query
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        try:
            limit = int(q.get("maxResults", "1000"))
        except ValueError:
            raise InvalidArgument("maxResults must be an integer") from None
        if not 1 <= limit <= _MAX_LIST_RESULTS:
            raise InvalidArgument(f"maxResults must be 1..{_MAX_LIST_RESULTS}")
        start_after = ""
        if q.get("page"):
            try:
                # validate=True: urlsafe_b64decode silently drops bad characters, which
                # turned a garbled token into "from the start" instead of a 400
                start_after = base64.b64decode(q["page"] + "=" * (-len(q["page"]) % 4),
                                               altchars=b"-_", validate=True).decode("utf-8")
            except (binascii.Error, ValueError, UnicodeDecodeError):
                raise InvalidArgument("bad page token") from None
        if delimiter:
            return await self._list_named_delimited(request, account, container, prefix,
                                                    delimiter, start_after, limit)
        entries, more = await self.router.list_named(
            account_id=account.id, container_id=container.id, prefix=prefix,
            start_after=start_after, limit=limit, rid=request["rid"])
        body: dict[str, Any] = {"entries": [_listed(e) for e in entries]}
        if more and entries:
            body["nextPageToken"] = _page_token(entries[-1].name)
        return web.json_response(body)

    async def _list_named_delimited(self, request: web.Request, account: Account,
                                    container: Container, prefix: str, delimiter: str,
                                    start_after: str, limit: int) -> web.Response:
        """One page of names and common prefixes (``delimiter``, as S3's ListObjects): the
        names below a rolled-up prefix are skipped by the next read, not read and dropped,
        so listing a directory costs its direct children, not every name below it."""
        if len(delimiter.encode()) > _MAX_DELIMITER_BYTES:
            raise InvalidArgument(f"delimiter must be at most {_MAX_DELIMITER_BYTES} bytes")
        b = ListingBuilder(prefix=prefix, delimiter=delimiter, max_keys=limit,
                           marker=start_after)
        records: dict[str, NameRecord] = {}
        while not b.done:
            entries, more = await self.router.list_named(
                account_id=account.id, container_id=container.id, prefix=prefix,
                start_after=b.next_start, limit=b.read_limit, rid=request["rid"])
            for e in entries:
                records[e.name] = e
            b.feed([ListEntry(e.name, e.size, e.created_ms, "") for e in entries],
                   more and bool(entries))
            # only the page's own names are kept: memory is bounded by one page
            kept = {x.key for x in b.page.contents}
            records = {k: v for k, v in records.items() if k in kept}
        page = b.page
        body: dict[str, Any] = {"entries": [_listed(records[x.key]) for x in page.contents],
                                "commonPrefixes": list(page.common_prefixes)}
        if page.is_truncated and page.next_marker is not None:
            body["nextPageToken"] = _page_token(page.next_marker)
        return web.json_response(body)

    async def list_containers(self, request: web.Request) -> web.Response:
        """The containers of an account (config ones and those created at run time), so a
        client can tell an unknown container from an empty one."""
        aname = request.match_info["account"]
        account = self.router.containers.account(aname)
        if account is None:
            raise InvalidArgument(f"unknown account {aname!r}")
        listed = await self.router.containers.list(account, request["rid"])
        return web.json_response({"account": account.name, "containers": sorted(
            {c.name for c, _ in listed})})


def _listed(e: NameRecord) -> dict[str, Any]:
    return {"name": e.name, "blobId": BlobId.from_bytes(e.blob_id).to_str(), "size": e.size,
            "contentType": e.content_type, "createdMs": e.created_ms}


def _page_token(after: str) -> str:
    """``nextPageToken``: the last name (or common prefix) of the page, base64url."""
    return base64.urlsafe_b64encode(after.encode()).rstrip(b"=").decode()
