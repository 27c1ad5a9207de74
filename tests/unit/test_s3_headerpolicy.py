"""The header policy of the S3 API (ambry/frontend/s3/headerpolicy.py): per header family and
operation, accept or the error AWS / MinIO give when the feature is not there.

Before it, every header below was silently dropped: an object "encrypted with the customer's
key", "locked until 2030", "GLACIER" or "public-read" was stored as plain, unlocked,
STANDARD and private, and the client was told 200.
"""

from __future__ import annotations

import pytest

from ambry.frontend.s3.errors import S3Error
from ambry.frontend.s3.headerpolicy import RULES, check_headers

OWNER = "default"
WRITES = ("PutObject", "CopyObject", "CreateMultipartUpload")


def _outcome(op: str, headers: dict[str, str], owner: str = OWNER) -> str:
    try:
        check_headers(op, headers, owner)
    except S3Error as e:
        return f"{e.status} {e.s3_code}"
    return "ok"


SSE_HEADERS = [
    {"x-amz-server-side-encryption": "AES256"},
    {"x-amz-server-side-encryption": "aws:kms",
     "x-amz-server-side-encryption-aws-kms-key-id": "k1"},
    {"x-amz-server-side-encryption": "aws:kms:dsse"},
    {"x-amz-server-side-encryption-context": "e30="},
    {"x-amz-server-side-encryption-bucket-key-enabled": "true"},
    {"x-amz-server-side-encryption-customer-algorithm": "AES256",
     "x-amz-server-side-encryption-customer-key": "a2V5",
     "x-amz-server-side-encryption-customer-key-md5": "bWQ1"},
    {"x-amz-copy-source-server-side-encryption-customer-algorithm": "AES256"},
]


@pytest.mark.parametrize("headers", SSE_HEADERS, ids=lambda h: min(h))
@pytest.mark.parametrize("op", [*WRITES, "UploadPart", "UploadPartCopy", "GetObject",
                                "HeadObject"])
def test_server_side_encryption_is_refused_501_on_every_operation(
        op: str, headers: dict[str, str]) -> None:
    # the store keeps plaintext: accepting SSE stored bytes the client believed encrypted
    assert _outcome(op, headers) == "501 NotImplemented"


def test_sse_refusal_names_the_header() -> None:
    with pytest.raises(S3Error) as e:
        check_headers("PutObject", {"x-amz-server-side-encryption-customer-key": "a2V5"},
                      OWNER)
    assert e.value.extra["Header"] == "x-amz-server-side-encryption-customer-key"


@pytest.mark.parametrize("op", [*WRITES, "CreateBucket", "PutBucketAcl", "PutObjectAcl"])
def test_acls_behave_as_a_bucket_with_acls_disabled(op: str) -> None:
    # private and bucket-owner-full-control are what happens anyway; any other grant is a lie
    refused = ("400 InvalidBucketAclWithObjectOwnership" if op == "CreateBucket"
               else "400 AccessControlListNotSupported")
    assert _outcome(op, {"x-amz-acl": "private"}) == "ok"
    assert _outcome(op, {"x-amz-acl": "bucket-owner-full-control"}) == "ok"
    for canned in ("public-read", "public-read-write", "authenticated-read",
                   "aws-exec-read", "log-delivery-write", "bucket-owner-read"):
        assert _outcome(op, {"x-amz-acl": canned}) == refused, canned
    assert _outcome(op, {"x-amz-grant-full-control": f'id="{OWNER}"'}) == "ok"
    assert _outcome(op, {"x-amz-grant-full-control": f"id={OWNER}, id=other"}) == refused
    assert _outcome(op, {"x-amz-grant-read": 'uri="http://acs.amazonaws.com/groups/global/'
                                             'AllUsers"'}) == refused
    assert _outcome(op, {"x-amz-grant-write-acp": f'id="{OWNER}"'}) == refused


def test_acl_headers_on_operations_that_take_none_are_ignored() -> None:
    assert _outcome("GetObject", {"x-amz-acl": "public-read"}) == "ok"


def test_object_ownership_other_than_bucket_owner_enforced_is_501() -> None:
    h = "x-amz-object-ownership"
    assert _outcome("CreateBucket", {h: "BucketOwnerEnforced"}) == "ok"
    assert _outcome("CreateBucket", {h: "ObjectWriter"}) == "501 NotImplemented"
    assert _outcome("CreateBucket", {h: "BucketOwnerPreferred"}) == "501 NotImplemented"


@pytest.mark.parametrize("op", WRITES)
def test_storage_class_standard_only(op: str) -> None:
    assert _outcome(op, {"x-amz-storage-class": "STANDARD"}) == "ok"
    for cls in ("REDUCED_REDUNDANCY", "GLACIER", "DEEP_ARCHIVE", "STANDARD_IA", "ONEZONE_IA",
                "INTELLIGENT_TIERING", "GLACIER_IR", "EXPRESS_ONEZONE", "standard", ""):
        assert _outcome(op, {"x-amz-storage-class": cls}) == "400 InvalidStorageClass", cls


@pytest.mark.parametrize("op", WRITES)
def test_tags_are_refused_501_since_they_are_not_stored(op: str) -> None:
    assert _outcome(op, {"x-amz-tagging": "team=ml&tier=hot"}) == "501 NotImplemented"
    assert _outcome(op, {"x-amz-tagging": ""}) == "ok"  # the empty set is kept exactly


def test_tagging_directive_copy_and_replace_are_kept_exactly() -> None:
    h = "x-amz-tagging-directive"
    assert _outcome("CopyObject", {h: "COPY"}) == "ok"
    assert _outcome("CopyObject", {h: "REPLACE"}) == "ok"
    assert _outcome("CopyObject", {h: "REPLACE", "x-amz-tagging": "a=b"}) == \
        "501 NotImplemented"
    assert _outcome("CopyObject", {h: "MERGE"}) == "400 InvalidArgument"


@pytest.mark.parametrize("op", WRITES)
@pytest.mark.parametrize("header", ["x-amz-object-lock-mode",
                                    "x-amz-object-lock-retain-until-date",
                                    "x-amz-object-lock-legal-hold"])
def test_object_lock_is_refused_as_aws_does_for_a_bucket_without_it(op: str,
                                                                   header: str) -> None:
    assert _outcome(op, {header: "GOVERNANCE"}) == "400 InvalidRequest"


def test_bucket_object_lock_and_bypass_governance() -> None:
    assert _outcome("CreateBucket", {"x-amz-bucket-object-lock-enabled": "true"}) == \
        "501 NotImplemented"
    assert _outcome("CreateBucket", {"x-amz-bucket-object-lock-enabled": "false"}) == "ok"
    # nothing is ever retained, so there is nothing to bypass
    assert _outcome("DeleteObjects", {"x-amz-bypass-governance-retention": "true"}) == "ok"
    assert _outcome("DeleteObject", {"x-amz-bypass-governance-retention": "true"}) == "ok"


@pytest.mark.parametrize("op", WRITES)
def test_website_redirect_is_501(op: str) -> None:
    assert _outcome(op, {"x-amz-website-redirect-location": "/elsewhere"}) == \
        "501 NotImplemented"


@pytest.mark.parametrize("op", ["GetObject", "PutObject", "ListObjectsV2", "HeadBucket",
                                "DeleteObject", "CreateMultipartUpload", "GetBucketAcl"])
def test_expected_bucket_owner_is_checked_against_the_reported_owner(op: str) -> None:
    assert _outcome(op, {"x-amz-expected-bucket-owner": OWNER}) == "ok"
    assert _outcome(op, {"x-amz-expected-bucket-owner": "123456789012"}) == "403 AccessDenied"
    assert _outcome(op, {"x-amz-expected-bucket-owner": "team"}) == "403 AccessDenied"


def test_expected_source_bucket_owner_on_copies() -> None:
    h = "x-amz-source-expected-bucket-owner"
    for op in ("CopyObject", "UploadPartCopy"):
        assert _outcome(op, {h: OWNER}) == "ok"
        assert _outcome(op, {h: "someone-else"}) == "403 AccessDenied"


def test_append_offset_is_501_rather_than_an_overwrite() -> None:
    assert _outcome("PutObject", {"x-amz-write-offset-bytes": "100"}) == "501 NotImplemented"


def test_headers_that_promise_nothing_here_are_ignored() -> None:
    assert _outcome("PutObject", {"x-amz-request-payer": "requester",
                                  "x-amz-sdk-checksum-algorithm": "CRC32",
                                  "x-amz-mfa": "serial 123456",
                                  "x-amz-meta-a": "b",
                                  "x-amz-unknown-future-header": "x"}) == "ok"
    assert _outcome("ListBuckets", {"x-amz-expected-bucket-owner": "anyone"}) == "ok"


def test_security_families_are_decided_first() -> None:
    # a request with several refused headers gets the encryption refusal: the worst lie first
    assert _outcome("PutObject", {"x-amz-storage-class": "GLACIER",
                                  "x-amz-server-side-encryption": "AES256"}) == \
        "501 NotImplemented"
    assert RULES[0].family == "server-side encryption"


def test_every_rule_matches_only_x_amz_headers() -> None:
    # the check looks at x-amz-* names only: a rule on another name would never fire
    for r in RULES:
        assert all(n.startswith("x-amz-") for n in r.names), r
        assert all(p.startswith("x-amz-") for p in r.prefixes), r
