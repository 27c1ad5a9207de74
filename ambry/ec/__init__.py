"""The erasure-coded warm tier (issue 17; docs/erasure-coding.md).

Sealed log segments are Reed-Solomon coded into k data + m parity fragments on k + m nodes of
each datacenter. This package holds the parts the storage node, replication and the frontend
build on: ``layout`` (stripes, fragments, byte range -> pieces), ``placement`` (which nodes),
``codec`` (encode / decode / rebuild with a checksum per block; needs the ``ec`` extra) and
``fragfile`` (the on-disk fragment file). It imports only ``ambry.common``.
"""
