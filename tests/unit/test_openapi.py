"""The OpenAPI document of the REST API describes exactly the routes the app serves, is a valid
OpenAPI 3 document, and its header schemas agree with the header parsers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from aiohttp.test_utils import TestClient, TestServer

from ambry.common.config import load_config
from ambry.common.errors import InvalidArgument
from ambry.frontend.app import make_app
from ambry.frontend.headers import parse_bool_header, parse_get_option, parse_ttl
from ambry.frontend.openapi import OPENAPI_PATH, openapi_document

DOC = {"datacenters": [{"name": "dc1", "id": 1}],
       "nodes": [{"id": f"n{i}", "datacenter": "dc1", "host": "127.0.0.1", "port": 9000 + i,
                  "http_port": 9100 + i} for i in range(3)],
       "partitions": {"count": 2},
       "frontend": {"signed_url_secret": "unit-test-secret-0123456789abcdef"}}
METHODS = ("get", "head", "put", "post", "delete", "options", "patch")


@pytest.fixture
def app(tmp_path: Path) -> Any:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    return make_app(load_config(path), "dc1")


def _openapi_paths(resource: Any) -> list[str]:
    """An aiohttp resource as OpenAPI paths: ``{name:.+}`` -> ``{name}``, and the alternatives
    of ``{sub:BlobInfo|UserMetadata}`` as one path each."""
    info = resource.get_info()
    if "pattern" not in info:
        return [resource.canonical]
    path = info["formatter"]
    for m in re.finditer(r"\(\?P<(\w+)>([A-Za-z|]+)\)", info["pattern"].pattern):
        return [path.replace("{" + m.group(1) + "}", alt) for alt in m.group(2).split("|")]
    return [path]


def test_every_route_of_the_app_is_in_the_document_and_nothing_else(app: Any) -> None:
    # a route added to make_app without a description would not be fuzzed
    served: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method == "*":  # the last resort of unrouted paths (ambry.frontend.expect)
            continue
        for path in _openapi_paths(route.resource):
            served.add((route.method.lower(), path))
    documented = {(m, p) for p, item in openapi_document()["paths"].items()
                  for m in METHODS if m in item}
    # aiohttp answers HEAD on every GET route; the document names HEAD where it is an
    # operation of its own (reading blob headers), OPTIONS is the CORS middleware's
    missing = {(m, p) for m, p in served if m != "head"} - documented
    assert not missing, f"routes without a description: {sorted(missing)}"
    extra = {(m, p) for m, p in documented if m != "options"} - served
    assert not extra, f"described but not served: {sorted(extra)}"


def test_the_document_is_valid_openapi_3_and_every_reference_resolves() -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) == sum(1 for item in openapi_document()["paths"].values()
                           for m in METHODS if m in item)
    for op in ops:  # every $ref of every operation resolves
        assert op.label


def _pattern(name: str) -> str:
    for p in openapi_document()["components"]["parameters"].values():
        if p.get("name") == name:
            return str(p["schema"]["pattern"])
    raise KeyError(name)


@pytest.mark.parametrize("value", ["true", "FALSE", " True\t", "tru", "yes", "", "1"])
def test_boolean_header_pattern_accepts_what_the_parser_accepts(value: str) -> None:
    try:
        parse_bool_header(value)
        accepted = True
    except InvalidArgument:
        accepted = False
    assert (re.search(_pattern("x-ambry-named-upsert"), value) is not None) == accepted


@pytest.mark.parametrize("value", ["None", "include_all", "Include_Deleted_Blobs",
                                   "INCLUDE_EXPIRED_BLOBS", "all", "", "Include_All2"])
def test_get_option_pattern_accepts_what_the_parser_accepts(value: str) -> None:
    try:
        parse_get_option(value)
        accepted = True
    except InvalidArgument:
        accepted = False
    assert (re.search(_pattern("x-ambry-get-option"), value) is not None) == accepted


def test_ttl_bounds_match_the_parser() -> None:
    ttl = openapi_document()["components"]["parameters"]["Ttl"]["schema"]
    assert parse_ttl(str(ttl["minimum"])) == ttl["minimum"]
    assert parse_ttl(str(ttl["maximum"])) == ttl["maximum"]
    for bad in (ttl["minimum"] - 1, ttl["maximum"] + 1):
        with pytest.raises(InvalidArgument):
            parse_ttl(str(bad))


async def test_openapi_json_is_served_by_the_rest_app(app: Any) -> None:
    async with TestClient(TestServer(app)) as client:
        r = await client.get(OPENAPI_PATH)
        assert r.status == 200 and r.content_type == "application/json"
        assert await r.json() == openapi_document()


@pytest.mark.parametrize("method", ["PUT", "GET", "HEAD", "DELETE"])
async def test_a_name_with_a_newline_is_400_not_an_unknown_route(app: Any, method: str) -> None:
    # the name pattern ".+" stopped at a newline (%0A), so the route did not match: a 404
    # "no route" where the API promises 400 (found by tests/integration/test_fuzz_rest.py)
    async with TestClient(TestServer(app)) as client:
        r = await client.request(method, "/named/default/default/a%0Ab",
                                 headers={"x-ambry-service-id": "t", "x-ambry-content-type": "t"})
        assert r.status == 400, await r.text()
        assert r.headers["x-ambry-error-code"] == "INVALID_ARGUMENT"
