"""Helpers shared by the S3 integration tests (imported by the test modules).

Owns making boto3 clients for a test store (path-style, the test key pairs of
``ambry.testing.frontend.TEST_S3``), raw requests signed by botocore's own signer (to look at
status codes, headers and XML that boto3 hides), and reading S3 error XML. Does not own any
assertion beyond "this call had the expected status".
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from ambry.testing.frontend import TEST_S3, StoreCluster

KEYS = {k["account"]: (k["access_key"], k["secret_key"]) for k in TEST_S3["access_keys"]}
REGION = "us-east-1"
_POOL = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


def s3_client(store: StoreCluster, datacenter: str = "dc1", account: str = "default",
              secret: str | None = None, **config: Any) -> Any:
    ak, sk = KEYS[account]
    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                 max_pool_connections=32, **config)
    return boto3.client("s3", endpoint_url=store.s3_url(datacenter), aws_access_key_id=ak,
                        aws_secret_access_key=secret or sk, region_name=REGION, config=cfg)


@dataclass
class Raw:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def code(self) -> str | None:
        """The <Code> of an S3 error body."""
        return xml_text(self.body, "Code")

    def expect(self, status: int) -> Raw:
        assert self.status == status, (self.status, self.body[:500])
        return self


def xml_text(body: bytes, tag: str) -> str | None:
    if not body:
        return None
    root = ET.fromstring(body)
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == tag:
            return el.text or ""
    return None


def raw(method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
        account: str = "default", secret: str | None = None, sign: bool = True,
        payload_hash: str | None = None) -> Raw:
    """One request, signed with SigV4 by botocore (``payload_hash`` replaces the body's
    SHA-256 in x-amz-content-sha256, e.g. UNSIGNED-PAYLOAD)."""
    h = dict(headers or {})
    if sign:
        ak, sk = KEYS[account]
        req = AWSRequest(method=method, url=url, data=body, headers=h)
        signer = S3SigV4Auth(Credentials(ak, secret or sk), "s3", REGION)
        if payload_hash is not None:  # botocore would put the body's hash there
            signer.payload = lambda request: payload_hash  # type: ignore[method-assign]
        signer.add_auth(req)
        h = dict(req.headers.items())
        url = req.url
    r = _POOL.request(method, url, body=body or None, headers=h, redirect=False)
    return Raw(r.status, r.headers, r.data)


def get_url(url: str, method: str = "GET", body: bytes | None = None,
            headers: Mapping[str, str] | None = None) -> Raw:
    """An unsigned request (presigned URLs, anonymous access)."""
    r = _POOL.request(method, url, body=body, headers=dict(headers or {}), redirect=False)
    return Raw(r.status, r.headers, r.data)


def eventually(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll ``check`` until it returns without raising (replication is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except (AssertionError, ClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
