"""The router: turns one blob operation into calls on storage-node replicas.

:class:`Router` is the one object the apps (``app``, ``s3``) hold. It builds the operations
and hands each the collaborators it needs; every job lives in a file named after it:

  ===================  ============================================================
  ``clusterview``      the map as this frontend routes by it (swapped by ``reload``)
  ``fanout``           node connections, the fan-out loop, write quorums, stragglers,
                       the in-flight byte budget, background tasks
  ``verdicts``         replica answers to verdicts, verdicts to typed errors (pure)
  ``uploads``          PUT: simple blobs, chunked uploads, pending chunk TTLs
  ``reads``            GET/HEAD: the wave/hedge loop over ``getplan``, body streams
  ``mutations``        DELETE, TTL update, undelete by id
  ``stitching``        one composite blob from chunks uploaded before
  ``names``            named blobs: lookup, list, conditional writes, bind, delete
  ===================  ============================================================

The ordering rules of DESIGN.md section 5 are kept by those files (TTL update and undelete
touch chunks first, delete touches the metadata blob first; a failed upload leaves no
reachable chunks). Does not own HTTP (``app``), nor any disk: everything goes through
``NodeClient``. Verdicts are :class:`~ambry.frontend.quorum.Outcome` values turned into
typed errors (``verdicts``), so the HTTP layer maps errors in exactly one table.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ambry.common.clock import Clock, SystemClock
from ambry.common.config import ClusterConfig, ClusterMap
from ambry.frontend.clusterview import ClusterView
from ambry.frontend.containers import ContainerRegistry
from ambry.frontend.failure import FailureDetector, HedgeDelay, ReadOnlyPartitions
from ambry.frontend.fanout import FanOut
from ambry.frontend.mutations import Mutator, TtlUpdateTooLate
from ambry.frontend.names import NameConflict, Names, name_partition, require_absent
from ambry.frontend.reads import BlobRead, Reader
from ambry.frontend.stitching import Stitcher
from ambry.frontend.uploads import StoredBlob, Uploader
from ambry.runtime.budget import ByteBudget

__all__ = ["BlobRead", "NameConflict", "Router", "StoredBlob", "TtlUpdateTooLate",
           "name_partition", "require_absent"]


class Router:
    def __init__(self, config: ClusterConfig, datacenter: str, *, clock: Clock | None = None,
                 rnd: random.Random | None = None,
                 id_bytes: Callable[[int], bytes] = secrets.token_bytes,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_node_error: Callable[[str, str], None] | None = None) -> None:
        self.fe = config.frontend  # the ``frontend:`` settings stay as they are until a restart
        self.view = ClusterView(config, datacenter, id_bytes)
        self.dc = self.view.dc
        self.clock = clock or SystemClock()
        # ``rnd`` only spreads load (partition and replica choice). Blob ids come from
        # ``id_bytes``, the OS's CSPRNG unless a test injects another: an id is the read
        # capability of a blob, and a Mersenne Twister gives its state away after 624 words
        # (156 ids), so later ids could be predicted. Kept apart so that a test seeding
        # ``rnd`` for repeatable choices never makes ids repeatable.
        self.rnd = rnd or random.SystemRandom()
        self.detector = FailureDetector(monotonic, self.fe.failure_threshold_errors,
                                        self.fe.failure_backoff_s)
        self.read_only = ReadOnlyPartitions(monotonic, self.fe.read_only_cooldown_s)
        self.hedge = HedgeDelay(max_s=self.fe.node_timeout_ms / 1000)
        self.fanout = FanOut(self.fe, self.view, self.detector, on_node_error)

        reader = Reader(self.fe, self.view, self.fanout, self.hedge, self.rnd)
        mutator = Mutator(self.fe, self.view, self.fanout, self.clock, reader)
        uploader = Uploader(self.fe, self.view, self.fanout, self.clock, self.rnd,
                            self.read_only, mutator)
        stitcher = Stitcher(self.view, reader, uploader)
        self.names = Names(self.fe, self.view, self.fanout, self.clock, self.rnd, self.hedge,
                           reader=reader, uploader=uploader, stitcher=stitcher,
                           mutator=mutator)

        # The API the apps use, each served by the file that owns the job.
        self.put = uploader.put                      # uploads
        self.put_chunks = uploader.put_chunks
        self.stitch = stitcher.stitch                # stitching
        self.stitch_chunks = stitcher.stitch_chunks
        self.get = reader.get                        # reads
        self.delete = mutator.delete                 # mutations
        self.update_ttl = mutator.update_ttl
        self.undelete = mutator.undelete
        self.lookup_name = self.names.lookup_name    # names
        self.resolve_name = self.names.resolve_name
        self.list_named = self.names.list_named
        self.write_name = self.names.write_name
        self.put_named = self.names.put_named
        self.stitch_named = self.names.stitch_named
        self.bind_name = self.names.bind_name
        self.delete_named = self.names.delete_named
        self.client = self.fanout.client
        self.local_replicas = self.view.local_replicas
        self.parse_id = self.view.parse_id
        self.new_id = self.view.new_id

        # containers created at run time (S3 buckets), resolved like config ones; the
        # registry reaches names through the ``NameOps`` interface this router provides
        self.containers = ContainerRegistry(self)

    # The map, as of the last reload (read at call time: ``reload`` swaps it).
    @property
    def config(self) -> ClusterConfig:
        return self.view.config

    @property
    def cmap(self) -> ClusterMap:
        return self.view.cmap

    @property
    def partition_ids(self) -> frozenset[int]:
        return self.view.partition_ids

    @property
    def writable(self) -> list[int]:
        return self.view.writable

    # Counters the apps export as metrics.
    @property
    def budget(self) -> ByteBudget:
        return self.fanout.budget

    @property
    def straggler_bytes(self) -> int:
        return self.fanout.straggler_bytes

    @property
    def metrics_name_busy(self) -> int:
        return self.names.metrics_name_busy

    def reload(self, config: ClusterConfig) -> None:
        """Adopt a grown cluster map (``ClusterView.reload``); the ``frontend:`` settings
        stay as they are until a restart."""
        self.view.reload(config)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background, awaited (up to 5 s) by :meth:`close`."""
        self.fanout.spawn(coro)

    async def close(self) -> None:
        await self.fanout.close()
