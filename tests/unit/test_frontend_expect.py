"""The Expect header on the S3 and REST ports: a value that is not UTF-8 is a 417, not a 500."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from ambry.common.config import load_config
from ambry.frontend.app import make_app
from ambry.frontend.s3.app import make_s3_app

DOC = {"datacenters": [{"name": "dc1", "id": 1}],
       "nodes": [{"id": f"n{i}", "datacenter": "dc1", "host": "127.0.0.1", "port": 9000 + i,
                  "http_port": 9100 + i} for i in range(3)],
       "partitions": {"count": 2},
       "frontend": {"signed_url_secret": "unit-test-secret-0123456789abcdef"},
       "s3": {"access_keys": [{"access_key": "AKIDUNIT", "secret_key": "s", "account": "default"}]}}


@pytest.fixture
def rest_app(tmp_path: Path) -> web.Application:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    return make_app(load_config(path), "dc1")


@pytest.fixture
def s3_app(rest_app: web.Application) -> web.Application:
    return make_s3_app(rest_app["frontend"])


async def _raw(server: TestServer, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(10):
        status_line = await reader.readline()
    writer.close()
    return status_line


@pytest.mark.parametrize("expect", [b"\x80", b"\xff\xfe", b"100-continue\xc3", b"200"])
async def test_s3_expect_header_other_than_100_continue_is_ignored(s3_app: Any,
                                                                  expect: bytes) -> None:
    # aiohttp's default Expect handler put the value into its 417 text, failed to encode the
    # surrogate-escaped byte and answered 500 (found by tests/integration/test_fuzz_s3.py);
    # then S3 answered 417 where AWS ignores the expectation: the request is served (here an
    # unsigned one: 403), never a 500
    async with TestServer(s3_app) as server:
        line = await _raw(server, b"GET /bucket/key HTTP/1.1\r\nHost: x\r\nExpect: " + expect +
                          b"\r\nContent-Length: 0\r\n\r\n")
    assert line.startswith(b"HTTP/1.1 403 "), line


async def test_expect_100_continue_still_gets_100_continue(s3_app: Any) -> None:
    async with TestServer(s3_app) as server:
        line = await _raw(server, b"PUT /bucket/key HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue"
                                  b"\r\nContent-Length: 1\r\n\r\n")
    assert line.startswith(b"HTTP/1.1 100 "), line


@pytest.mark.parametrize("method,path", [
    ("GET", "/healthCheck"), ("GET", "/AAAA"), ("GET", "/named/a/c/n"), ("GET", "/x/BlobInfo"),
    ("GET", "/no/such/route/here"), ("PUT", "/AAAA"), ("OPTIONS", "/"), ("PATCH", "/")])
async def test_rest_expect_header_that_is_not_utf8_is_417(rest_app: Any, method: str,
                                                           path: str) -> None:
    # the same 500 on every REST route, and on paths and methods no route serves (aiohttp's
    # own 404/405 routes used its default Expect handler)
    async with TestServer(rest_app) as server:
        line = await _raw(server, f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() +
                          b"Expect: \xc3\x28\r\nContent-Length: 0\r\n\r\n")
    assert line.startswith(b"HTTP/1.1 417 "), line


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/no/such/route/here", 404), ("PUT", "/AAAA", 405), ("HEAD", "/named/a/c", 405),
    ("POST", "/healthCheck", 405)])
async def test_unrouted_paths_and_methods_are_still_404_and_405(rest_app: Any, method: str,
                                                                 path: str, status: int) -> None:
    async with TestServer(rest_app) as server:
        line = await _raw(server, f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
                                  f"Content-Length: 0\r\n\r\n".encode())
    assert line.startswith(f"HTTP/1.1 {status} ".encode()), line
