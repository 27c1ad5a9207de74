"""Signed URLs (DESIGN.md section 4, ``GET /signedUrl``): HMAC-SHA256 over a canonical request.

Owns the URL layout, the canonical string that is signed, and verification. Does not own the
secret (frontend config), choosing which headers become parameters, or turning a verified URL
back into a request (the router does both).

A signed URL is ``<path>?<every param>&x-ambry-expires=<unix s>&x-ambry-signature=<sig>``.
``sig`` is URL-safe base64 without padding (43 characters) of HMAC-SHA256(secret, canonical)::

    canonical = "AMBRY-HMAC-SHA256-V1" LF method LF path LF k1=v1&k2=v2&...

with the parameters (``x-ambry-expires`` included, the signature excluded) sorted by name and
every field percent-encoded with no safe characters, so no two different requests share a
canonical string. The method is case-sensitive (RFC 9110); the path is the *decoded* path
(aiohttp's ``request.path``), percent-encoded in the URL by :func:`sign_url`. A URL is valid
while ``now_s < x-ambry-expires``.

Any failure raises :class:`SignatureInvalid` (HTTP 401) with a message that never contains the
expected signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote

from ambry.common.errors import AmbryError

__all__ = [
    "EXPIRES_PARAM",
    "SIGNATURE_PARAM",
    "SignatureInvalid",
    "sign_url",
    "verify_query_string",
    "verify_url",
]

EXPIRES_PARAM = "x-ambry-expires"
SIGNATURE_PARAM = "x-ambry-signature"
_SCHEME = "AMBRY-HMAC-SHA256-V1"
_DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)
_MAX_QUERY_PARAMS = 100


class SignatureInvalid(AmbryError):
    """A signed URL was altered, is for another method or path, expired, or is malformed."""

    code = "SIGNATURE_INVALID"


def _q(s: str) -> str:
    # errors="strict": a lone surrogate cannot be signed or verified, it is a bad request.
    return quote(s, safe="", encoding="utf-8", errors="strict")


def _signature(secret: bytes, method: str, path: str, params: Mapping[str, str]) -> str:
    query = "&".join(f"{_q(k)}={_q(params[k])}" for k in sorted(params))
    canonical = "\n".join((_SCHEME, _q(method), _q(path), query)).encode("ascii")
    mac = hmac.new(secret, canonical, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def sign_url(secret: bytes, method: str, path: str, params: Mapping[str, str],
             expires_at_s: int) -> str:
    """``path?query`` carrying ``params``, the expiry and the signature over all of them.

    ``ValueError`` (programmer error) for an empty secret, a path not starting with ``/``, a
    reserved parameter name in ``params``, a negative expiry, or text that is not valid UTF-8.
    """
    if not secret:
        raise ValueError("signing secret must not be empty")
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    if EXPIRES_PARAM in params or SIGNATURE_PARAM in params:
        raise ValueError(f"{EXPIRES_PARAM} and {SIGNATURE_PARAM} are reserved parameter names")
    if not 0 <= expires_at_s < 10**19:
        raise ValueError(f"expiry must be a unix time in seconds, not {expires_at_s}")
    signed = dict(params)
    signed[EXPIRES_PARAM] = str(expires_at_s)
    sig = _signature(secret, method, path, signed)
    query = "&".join(f"{_q(k)}={_q(v)}" for k, v in signed.items())
    return f"{quote(path, safe='/', errors='strict')}?{query}&{SIGNATURE_PARAM}={sig}"


def verify_url(secret: bytes, method: str, path: str, query: Mapping[str, str],
               now_s: int) -> dict[str, str]:
    """The signed parameters (without expiry and signature) of a valid URL; else SignatureInvalid.

    ``query`` is the decoded query (aiohttp's ``request.query``). A parameter given more than
    once is rejected (a multidict lists every pair in ``items()`` and counts it in ``len``).
    """
    if not secret:
        raise ValueError("signing secret must not be empty")
    pairs = list(query.items())
    params = dict(pairs)
    if len(params) != len(pairs) or len(params) != len(query):
        raise SignatureInvalid("a signed URL parameter is repeated")
    if len(params) > _MAX_QUERY_PARAMS:
        raise SignatureInvalid("too many query parameters")
    given = params.pop(SIGNATURE_PARAM, None)
    if given is None:
        raise SignatureInvalid("the URL is not signed")
    expires = params.get(EXPIRES_PARAM)
    if expires is None or _DIGITS.fullmatch(expires) is None:
        raise SignatureInvalid("the signed URL has no valid expiry")
    try:
        expected = _signature(secret, method, path, params)
    except UnicodeEncodeError:
        raise SignatureInvalid("the signed URL is not valid UTF-8") from None
    # Compare the text form: two base64 texts can decode to the same bytes (padding bits), and
    # any change to the URL must fail. compare_digest leaks at most the length.
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("ascii")):
        raise SignatureInvalid("the URL signature does not match")
    # Expiry is checked after the signature, so a forged expiry always reads as "altered".
    if now_s >= int(expires):
        raise SignatureInvalid("the signed URL has expired")
    del params[EXPIRES_PARAM]
    return params


def verify_query_string(secret: bytes, method: str, path: str, raw_query: str,
                        now_s: int) -> dict[str, str]:
    """:func:`verify_url` on an undecoded query string (``request.query_string``).

    Parses strictly: every field must be ``name=value``, ``+`` is a plus sign, not a space.
    """
    try:
        pairs = parse_qsl(raw_query.replace("+", "%2B"), keep_blank_values=True,
                          strict_parsing=True, errors="strict",
                          max_num_fields=_MAX_QUERY_PARAMS)
    except (ValueError, UnicodeDecodeError):
        raise SignatureInvalid("malformed query string") from None
    names = [k for k, _ in pairs]
    if len(names) != len(set(names)):
        raise SignatureInvalid("a signed URL parameter is repeated")
    return verify_url(secret, method, path, dict(pairs), now_s)
