"""Signed URLs of the REST API: issuing one (``GET /signedUrl``) and honouring a request that
carries one (its query parameters become the request's ``x-ambry-*`` headers).

Owns which headers a URL carries, its lifetime limits and the key it is signed with. Does not
own the signature arithmetic (``ambry.frontend.signing``).
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ambry.common.errors import InvalidArgument
from ambry.frontend.headers import check_header_text
from ambry.frontend.rest.base import MissingHeader, RestRoutes
from ambry.frontend.signing import sign_url, verify_url

__all__ = ["SignedUrls"]


class SignedUrls(RestRoutes):
    async def signed_url(self, request: web.Request) -> web.Response:
        h = request.headers
        kind = h.get("x-ambry-url-type", "").upper()
        if kind not in ("GET", "POST"):
            raise MissingHeader("x-ambry-url-type must be GET or POST")
        try:
            ttl = int(h.get("x-ambry-url-ttl-secs", "3600"))
        except ValueError:
            raise InvalidArgument("x-ambry-url-ttl-secs must be an integer") from None
        if not 1 <= ttl <= self.config.frontend.signed_url_max_ttl_s:
            raise InvalidArgument("x-ambry-url-ttl-secs out of range")
        params = {k.lower(): v for k, v in h.items()
                  if k.lower().startswith("x-ambry-") and k.lower() not in
                  ("x-ambry-url-type", "x-ambry-url-ttl-secs", "x-ambry-request-id",
                   "x-ambry-blob-id")}
        if kind == "GET":
            if not h.get("x-ambry-blob-id"):
                raise MissingHeader("missing required header x-ambry-blob-id")
            bid = self.blob_id(h["x-ambry-blob-id"].lstrip("/"))
            path = f"/{bid.to_str()}"
        else:
            account, container = await self.account_and_container(request)
            self.props_from(request, account, container)  # the upload headers must be valid
            path = "/"
        expires = self.clock.now_ms() // 1000 + ttl
        key = self._signing_key()
        host = check_header_text("Host", request.host)  # echoed in the URL
        url = f"{request.scheme}://{host}" + sign_url(key, kind, path, params, expires)
        return web.Response(status=200, headers={"x-ambry-signed-url": url})

    def apply(self, request: web.Request) -> web.Request:
        """A signed URL's query parameters become the request's x-ambry-* headers."""
        params = verify_url(self._signing_key(), request.method, request.path, request.query,
                            self.clock.now_ms() // 1000)
        headers = CIMultiDict(request.headers)
        for k, v in params.items():
            headers[k] = v
        return request.clone(headers=CIMultiDictProxy(headers))
