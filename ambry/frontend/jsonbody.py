"""JSON request bodies of the REST API (``POST /stitch``), read and parsed within bounds.

Owns reading a JSON body whole but never more than ``max_bytes`` (413 beyond: the size is known
before a byte is parsed), and parsing it into a document at most ``max_depth`` containers deep
(400 beyond). Bad input of any kind is a 400 naming the problem: bytes that are not UTF-8, text
that is not JSON, and nesting. ``json.loads`` recurses once per level of nesting, so a body of
``'[' * 100000`` raised RecursionError (a 500); that is now caught where it happens, and the
depth of what parsed is measured without recursion against ``max_depth``.

Does not own what a body must contain (the route checks its own schema).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ambry.common.errors import InvalidArgument, PayloadTooLarge

__all__ = ["parse_json", "read_json"]

_READ_BYTES = 256 * 1024


async def read_json(request: web.Request, *, max_bytes: int, max_depth: int) -> Any:
    """The request's body parsed as JSON (see :func:`parse_json`); 413 when the declared or
    the actual body is over ``max_bytes``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"JSON body of {request.content_length} bytes is over the "
                              f"limit ({max_bytes} bytes)")
    raw = bytearray()
    while True:  # read() returns what has arrived: a body in several segments needs a loop
        piece = await request.content.read(_READ_BYTES)
        if not piece:
            break
        raw += piece
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"JSON body is over the limit ({max_bytes} bytes)")
    return parse_json(bytes(raw), max_depth=max_depth)


def parse_json(raw: bytes, *, max_depth: int) -> Any:
    """``raw`` (UTF-8 JSON) parsed; InvalidArgument when it is not, or when arrays and
    objects nest more than ``max_depth`` deep (a scalar has depth 0, ``[]`` depth 1)."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise InvalidArgument(f"JSON body nests deeper than {max_depth} levels") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidArgument(f"body is not JSON: {_one_line(str(e))}") from None
    if _depth_over(doc, max_depth):
        raise InvalidArgument(f"JSON body nests deeper than {max_depth} levels")
    return doc


def _depth_over(doc: Any, max_depth: int) -> bool:
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        depth += 1
        if depth > max_depth:
            return True
        stack.extend((child, depth) for child in node if isinstance(child, (list, dict)))
    return False


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
