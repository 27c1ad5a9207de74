"""Pure decisions of the S3 API: ETag arithmetic, conditional requests (ambry.frontend.s3.etag)
and the run-time container registry's conflict rule (ambry.frontend.containers)."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambry.frontend.containers import (
    FIRST_RUNTIME_CONTAINER_ID,
    LAST_RUNTIME_CONTAINER_ID,
    RegistryRecord,
    candidate_ids,
    choose_container_id,
    resolve_records,
)
from ambry.frontend.s3.etag import (
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    etag_matches,
    evaluate_conditions,
    multipart_etag,
    single_etag,
)


# ------------------------------------------------------------------ ETags
def test_multipart_etag_is_md5_of_part_md5s_and_count() -> None:
    parts = [b"a" * 10, b"b" * 20, b"c"]
    md5s = [hashlib.md5(p).digest() for p in parts]
    want = hashlib.md5(b"".join(md5s)).hexdigest() + "-3"
    assert multipart_etag(md5s) == f'"{want}"'
    # the known value of one 5 MiB part of zero bytes plus "x" (computed as AWS does)
    one = [hashlib.md5(b"\0" * 5 * 1024 * 1024).digest(), hashlib.md5(b"x").digest()]
    assert multipart_etag(one).endswith('-2"')
    with pytest.raises(ValueError):
        multipart_etag([])
    assert single_etag(hashlib.md5(b"").hexdigest()) == '"d41d8cd98f00b204e9800998ecf8427e"'


@pytest.mark.parametrize("header,hit", [
    ('"abc"', True), ("abc", True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True),
    ('"abcd"', False), ("", False), ('"x",', False)])
def test_etag_lists(header: str, hit: bool) -> None:
    assert etag_matches(header, '"abc"') is hit


LM = 1_700_000_000  # last modified, unix s
BEFORE = "Tue, 14 Nov 2023 22:13:19 GMT"  # LM - 1
AT = "Tue, 14 Nov 2023 22:13:20 GMT"      # LM
E = '"abc"'


@pytest.mark.parametrize("headers,want", [
    ({}, None),
    ({"if-match": E}, None),
    ({"if-match": '"zzz"'}, PRECONDITION_FAILED),
    ({"if-none-match": E}, NOT_MODIFIED),
    ({"if-none-match": '"zzz"'}, None),
    ({"if-modified-since": AT}, NOT_MODIFIED),
    ({"if-modified-since": BEFORE}, None),
    ({"if-unmodified-since": BEFORE}, PRECONDITION_FAILED),
    ({"if-unmodified-since": AT}, None),
    ({"if-modified-since": "not a date"}, None),  # invalid dates are ignored
    # AWS's documented combinations
    ({"if-match": E, "if-unmodified-since": BEFORE}, None),
    ({"if-none-match": E, "if-modified-since": BEFORE}, NOT_MODIFIED),
    ({"if-none-match": '"zzz"', "if-modified-since": AT}, None),
])
def test_conditional_get(headers: dict[str, str], want: int | None) -> None:
    assert evaluate_conditions(headers, E, LM, read=True) == want


def test_copy_source_conditions_are_412_never_304() -> None:
    p = "x-amz-copy-source-"
    assert evaluate_conditions({p + "if-none-match": E}, E, LM, read=False, prefix=p) == 412
    assert evaluate_conditions({p + "if-modified-since": AT}, E, LM, read=False,
                               prefix=p) == 412
    assert evaluate_conditions({p + "if-match": E}, E, LM, read=False, prefix=p) is None
    assert evaluate_conditions({"if-match": '"zzz"'}, E, LM, read=False, prefix=p) is None


# ------------------------------------------------------------------ registry
def rec(name: str, cid: int, created: int, dc: int, nonce: str = "00") -> RegistryRecord:
    return RegistryRecord(1, name, cid, created, dc, nonce)


def test_record_names_roundtrip() -> None:
    r = rec("my.bucket-1", 40000, 1234, 2, "beef")
    assert RegistryRecord.parse(r.record_name) == r
    assert RegistryRecord.parse("c/1/x/garbage") is None


def test_same_bucket_in_two_datacenters_first_creation_wins() -> None:
    a = rec("b", 40000, 100, 2)
    b = rec("b", 40000, 101, 1)
    assert resolve_records([a, b]) == {"b": a}
    tie = rec("b", 40001, 100, 1)
    assert resolve_records([a, tie]) == {"b": tie}  # same ms: the lower datacenter id


def test_two_names_never_share_an_id() -> None:
    a, b = rec("one", 40000, 100, 1), rec("two", 40000, 99, 2)
    assert resolve_records([a, b]) == {"two": b}
    assert resolve_records([a], reserved_ids={40000}) == {}


RECORDS = st.lists(st.builds(rec, st.sampled_from(["a", "b", "c", "d"]),
                             st.integers(40000, 40004), st.integers(0, 5), st.integers(1, 3),
                             st.sampled_from(["00", "01"])), max_size=12)


@settings(max_examples=300, deadline=None)
@given(records=RECORDS, seed=st.integers(0, 1000))
def test_resolution_is_order_independent_and_consistent(records: list[RegistryRecord],
                                                         seed: int) -> None:
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    table = resolve_records(records)
    assert resolve_records(shuffled) == table
    assert resolve_records(records + records) == table  # replicas may hold duplicates
    ids = [r.container_id for r in table.values()]
    assert len(ids) == len(set(ids))
    for name, winner in table.items():
        assert winner.name == name and winner in records
    # a record loses only to an earlier accepted record of its name or its id
    for r in records:
        if table.get(r.name) != r:
            assert any(w.order <= r.order and (w.name == r.name or
                                               w.container_id == r.container_id)
                       for w in table.values())


def test_ids_are_stable_per_name_and_probe_past_taken_ones() -> None:
    first = next(candidate_ids(1, "bucket"))
    assert FIRST_RUNTIME_CONTAINER_ID <= first <= LAST_RUNTIME_CONTAINER_ID
    assert choose_container_id(1, "bucket", set()) == first
    assert choose_container_id(1, "bucket", {first}) != first


# ------------------------------------------------------------------ configuration
def _config(s3: object, accounts: list[dict[str, object]] | None = None) -> object:
    from ambry.common.config import config_from_dict

    raw: dict[str, object] = {
        "datacenters": [{"name": "dc1", "id": 1}],
        "nodes": [{"id": "n1", "datacenter": "dc1", "host": "127.0.0.1", "port": 1,
                   "http_port": 2}],
        "cluster": {"replicas_per_datacenter": 1}, "partitions": {"count": 1},
        "accounts": accounts or [{"name": "default", "id": 1,
                                  "containers": [{"name": "default", "id": 1}]}],
        "s3": s3}
    return config_from_dict(raw)


def test_s3_config_parsing_and_errors() -> None:
    from ambry.common.errors import InvalidArgument
    from ambry.frontend.s3.config import s3_config_of

    ok = s3_config_of(_config({"access_keys": [{"access_key": "AK", "secret_key": "SK",
                                                "account": "default"}],
                               "min_part_size_bytes": "1MiB"}))  # type: ignore[arg-type]
    assert ok.secret_of("AK") == "SK" and ok.secret_of("nope") is None
    assert ok.min_part_size_bytes == 1 << 20 and ok.anonymous_account is None
    for bad in ({"acess_keys": []},
                {"access_keys": [{"access_key": "AK", "secret_key": "SK", "account": "nobody"}]},
                {"access_keys": [{"access_key": "AK", "secret_key": "SK", "account": "default"}] * 2},
                {"anonymous_account": "nobody"}, {"multipart_ttl_s": 5}):
        with pytest.raises(InvalidArgument):
            s3_config_of(_config(bad))  # type: ignore[arg-type]


def test_config_containers_must_stay_below_the_run_time_ids() -> None:
    from ambry.common.config import Account, Container
    from ambry.common.errors import InvalidArgument
    from ambry.frontend.containers import check_config_ids

    check_config_ids([Account("a", 1, (Container("c", FIRST_RUNTIME_CONTAINER_ID - 1),))])
    with pytest.raises(InvalidArgument):
        check_config_ids([Account("a", 1, (Container("c", FIRST_RUNTIME_CONTAINER_ID),))])
    with pytest.raises(InvalidArgument):
        check_config_ids([Account("system", 0xFFFF, ())])
