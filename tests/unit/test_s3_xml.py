"""S3 reply documents stay well-formed XML whatever a key, bucket or message holds."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ambry.frontend.s3.xml import document, xml_text


@pytest.mark.parametrize("name,shown", [
    ("fuzz\x00", "fuzz\ufffd"), ("a\x01b\x1f", "a\ufffdb\ufffd"), ("bad\udcff", "bad\ufffd"),
    ("\ufffe\uffff", "\ufffd\ufffd"), ("é/ü/\U0001f600", "é/ü/\U0001f600")])
def test_error_document_naming_any_bucket_or_key_parses(name: str, shown: str) -> None:
    # a bucket named "fuzz%00" got a NoSuchBucket reply with a raw NUL: not XML, so every
    # client failed to read the error (found by tests/integration/test_fuzz_s3.py)
    body = document("Error", [("Code", "NoSuchBucket"), ("BucketName", name),
                              ("Key", [("Inner", name)])], namespace=False, text=name)
    root = ET.fromstring(body)
    assert root.findtext("Code") == "NoSuchBucket"
    assert root.findtext("BucketName") == shown


def test_characters_xml_can_carry_are_kept_as_they_are() -> None:
    kept = "tab\tcr\rlf\n é \U0001f600 \ud7ff \ue000 \ufffd"
    assert xml_text(kept) == kept
    assert xml_text("a\x00b\udcffc\uffff") == "a\ufffdb\ufffdc\ufffd"
