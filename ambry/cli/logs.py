"""Logging setup of the daemons: one line per event, as text or as one JSON object.

Owns the two line formats (``--log-format text|json``, config ``daemon.log_format``). A JSON
line has ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``msg``, the daemon's
identity (``node`` or ``frontend``), ``rid`` when the message names a request
(``rid=<id> ...``, the convention of every request log line) or the record carries one
(``extra={"rid": ...}``), the other ``extra`` fields a caller passed, and ``exc`` with the
traceback of a logged exception. Does not own what is logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

__all__ = ["JsonFormatter", "setup_logging"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s {who} %(name)s: %(message)s"
_RID = re.compile(r"\brid=([^\s,;]+)")
# attributes every LogRecord has; anything else was passed with extra=
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message",
                                                                          "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, str] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {"ts": f"{ts}.{int(record.msecs):03d}Z",
                               "level": record.levelname, "logger": record.name, "msg": msg}
        out.update(self.static)
        m = _RID.search(msg)
        if m is not None and m.group(1):
            out["rid"] = m.group(1)
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(who: str, level: str, log_format: str = "text", *,
                  worker: int | None = None) -> None:
    """Log to stderr, tagged with the daemon's identity ``who`` (``node=dc1-n1``), and
    ``worker=<index>`` in a frontend worker of several (``frontend.workers``)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        key, _, value = who.partition("=")
        static = {key: value} if value else {}
        if worker is not None:
            static["worker"] = str(worker)
        handler.setFormatter(JsonFormatter(static))
    else:
        if worker is not None:
            who = f"{who} worker={worker}"
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT.format(who=who)))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
