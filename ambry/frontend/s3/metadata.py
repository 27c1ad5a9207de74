"""How an S3 object's metadata is kept in a named blob, and the write conditions on a key.

Owns the S3 layer's user-metadata keys (``s3.etag``, ``s3.checksum-*``, the stored content
headers as ``s3.<header>``, a client's own ``x-amz-meta-s3.*`` under ``s3.user.``), turning
a request's ``x-amz-meta-*`` and content headers into that map and back into stored bytes,
the ETag carried in a name entry's content type (so listings show it without reading every
blob), and ``If-None-Match`` / ``If-Match`` on writes. Does not own ETag arithmetic and read
conditions (``etag``), the part map (``parts``) nor the reply headers of a read
(``objects``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping

from ambry.frontend.headers import encode_user_metadata
from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.etag import etag_matches, normalize_etag
from ambry.frontend.s3.multipart import UM_COMPLETED_UPLOAD
from ambry.frontend.s3.parts import UM_PART_SIZES
from ambry.protocol.messages import NameRecord

__all__ = ["DEFAULT_CONTENT_TYPE", "LISTING_ETAG_PARAM", "META_PREFIX", "STORED_HEADERS",
           "UM_CHECKSUM", "UM_ETAG", "USER_S3_PREFIX", "encode_um", "fallback_etag",
           "listing_content_type", "listing_etag", "user_meta", "write_precondition"]

#: Name entries of S3 objects carry the ETag as a media-type parameter of their content type,
#: so listings show it without reading every blob: ``text/plain; s3-etag=<hex>``.
LISTING_ETAG_PARAM = "; s3-etag="
#: User metadata keys the S3 API keeps for itself (user keys are the x-amz-meta-* suffixes).
UM_ETAG = "s3.etag"
#: where a client's own x-amz-meta-s3.* keys are stored (inside the layer's "s3." namespace,
#: so that no user key can name one of the layer's keys)
USER_S3_PREFIX = "s3.user."
UM_CHECKSUM = "s3.checksum-"
STORED_HEADERS = ("content-encoding", "content-disposition", "cache-control",
                  "content-language", "expires")
META_PREFIX = "x-amz-meta-"
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
_MAX_USER_META_BYTES = 2048          # AWS's limit for x-amz-meta-*


def listing_content_type(content_type: str, etag: str) -> str:
    return f"{content_type}{LISTING_ETAG_PARAM}{normalize_etag(etag)}"


def listing_etag(content_type: str, blob_id: bytes) -> str:
    _, sep, tag = content_type.rpartition(LISTING_ETAG_PARAM)
    return f'"{tag}"' if sep and tag else fallback_etag(blob_id)


def fallback_etag(blob_id: bytes) -> str:
    """ETag of a blob stored through the Ambry REST API (no MD5 was kept): a hash of its id,
    stable, and different whenever the name points to another blob."""
    return f'"{hashlib.md5(blob_id).hexdigest()}"'


def write_precondition(h: Mapping[str, str], bucket: str, key: str
                       ) -> Callable[[NameRecord | None], None] | None:
    """The condition of a conditional write (PutObject, CopyObject, CompleteMultipartUpload)
    on the key's current entry, as AWS has it: ``If-None-Match: *`` fails (412) when the key
    exists; ``If-Match: <etags>`` fails with 404 when it does not and 412 when its ETag is not
    listed. None when the request carries neither."""
    none_match = h.get("if-none-match")
    if none_match is not None and none_match.strip(" \t") != "*":
        none_match = None  # AWS accepts only "*" on writes; anything else is not a condition
    match = h.get("if-match")
    if none_match is None and match is None:
        return None

    def check(current: NameRecord | None) -> None:
        live = current is not None and not current.deleted
        if none_match is not None and live:
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                "specified did not hold", 412,
                          extra={"Condition": "If-None-Match"})
        if match is not None:
            if not live or current is None:
                raise S3Error("NoSuchKey", "The specified key does not exist.", 404,
                              bucket=bucket, key=key)
            if not etag_matches(match, listing_etag(current.content_type, current.blob_id)):
                raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                    "specified did not hold", 412,
                              extra={"Condition": "If-Match"})

    return check


def _stored_meta_value(value: str) -> str:
    """An ``x-amz-meta-*`` value as it is kept and answered: as sent when its bytes are UTF-8
    (aiohttp writes reply headers as UTF-8, so they go back byte for byte); otherwise (bytes
    that are not UTF-8, e.g. an ISO-8859-1 0xE9 from http.client or Java; aiohttp hands them
    over as lone surrogates) one RFC 2047 encoded-word of exactly those bytes, labelled
    ISO-8859-1 (which maps every byte to one character), so any RFC 2047 decoder gives the
    bytes back. aiohttp cannot write a byte that is not UTF-8 into a reply, and writing the
    characters as UTF-8 was the mojibake (0xE9 came back as C3 A9). Control characters other
    than tab (refused by aiohttp at the door today) are encoded too (as UTF-8), so a stored
    value can always be answered."""
    raw = value.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"=?ISO-8859-1?B?{base64.b64encode(raw).decode('ascii')}?="
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
        return f"=?UTF-8?B?{base64.b64encode(raw).decode('ascii')}?="
    return text


def _stored_content_encoding(value: str) -> str | None:
    """The Content-Encoding kept with an object: ``aws-chunked`` only frames the request body
    (SigV4 streaming), so AWS drops it from the list ("gzip, aws-chunked" -> "gzip") and keeps
    nothing when it was the only coding. Any other value is kept as sent."""
    codings = [c.strip(" \t") for c in value.split(",")]
    if not any(c.lower() == "aws-chunked" for c in codings):
        return value
    return ", ".join(c for c in codings if c and c.lower() != "aws-chunked") or None


def user_meta(h: Mapping[str, str]) -> dict[str, str]:
    """x-amz-meta-* (user) and the content headers S3 keeps with an object, from the
    request headers ``h`` (lower-case names)."""
    out: dict[str, str] = {}
    total = 0
    for name, value in h.items():
        if name.startswith(META_PREFIX) and len(name) > len(META_PREFIX):
            k = name[len(META_PREFIX):]
            total += len(k) + len(value.encode("utf-8", "surrogateescape"))
            # "s3." is the S3 layer's own namespace: a client's x-amz-meta-s3.cache-control
            # is user metadata, kept apart so it never becomes a real Cache-Control
            out[USER_S3_PREFIX + k if k.startswith("s3.") else k] = _stored_meta_value(value)
    if total > _MAX_USER_META_BYTES:
        raise S3Error("MetadataTooLarge", f"Your metadata headers exceed the maximum "
                                          f"allowed metadata size ({_MAX_USER_META_BYTES} "
                                          f"bytes)")
    for name in STORED_HEADERS:
        if name in h:
            out["s3." + name] = h[name]
    if "s3.content-encoding" in out:
        encoding = _stored_content_encoding(out.pop("s3.content-encoding"))
        if encoding is not None:
            out["s3.content-encoding"] = encoding
    return out


def encode_um(meta: dict[str, str], etag: str, checksum: tuple[str, str] | None = None,
              part_map: str | None = None, completed_upload: str | None = None) -> bytes:
    """The stored user metadata. The S3 layer's own keys come from the arguments only:
    a client's ``x-amz-meta-s3.etag`` (or one copied from a source) never sets them."""
    d = {k: v for k, v in meta.items()
         if k not in (UM_ETAG, UM_PART_SIZES, UM_COMPLETED_UPLOAD)
         and not k.startswith(UM_CHECKSUM)}
    d[UM_ETAG] = etag
    if checksum is not None:
        d[UM_CHECKSUM + checksum[0]] = checksum[1]
    if part_map is not None:
        d[UM_PART_SIZES] = part_map
    if completed_upload is not None:
        d[UM_COMPLETED_UPLOAD] = completed_upload
    try:
        return encode_user_metadata(d)
    except UnicodeEncodeError:
        raise S3Error("InvalidArgument", "metadata is not valid UTF-8") from None
