"""Header families a client sends as a promise (encrypt, lock, tag, grant, keep in a class,
check the owner), against a real store (issue 14, docs/s3.md "Header families").

Before ``ambry/frontend/s3/headerpolicy.py`` every one of them was silently dropped: the
request was answered 200 and the object stored plain, unlocked, untagged, private and
STANDARD whatever the client asked. Each test below checks the refusal and that nothing was
stored, or that what is accepted is exactly what happens; ``?acl`` reads (501 before) answer
the owner's full control, as AWS with ACLs disabled.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from fe_helpers import store_fixture
from s3_helpers import KEYS, REGION, raw, s3_client, xml_text

from ambry.testing.frontend import TEST_S3, StoreCluster

OWNER = "default"  # the owner ID this store reports for the default key's buckets
BUCKET = "families"
SSE_C_KEY = "0123456789abcdef0123456789abcdef"  # 256 bits, as SSE-C requires


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("s3-header-families"), datacenters=1,
                             nodes_per_dc=3, partitions=4, extra={"s3": TEST_S3})


@pytest.fixture(scope="module")
def s3(store: StoreCluster) -> Any:
    c = s3_client(store)
    c.create_bucket(Bucket=BUCKET)
    c.put_object(Bucket=BUCKET, Key="plain", Body=b"plaintext bytes")
    return c


def refused(call: Any, **kw: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as e:
        call(**kw)
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def absent(s3: Any, key: str, bucket: str = BUCKET) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def sse_c() -> dict[str, str]:
    # botocore base64-encodes the key and adds its MD5
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": SSE_C_KEY}


# ------------------------------------------------------------------ server-side encryption
@pytest.mark.parametrize("sse", [{"ServerSideEncryption": "AES256"},
                                 {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1"},
                                 {"ServerSideEncryption": "aws:kms:dsse"},
                                 {"ServerSideEncryption": "aws:kms", "BucketKeyEnabled": True},
                                 "sse-c"], ids=str)
def test_put_asking_for_encryption_is_501_and_stores_nothing(s3: Any, sse: Any) -> None:
    # before: 200, and the bytes the client believed encrypted were stored in plaintext
    kw = sse_c() if sse == "sse-c" else sse
    key = f"sse-{hashlib.md5(str(sse).encode()).hexdigest()}"
    assert refused(s3.put_object, Bucket=BUCKET, Key=key, Body=b"secret", **kw) == \
        ("NotImplemented", 501)
    assert absent(s3, key)


def test_copy_and_multipart_asking_for_encryption_are_501(s3: Any) -> None:
    # before: the copy and the upload were made in plaintext
    src = {"Bucket": BUCKET, "Key": "plain"}
    assert refused(s3.copy_object, Bucket=BUCKET, Key="sse-copy", CopySource=src,
                   ServerSideEncryption="AES256") == ("NotImplemented", 501)
    assert refused(s3.copy_object, Bucket=BUCKET, Key="sse-copy", CopySource=src,
                   **{f"CopySource{k}": v for k, v in sse_c().items()}) == \
        ("NotImplemented", 501)
    assert absent(s3, "sse-copy")
    assert refused(s3.create_multipart_upload, Bucket=BUCKET, Key="sse-mpu",
                   ServerSideEncryption="aws:kms") == ("NotImplemented", 501)
    up = s3.create_multipart_upload(Bucket=BUCKET, Key="sse-part")["UploadId"]
    assert refused(s3.upload_part, Bucket=BUCKET, Key="sse-part", UploadId=up, PartNumber=1,
                   Body=b"x", **sse_c()) == ("NotImplemented", 501)
    assert s3.list_parts(Bucket=BUCKET, Key="sse-part", UploadId=up).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=BUCKET, Key="sse-part", UploadId=up)


def test_reading_with_a_customer_key_is_501_not_the_plaintext(s3: Any) -> None:
    # before: a GET "decrypting with the customer's key" was served the stored plaintext,
    # so the client could not tell its key was never used
    assert refused(s3.get_object, Bucket=BUCKET, Key="plain", **sse_c()) == \
        ("NotImplemented", 501)
    assert refused(s3.head_object, Bucket=BUCKET, Key="plain", **sse_c())[1] == 501  # no body


def test_the_refusal_names_the_header(store: StoreCluster, s3: Any) -> None:
    r = raw("PUT", f"{store.s3_url()}/{BUCKET}/sse-raw", b"x",
            headers={"x-amz-server-side-encryption": "AES256"}).expect(501)
    assert r.code == "NotImplemented"
    assert xml_text(r.body, "Header") == "x-amz-server-side-encryption"


# ------------------------------------------------------------------ ACLs
def test_object_acls_other_than_the_owners_are_refused(s3: Any) -> None:
    # before: public-read was answered 200 and the object stayed private
    assert refused(s3.put_object, Bucket=BUCKET, Key="acl-public", Body=b"x",
                   ACL="public-read") == ("AccessControlListNotSupported", 400)
    assert absent(s3, "acl-public")
    assert refused(s3.put_object, Bucket=BUCKET, Key="acl-grant", Body=b"x",
                   GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"') == \
        ("AccessControlListNotSupported", 400)
    assert refused(s3.copy_object, Bucket=BUCKET, Key="acl-copy",
                   CopySource={"Bucket": BUCKET, "Key": "plain"},
                   ACL="authenticated-read") == ("AccessControlListNotSupported", 400)
    assert refused(s3.create_multipart_upload, Bucket=BUCKET, Key="acl-mpu",
                   ACL="public-read-write") == ("AccessControlListNotSupported", 400)
    # what happens anyway is accepted
    for acl in ("private", "bucket-owner-full-control"):
        s3.put_object(Bucket=BUCKET, Key=f"acl-{acl}", Body=b"x", ACL=acl)
    s3.put_object(Bucket=BUCKET, Key="acl-owner-grant", Body=b"x",
                  GrantFullControl=f'id="{OWNER}"')


def test_create_bucket_with_a_public_acl_is_refused_and_not_created(s3: Any) -> None:
    assert refused(s3.create_bucket, Bucket="acl-public-bucket", ACL="public-read") == \
        ("InvalidBucketAclWithObjectOwnership", 400)
    assert refused(s3.head_bucket, Bucket="acl-public-bucket")[1] == 404
    s3.create_bucket(Bucket="acl-private-bucket", ACL="private",
                     ObjectOwnership="BucketOwnerEnforced")
    assert refused(s3.create_bucket, Bucket="acl-writer-bucket",
                   ObjectOwnership="ObjectWriter") == ("NotImplemented", 501)


def _owner_full_control(acl: dict[str, Any]) -> None:
    assert acl["Owner"]["ID"] == OWNER
    assert [(g["Grantee"]["Type"], g["Grantee"]["ID"], g["Permission"])
            for g in acl["Grants"]] == [("CanonicalUser", OWNER, "FULL_CONTROL")]


def test_reading_acls_answers_the_owner_with_full_control(s3: Any) -> None:
    # before: GET ?acl was 501, which s3cmd info / setacl and other tools stop on
    _owner_full_control(s3.get_bucket_acl(Bucket=BUCKET))
    _owner_full_control(s3.get_object_acl(Bucket=BUCKET, Key="plain"))
    assert refused(s3.get_object_acl, Bucket=BUCKET, Key="no-such-key") == ("NoSuchKey", 404)
    assert refused(s3.get_bucket_acl, Bucket="no-such-bucket") == ("NoSuchBucket", 404)


def test_writing_acls_accepts_only_the_owners_full_control(s3: Any) -> None:
    s3.put_object_acl(Bucket=BUCKET, Key="plain", ACL="private")
    s3.put_bucket_acl(Bucket=BUCKET, ACL="bucket-owner-full-control")
    owner = {"ID": OWNER, "DisplayName": OWNER}
    mine = {"Owner": owner, "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": OWNER},
                                        "Permission": "FULL_CONTROL"}]}
    s3.put_object_acl(Bucket=BUCKET, Key="plain", AccessControlPolicy=mine)
    public = {"Owner": owner, "Grants": [*mine["Grants"], {
        "Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
        "Permission": "READ"}]}
    assert refused(s3.put_object_acl, Bucket=BUCKET, Key="plain",
                   AccessControlPolicy=public) == ("AccessControlListNotSupported", 400)
    assert refused(s3.put_bucket_acl, Bucket=BUCKET, ACL="public-read") == \
        ("AccessControlListNotSupported", 400)
    assert refused(s3.put_object_acl, Bucket=BUCKET, Key="no-such-key", ACL="private") == \
        ("NoSuchKey", 404)
    _owner_full_control(s3.get_object_acl(Bucket=BUCKET, Key="plain"))


@pytest.mark.skipif(shutil.which("s3cmd") is None,
                    reason="s3cmd is not installed (apt-get install s3cmd)")
def test_s3cmd_info_and_setacl_private_work(store: StoreCluster, s3: Any,
                                            tmp_path: Path) -> None:
    # s3cmd info reads ?acl (501 before: the command failed); setacl --acl-private writes it
    hostport = store.s3_url().split("://", 1)[1]
    ak, sk = KEYS["default"]
    cfg = tmp_path / "s3cfg"
    cfg.write_text(f"[default]\naccess_key = {ak}\nsecret_key = {sk}\nhost_base = {hostport}\n"
                   f"host_bucket = {hostport}\nuse_https = False\nsignature_v2 = False\n"
                   f"bucket_location = {REGION}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def s3cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["s3cmd", "-c", str(cfg), *args], check=False,
                              capture_output=True,
                              text=True, timeout=60, env={**env, "HOME": str(tmp_path)})

    info = s3cmd("info", f"s3://{BUCKET}/plain")
    assert info.returncode == 0, info.stderr
    assert f"{OWNER}: FULL_CONTROL" in info.stdout, info.stdout
    assert s3cmd("setacl", "--acl-private", f"s3://{BUCKET}/plain").returncode == 0
    public = s3cmd("setacl", "--acl-public", f"s3://{BUCKET}/plain")
    assert public.returncode != 0 and "AccessControlListNotSupported" in public.stderr


# ------------------------------------------------------------------ storage class
def test_storage_class_other_than_standard_is_refused(s3: Any) -> None:
    # before: GLACIER / REDUCED_REDUNDANCY were answered 200 and stored STANDARD
    for cls in ("GLACIER", "REDUCED_REDUNDANCY", "STANDARD_IA"):
        assert refused(s3.put_object, Bucket=BUCKET, Key=f"class-{cls}", Body=b"x",
                       StorageClass=cls) == ("InvalidStorageClass", 400)
        assert absent(s3, f"class-{cls}")
    assert refused(s3.create_multipart_upload, Bucket=BUCKET, Key="class-mpu",
                   StorageClass="DEEP_ARCHIVE") == ("InvalidStorageClass", 400)
    s3.put_object(Bucket=BUCKET, Key="class-standard", Body=b"x", StorageClass="STANDARD")
    # as AWS: HEAD names no class for STANDARD objects, listings say STANDARD
    assert "StorageClass" not in s3.head_object(Bucket=BUCKET, Key="class-standard")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="class-")["Contents"]
    assert [(o["Key"], o["StorageClass"]) for o in listed] == [("class-standard", "STANDARD")]


# ------------------------------------------------------------------ tags, lock, website
def test_tags_are_refused_since_they_are_not_stored(s3: Any) -> None:
    assert refused(s3.put_object, Bucket=BUCKET, Key="tagged", Body=b"x",
                   Tagging="team=ml") == ("NotImplemented", 501)
    assert absent(s3, "tagged")
    src = {"Bucket": BUCKET, "Key": "plain"}
    assert refused(s3.copy_object, Bucket=BUCKET, Key="tagged-copy", CopySource=src,
                   TaggingDirective="REPLACE", Tagging="a=b") == ("NotImplemented", 501)
    # no tags anywhere: COPY copies the empty set, exactly
    s3.copy_object(Bucket=BUCKET, Key="copy-tags", CopySource=src, TaggingDirective="COPY")


def test_object_lock_is_refused_as_on_a_bucket_without_it(s3: Any) -> None:
    # before: "retain until 2030" was answered 200 and the object could be deleted at once
    until = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    assert refused(s3.put_object, Bucket=BUCKET, Key="locked", Body=b"x",
                   ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until) == \
        ("InvalidRequest", 400)
    assert refused(s3.put_object, Bucket=BUCKET, Key="locked", Body=b"x",
                   ObjectLockLegalHoldStatus="ON") == ("InvalidRequest", 400)
    assert absent(s3, "locked")
    assert refused(s3.create_bucket, Bucket="lock-bucket",
                   ObjectLockEnabledForBucket=True) == ("NotImplemented", 501)
    # bypassing a retention that never exists is accepted (test suites' cleanups send it)
    s3.put_object(Bucket=BUCKET, Key="bypass", Body=b"x")
    s3.delete_object(Bucket=BUCKET, Key="bypass", BypassGovernanceRetention=True)
    assert absent(s3, "bypass")


def test_website_redirect_is_refused(s3: Any) -> None:
    assert refused(s3.put_object, Bucket=BUCKET, Key="redirect", Body=b"x",
                   WebsiteRedirectLocation="/elsewhere") == ("NotImplemented", 501)
    assert absent(s3, "redirect")


# ------------------------------------------------------------------ expected bucket owner
def test_expected_bucket_owner_is_checked(s3: Any) -> None:
    # before: a wrong owner was ignored, so a client's guard against writing into a bucket
    # it does not own never fired
    s3.put_object(Bucket=BUCKET, Key="owned", Body=b"x", ExpectedBucketOwner=OWNER)
    assert s3.get_object(Bucket=BUCKET, Key="owned", ExpectedBucketOwner=OWNER)["Body"].read() \
        == b"x"
    for call, kw in ((s3.put_object, {"Key": "not-owned", "Body": b"x"}),
                     (s3.get_object, {"Key": "owned"}), (s3.list_objects_v2, {}),
                     (s3.head_bucket, {}), (s3.delete_object, {"Key": "owned"})):
        code = refused(call, Bucket=BUCKET, ExpectedBucketOwner="123456789012", **kw)
        assert code[1] == 403, (call, code)
    assert absent(s3, "not-owned")
    assert s3.get_object(Bucket=BUCKET, Key="owned")["Body"].read() == b"x"
    src = {"Bucket": BUCKET, "Key": "owned"}
    assert refused(s3.copy_object, Bucket=BUCKET, Key="owned-copy", CopySource=src,
                   ExpectedSourceBucketOwner="team") == ("AccessDenied", 403)
    s3.copy_object(Bucket=BUCKET, Key="owned-copy", CopySource=src,
                   ExpectedSourceBucketOwner=OWNER, ExpectedBucketOwner=OWNER)


def test_headers_that_promise_nothing_here_still_work(s3: Any) -> None:
    # RequestPayer (no bucket here is requester-pays) and an SDK checksum hint are ignored
    s3.put_object(Bucket=BUCKET, Key="payer", Body=b"x", RequestPayer="requester",
                  ChecksumAlgorithm="CRC32")
    assert s3.get_object(Bucket=BUCKET, Key="payer", RequestPayer="requester")["Body"].read() \
        == b"x"
