"""The node protocol: msgpack-framed TCP between frontends / peers and storage nodes.

``messages`` has the wire table and op schemas, ``framing`` the frame codec, ``client`` the
pooled, pipelined :class:`NodeClient`. Imports only ``ambry.common``.
"""

from ambry.protocol.client import GetReply, NodeClient, Reply
from ambry.protocol.messages import EntriesReply, MutationReply, NameRecord, StateReply

__all__ = ["EntriesReply", "GetReply", "MutationReply", "NameRecord", "NodeClient", "Reply",
           "StateReply"]
