"""Pure pieces of the fsspec filesystem and the ``ambry`` blob commands: names and endpoints
as users write them (ambry.common.location), byte ranges, durations, and the mapping of SDK
errors to one-line messages and exit codes."""

from __future__ import annotations

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambry.cli.args import parse_target, parse_ttl
from ambry.cli.blobs import (
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_OTHER,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    failure_of,
    human_size,
)
from ambry.cli.copy import _safe_rel
from ambry.client import (
    BlobDeleted,
    BlobNotFound,
    ConnectionFailed,
    IntegrityError,
    InvalidArgument,
    InvalidBlobId,
    NameExists,
    ServerError,
    Unavailable,
)
from ambry.client._fsspec_entries import clamp_range
from ambry.common.blobid import new_blob_id
from ambry.common.location import (
    DEFAULT_ENDPOINT,
    ENDPOINT_ENV,
    Location,
    endpoints_from,
    guess_content_type,
    is_blob_id,
    parse_location,
)

BLOB_ID = new_blob_id(1, 1, 1, 1).to_str()


def test_names_parse_with_or_without_the_scheme():
    for text in ("ambry://default/models/runs/42/model.pt", "default/models/runs/42/model.pt"):
        assert parse_location(text) == Location("default", "models", "runs/42/model.pt")
    assert parse_location("ambry://a/c") == Location("a", "c", "")
    assert parse_location("a/c/dir/") == Location("a", "c", "dir/")  # the slash is kept
    assert str(Location("a", "c", "x/y")) == "ambry://a/c/x/y"
    for bad in ("", "a", "a/", "/c/x", "ambry://", "ambry:///c/x"):
        with pytest.raises(ValueError, match="not a blob name"):
            parse_location(bad)


def test_a_blob_id_is_never_a_name():
    assert is_blob_id(BLOB_ID) and is_blob_id("/" + BLOB_ID)
    assert not is_blob_id(BLOB_ID[:-1]) and not is_blob_id(BLOB_ID + "A")
    assert not is_blob_id("default/models/x")
    assert parse_target(BLOB_ID) == BLOB_ID and parse_target("/" + BLOB_ID) == BLOB_ID
    assert parse_target("default/models/x") == Location("default", "models", "x")
    # a 43-character name without a "/" cannot be a name, and a name is never an id
    assert parse_target("ambry://default/models/" + BLOB_ID) == Location("default", "models", BLOB_ID)
    for bad in ("hello", "default/models", "default/models/"):
        with pytest.raises(click.UsageError) as e:
            parse_target(bad)
        assert e.value.exit_code == EXIT_USAGE
    assert parse_target("default/models/", allow_prefix=True) == Location("default", "models", "")


def test_endpoints_from_arguments_then_environment_then_default():
    env = {ENDPOINT_ENV: "http://dc1:1174, dc2:1184"}
    assert endpoints_from(None, env) == ["http://dc1:1174", "http://dc2:1184"]
    assert endpoints_from([], env) == ["http://dc1:1174", "http://dc2:1184"]
    assert endpoints_from("http://x:1/", env) == ["http://x:1"]
    assert endpoints_from(["a:1,b:2", "a:1", "https://c"], env) == [
        "http://a:1", "http://b:2", "https://c"]
    assert endpoints_from(None, {}) == [DEFAULT_ENDPOINT]
    assert endpoints_from(None, {ENDPOINT_ENV: " , "}) == [DEFAULT_ENDPOINT]


def test_content_type_follows_the_extension():
    assert guess_content_type("runs/1/metrics.json") == "application/json"
    assert guess_content_type("notes.txt") == "text/plain"
    assert guess_content_type("model.pt") == "application/octet-stream"
    assert guess_content_type("train.parquet") == "application/vnd.apache.parquet"
    assert guess_content_type("train.csv.gz") == "application/gzip"
    assert guess_content_type("no-extension") == "application/octet-stream"


@given(st.integers(0, 1000), st.one_of(st.none(), st.integers(-1200, 1200)),
       st.one_of(st.none(), st.integers(-1200, 1200)))
def test_ranges_clamp_as_python_slices(size, start, end):
    data = bytes(range(256)) * 4
    data = data[:size] if size <= len(data) else data
    lo, hi = clamp_range(start, end, len(data))
    assert 0 <= lo <= hi <= len(data)
    assert data[lo:hi] == data[start:end]


@pytest.mark.parametrize(("text", "seconds"), [
    ("3600", 3600), ("45s", 45), ("30m", 1800), ("12h", 43200), ("1d", 86400),
    ("2w", 1209600), ("0", 0), ("never", None), ("-1", None), (None, None)])
def test_ttl_durations(text, seconds):
    assert parse_ttl(None, None, text) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["soon", "1y", "-5", "1.5h", "h"])
def test_bad_ttl_is_a_usage_error(text):
    with pytest.raises(click.BadParameter):
        parse_ttl(None, None, text)  # type: ignore[arg-type]


def test_errors_map_to_one_line_and_an_exit_code():
    name = "ambry://default/models/x"
    cases = [
        (BlobNotFound("get /x"), BLOB_ID, EXIT_NOT_FOUND, f"blob not found: {BLOB_ID}"),
        (BlobNotFound("get /x"), name, EXIT_NOT_FOUND, f"name not found: {name}"),
        (BlobDeleted("get /x"), BLOB_ID, EXIT_NOT_FOUND, f"blob deleted: {BLOB_ID}"),
        (InvalidArgument("list /named/a/c: unknown container 'c' in account 'a'"), name,
         EXIT_NOT_FOUND, "unknown container 'c' in account 'a'"),
        (NameExists("put"), name, EXIT_CONFLICT, f"name exists: {name} (--force overwrites it)"),
        (InvalidBlobId("bad"), "xyz", EXIT_USAGE, "invalid blob id: xyz"),
        (ConnectionFailed("get /x: ClientConnectorError: refused\n(after 6 attempt(s))"),
         BLOB_ID, EXIT_UNAVAILABLE,
         "unavailable: get /x: ClientConnectorError: refused (after 6 attempt(s))"),
        (Unavailable("too few replicas"), BLOB_ID, EXIT_UNAVAILABLE,
         "unavailable: too few replicas"),
        (IntegrityError("xxh3 mismatch"), BLOB_ID, EXIT_OTHER,
         "integrity check failed: xxh3 mismatch"),
        (FileNotFoundError(2, "No such file or directory", "/x/y"), "/x/y", EXIT_OTHER,
         "No such file or directory: /x/y"),
    ]
    for err, what, code, message in cases:
        f = failure_of(err, what)
        assert (f.exit_code, f.message) == (code, message)
    assert failure_of(ServerError("boom"), BLOB_ID).exit_code == EXIT_OTHER


def test_names_that_cannot_be_local_paths_are_refused():
    assert _safe_rel("a/b/c.pt") and _safe_rel("a")
    for bad in ("", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a/"):
        assert not _safe_rel(bad), bad


def test_human_sizes():
    assert [human_size(n) for n in (0, 1023, 1024, 5 * 2**20 + 1, 3 * 2**40)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 MiB", "3.0 TiB"]
