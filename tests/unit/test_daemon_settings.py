"""The daemon: section and the JSON log format."""

from __future__ import annotations

import io
import json
import logging

import pytest

from ambry.cli.logs import JsonFormatter
from ambry.common.daemon import DaemonConfig
from ambry.common.errors import InvalidArgument


def test_daemon_section_defaults_and_validation() -> None:
    assert DaemonConfig.from_sections({}) == DaemonConfig("text", 10.0, 0.0)
    d = DaemonConfig.from_sections({"daemon": {"log_format": "json", "shutdown_grace_s": 3}})
    assert (d.log_format, d.shutdown_grace_s) == ("json", 3)
    with pytest.raises(InvalidArgument, match="unknown keys"):
        DaemonConfig.from_sections({"daemon": {"log_fromat": "json"}})
    with pytest.raises(InvalidArgument, match="log_format"):
        DaemonConfig.from_sections({"daemon": {"log_format": "xml"}})


def _one_line(record_args: dict[str, object], *, exc: bool = False) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter({"node": "dc1-n1"}))
    logger = logging.getLogger("ambry.test.jsonlog")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("rid=%s op=%s failed", "abc123", "put")
    else:
        logger.warning("rid=%s op=%s from %s: slow", "r-9", "get", "1.2.3.4:5",
                       extra=record_args)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # one object per line, even with a traceback
    return dict(json.loads(lines[0]))


def test_json_line_has_the_fields_and_the_request_id() -> None:
    line = _one_line({"partition": 7})
    assert line["level"] == "WARNING" and line["logger"] == "ambry.test.jsonlog"
    assert line["msg"] == "rid=r-9 op=get from 1.2.3.4:5: slow"
    assert line["node"] == "dc1-n1" and line["rid"] == "r-9" and line["partition"] == 7
    assert str(line["ts"]).endswith("Z") and "T" in str(line["ts"])


def test_json_line_of_an_exception_keeps_the_traceback_in_one_field() -> None:
    line = _one_line({}, exc=True)
    assert line["rid"] == "abc123"
    assert "ValueError: boom" in str(line["exc"])
