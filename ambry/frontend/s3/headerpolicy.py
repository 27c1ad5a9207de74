"""Which request headers this S3 API honours, refuses or ignores: one table, one pure function.

A header a client sends is often a *promise* it expects the store to keep: encrypt these
bytes, keep them from being deleted until a date, keep them in a cheaper or safer class,
grant another account access, check the bucket belongs to whom I think. A store that does
not implement the feature and silently drops the header lies: the client believes its data
encrypted, locked or private to an owner it named. Every such family gets a row of
:data:`RULES`, and :func:`check_headers` (called once by ``app`` after authentication, with
the AWS operation the route table chose) raises the error the row says, or returns.

Decisions (docs/s3.md, "Header families", says the same for users):

* **Server-side encryption** (SSE-S3, SSE-KMS, DSSE-KMS and SSE-C, copy-source SSE-C too), on
  every operation: 501 ``NotImplemented``, naming the header. The store keeps plaintext;
  MinIO without a KMS answers SSE-S3/KMS the same way (501 NotImplemented, "Server side
  encryption specified but KMS is not configured"). MinIO and Ceph RGW answer SSE-C over
  plain HTTP with 400 ``InvalidRequest`` ("must be made over a secure connection"), which
  would tell the client to retry over TLS; here TLS would not help, so 501 says the truth.
* **ACLs** (``x-amz-acl``, ``x-amz-grant-*``, ``x-amz-object-ownership``): as an AWS bucket
  with ACLs disabled (Object Ownership ``BucketOwnerEnforced``, AWS's default since 2023):
  ``private`` and ``bucket-owner-full-control``, or a ``x-amz-grant-full-control`` naming
  only the owner, are what happens anyway and are accepted; anything else is 400
  ``AccessControlListNotSupported`` (``InvalidBucketAclWithObjectOwnership`` on
  CreateBucket, as AWS).
* **Storage class**: ``STANDARD`` accepted; any other class 400 ``InvalidStorageClass``
  (MinIO's answer): every object here has the one durability of its replication.
* **Tagging**: tags are not stored, so a non-empty ``x-amz-tagging`` is 501 NotImplemented
  (as ``?tagging`` is). ``x-amz-tagging-directive`` COPY / REPLACE are kept exactly (the
  source has no tags; REPLACE with tags is refused by ``x-amz-tagging``).
* **Object lock** (mode, retain-until date, legal hold): 400 ``InvalidRequest`` "Bucket is
  missing Object Lock Configuration" (AWS's answer for a bucket without object lock);
  ``x-amz-bucket-object-lock-enabled: true`` on CreateBucket: 501 NotImplemented.
  ``x-amz-bypass-governance-retention`` is ignored: nothing is ever retained, so there is
  nothing to bypass (test-suite cleanups send it on every delete).
* **Website redirect**: 501 NotImplemented (no website hosting: the redirect would never be
  served, and AWS answers it back on HEAD, which this store would not).
* **Expected bucket owner** (``x-amz-expected-bucket-owner``, and
  ``x-amz-source-expected-bucket-owner`` of a copy): compared with the owner ID this store
  reports (ListBuckets ``Owner/ID``: the account name); another value is 403
  ``AccessDenied``, as AWS.
* **Append** (``x-amz-write-offset-bytes``): 501 NotImplemented; ignoring it would replace
  the object the client meant to append to.
* Every other header is honoured where the operation documents it, or ignored as AWS ignores
  headers an operation does not take (``x-amz-request-payer``: no bucket here is requester
  pays; ``x-amz-sdk-checksum-algorithm``: a hint, the checksum itself is verified;
  ``x-amz-mfa``: no bucket has MFA delete).

Owns the table and the check. Does not own the operations (the handlers) nor who the
request acts for (``auth``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ambry.frontend.s3.errors import S3Error

__all__ = ["RULES", "Rule", "check_headers", "owner_grantees"]

#: The operations that create an object (and so take its storage, ACL, tags, lock, SSE).
OBJECT_WRITES = frozenset({"PutObject", "CopyObject", "CreateMultipartUpload"})
#: The operations that act on a bucket the caller names (everything but ListBuckets).
_SERVICE_OPS = frozenset({"ListBuckets"})
_COPIES = frozenset({"CopyObject", "UploadPartCopy"})
_ACL_WRITES = OBJECT_WRITES | {"CreateBucket", "PutBucketAcl", "PutObjectAcl"}

#: What an ACL header may say on a bucket with ACLs disabled: the owner keeps full control.
OWNER_CANNED_ACLS = frozenset({"private", "bucket-owner-full-control"})

# (request header, operation, value, owner id) -> the error to answer, or None to go on
Decide = Callable[[str, str, str, str], "S3Error | None"]


@dataclass(frozen=True)
class Rule:
    family: str                      # the row of docs/s3.md "Header families"
    names: frozenset[str]            # header names (lower case) ...
    prefixes: tuple[str, ...]        # ... or name prefixes
    ops: frozenset[str] | None       # the operations it is decided on (None: all of them)
    decide: Decide

    def applies(self, name: str, op: str) -> bool:
        return ((name in self.names or name.startswith(self.prefixes))
                and (self.ops is None or op in self.ops))


def _not_implemented(name: str, op: str, value: str, owner: str) -> S3Error:
    return S3Error("NotImplemented", f"A header you provided implies functionality that is "
                                     f"not implemented ({name}: this store does not "
                                     f"implement it)", 501, extra={"Header": name})


def _sse(name: str, op: str, value: str, owner: str) -> S3Error:
    return S3Error("NotImplemented", f"Server side encryption specified but this store does "
                                     f"not encrypt objects ({name}); nothing was stored", 501,
                   extra={"Header": name})


def owner_grantees(value: str) -> list[str]:
    """The grantees of an ``x-amz-grant-*`` value (``id="a", uri="..."``), as
    ``kind=value`` with quotes removed."""
    out = []
    for g in value.split(","):
        kind, _, who = g.strip().partition("=")
        out.append(f"{kind.strip().lower()}={who.strip().strip(chr(34))}")
    return out


def _acl_refused(op: str) -> S3Error:
    if op == "CreateBucket":
        return S3Error("InvalidBucketAclWithObjectOwnership", "Bucket cannot have ACLs set "
                                                              "with ObjectOwnership's "
                                                              "BucketOwnerEnforced setting")
    return S3Error("AccessControlListNotSupported", "The bucket does not allow ACLs")


def _acl(name: str, op: str, value: str, owner: str) -> S3Error | None:
    if name == "x-amz-acl":
        return None if value.strip() in OWNER_CANNED_ACLS else _acl_refused(op)
    # the owner's full control, spelled out: what bucket-owner-full-control says
    if name == "x-amz-grant-full-control" and all(g == f"id={owner}"
                                                  for g in owner_grantees(value)):
        return None
    return _acl_refused(op)


def _ownership(name: str, op: str, value: str, owner: str) -> S3Error | None:
    if value.strip() == "BucketOwnerEnforced":
        return None
    return _not_implemented(name, op, value, owner)


def _storage_class(name: str, op: str, value: str, owner: str) -> S3Error | None:
    if value.strip() == "STANDARD":
        return None
    return S3Error("InvalidStorageClass", "The storage class you specified is not valid "
                                          "(this store keeps every object STANDARD)",
                   extra={"StorageClassRequested": value[:64]})


def _tagging(name: str, op: str, value: str, owner: str) -> S3Error | None:
    return None if not value.strip() else _not_implemented(name, op, value, owner)


def _tagging_directive(name: str, op: str, value: str, owner: str) -> S3Error | None:
    if value.strip() in ("COPY", "REPLACE"):
        return None
    return S3Error("InvalidArgument", "Unknown tag directive.",
                   extra={"ArgumentName": name, "ArgumentValue": value[:64]})


def _object_lock(name: str, op: str, value: str, owner: str) -> S3Error:
    return S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration")


def _bucket_lock(name: str, op: str, value: str, owner: str) -> S3Error | None:
    if value.strip().lower() != "true":
        return None
    return _not_implemented(name, op, value, owner)


def _expected_owner(name: str, op: str, value: str, owner: str) -> S3Error | None:
    if op in _SERVICE_OPS or value.strip() == owner:  # ListBuckets names no bucket
        return None
    return S3Error("AccessDenied", "Access Denied", 403)


def _accept(name: str, op: str, value: str, owner: str) -> None:
    return None


def _rule(family: str, names: str = "", prefixes: tuple[str, ...] = (),
          ops: frozenset[str] | None = None, decide: Decide = _accept) -> Rule:
    return Rule(family, frozenset(names.split()), prefixes, ops, decide)


# Tried in order; the first refusal answers (security families first).
RULES: tuple[Rule, ...] = (
    _rule("server-side encryption", "x-amz-server-side-encryption",
          ("x-amz-server-side-encryption-",
           "x-amz-copy-source-server-side-encryption-"), None, _sse),
    _rule("expected bucket owner", "x-amz-expected-bucket-owner", (), None,
          _expected_owner),
    _rule("expected source bucket owner", "x-amz-source-expected-bucket-owner", (), _COPIES,
          _expected_owner),
    _rule("ACL", "x-amz-acl", ("x-amz-grant-",), _ACL_WRITES, _acl),
    _rule("object ownership", "x-amz-object-ownership", (), frozenset({"CreateBucket"}),
          _ownership),
    _rule("object lock", "x-amz-object-lock-mode x-amz-object-lock-retain-until-date "
                         "x-amz-object-lock-legal-hold", (), OBJECT_WRITES, _object_lock),
    _rule("bucket object lock", "x-amz-bucket-object-lock-enabled", (),
          frozenset({"CreateBucket"}), _bucket_lock),
    _rule("storage class", "x-amz-storage-class", (), OBJECT_WRITES, _storage_class),
    _rule("tagging", "x-amz-tagging", (), OBJECT_WRITES, _tagging),
    _rule("tagging directive", "x-amz-tagging-directive", (), frozenset({"CopyObject"}),
          _tagging_directive),
    _rule("website redirect", "x-amz-website-redirect-location", (), OBJECT_WRITES,
          _not_implemented),
    _rule("append", "x-amz-write-offset-bytes", (), None, _not_implemented),
)


def check_headers(op: str, headers: Mapping[str, str], owner: str) -> None:
    """Raise the :class:`S3Error` a request of AWS operation ``op`` gets for a header this
    store refuses (``headers``: lower-case name -> value, as ``Ctx.h``), or return. ``owner``
    is the owner ID this store reports for the caller's buckets."""
    names = sorted(n for n in headers if n.startswith("x-amz-"))
    if not names:
        return
    for rule in RULES:
        for name in names:
            if rule.applies(name, op):
                err = rule.decide(name, op, headers[name], owner)
                if err is not None:
                    raise err
