"""XML of the S3 API: building reply documents and reading request documents.

Owns the S3 namespace, a small builder over ``xml.etree.ElementTree`` (:func:`document`), the
timestamp format S3 uses in XML (:func:`iso8601`), and the parsers of the request bodies the
API accepts (``CompleteMultipartUpload``, ``Delete``, ``CreateBucketConfiguration``,
``AccessControlPolicy``), which
answer ``MalformedXML`` (400) for anything else. Does not own which document a request gets.

Request bodies are small and bounded by the caller; a document type declaration is refused
before parsing, so no entity can expand (the "billion laughs" family).
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ambry.frontend.s3.errors import S3Error

__all__ = [
    "NS",
    "CompletedPart",
    "Grant",
    "document",
    "iso8601",
    "owner_acl_document",
    "parse_access_control_policy",
    "parse_complete_multipart",
    "parse_create_bucket",
    "parse_delete",
    "xml_text",
]

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

# A node is (tag, text) or (tag, [children]); None children are skipped. (Any: mypy's list
# invariance makes a recursive alias reject every literal list of nodes.)
Node = tuple[str, Any]


# Characters XML 1.0 cannot carry, even escaped: C0 controls but tab, CR and LF, lone surrogates
# (a path byte that is not UTF-8), U+FFFE and U+FFFF. A key or bucket named in a reply may hold
# them; written raw they made the document unparsable for every client.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """``value`` with each character XML 1.0 cannot carry replaced by U+FFFD. (Listings give
    exact keys with ``encoding-type=url``, as on AWS.)"""
    return _NOT_XML.sub("\ufffd", value)


def iso8601(ms: int) -> str:
    """``2013-05-24T00:00:00.000Z`` (the XML timestamp of S3 replies)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _build(parent: ET.Element, node: Node) -> None:
    tag, value = node
    el = ET.SubElement(parent, tag)
    if isinstance(value, list):
        for child in value:
            if child is not None:
                _build(el, child)
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    elif value is not None:
        el.text = xml_text(str(value))


def document(root_tag: str, children: Iterable[Node | None], *, namespace: bool = True,
             text: str | None = None) -> bytes:
    """A whole XML document: declaration, root element (in the S3 namespace), children."""
    root = ET.Element(root_tag, {"xmlns": NS} if namespace else {})
    root.text = None if text is None else xml_text(text)
    for child in children:
        if child is not None:
            _build(root, child)
    return (_DECL + ET.tostring(root, encoding="unicode")).encode("utf-8")


def _parse(body: bytes, root_tag: str) -> ET.Element:
    if b"<!" in body:  # DOCTYPE / ENTITY / CDATA: never needed by S3 request documents
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not "
                                      "validate against our published schema.")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not "
                                      "validate against our published schema.") from None
    if _local(root.tag) != root_tag:
        raise S3Error("MalformedXML", f"expected a {root_tag} document")
    return root


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == tag]


def _text(el: ET.Element, tag: str) -> str | None:
    found = _children(el, tag)
    if len(found) > 1:
        raise S3Error("MalformedXML", f"{tag} given more than once")
    return (found[0].text or "") if found else None


@dataclass(frozen=True, slots=True)
class CompletedPart:
    number: int
    etag: str


def parse_complete_multipart(body: bytes) -> list[CompletedPart]:
    root = _parse(body, "CompleteMultipartUpload")
    parts = []
    for p in _children(root, "Part"):
        num, etag = _text(p, "PartNumber"), _text(p, "ETag")
        if num is None or etag is None or not num.strip().isdigit():
            raise S3Error("MalformedXML", "each Part needs a PartNumber and an ETag")
        parts.append(CompletedPart(int(num.strip()), etag.strip()))
    if not parts:
        raise S3Error("MalformedXML", "CompleteMultipartUpload lists no part")
    return parts


def parse_delete(body: bytes) -> tuple[list[tuple[str, str | None]], bool]:
    """DeleteObjects: (key, VersionId or None) of each object, and whether the reply is
    quiet."""
    root = _parse(body, "Delete")
    quiet = (_text(root, "Quiet") or "false").strip().lower() == "true"
    objects: list[tuple[str, str | None]] = []
    for o in _children(root, "Object"):
        key = _text(o, "Key")
        if key is None:
            raise S3Error("MalformedXML", "each Object needs a Key")
        objects.append((key, _text(o, "VersionId")))
    return objects, quiet


def parse_create_bucket(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucket body (None when absent or empty)."""
    if not body.strip():
        return None
    root = _parse(body, "CreateBucketConfiguration")
    return _text(root, "LocationConstraint") or None


_XSI = "http://www.w3.org/2001/XMLSchema-instance"


def owner_acl_document(owner: str) -> bytes:
    """The ``AccessControlPolicy`` of every bucket and object here: the owner, with
    ``FULL_CONTROL`` (what AWS answers for a bucket whose ACLs are disabled). The grantee
    carries its ``xsi:type``, which s3cmd and botocore read."""
    root = ET.Element("AccessControlPolicy", {"xmlns": NS, "xmlns:xsi": _XSI})
    _build(root, ("Owner", [("ID", owner), ("DisplayName", owner)]))
    grants = ET.SubElement(ET.SubElement(root, "AccessControlList"), "Grant")
    grantee = ET.SubElement(grants, "Grantee", {"xsi:type": "CanonicalUser"})
    _build(grantee, ("ID", owner))
    _build(grantee, ("DisplayName", owner))
    _build(grants, ("Permission", "FULL_CONTROL"))
    return (_DECL + ET.tostring(root, encoding="unicode")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Grant:
    grantee_type: str   # CanonicalUser, Group, AmazonCustomerByEmail ("" when not given)
    grantee: str        # the ID, URI or e-mail address
    permission: str


def parse_access_control_policy(body: bytes) -> list[Grant]:
    """The grants of a PutBucketAcl / PutObjectAcl ``AccessControlPolicy`` body."""
    root = _parse(body, "AccessControlPolicy")
    acl = _children(root, "AccessControlList")
    if len(acl) != 1:
        raise S3Error("MalformedACLError", "The XML you provided was not well-formed or did "
                                           "not validate against our published schema")
    grants = []
    for g in _children(acl[0], "Grant"):
        grantee = _children(g, "Grantee")
        permission = _text(g, "Permission")
        if len(grantee) != 1 or permission is None:
            raise S3Error("MalformedACLError", "each Grant needs one Grantee and a Permission")
        kind = grantee[0].get(f"{{{_XSI}}}type", "")
        who = next((_text(grantee[0], t) for t in ("ID", "URI", "EmailAddress")
                    if _text(grantee[0], t) is not None), "")
        grants.append(Grant(kind, (who or "").strip(), permission.strip()))
    return grants
