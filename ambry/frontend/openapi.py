"""The OpenAPI 3 document of the Ambry REST API (DESIGN.md section 4), served at /openapi.json.

Owns describing every route of ``ambry.frontend.app`` for clients and tools: paths, methods,
the ``x-ambry-*`` request headers with the values each accepts, query parameters, bodies, and
the statuses and headers each route answers with. The schemas are as strict as the parsers in
``ambry.frontend.headers`` (a value outside them is a 400), so a fuzzer such as schemathesis
can both generate valid requests and check that invalid ones are refused with a 4xx
(``tests/integration/test_fuzz_rest.py``). A unit test checks that every route the app
registers is described here and nothing else.

Header families OpenAPI cannot name (``x-ambry-um-<key>``: user metadata, any key) are said
in the descriptions; the fuzzer sends them on its own.

Does not own routing, parsing or the status table (``app``, ``headers``); when those change,
this document changes with them.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aiohttp import web

from ambry.frontend.headers import MAX_BLOB_NAME_BYTES, MAX_TTL_S

__all__ = ["OPENAPI_PATH", "openapi_document", "openapi_json", "serve_openapi"]

OPENAPI_PATH = "/openapi.json"
_MAX_I64 = 2**63 - 1

JsonObj = dict[str, Any]


def _ci(*words: str) -> str:
    """An ECMA regex matching any of ``words`` case-insensitively, with optional whitespace
    around (the header parsers strip it): JSON Schema patterns have no ``(?i)``."""
    alts = "|".join("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in w)
                    for w in words)
    return f"^[ \\t]*({alts})[ \\t]*$"


def _header(name: str, schema: JsonObj, description: str, required: bool = False) -> JsonObj:
    return {"name": name, "in": "header", "required": required, "schema": schema,
            "description": description}


def _ref(kind: str, name: str) -> JsonObj:
    return {"$ref": f"#/components/{kind}/{name}"}


# ------------------------------------------------------------------------------- parameters
_PARAMETERS: dict[str, JsonObj] = {
    "RequestId": _header("x-ambry-request-id", {"type": "string"},
                         "Request id for the logs of the frontend and every node it touches; "
                         "a random one when absent. Echoed in the reply."),
    "AccountName": _header("x-ambry-target-account-name", {"type": "string"},
                           "Account (default `default`). Unknown: 400. With an id, the id "
                           "must belong to it (403)."),
    "ContainerName": _header("x-ambry-target-container-name", {"type": "string"},
                             "Container (default `default`). Unknown: 400."),
    "ServiceIdRequired": _header("x-ambry-service-id", {"type": "string", "minLength": 1},
                                 "Name of the uploading service.", required=True),
    "ContentTypeRequired": _header("x-ambry-content-type", {"type": "string", "minLength": 1},
                                   "Content type stored with the blob and sent back as "
                                   "`Content-Type`.", required=True),
    "Ttl": _header("x-ambry-ttl", {"type": "integer", "minimum": -1, "maximum": MAX_TTL_S},
                   "Time to live in seconds; -1 (the default) is forever. Anything else, or "
                   "not an integer: 400."),
    "BlobSize": _header("x-ambry-blob-size",
                        {"type": "integer", "minimum": 0, "maximum": _MAX_I64},
                        "Declared body size in bytes; the body must match it (400). Over "
                        "`frontend.max_blob_size_bytes`: 413 before any byte is read."),
    "OwnerId": _header("x-ambry-owner-id", {"type": "string"}, "Owner, stored with the blob."),
    "Filename": _header("x-ambry-filename", {"type": "string"},
                        "File name, stored with the blob."),
    "ChunkUpload": _header("x-ambry-chunk-upload", {"type": "string",
                                                    "pattern": _ci("true", "false")},
                           "`true`: store a chunk for `POST /stitch` (not readable alone). "
                           "Without `x-ambry-ttl` it expires after "
                           "`frontend.pending_chunk_ttl_s` unless a stitch makes it "
                           "permanent."),
    "ContentXxh3": _header("x-ambry-content-xxh3",
                           {"type": "string", "pattern": "^[0-9a-fA-F]{1,16}$"},
                           "Hex xxh3_64 of the whole body; a mismatch aborts the upload (400) "
                           "and stores nothing."),
    "NamedUpsert": _header("x-ambry-named-upsert", {"type": "string",
                                                    "pattern": _ci("true", "false")},
                           "`true`: overwrite an existing name; else an existing name is 409."),
    "GetOption": _header("x-ambry-get-option",
                         {"type": "string", "pattern": _ci("None", "Include_Deleted_Blobs",
                                                           "Include_Expired_Blobs",
                                                           "Include_All")},
                         "Also return deleted and/or expired blobs (case-insensitive)."),
    "Range": _header("Range", {"type": "string"},
                     "`bytes=a-b`, `bytes=a-` or `bytes=-n`: 206 with `Content-Range`; a range "
                     "that selects nothing is 416; anything unparsable is ignored (200), as "
                     "RFC 9110 allows."),
    "BlobIdHeader": _header("x-ambry-blob-id",
                            {"type": "string", "pattern": "^/?[A-Za-z0-9_-]{43}$"},
                            "Id of the blob (a leading `/`, as in `Location`, is allowed).",
                            required=True),
    "BlobId": {"name": "blob_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
               "description": "Blob id: 32 bytes as URL-safe base64 without padding. One that "
                              "does not decode, or names an unknown partition: 400."},
    "Account": {"name": "account", "in": "path", "required": True,
                "schema": {"type": "string", "minLength": 1},
                "description": "Account name (unknown: 400)."},
    "Container": {"name": "container", "in": "path", "required": True,
                  "schema": {"type": "string", "minLength": 1},
                  "description": "Container name (unknown: 400)."},
    "Name": {"name": "name", "in": "path", "required": True,
             "schema": {"type": "string", "minLength": 1},
             "description": f"Blob name: 1..{MAX_BLOB_NAME_BYTES} UTF-8 bytes, no control "
                            "characters; `/` is allowed inside (`runs/42/model.pt`). Longer, "
                            "or with control characters: 400."},
    "SignedExpires": {"name": "x-ambry-expires", "in": "query", "required": False,
                      "schema": {"type": "string"},
                      "description": "Expiry (unix s) of a signed URL (`GET /signedUrl`)."},
    "Signature": {"name": "x-ambry-signature", "in": "query", "required": False,
                  "schema": {"type": "string"},
                  "description": "HMAC of a signed URL over method, path and every query "
                                 "parameter (each `x-ambry-*` header it carries). Present: "
                                 "the URL must verify and be unexpired, else 401."},
}

_COMMON = [_ref("parameters", "RequestId")]
_TARGET = [_ref("parameters", "AccountName"), _ref("parameters", "ContainerName")]
_UPLOAD = [_ref("parameters", n) for n in (
    "ServiceIdRequired", "ContentTypeRequired", "Ttl", "OwnerId", "Filename")]
_STREAMED_UPLOAD = [*_UPLOAD, _ref("parameters", "BlobSize"), _ref("parameters", "ContentXxh3")]
_USER_METADATA_NOTE = (" User metadata: any number of `x-ambry-um-<key>` headers (8 KiB in all, "
                       "keys case-insensitive, no control characters but tab).")

# -------------------------------------------------------------------------------- responses
_ERROR_CODE = {"description": "Names the cause (e.g. `INVALID_BLOB_ID`, `MISSING_HEADER`).",
               "required": True, "schema": {"type": "string", "minLength": 1}}
_REQUEST_ID_HEADER = {"description": "The request id (the client's, or a new one).",
                      "schema": {"type": "string"}}


def _error(description: str) -> JsonObj:
    return {"description": description,
            "headers": {"x-ambry-error-code": _ERROR_CODE,
                        "x-ambry-request-id": _REQUEST_ID_HEADER},
            "content": {"text/plain": {"schema": {"type": "string"}}}}


_RESPONSES: dict[str, JsonObj] = {
    "BadRequest": _error("Malformed request: a header, id, name, body or parameter is invalid "
                         "or missing."),
    "Unauthorized": _error("A signed URL that does not verify, or has expired."),
    "Forbidden": _error("The blob does not belong to the target account/container."),
    "NotFound": _error("The blob or name never existed (authoritative), or no such route."),
    "MethodNotAllowed": _error("Method not allowed on this path (with `Allow`); or a TTL update "
                               "too close to expiry."),
    "Conflict": _error("Name exists (no upsert), blob not deleted (undelete), or a life-version "
                       "conflict."),
    "Gone": _error("Deleted or expired (see `x-ambry-get-option`)."),
    "TooLarge": _error("Body or declared size over the limit."),
    "RangeNotSatisfiable": {
        **_error("The range selects no byte of the blob."),
        "headers": {"x-ambry-error-code": _ERROR_CODE,
                    "Content-Range": {"description": "`bytes */<size>`",
                                      "schema": {"type": "string",
                                                 "pattern": "^bytes \\*/[0-9]+$"}}}},
    "Unavailable": _error("Too few replicas answered in time, or the frontend is draining or "
                          "over its byte budget: retry."),
    "Created": {
        "description": "Stored.",
        "headers": {
            "Location": {"description": "`/<blob id>`", "required": True,
                         "schema": {"type": "string", "pattern": "^/[A-Za-z0-9_-]{43}$"}},
            "x-ambry-blob-size": {"description": "Bytes stored.", "required": True,
                                  "schema": {"type": "integer", "minimum": 0}},
            "x-ambry-creation-time": {"description": "RFC 1123 date.", "required": True,
                                      "schema": {"type": "string"}}}},
}

_BLOB_HEADERS: JsonObj = {
    "x-ambry-blob-size": {"required": True, "schema": {"type": "integer", "minimum": 0},
                          "description": "Size of the whole blob."},
    "x-ambry-service-id": {"required": True, "schema": {"type": "string"},
                           "description": "As uploaded."},
    "x-ambry-content-type": {"required": True, "schema": {"type": "string"},
                             "description": "As uploaded."},
    "x-ambry-creation-time": {"required": True, "schema": {"type": "string"},
                              "description": "RFC 1123 date."},
    "x-ambry-ttl": {"required": True, "schema": {"type": "integer", "minimum": -1},
                    "description": "Seconds, -1 = forever."},
    "x-ambry-life-version": {"schema": {"type": "integer", "minimum": 0},
                             "description": "Number of undeletes."},
    "x-ambry-owner-id": {"schema": {"type": "string"}, "description": "As uploaded."},
    "x-ambry-filename": {"schema": {"type": "string"}, "description": "As uploaded."},
    "x-ambry-deleted": {"schema": {"type": "string", "enum": ["true"]},
                        "description": "Present on a deleted blob read with an include option."},
    "ETag": {"schema": {"type": "string"}, "description": "The quoted blob id."},
    "Last-Modified": {"schema": {"type": "string"}, "description": "Creation time."},
    "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]},
                      "description": "Ranges are supported."},
}

# any Content-Type is accepted (the stored one is x-ambry-content-type)
_BLOB_BODY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _responses(ok: dict[str, JsonObj], *errors: str) -> JsonObj:
    names = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound",
             "405": "MethodNotAllowed", "409": "Conflict", "410": "Gone", "413": "TooLarge",
             "416": "RangeNotSatisfiable", "503": "Unavailable"}
    out: JsonObj = dict(ok)
    for status in errors:
        out[status] = _ref("responses", names[status])
    return out


_READ_ERRORS = ("400", "401", "403", "404", "410", "503")


def _get_blob(head: bool, named: bool) -> JsonObj:
    what = "named blob" if named else "blob"
    params = [*_COMMON, _ref("parameters", "GetOption"), _ref("parameters", "Range")]
    if not named:
        params += [*_TARGET, _ref("parameters", "SignedExpires"), _ref("parameters", "Signature")]
    ok_doc: JsonObj = {"description": f"The {what}" + (" (headers only)." if head else "."),
                       "headers": _BLOB_HEADERS}
    if not head:  # the stored x-ambry-content-type
        ok_doc["content"] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    partial = {**ok_doc, "description": "The requested range (`Content-Range`)."}
    return {"summary": f"{'Headers of' if head else 'Read'} a {what}" + (
        "" if named else " (also through a signed GET URL)"),
        "description": "User metadata comes back as `x-ambry-um-<key>` headers.",
        "parameters": params,
        "responses": _responses({"200": ok_doc, "206": partial}, *_READ_ERRORS, "416")}


def _named_params() -> list[JsonObj]:
    return [_ref("parameters", n) for n in ("Account", "Container", "Name")]


def _paths() -> JsonObj:
    created = {"201": _ref("responses", "Created")}
    mutate_ok = {"description": "Done (idempotent)."}
    return {
        "/": {
            "post": {
                "summary": "Upload a blob (also through a signed POST URL)",
                "description": "The body may be `Transfer-Encoding: chunked` of unknown length; "
                               "large blobs are stored as chunks." + _USER_METADATA_NOTE,
                "parameters": [*_COMMON, *_TARGET, *_STREAMED_UPLOAD,
                               _ref("parameters", "ChunkUpload"),
                               _ref("parameters", "SignedExpires"),
                               _ref("parameters", "Signature")],
                "requestBody": {"required": False, "content": _BLOB_BODY},
                "responses": _responses(created, "400", "401", "413", "503")},
            "options": {
                "summary": "CORS preflight (answered for every path)",
                "parameters": [*_COMMON, {"name": "Access-Control-Request-Headers",
                                          "in": "header", "required": False,
                                          "schema": {"type": "string"}}],
                "responses": {"200": {
                    "description": "Allowed methods and headers.",
                    "headers": {"Access-Control-Allow-Methods": {
                        "required": True, "schema": {"type": "string"}}}}}},
        },
        "/{blob_id}": {
            "parameters": [_ref("parameters", "BlobId")],
            "get": _get_blob(head=False, named=False),
            "head": _get_blob(head=True, named=False),
            "delete": {
                "summary": "Delete a blob",
                "description": "A later GET/HEAD is 410; deleting again is 202.",
                "parameters": [*_COMMON, *_TARGET],
                "responses": _responses({"202": {"description": "Deleted."}},
                                        "400", "403", "404", "503")},
        },
        "/{blob_id}/BlobInfo": {
            "parameters": [_ref("parameters", "BlobId")],
            "get": {"summary": "Properties and user metadata of a blob, as headers",
                    "parameters": [*_COMMON, *_TARGET, _ref("parameters", "GetOption")],
                    "responses": _responses({"200": {"description": "Blob properties.",
                                                     "headers": _BLOB_HEADERS}},
                                            "400", "403", "404", "410", "503")},
        },
        "/{blob_id}/UserMetadata": {
            "parameters": [_ref("parameters", "BlobId")],
            "get": {"summary": "User metadata of a blob, as `x-ambry-um-<key>` headers",
                    "parameters": [*_COMMON, *_TARGET, _ref("parameters", "GetOption")],
                    "responses": _responses({"200": {"description": "User metadata."}},
                                            "400", "403", "404", "410", "503")},
        },
        "/updateTtl": {
            "put": {"summary": "Make a blob permanent",
                    "parameters": [*_COMMON, *_TARGET, _ref("parameters", "BlobIdHeader"),
                                   _ref("parameters", "ServiceIdRequired")],
                    "responses": _responses({"200": mutate_ok}, "400", "403", "404", "405",
                                            "410", "503")},
        },
        "/undelete": {
            "put": {"summary": "Undelete a deleted blob",
                    "parameters": [*_COMMON, *_TARGET, _ref("parameters", "BlobIdHeader"),
                                   _ref("parameters", "ServiceIdRequired")],
                    "responses": _responses({"200": mutate_ok}, "400", "403", "404", "409",
                                            "410", "503")},
        },
        "/stitch": {
            "post": {
                "summary": "Stitch chunks into one composite blob",
                "description": "Chunks were uploaded with `x-ambry-chunk-upload: true`; any "
                               "sizes, in order." + _USER_METADATA_NOTE,
                "parameters": [*_COMMON, *_TARGET, *_UPLOAD],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["chunkIds"],
                    "properties": {"chunkIds": {
                        "type": "array", "minItems": 1,
                        "items": {"type": "string", "pattern": "^/?[A-Za-z0-9_-]{43}$"}}}}}}},
                "responses": _responses(created, "400", "404", "410", "413", "503")},
        },
        "/signedUrl": {
            "get": {
                "summary": "A signed GET or POST URL",
                "description": "Every other `x-ambry-*` header becomes a signed query "
                               "parameter of the URL (for POST: the upload headers, validated "
                               "now).",
                "parameters": [
                    *_COMMON,
                    _header("x-ambry-url-type", {"type": "string", "pattern": _ci("GET", "POST")},
                            "Kind of URL.", required=True),
                    _header("x-ambry-url-ttl-secs",
                            {"type": "integer", "minimum": 1, "maximum": 7 * 24 * 3600},
                            "Lifetime of the URL (default 3600; at most "
                            "`frontend.signed_url_max_ttl_s`)."),
                    _header("x-ambry-blob-id",
                            {"type": "string", "pattern": "^/?[A-Za-z0-9_-]{43}$"},
                            "Blob of a GET URL (required for GET)."),
                    *_TARGET,
                    _header("x-ambry-service-id", {"type": "string"},
                            "For a POST URL: required, signed."),
                    _header("x-ambry-content-type", {"type": "string"},
                            "For a POST URL: required, signed."),
                    _ref("parameters", "Ttl")],
                "responses": _responses({"200": {
                    "description": "The URL.",
                    "headers": {"x-ambry-signed-url": {
                        "required": True, "schema": {"type": "string", "minLength": 1}}}}},
                    "400")},
        },
        "/named/{account}": {
            "parameters": [_ref("parameters", "Account")],
            "get": {
                "summary": "List the containers of an account",
                "description": "Containers of the cluster config and those created at run "
                               "time (S3 buckets), sorted. An unknown account is 400 "
                               "INVALID_ARGUMENT, as for the other named routes.",
                "parameters": _COMMON,
                "responses": _responses({"200": {
                    "description": "The account's containers.",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["account", "containers"],
                        "properties": {
                            "account": {"type": "string"},
                            "containers": {"type": "array",
                                           "items": {"type": "string"}}}}}}}},
                    "400", "503")},
        },
        "/named/{account}/{container}": {
            "parameters": [_ref("parameters", "Account"), _ref("parameters", "Container")],
            "get": {
                "summary": "List names, sorted, by prefix, in pages",
                "description": "With `delimiter`, one level (as S3's ListObjects): a name "
                               "with the delimiter after the prefix rolls up into "
                               "`commonPrefixes` (the prefix up to and including the "
                               "delimiter, once each), and the names below it are skipped "
                               "by the store, not read. `maxResults` then bounds entries "
                               "and prefixes together, at most 1000 a page; a page may hold "
                               "fewer, so follow `nextPageToken` until it is absent.",
                "parameters": [
                    *_COMMON,
                    {"name": "prefix", "in": "query", "required": False,
                     "schema": {"type": "string"}},
                    {"name": "delimiter", "in": "query", "required": False,
                     "schema": {"type": "string", "maxLength": 64},
                     "description": "Usually `/`; at most 64 bytes (else 400)."},
                    {"name": "page", "in": "query", "required": False,
                     "schema": {"type": "string"},
                     "description": "`nextPageToken` of the previous page (else 400)."},
                    {"name": "maxResults", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 10_000}}],
                "responses": _responses({"200": {
                    "description": "One page.",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["entries"],
                        "properties": {
                            "entries": {"type": "array", "items": {
                                "type": "object",
                                "required": ["name", "blobId", "size", "contentType",
                                             "createdMs"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "blobId": {"type": "string",
                                               "pattern": "^[A-Za-z0-9_-]{43}$"},
                                    "size": {"type": "integer", "minimum": 0},
                                    "contentType": {"type": "string"},
                                    "createdMs": {"type": "integer", "minimum": 0}}}},
                            "commonPrefixes": {
                                "type": "array", "items": {"type": "string"},
                                "description": "Only with `delimiter`."},
                            "nextPageToken": {"type": "string"}}}}}}},
                    "400", "503")},
        },
        "/named/{account}/{container}/{name}": {
            "parameters": _named_params(),
            "put": {
                "summary": "Upload a blob under a name",
                "description": "An existing name is 409 unless `x-ambry-named-upsert: true`."
                               + _USER_METADATA_NOTE,
                "parameters": [*_COMMON, *_STREAMED_UPLOAD, _ref("parameters", "NamedUpsert")],
                "requestBody": {"required": False, "content": _BLOB_BODY},
                "responses": _responses(created, "400", "409", "413", "503")},
            "post": {
                "summary": "Stitch chunks into a blob under a name",
                "description": "As `POST /stitch` (chunks uploaded with "
                               "`x-ambry-chunk-upload: true`, any sizes, in order), and the "
                               "name then points to the stitched blob, with the rules of "
                               "`PUT`: an existing name is 409 unless "
                               "`x-ambry-named-upsert: true`. A retry of a stitch that "
                               "already landed (the name points to a blob of exactly these "
                               "chunks) answers 201 with that blob and changes nothing. "
                               "The resumable, parallel upload of a large named blob."
                               + _USER_METADATA_NOTE,
                "parameters": [*_COMMON, *_UPLOAD, _ref("parameters", "NamedUpsert")],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["chunkIds"],
                    "properties": {"chunkIds": {
                        "type": "array", "minItems": 1,
                        "items": {"type": "string", "pattern": "^/?[A-Za-z0-9_-]{43}$"}}}}}}},
                "responses": _responses(created, "400", "404", "409", "410", "413", "503")},
            "get": _get_blob(head=False, named=True),
            "head": _get_blob(head=True, named=True),
            "delete": {"summary": "Delete a name and its blob",
                       "parameters": _COMMON,
                       "responses": _responses({"202": {"description": "Deleted."}},
                                               "400", "404", "503")},
        },
        "/healthCheck": {
            "get": {"summary": "Health of this frontend",
                    "responses": {
                        "200": {"description": "`GOOD`: every operation can be served.",
                                "content": {"text/plain": {"schema": {"type": "string",
                                                                      "enum": ["GOOD"]}}}},
                        "503": {"description": "`BAD`: draining or not ready.",
                                "content": {"text/plain": {"schema": {"type": "string"}}}}}},
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Prometheus text format.",
                                          "content": {"text/plain": {
                                              "schema": {"type": "string"}}}}}},
        },
        OPENAPI_PATH: {
            "get": {"summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3 document.",
                                          "content": {"application/json": {
                                              "schema": {"type": "object"}}}}}},
        },
    }


@cache
def openapi_document() -> JsonObj:
    """The document as a dict (built once; callers must not mutate it)."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "Ambry REST API", "version": "1",
                 "description": "Blob store API of an Ambry-py frontend (default port 1174). "
                                "Every error reply has a short text body and "
                                "`x-ambry-error-code`; a 5xx is never the answer to a "
                                "malformed request. The S3 API is served on its own port."},
        "paths": _paths(),
        "components": {"parameters": _PARAMETERS, "responses": _RESPONSES},
    }


@cache
def openapi_json() -> bytes:
    return json.dumps(openapi_document(), indent=1, sort_keys=False).encode()


async def serve_openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_json(), content_type="application/json")
