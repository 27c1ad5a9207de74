"""Which stored content types the REST port serves as a sandboxed download (docs/security.md,
"Content served to browsers"): anything a browser could render as a scripted document, and
anything that does not parse as type/subtype (browsers parse types loosely)."""

from __future__ import annotations

import pytest

from ambry.frontend.browser import active_content_headers, is_active_type


@pytest.mark.parametrize("ctype", [
    "text/html", "TEXT/HTML; charset=utf-8", " text/html ", "application/xhtml+xml",
    "image/svg+xml", "text/xml", "application/xml", "application/atom+xml", "text/xsl",
    "multipart/x-mixed-replace; boundary=x", "text/x-html", "", "html", "text/html,text/plain",
    "text / html", "application/vnd.foo+xml; v=1"])
def test_types_a_browser_may_render_as_a_document_are_active(ctype: str) -> None:
    # an uploaded page or SVG served inline ran its script on the frontend's origin
    assert is_active_type(ctype)
    assert active_content_headers(ctype)["Content-Disposition"] == "attachment"
    assert "sandbox" in active_content_headers(ctype)["Content-Security-Policy"]


@pytest.mark.parametrize("ctype", [
    "application/octet-stream", "text/plain; charset=utf-8", "image/png", "application/json",
    "video/mp4", "application/x-itest", "application/pdf", "text/csv"])
def test_inert_types_are_served_inline(ctype: str) -> None:
    assert not is_active_type(ctype)
    assert active_content_headers(ctype, "a.bin") == {}


def test_the_download_keeps_the_stored_filename() -> None:
    h = active_content_headers("text/html", 'r\u00e9sum\u00e9 "1";.html')
    assert h["Content-Disposition"] == \
        "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22%3B.html"
