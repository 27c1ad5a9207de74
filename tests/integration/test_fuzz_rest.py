"""Fuzzing every route of the Ambry REST API with schemathesis, from the OpenAPI document the
frontend serves at /openapi.json, against real processes (3 storage nodes and a frontend).

Must hold (issue 13 item 6): no response >= 500 for any request, valid or not; statuses,
content types, required headers and JSON bodies as the document says; a request that breaks
the document's schemas is refused with a 4xx. Beside schemathesis' own positive and negative
cases, each operation is also fed ids, accounts and containers that exist (so requests reach
the router and the nodes, not only the parsers) and hostile extra headers: user metadata
(``x-ambry-um-*``) and ``x-ambry-*`` values with bytes that are not UTF-8.

The fast variant (``make test``) is derandomized: the same cases every run. The large budget
(``make faults``) draws a seed, prints it, and replays it with ``AMBRY_TEST_SEED=<seed>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from fe_helpers import MIB, SERVICE, fuzz_settings, seed_from_env, store_fixture
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ambry.frontend.openapi import OPENAPI_PATH, openapi_document
from ambry.testing.frontend import StoreCluster

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
FAST_EXAMPLES = int(os.environ.get("AMBRY_FUZZ_REST_EXAMPLES", "12"))  # per operation
SLOW_EXAMPLES = int(os.environ.get("AMBRY_FUZZ_REST_SLOW_EXAMPLES", "600"))  # 1-3 min in all
OPERATIONS = [f"{m.upper()} {p}" for p, item in openapi_document()["paths"].items()
              for m in ("get", "head", "put", "post", "delete", "options") if m in item]
# Targets that exist in the test store (TEST_ACCOUNTS)
TARGETS = [("default", "default"), ("default", "models"), ("team", "default")]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    yield from store_fixture(tmp_path_factory.mktemp("fuzz-rest"), datacenters=1,
                             nodes_per_dc=3, partitions=4)


@pytest.fixture(scope="module")
def base(store: StoreCluster) -> str:
    return store.url("dc1", "")


@pytest.fixture(scope="module")
def known(base: str) -> dict[str, list[str]]:
    """Ids and names that exist: a small blob, a composite, a deleted blob, chunks for stitch,
    a named blob (so fuzzed requests reach the router and the nodes)."""
    s = requests.Session()

    def post(body: bytes, **headers: str) -> str:
        r = s.post(base + "/", data=body, headers={**SERVICE, **headers}, timeout=60)
        assert r.status_code == 201, r.text
        return str(r.headers["Location"])[1:]

    small = post(b"fuzz me", **{"x-ambry-um-origin": "fuzz"})
    composite = post(os.urandom(MIB + MIB // 2))
    deleted = post(b"soon gone")
    assert s.delete(f"{base}/{deleted}", timeout=60).status_code == 202
    chunks = [post(os.urandom(1000), **{"x-ambry-chunk-upload": "true"}) for _ in range(2)]
    r = s.put(base + "/named/default/default/fuzz/known.bin", data=b"named",
              headers=SERVICE, timeout=60)
    assert r.status_code == 201, r.text
    return {"ids": [small, composite, deleted], "chunks": chunks, "names": ["fuzz/known.bin"]}


@pytest.fixture(scope="module")
def schema(base: str) -> Any:
    # loaded from the running frontend: /openapi.json itself is under test
    return schemathesis.openapi.from_url(base + OPENAPI_PATH)


# Values a client can put in a header that the parsers must survive: latin-1 bytes that are
# not UTF-8 (requests sends str header values as latin-1), long values, tabs, and tokens
# that look like numbers, booleans and ids.
_HOSTILE_VALUES = ["\xff", "caf\xe9", "\x80abc", "\xc3\x28", "é", "\xff\xfe", "", "-1", "0",
                   "true", "9" * 30, "%00", "/", "x" * 9000, "A" * 43, "\t1\t", "100-continue"]
_header_text = st.one_of(
    st.sampled_from(_HOSTILE_VALUES),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
            max_size=40),
).map(str.strip)  # no surrounding whitespace (NEL, NBSP too): requests refuses to send it
_AMBRY_HEADERS = ["x-ambry-service-id", "x-ambry-content-type", "x-ambry-owner-id",
                  "x-ambry-filename", "x-ambry-ttl", "x-ambry-blob-size",
                  "x-ambry-target-account-name", "x-ambry-target-container-name",
                  "x-ambry-get-option", "x-ambry-named-upsert", "x-ambry-chunk-upload",
                  "x-ambry-content-xxh3", "x-ambry-blob-id", "x-ambry-url-type",
                  "x-ambry-url-ttl-secs", "x-ambry-request-id", "Range", "Expect",
                  "Content-Type", "Access-Control-Request-Headers"]
_extra_headers = st.dictionaries(
    st.one_of(st.sampled_from(_AMBRY_HEADERS),
              st.from_regex(r"x-ambry-um-[a-zA-Z0-9_-]{0,12}", fullmatch=True)),
    _header_text, min_size=1, max_size=3)


def _case_strategy(op: Any, known: dict[str, list[str]]) -> Any:
    """schemathesis' positive and negative cases, the same with things that exist in place of
    generated ids and names, each maybe with hostile extra headers."""
    params = {p.name for p in op.path_parameters}
    header_names = {p.name.lower() for p in op.headers}
    fixed: list[dict[str, Any]] = []
    for bid in known["ids"]:
        if "blob_id" in params:
            fixed.append({"path_parameters": {"blob_id": bid}})
        if "x-ambry-blob-id" in header_names:
            fixed.append({"headers": {"x-ambry-blob-id": bid}})
    if "account" in params:
        for account, container in TARGETS:
            pp = {"account": account, "container": container}
            fixed.append({"path_parameters": pp})
            if "name" in params:
                fixed += [{"path_parameters": {**pp, "name": n}} for n in known["names"]]
    if op.body:
        fixed.append({"body": {"chunkIds": known["chunks"]}, "media_type": "application/json"}
                     if op.path == "/stitch" else
                     {"body": b"fuzz body", "media_type": "application/octet-stream"})
    strategies = [op.as_strategy(generation_mode=GenerationMode.POSITIVE),
                  op.as_strategy(generation_mode=GenerationMode.NEGATIVE)]
    for kw in fixed:
        strategies.append(op.as_strategy(generation_mode=GenerationMode.POSITIVE, **kw))
    return st.tuples(st.one_of(strategies), st.one_of(st.just({}), _extra_headers))


def _fuzz(schema: Any, base: str, label: str, known: dict[str, list[str]],
          settings: hypothesis.settings, seed: int | None = None) -> None:
    op = schema.find_operation_by_label(label)
    assert op is not None, f"{label} is not in /openapi.json"
    session = requests.Session()

    @settings
    @given(_case_strategy(op, known))
    def run(drawn: tuple[Any, dict[str, str]]) -> None:
        case, extra = drawn
        case.headers = {**(case.headers or {}), **extra}
        response = case.call(base_url=base, session=session, timeout=60)
        # with hostile additions only the one promise that holds for any request is checked
        case.validate_response(response, checks=[not_a_server_error] if extra else CHECKS)

    if seed is not None:
        run = hypothesis.seed(seed)(run)
    run()


def _settings(examples: int, **kw: Any) -> hypothesis.settings:
    return fuzz_settings(examples, HealthCheck.filter_too_much, **kw)


@pytest.mark.parametrize("label", OPERATIONS)
def test_rest_fuzz_no_5xx_and_conforms_to_openapi(schema: Any, base: str, label: str,
                                                   known: dict[str, list[str]]) -> None:
    # small, derandomized budget: the same cases on every run, well under a minute in all
    _fuzz(schema, base, label, known, _settings(FAST_EXAMPLES, derandomize=True))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("label", OPERATIONS)
def test_rest_fuzz_large_budget(schema: Any, base: str, label: str,
                                known: dict[str, list[str]]) -> None:
    _fuzz(schema, base, label, known, _settings(SLOW_EXAMPLES), seed=seed_from_env())
