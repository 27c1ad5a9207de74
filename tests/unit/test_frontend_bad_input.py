"""Malformed input on the REST port is a 400, never a 500 (issue 13 item 6).

A real frontend app (``make_app``) on a loopback server, fed raw bytes over a socket so that
nothing on the client side cleans them up first. The storage nodes of its config are never
started: every case here must be refused before a node is asked (a 503 would be a failure too).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from ambry.common.config import load_config
from ambry.frontend.app import make_app

DOC = {"datacenters": [{"name": "dc1", "id": 1}],
       "nodes": [{"id": f"n{i}", "datacenter": "dc1", "host": "127.0.0.1", "port": 9000 + i,
                  "http_port": 9100 + i} for i in range(3)],
       "partitions": {"count": 2},
       "frontend": {"signed_url_secret": "unit-test-secret-0123456789abcdef"}}

GOOD = {"x-ambry-service-id": b"svc", "x-ambry-content-type": b"application/octet-stream"}
STORED_HEADERS = ["x-ambry-service-id", "x-ambry-content-type", "x-ambry-filename",
                  "x-ambry-owner-id"]


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    return make_app(load_config(path), "dc1")


async def _raw(server: TestServer, method: str, path: str, headers: dict[str, bytes],
               body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send one request as raw bytes; (status, headers, body) of the reply."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = f"{method} {path} HTTP/1.1\r\nConnection: close\r\n".encode()
    for k, v in {"Host": b"x", **headers, "Content-Length": str(len(body)).encode()}.items():
        head += k.encode() + b": " + v + b"\r\n"
    writer.write(head + b"\r\n" + body)
    await writer.drain()
    async with asyncio.timeout(10):
        reply = await reader.read()
    writer.close()
    top, _, payload = reply.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), hdrs, payload


@pytest.mark.parametrize("name", STORED_HEADERS)
@pytest.mark.parametrize("route", [("POST", "/"), ("PUT", "/named/default/default/a.bin")])
async def test_a_stored_header_that_is_not_utf8_is_400(app: Any, route: tuple[str, str],
                                                        name: str) -> None:
    # broke: the value reached msgpack / the reply with a lone surrogate: UnicodeEncodeError, 500
    method, path = route
    async with TestServer(app) as server:
        status, h, body = await _raw(server, method, path,
                                     {**GOOD, name: b"caf\xc3\xa9 \xff bad"}, b"data")
    assert status == 400, body
    assert h["x-ambry-error-code"] == "INVALID_ARGUMENT"
    assert name.encode() in body


@pytest.mark.parametrize("name", ["x-ambry-um-note", "x-ambry-ttl", "x-ambry-request-id",
                                  "x-ambry-target-account-name", "x-ambry-blob-size"])
async def test_any_ambry_header_that_is_not_utf8_is_400(app: Any, name: str) -> None:
    # the check is one, at the door, for every x-ambry-* header and route
    async with TestServer(app) as server:
        for method, path in [("POST", "/"), ("GET", "/signedUrl"), ("POST", "/stitch"),
                             ("PUT", "/updateTtl"), ("GET", "/named/default/default")]:
            status, h, _ = await _raw(server, method, path, {**GOOD, name: b"\xff\xfe"})
            assert status == 400, (method, path)
            assert h["x-ambry-request-id"].isascii()  # a bad request id is not echoed


async def test_a_signed_url_for_a_host_header_that_is_not_utf8_is_400(app: Any) -> None:
    # the Host is echoed into the URL that /signedUrl returns in a header
    async with TestServer(app) as server:
        status, _, _ = await _raw(server, "GET", "/signedUrl", {
            **GOOD, "x-ambry-url-type": b"POST", "Host": b"ex\xffample"})
    assert status == 400


async def test_a_cors_preflight_with_bytes_that_are_not_utf8_is_answered(app: Any) -> None:
    # the preflight echoes Access-Control-Request-Headers; an unechoable one becomes "*"
    async with TestServer(app) as server:
        status, h, _ = await _raw(server, "OPTIONS", "/", {
            "Origin": b"http://a", "Access-Control-Request-Headers": b"x-\xff"})
    assert status == 200
    assert h["access-control-allow-headers"] == "*"


@pytest.mark.parametrize("body", [b"[" * 100_000, b"{\"chunkIds\": " + b"[" * 100_000,
                                  b"{\"chunkIds\": [[[[\"a\"]]]]}", b"{\"chunkIds\": [1, 2]}",
                                  b"[]", b"\xff\xfe", b"{\"chunkIds\": \"abc\"}", b"",
                                  b"{\"chunkIds\": " + b"[" * 900 + b"]" * 900 + b"}"])
async def test_a_stitch_body_that_is_not_the_expected_json_is_400(app: Any, body: bytes
                                                                   ) -> None:
    # broke: '[' * 100000 made json.loads raise RecursionError (500); non-string ids were
    # str()-ed (a 5000-deep list took str() down the same road)
    async with TestServer(app) as server:
        status, h, text = await _raw(server, "POST", "/stitch", GOOD, body)
    assert status == 400, text
    assert h["x-ambry-error-code"] == "INVALID_ARGUMENT"


async def test_a_stitch_body_over_the_limit_is_413_before_it_is_read(app: Any) -> None:
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"POST /stitch HTTP/1.1\r\nHost: x\r\nx-ambry-service-id: s\r\n"
                     b"x-ambry-content-type: t\r\nContent-Length: 999999999\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            line = await reader.readline()
        writer.close()
    assert line.startswith(b"HTTP/1.1 413 "), line


async def test_a_stitch_body_in_many_pieces_is_read_whole(app: Any) -> None:
    # read(n) returns what has arrived: a body in several segments was cut and parsed short
    # (a 400 "not JSON" for a valid body); now it is read to its end. Unknown ids: still 400.
    body = json.dumps({"chunkIds": ["A" * 43] * 2000}).encode()
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"POST /stitch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"x-ambry-service-id: s\r\nx-ambry-content-type: t\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode())
        for i in range(0, len(body), 1000):
            writer.write(body[i:i + 1000])
            await writer.drain()
            await asyncio.sleep(0.001)
        async with asyncio.timeout(10):
            reply = await reader.read()
        writer.close()
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:300]
    assert b"x-ambry-error-code: INVALID_BLOB_ID" in reply, reply[:300]  # the ids were read
