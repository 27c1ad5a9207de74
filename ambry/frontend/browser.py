"""What a blob response tells a browser: served as stored, never run on the frontend's origin.

Owns the headers that keep a blob's bytes inert in a browser (docs/security.md, "Content
served to browsers"). Blobs come back with the content type their uploader chose and with
``Access-Control-Allow-Origin: *``, and the REST port has no authentication: so anyone who can
upload could otherwise make the frontend's origin serve a page or an SVG that runs script.

* Every blob response carries ``X-Content-Type-Options: nosniff`` (REST and S3): a browser
  takes the stored type as it is, never sniffs a "text/plain" or an image into HTML or script.
* On the REST port, a blob whose type a browser would render as an active document (HTML,
  XHTML, SVG, any XML, ``multipart/x-mixed-replace``, and any type that does not parse as
  ``type/subtype``) is also sent with ``Content-Disposition: attachment`` (a download, not a
  page) and ``Content-Security-Policy: sandbox`` (if it is rendered anyway, e.g. in a frame or
  by a viewer that ignores the disposition, it runs in a unique opaque origin with scripts,
  forms and plugins off). The stored content type is still returned unchanged, so API clients
  see what was uploaded. The S3 port leaves the disposition to the object's own
  ``Content-Disposition`` (S3 semantics): every request there is signed by a key holder.

Does not own the other response headers (``app``, ``s3.objects``).
"""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = ["ACTIVE_CONTENT_HEADERS", "NOSNIFF", "active_content_headers", "is_active_type"]

#: Sent with every blob response of both APIs.
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
#: Sent besides :data:`NOSNIFF` with a REST blob response of an active type.
ACTIVE_CONTENT_HEADERS = {"Content-Disposition": "attachment",
                          "Content-Security-Policy": "sandbox; default-src 'none'"}

# Types a browser renders as a document that can run script (by essence: type/subtype).
_ACTIVE_ESSENCES = frozenset({
    "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml",
    "text/xsl", "application/xslt+xml", "application/mathml+xml", "application/rdf+xml",
    "application/vnd.wap.xhtml+xml", "multipart/x-mixed-replace",
})
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_ESSENCE = re.compile(rf"{_TOKEN}/{_TOKEN}", re.ASCII)


def is_active_type(content_type: str) -> bool:
    """Whether a browser could render ``content_type`` as an active document. A type that
    does not parse as ``type/subtype`` counts as active: browsers parse loosely, so only a
    type known to be inert is served inline."""
    essence = content_type.split(";", 1)[0].strip(" \t").lower()
    if _ESSENCE.fullmatch(essence) is None:
        return True
    return (essence in _ACTIVE_ESSENCES or essence.endswith("+xml") or "html" in essence
            or "xml" in essence.split("/", 1)[1])


def active_content_headers(content_type: str, filename: str = "") -> dict[str, str]:
    """The extra headers of a REST blob response of ``content_type`` (empty if inert); the
    stored filename, if any, names the download (RFC 6266 ``filename*``)."""
    if not is_active_type(content_type):
        return {}
    out = dict(ACTIVE_CONTENT_HEADERS)
    if filename:
        out["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
    return out
