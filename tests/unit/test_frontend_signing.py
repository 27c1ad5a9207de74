"""Signed URLs: round trip through a real URL parser; any change to any part is a 401."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st
from multidict import MultiDict
from yarl import URL

from ambry.common.errors import AmbryError
from ambry.frontend.signing import (
    EXPIRES_PARAM,
    SIGNATURE_PARAM,
    SignatureInvalid,
    sign_url,
    verify_query_string,
    verify_url,
)

# Pure CPU work, but shared CI machines are loaded: no per-example deadline.
NO_DEADLINE = settings(deadline=None)

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000
EXPIRES = NOW + 300

# Dot segments are left out: URL parsers (and aiohttp) normalise "/a/../b" before routing.
segments = st.text(min_size=1, max_size=12).filter(lambda s: s not in (".", "..") and "/" not in s)
paths = st.lists(segments, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"])
param_names = st.text(min_size=1, max_size=20).filter(
    lambda k: k not in (EXPIRES_PARAM, SIGNATURE_PARAM))
params = st.dictionaries(param_names, st.text(max_size=30), max_size=6)


def parse(signed: str) -> tuple[str, MultiDict[str]]:
    """What aiohttp hands the router: the decoded path and query of the request URL."""
    url = URL(signed)
    return url.path, MultiDict(url.query)


def raw_query(signed: str) -> str:
    return urlsplit(signed).query


@NO_DEADLINE
@given(methods, paths, params)
def test_round_trip(method: str, path: str, ps: dict[str, str]) -> None:
    signed = sign_url(SECRET, method, path, ps, EXPIRES)
    note(signed)
    got_path, query = parse(signed)
    assert got_path == path
    assert verify_url(SECRET, method, got_path, query, NOW) == ps
    assert verify_query_string(SECRET, method, path, raw_query(signed), NOW) == ps


def _flip(text: str, i: int, c: str) -> str:
    return text[:i] + c + text[i + 1:]


@NO_DEADLINE
@given(methods, paths, params, st.data())
def test_changing_any_character_anywhere_fails(method: str, path: str, ps: dict[str, str],
                                               data: st.DataObject) -> None:
    signed = sign_url(SECRET, method, path, ps, EXPIRES)
    _, query = parse(signed)
    fields = dict(query)
    target = data.draw(st.sampled_from(["method", "path", "key", "value"]))
    if target == "method":
        i = data.draw(st.integers(0, len(method) - 1))
        c = data.draw(st.characters().filter(lambda c: c != method[i]))
        method = _flip(method, i, c)
    elif target == "path":
        i = data.draw(st.integers(0, len(path) - 1))
        c = data.draw(st.characters().filter(lambda c: c != path[i]))
        path = _flip(path, i, c)
    else:
        key = data.draw(st.sampled_from(sorted(fields)))
        if target == "key":
            i = data.draw(st.integers(0, len(key) - 1))
            c = data.draw(st.characters().filter(lambda c: c != key[i]))
            value = fields.pop(key)
            fields[_flip(key, i, c)] = value
        else:
            value = fields[key]
            if value:
                i = data.draw(st.integers(0, len(value) - 1))
                c = data.draw(st.characters().filter(lambda c: c != value[i]))
                fields[key] = _flip(value, i, c)
            else:
                fields[key] = data.draw(st.text(min_size=1, max_size=3))
    note(f"{target}: method={method!r} path={path!r} fields={fields}")
    with pytest.raises(SignatureInvalid):
        verify_url(SECRET, method, path, fields, NOW)


@NO_DEADLINE
@given(paths, params, st.integers(0, 42), st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
def test_every_signature_character_counts(path: str, ps: dict[str, str], i: int, c: str) -> None:
    # Includes the last character, whose low 2 bits are base64 padding: the text is compared.
    _, query = parse(sign_url(SECRET, "GET", path, ps, EXPIRES))
    fields = dict(query)
    sig = fields[SIGNATURE_PARAM]
    assume(sig[i] != c)
    fields[SIGNATURE_PARAM] = _flip(sig, i, c)
    with pytest.raises(SignatureInvalid):
        verify_url(SECRET, "GET", path, fields, NOW)


@NO_DEADLINE
@given(params, st.integers(0, 10**6))
def test_expired_urls_fail_and_live_ones_pass(ps: dict[str, str], age_s: int) -> None:
    signed = sign_url(SECRET, "GET", "/blob", ps, EXPIRES)
    _, query = parse(signed)
    assert verify_url(SECRET, "GET", "/blob", query, EXPIRES - 1) == ps
    with pytest.raises(SignatureInvalid, match="expired"):
        verify_url(SECRET, "GET", "/blob", query, EXPIRES + age_s)


def _signed_fields(ps: dict[str, str] | None = None) -> dict[str, str]:
    return dict(parse(sign_url(SECRET, "POST", "/", ps or {"x-ambry-ttl": "60"}, EXPIRES))[1])


def test_added_removed_or_repeated_parameters_fail() -> None:
    base = _signed_fields({"x-ambry-ttl": "60", "x-ambry-service-id": "svc"})
    assert verify_url(SECRET, "POST", "/", base, NOW) == {"x-ambry-ttl": "60",
                                                          "x-ambry-service-id": "svc"}
    for bad in ({**base, "x-ambry-um-owner": "eve"},
                {k: v for k, v in base.items() if k != "x-ambry-ttl"},
                {k: v for k, v in base.items() if k != EXPIRES_PARAM},
                {k: v for k, v in base.items() if k != SIGNATURE_PARAM},
                {**base, EXPIRES_PARAM: str(EXPIRES + 1000)},
                {**base, EXPIRES_PARAM: "+" + str(EXPIRES)},
                {**base, SIGNATURE_PARAM: ""},
                {**base, SIGNATURE_PARAM: base[SIGNATURE_PARAM] + "A"},
                {**base, SIGNATURE_PARAM: "é" * 43}):
        with pytest.raises(SignatureInvalid):
            verify_url(SECRET, "POST", "/", bad, NOW)
    repeated = MultiDict(base)
    repeated.add("x-ambry-ttl", "60")
    with pytest.raises(SignatureInvalid, match="repeated"):
        verify_url(SECRET, "POST", "/", repeated, NOW)
    qs = raw_query(sign_url(SECRET, "POST", "/", {"x-ambry-ttl": "60"}, EXPIRES))
    with pytest.raises(SignatureInvalid, match="repeated"):
        verify_query_string(SECRET, "POST", "/", qs + "&x-ambry-ttl=60", NOW)
    for garbage in ("a", qs + "&&", qs + "&b", "%ff=1"):
        with pytest.raises(SignatureInvalid):
            verify_query_string(SECRET, "POST", "/", garbage, NOW)


def test_other_method_path_or_secret_fails() -> None:
    fields = _signed_fields()
    for method, path, secret in (("GET", "/", SECRET), ("post", "/", SECRET),
                                 ("POST", "/x", SECRET), ("POST", "/", SECRET + b"!")):
        with pytest.raises(SignatureInvalid):
            verify_url(secret, method, path, fields, NOW)


def test_signature_invalid_is_a_typed_error() -> None:
    assert issubclass(SignatureInvalid, AmbryError)
    assert SignatureInvalid.code == "SIGNATURE_INVALID"


def test_sign_url_programmer_errors() -> None:
    for args in ((b"", "GET", "/", {}, EXPIRES), (SECRET, "GET", "blob", {}, EXPIRES),
                 (SECRET, "GET", "/", {EXPIRES_PARAM: "1"}, EXPIRES),
                 (SECRET, "GET", "/", {SIGNATURE_PARAM: "1"}, EXPIRES),
                 (SECRET, "GET", "/", {}, -1),
                 (SECRET, "GET", "/", {"k": "\udc80"}, EXPIRES)):
        with pytest.raises(ValueError):
            sign_url(*args)


def test_url_layout() -> None:
    signed = sign_url(SECRET, "GET", "/AAEB", {"x-ambry-blob-id": "AAEB"}, 1234)
    assert signed.startswith("/AAEB?x-ambry-blob-id=AAEB&x-ambry-expires=1234&x-ambry-signature=")
    assert len(signed.rsplit("=", 1)[1]) == 43
