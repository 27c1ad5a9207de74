"""The warm tier's node component (docs/erasure-coding.md): the encoding coordinator
(``job``), the fragment reader replicas read encoded blobs through (``fetch``), and the pass
that frees replicas' payload bytes once a segment is encoded. Plugged into a storage node by
whoever composes the daemon (the CLI, as replication): storage never imports it. Talks to
replicas only through ``ambry.storage.api.EcStore`` and to other nodes through the node
protocol."""

from ambry.warm.component import attach

__all__ = ["attach"]
