"""SigV4 requests dated by ``Date`` instead of ``x-amz-date`` (``ambry.frontend.s3.sigv4``)."""

from __future__ import annotations

import pytest

from ambry.frontend.s3.sigv4 import AuthError, parse_date_header, request_date


@pytest.mark.parametrize("text", ["Sun, 06 Nov 1994 08:49:37 GMT",   # IMF-fixdate
                                  "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
                                  "Sun Nov  6 08:49:37 1994",        # asctime
                                  "Sun, 06 Nov 1994 08:49:37 -0000",  # botocore's formatdate
                                  "Sun, 06 Nov 1994 10:49:37 +0200"])
def test_every_rfc7231_date_form_gives_the_same_signing_time(text: str) -> None:
    assert parse_date_header(text) == "19941106T084937Z"


@pytest.mark.parametrize("text", ["", "yesterday", "Sun, 06 Nov 1994", "20130524T000000Z",
                                  "Sun, 32 Nov 1994 08:49:37 GMT"])
def test_a_date_that_is_no_date_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_date_header(text)
    with pytest.raises(AuthError) as e:
        request_date({"date": [text]})
    assert (e.value.code, e.value.status) == ("AccessDenied", 403)


def test_x_amz_date_wins_over_date() -> None:
    both = {"x-amz-date": ["20130524T000000Z"], "date": ["Sun, 06 Nov 1994 08:49:37 GMT"]}
    assert request_date(both) == ("20130524T000000Z", "x-amz-date")
    assert request_date({"date": both["date"]}) == ("19941106T084937Z", "date")
    assert request_date({}) is None
