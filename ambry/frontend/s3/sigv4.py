"""AWS Signature Version 4 for the S3 API: canonical requests, signing keys, verification.

Owns the pure arithmetic of SigV4 as S3 uses it: parsing the ``Authorization`` header and the
presigned-URL query parameters, the canonical request (URI, query, headers, payload hash), the
string to sign, the derived signing key, and the per-chunk / trailer strings of streaming
uploads (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]``). :func:`verify` takes the values
of one request and returns who signed it, or raises :class:`AuthError` with the S3 error code.
A header-signed request is dated by ``x-amz-date``, or, without it, by its ``Date`` header
(which must then be signed; the string to sign holds it as ``YYYYMMDDTHHMMSSZ``), with the
same clock-skew check.

Does not own any I/O: the access-key table, the clock and the request are arguments, and the
body (whose hash a header may claim) is verified by the caller while it streams
(``ambry.frontend.s3.payload``).

Canonical URI: S3 signs the path as the client put it on the wire (encoded once, never
normalised). Clients differ in which characters they escape, so :func:`verify` accepts the
signature over the raw path, or over the path re-encoded by AWS's rules (unreserved
``A-Za-z0-9-._~`` kept, ``/`` kept, everything else ``%XX`` in UTF-8); both are what some
client signs, and neither lets a signature cover another request.
"""

from __future__ import annotations

import calendar
import datetime
import email.utils
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "MAX_PRESIGN_EXPIRES_S",
    "MAX_SKEW_S",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "AuthError",
    "Authorized",
    "ParsedAuth",
    "canonical_query",
    "canonical_request",
    "chunk_string_to_sign",
    "parse_amz_date",
    "parse_authorization_header",
    "parse_date_header",
    "parse_presigned_query",
    "request_date",
    "sign",
    "signing_key",
    "string_to_sign",
    "trailer_string_to_sign",
    "uri_encode",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: A header-signed request dated further than this from the server's clock is refused.
MAX_SKEW_S = 15 * 60
#: The longest validity of a presigned URL (AWS: 7 days).
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600

_PAYLOAD_MODES = frozenset({UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER,
                            STREAMING_UNSIGNED_TRAILER})
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_AMZ_DATE = re.compile(r"([0-9]{8})T[0-9]{6}Z", re.ASCII)
_UNRESERVED = "-_.~"  # plus ASCII letters and digits, which quote() never escapes
_SPACES = re.compile(r" +")


class AuthError(Exception):
    """A request that fails authentication. ``code`` is the S3 error code, ``status`` the HTTP
    status S3 answers with. The message never contains the expected signature."""

    def __init__(self, code: str, message: str, status: int = 403,
                 extra: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = dict(extra or {})  # more elements of the error XML (HeadersNotSigned)


@dataclass(frozen=True, slots=True)
class ParsedAuth:
    """The signature fields of a request, from its header or its presigned query."""

    access_key: str
    date: str           # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str       # YYYYMMDDTHHMMSSZ
    presigned: bool
    expires_s: int = 0  # presigned only

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True, slots=True)
class Authorized:
    """A verified request: who signed it and what a streaming body needs to go on verifying."""

    access_key: str
    payload_hash: str   # x-amz-content-sha256 as signed (a hex hash or one of the modes)
    key: bytes          # the signing key, for chunk signatures
    scope: str
    amz_date: str
    seed_signature: str
    #: lower-case names of the headers whose values the signature covers: SignedHeaders, and
    #: those the string to sign holds anyway (``x-amz-date`` of header auth, the payload hash)
    covered: frozenset[str] = frozenset()
    #: a presigned URL (its holder need not be its signer), not a header-signed request
    presigned: bool = False


def uri_encode(text: str, *, keep_slash: bool = False) -> str:
    """AWS's URI encoding: unreserved characters kept, the rest ``%XX`` of UTF-8, upper hex."""
    return quote(text, safe=_UNRESERVED + ("/" if keep_slash else ""), encoding="utf-8",
                 errors="strict")


def canonical_query(pairs: Iterable[tuple[str, str]], exclude: frozenset[str] = frozenset()
                    ) -> str:
    """Decoded query pairs -> the canonical query string (encoded, sorted by name then
    value). Names in ``exclude`` (``X-Amz-Signature``) are left out."""
    enc = sorted((uri_encode(k), uri_encode(v)) for k, v in pairs if k not in exclude)
    return "&".join(f"{k}={v}" for k, v in enc)


def _canonical_header_value(values: Sequence[str]) -> str:
    return ",".join(_SPACES.sub(" ", v.strip(" \t")) for v in values)


def canonical_request(method: str, canonical_uri: str, query: str,
                      headers: Mapping[str, Sequence[str]], signed_headers: Sequence[str],
                      payload_hash: str) -> str:
    """The canonical request. ``headers`` maps lower-case names to every value given."""
    lines = [method, canonical_uri, query]
    lines += [f"{h}:{_canonical_header_value(headers.get(h, ()))}" for h in signed_headers]
    lines += ["", ";".join(signed_headers), payload_hash]
    return "\n".join(lines)


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    # surrogateescape: aiohttp decodes header bytes that are not UTF-8 that way, so this
    # hashes the bytes as sent (as AWS does) instead of failing on them
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = hmac.new(("AWS4" + secret).encode("utf-8"), date.encode("utf-8"), hashlib.sha256)
    for part in (region, service, "aws4_request"):
        k = hmac.new(k.digest(), part.encode("utf-8"), hashlib.sha256)
    return k.digest()


#: The keys derived lately: a key depends only on (secret, day, region, service), so every
#: request of a client on one day shares it (four HMACs less per request). Bounded; a
#: rotated secret is another entry, never the old key.
_derived_key = functools.lru_cache(maxsize=64)(signing_key)


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def chunk_string_to_sign(amz_date: str, scope: str, previous_signature: str,
                         chunk_sha256_hex: str) -> str:
    """String to sign of one chunk of ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``."""
    return (f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous_signature}\n"
            f"{EMPTY_SHA256}\n{chunk_sha256_hex}")


def trailer_string_to_sign(amz_date: str, scope: str, previous_signature: str,
                           trailer: bytes) -> str:
    """String to sign of the trailer of ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``;
    ``trailer`` is every ``name:value\\n`` line, in the order sent."""
    return (f"AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous_signature}\n"
            f"{hashlib.sha256(trailer).hexdigest()}")


def parse_amz_date(text: str) -> int:
    """``20130524T000000Z`` -> unix seconds; ValueError if malformed."""
    if _AMZ_DATE.fullmatch(text) is None:
        raise ValueError(f"bad x-amz-date {text!r}")
    # the fields by position (time.strptime took ~2 % of a frontend's CPU per S3 request);
    # the same ranges as strptime's: a real calendar day, hours to 23, minutes to 59,
    # seconds to 61
    y, mo, d = int(text[0:4]), int(text[4:6]), int(text[6:8])
    hh, mm, ss = int(text[9:11]), int(text[11:13]), int(text[13:15])
    datetime.date(y, mo, d)  # ValueError for a day that does not exist
    if hh > 23 or mm > 59 or ss > 61:
        raise ValueError(f"bad x-amz-date {text!r}")
    return calendar.timegm((y, mo, d, hh, mm, ss, 0, 0, 0))


def parse_date_header(text: str) -> str:
    """An HTTP ``Date`` (RFC 7231: IMF-fixdate, RFC 850 or asctime; botocore writes
    ``-0000`` for GMT) -> the ``YYYYMMDDTHHMMSSZ`` a SigV4 string to sign holds for it;
    ValueError if it is not a date. A date without a zone is GMT, as HTTP dates are."""
    try:
        dt = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError) as e:
        raise ValueError(f"bad Date {text[:64]!r}: {e}") from None
    ts = calendar.timegm(dt.utctimetuple())
    if not 0 <= ts < 253402300800:  # years 1970..9999: the basic format has 4 digits
        raise ValueError(f"Date {text[:64]!r} out of range")
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts))


def request_date(headers: Mapping[str, Sequence[str]]) -> tuple[str, str] | None:
    """The date a header-signed request is signed at, and the header it came from:
    ``x-amz-date`` when present (it wins over ``Date``, as on AWS), else ``Date``
    (botocore signs with it whenever the caller set one). None when neither is there;
    AuthError when the one used is not a date."""
    amz = headers.get("x-amz-date")
    if amz:
        return amz[0], "x-amz-date"
    date = headers.get("date")
    if not date:
        return None
    try:
        return parse_date_header(date[0]), "date"
    except ValueError:
        raise AuthError("AccessDenied", "AWS authentication requires a valid Date or "
                                        "x-amz-date header") from None


def _parse_credential(text: str, code: str) -> tuple[str, str, str, str]:
    parts = text.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise AuthError(code, f"malformed credential {text!r}", 400)
    if re.fullmatch(r"[0-9]{8}", parts[1], re.ASCII) is None:
        raise AuthError(code, "the credential date must be YYYYMMDD", 400)
    if parts[3] != "s3":
        raise AuthError(code, f"the credential names service {parts[3]!r}, not s3", 400)
    return parts[0], parts[1], parts[2], parts[3]


def _parse_signed_headers(text: str, code: str) -> tuple[str, ...]:
    names = tuple(text.split(";"))
    if not text or any(not n or n != n.lower() for n in names) or list(names) != sorted(names):
        raise AuthError(code, "SignedHeaders must be sorted lower-case names", 400)
    if "host" not in names:
        raise AuthError(code, "the host header must be signed", 400)
    return names


def parse_authorization_header(value: str, amz_date: str | None) -> ParsedAuth:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    code = "AuthorizationHeaderMalformed"
    algo, _, rest = value.strip().partition(" ")
    if algo != ALGORITHM:
        raise AuthError("InvalidRequest" if algo == "AWS" else code,
                        "only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported", 400)
    fields: dict[str, str] = {}
    for item in rest.split(","):
        k, eq, v = item.strip().partition("=")
        if not eq or k in fields:
            raise AuthError(code, "malformed Authorization header", 400)
        fields[k] = v
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise AuthError(code, "the Authorization header needs Credential, SignedHeaders and "
                              "Signature", 400)
    ak, date, region, service = _parse_credential(fields["Credential"], code)
    if amz_date is None:
        raise AuthError("AccessDenied", "AWS authentication requires a valid Date or "
                                        "x-amz-date header", 403)
    if _HEX64.fullmatch(fields["Signature"]) is None:
        raise AuthError(code, "the signature must be 64 lower-case hex digits", 400)
    return ParsedAuth(ak, date, region, service,
                      _parse_signed_headers(fields["SignedHeaders"], code),
                      fields["Signature"], amz_date, presigned=False)


def parse_presigned_query(query: Mapping[str, str]) -> ParsedAuth:
    """The ``X-Amz-*`` parameters of a presigned URL."""
    code = "AuthorizationQueryParametersError"
    need = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
            "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [n for n in need if n not in query]
    if missing:
        raise AuthError(code, f"presigned URL misses {', '.join(missing)}", 400)
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise AuthError(code, "X-Amz-Algorithm must be AWS4-HMAC-SHA256", 400)
    ak, date, region, service = _parse_credential(query["X-Amz-Credential"], code)
    expires = query["X-Amz-Expires"]
    if re.fullmatch(r"-?[0-9]{1,10}", expires, re.ASCII) is None:
        raise AuthError(code, "X-Amz-Expires should be a number", 400)
    # out of range is 403, as AWS answers; 0 parses, and then has expired (403 AccessDenied)
    if int(expires) < 0:
        raise AuthError(code, "X-Amz-Expires must be non-negative", 403)
    if int(expires) > MAX_PRESIGN_EXPIRES_S:
        raise AuthError(code, f"X-Amz-Expires must be less than a week (in seconds) that is "
                              f"{MAX_PRESIGN_EXPIRES_S}", 403)
    if _HEX64.fullmatch(query["X-Amz-Signature"]) is None:
        raise AuthError(code, "X-Amz-Signature must be 64 lower-case hex digits", 400)
    return ParsedAuth(ak, date, region, service,
                      _parse_signed_headers(query["X-Amz-SignedHeaders"], code),
                      query["X-Amz-Signature"], query["X-Amz-Date"], presigned=True,
                      expires_s=int(expires))


def verify(*, method: str, raw_path: str, query_pairs: Sequence[tuple[str, str]],
           headers: Mapping[str, Sequence[str]], secret_of: Callable[[str], str | None],
           now_s: float) -> Authorized:
    """Verify a signed request (header or presigned form).

    ``raw_path`` is the path as sent (percent-encoded, no query); ``query_pairs`` the decoded
    query; ``headers`` lower-case names to all their values; ``secret_of`` the secret of an
    access key (None if unknown). Raises :class:`AuthError`.
    """
    q = dict(query_pairs)
    auth_header = headers.get("authorization")
    if auth_header and "X-Amz-Signature" in q:
        raise AuthError("InvalidArgument", "only one auth mechanism allowed", 400)
    date_header = "x-amz-date"
    if auth_header:
        found = request_date(headers)
        amz_date = found[0] if found is not None else None
        parsed = parse_authorization_header(auth_header[0], amz_date)
        if found is not None:
            date_header = found[1]
            if date_header == "date" and "date" not in parsed.signed_headers:
                # the string to sign holds the time, but a Date that is not signed could be
                # swapped for another in transit: AWS refuses it too
                raise AuthError("AccessDenied", "the Date header must be signed when "
                                                "x-amz-date is absent")
        payload = (headers.get("x-amz-content-sha256") or [""])[0]
        if not payload:
            raise AuthError("InvalidRequest", "missing x-amz-content-sha256", 400)
        if payload not in _PAYLOAD_MODES and _HEX64.fullmatch(payload) is None:
            raise AuthError("InvalidArgument", "x-amz-content-sha256 must be a hex SHA-256 "
                                               "or a payload mode", 400)
    else:
        parsed = parse_presigned_query(q)
        payload = (headers.get("x-amz-content-sha256") or [UNSIGNED_PAYLOAD])[0]
    try:
        signed_at = parse_amz_date(parsed.amz_date)
    except ValueError:
        raise AuthError("AccessDenied", "x-amz-date must be YYYYMMDDTHHMMSSZ", 403) from None
    if parsed.amz_date[:8] != parsed.date:
        raise AuthError("SignatureDoesNotMatch", "the credential date is not the request's "
                                                 "date")
    if parsed.presigned:
        if now_s >= signed_at + parsed.expires_s:
            raise AuthError("AccessDenied", "Request has expired")
        if signed_at > now_s + MAX_SKEW_S:
            raise AuthError("AccessDenied", "Request is not valid yet")
    elif abs(now_s - signed_at) > MAX_SKEW_S:
        raise AuthError("RequestTimeTooSkewed", "The difference between the request time and "
                                                "the current time is too large.")
    for name in parsed.signed_headers:
        if name not in headers:
            raise AuthError(
                "AccessDenied" if parsed.presigned else "SignatureDoesNotMatch",
                f"signed header {name!r} is missing from the request")
    secret = secret_of(parsed.access_key)
    if secret is None:
        raise AuthError("InvalidAccessKeyId", "The AWS Access Key Id you provided does not "
                                              "exist in our records.")
    key = _derived_key(secret, parsed.date, parsed.region, parsed.service)
    try:
        query = canonical_query(query_pairs, frozenset({"X-Amz-Signature"})
                                if parsed.presigned else frozenset())
    except UnicodeEncodeError:  # raw bytes that are not UTF-8 in the query string
        raise AuthError("InvalidArgument", "the query string is not valid UTF-8", 400) from None
    covered = frozenset(parsed.signed_headers) | {"x-amz-content-sha256"} | \
        (frozenset() if parsed.presigned else {date_header})
    try:
        decoded_path = unquote(raw_path, encoding="utf-8", errors="strict")
        uris = [raw_path, uri_encode(decoded_path, keep_slash=True)]
    except UnicodeError:
        uris = [raw_path]
    for uri in dict.fromkeys(uris):
        canonical = canonical_request(method, uri, query, headers, parsed.signed_headers,
                                      payload)
        expected = sign(key, string_to_sign(parsed.amz_date, parsed.scope, canonical))
        if hmac.compare_digest(expected, parsed.signature):
            return Authorized(parsed.access_key, payload, key, parsed.scope, parsed.amz_date,
                              parsed.signature, covered, parsed.presigned)
    raise AuthError("SignatureDoesNotMatch", "The request signature we calculated does not "
                                             "match the signature you provided. Check your "
                                             "key and signing method.")
