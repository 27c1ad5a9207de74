"""The SDK's error mapping (ambry.client._errors): every status and x-ambry-error-code the
frontend sends becomes one typed exception, which is also the ambry.common.errors twin."""

from __future__ import annotations

import pytest

from ambry.client import (
    ApiError,
    BadRequest,
    BlobAlreadyExists,
    BlobDeleted,
    BlobExpired,
    BlobNotDeleted,
    BlobNotFound,
    Conflict,
    CorruptBlob,
    Forbidden,
    Gone,
    InvalidArgument,
    InvalidBlobId,
    LifeVersionConflict,
    NameExists,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ServerError,
    TtlUpdateTooLate,
    Unauthorized,
    Unavailable,
)
from ambry.client._errors import error_from_reply
from ambry.common import errors as common


@pytest.mark.parametrize("status,code,cls", [
    (400, "BAD_REQUEST", BadRequest),
    (400, "INVALID_BLOB_ID", InvalidBlobId),
    (400, "INVALID_ARGUMENT", InvalidArgument),
    (400, "MISSING_HEADER", InvalidArgument),
    (401, "SIGNATURE_INVALID", Unauthorized),
    (403, "ACCESS_DENIED", Forbidden),
    (404, "BLOB_NOT_FOUND", BlobNotFound),
    (405, "TTL_UPDATE_TOO_LATE", TtlUpdateTooLate),
    (409, "NAME_ALREADY_EXISTS", NameExists),
    (409, "BLOB_NOT_DELETED", BlobNotDeleted),
    (409, "BLOB_ALREADY_EXISTS", BlobAlreadyExists),
    (409, "LIFE_VERSION_CONFLICT", LifeVersionConflict),
    (410, "BLOB_DELETED", BlobDeleted),
    (410, "BLOB_EXPIRED", BlobExpired),
    (413, "PAYLOAD_TOO_LARGE", PayloadTooLarge),
    (416, "RANGE_NOT_SATISFIABLE", RangeNotSatisfiable),
    (503, "UNAVAILABLE", Unavailable),
    (503, "PARTITION_READ_ONLY", Unavailable),
    # the 503 family is one "try again later" class; rot on every replica has a subclass
    (503, "DATA_CORRUPT", CorruptBlob),
    (500, "INTERNAL", ServerError),
])
def test_each_error_code_maps_to_its_class(status, code, cls):
    err = error_from_reply(status, {"x-ambry-error-code": code, "x-ambry-request-id": "r1"},
                           "why it failed\n", endpoint="http://fe", what="get x")
    assert type(err) is cls
    assert isinstance(err, Unavailable) == (status == 503)
    assert err.status == status and err.code == code
    assert err.request_id == "r1" and err.endpoint == "http://fe"
    assert "why it failed" in str(err) and "get x" in str(err) and code in str(err)


@pytest.mark.parametrize("status,cls", [
    (400, BadRequest), (401, Unauthorized), (403, Forbidden), (404, BlobNotFound),
    (409, Conflict), (410, Gone), (413, PayloadTooLarge), (416, RangeNotSatisfiable),
    (502, Unavailable), (503, Unavailable), (504, Unavailable), (500, ServerError),
    (418, BadRequest), (599, ServerError),
])
def test_without_a_known_code_the_status_decides(status, cls):
    assert type(error_from_reply(status, {"x-ambry-error-code": "SOMETHING_NEW"})) is cls
    assert type(error_from_reply(status, {})) is cls


def test_a_405_without_a_code_is_a_wrong_method_not_a_ttl_verdict():
    assert type(error_from_reply(405, {})) is BadRequest


@pytest.mark.parametrize("cls,twin", [
    (BadRequest, common.BadRequest), (InvalidBlobId, common.InvalidBlobId),
    (InvalidArgument, common.InvalidArgument), (PayloadTooLarge, common.PayloadTooLarge),
    (BlobNotFound, common.BlobNotFound), (BlobDeleted, common.BlobDeleted),
    (BlobExpired, common.BlobExpired), (BlobNotDeleted, common.BlobNotDeleted),
    (BlobAlreadyExists, common.BlobAlreadyExists),
    (LifeVersionConflict, common.LifeVersionConflict), (Unavailable, common.Unavailable),
])
def test_sdk_errors_are_caught_by_their_common_twins(cls, twin):
    with pytest.raises(twin):
        raise cls("x", status=1)
    assert issubclass(cls, ApiError) and issubclass(cls, common.AmbryError)


def test_family_bases_catch_their_members():
    assert issubclass(BlobDeleted, Gone) and issubclass(BlobExpired, Gone)
    assert all(issubclass(c, Conflict) for c in (NameExists, BlobNotDeleted,
                                                 BlobAlreadyExists, LifeVersionConflict))
    assert all(issubclass(c, BadRequest) for c in (InvalidBlobId, InvalidArgument,
                                                   PayloadTooLarge, RangeNotSatisfiable))


def test_payload_too_large_reads_the_limit_from_the_message():
    err = error_from_reply(413, {"x-ambry-error-code": "PAYLOAD_TOO_LARGE"},
                           "a chunk upload must fit one chunk (1048576 bytes)")
    assert isinstance(err, PayloadTooLarge) and err.limit_bytes == 1048576
    assert PayloadTooLarge("too big").limit_bytes is None


def test_long_and_multi_line_bodies_become_one_short_line():
    err = error_from_reply(400, {}, "a\nb\r\n" + "x" * 5000)
    assert "\n" not in err.message and len(err.message) <= 510
