"""Listing a bucket's keys, and the buckets, by coverage: every partition asked of one of its primaries.

Riak's list keys and list buckets, over its HTTP API (`GET /buckets/B/keys?keys=true`, `GET
/buckets?buckets=true`).

Theory of operation
- A key lives in the partition it hashes to, on that partition's primaries. So a listing asks, for every
  partition of the ring, one primary of it for what it holds in that partition (RPC `kv.list`, or the
  local store when that primary is this node), and joins the answers: a covering set, as Riak's coverage
  plans are. At most CONCURRENCY partitions are asked at once.
- Which primary: those of the bucket's n_val (the default n_val for a bucket listing), the ones the
  failure detector has up first, each in ring order; the next one when one fails to answer. A node that
  failed once is asked last for the rest of the listing, so a hung node not yet convicted costs one
  request timeout, not one per partition. A partition none of them answers for fails the whole listing
  with `CoverageError` naming it (503): a short list is never passed off as complete.
- What counts: keys with a live sibling. A key whose siblings are all tombstones is left out (Riak lists
  deleted keys until they are reaped). A bucket counts where it has such a key. A key written only to
  fallbacks, while its primaries were down, is listed once it is handed back. A listing is not a
  snapshot: a key written or deleted while it runs may or may not be in it.
- Cost: it reads every key of the bucket's partitions (a bucket listing skips to the next bucket once it
  has seen a live key), one replica per partition, in pages of PAGE_ROWS with other requests served in
  between. It is for operators and small buckets, as Riak warns of its own.
"""

from __future__ import annotations

from typing import Any

import trio

from dynamo.object import ObjectDecodeError, blob_has_live_sibling
from dynamo.rpc import RpcError

LIST_TYPE = "kv.list"
PAGE_ROWS = 1000
CONCURRENCY = 8


class CoverageError(Exception):
    """Some partitions had no primary that answered: the listing would be incomplete."""

    def __init__(self, partitions: list[int]) -> None:
        shown = ", ".join(str(p) for p in partitions[:10]) + (", ..." if len(partitions) > 10 else "")
        super().__init__(f"no primary answered for {len(partitions)} partition(s): {shown}")
        self.partitions = partitions


class Listing:
    """`keys(bucket)` and `buckets()` for a node; `rpc_list` answers other nodes' `kv.list`."""

    def __init__(self, node_id: str, backend: Any, membership: Any, registry: Any, pool: Any,
                 timeout_s: float, log: Any) -> None:
        self.node_id, self.backend, self.membership = node_id, backend, membership
        self.registry, self.pool, self.timeout_s, self.log = registry, pool, timeout_s, log

    async def keys(self, bucket: bytes) -> list[bytes]:
        """The live keys of `bucket`, each once, sorted. CoverageError if a partition was not covered."""
        per_partition = await self._cover(bucket, self.registry.get(bucket).n_val)
        return sorted(key for keys in per_partition for key in keys)  # a key hashes to one partition

    async def buckets(self) -> list[bytes]:
        """The buckets with a live key, sorted. CoverageError if a partition was not covered."""
        per_partition = await self._cover(None, self.registry.defaults.n_val)
        return sorted({bucket for buckets in per_partition for bucket in buckets})

    async def rpc_list(self, body: Any) -> list[bytes]:
        """kv.list: [bucket or None, partition] -> what this node holds there (keys, or buckets)."""
        if not (isinstance(body, list) and len(body) == 2 and (body[0] is None or type(body[0]) is bytes)
                and type(body[1]) is int and 0 <= body[1] < self.membership.ring.partitions):
            raise ValueError("kv.list takes [bucket bytes or null, partition]")
        return await self.local(body[0], body[1])

    async def local(self, bucket: bytes | None, partition: int) -> list[bytes]:
        """The live keys of `bucket` in `partition` of the local store, sorted; with bucket None, the
        buckets that have one there."""
        return await (self._buckets_here(partition) if bucket is None else self._keys_here(bucket, partition))

    async def _keys_here(self, bucket: bytes, partition: int) -> list[bytes]:
        keys: list[bytes] = []
        after = bucket, b""  # rows come in (bucket, key) order: the bucket's first key is next
        while True:
            page = self.backend.scan(partition, after, PAGE_ROWS)
            for row_bucket, key, blob in page:
                if row_bucket != bucket:
                    return keys
                if self._live(row_bucket, key, blob):
                    keys.append(key)
            if len(page) < PAGE_ROWS:
                return keys
            after = page[-1][0], page[-1][1]
            await trio.sleep(0)  # let requests run between pages

    async def _buckets_here(self, partition: int) -> list[bytes]:
        buckets: list[bytes] = []
        after = None
        while True:
            page = self.backend.scan(partition, after, PAGE_ROWS)
            if not page:
                return buckets
            end = after = page[-1][0], page[-1][1]
            for row_bucket, key, blob in page:
                if self._live(row_bucket, key, blob):
                    buckets.append(row_bucket)
                    after = row_bucket + b"\x00", b""  # skip the rest of it: the next bucket sorts after this
                    break
            if len(page) < PAGE_ROWS and after == end:
                return buckets
            await trio.sleep(0)

    def _live(self, bucket: bytes, key: bytes, blob: bytes) -> bool:
        try:
            return blob_has_live_sibling(blob)
        except ObjectDecodeError:
            self.log.error("undecodable object %r/%r: left out of a listing", bucket, key)
            return False

    async def _cover(self, bucket: bytes | None, n_val: int) -> list[list[bytes]]:
        partitions = self.membership.ring.partitions
        results: list[list[bytes]] = [[] for _ in range(partitions)]
        uncovered: list[int] = []
        failed: dict[str, tuple[int, str]] = {}  # node -> (asks it failed, the first error)
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def cover(partition: int) -> None:
            async with limiter:
                preflist = self.membership.preflist(partition, n_val)
                # Up first, and a node that already failed this listing last: one that hangs costs one
                # timeout, not one per partition. Stable: ring order within each group.
                candidates = sorted((replica.node for replica in preflist.primaries),
                                    key=lambda node: (node in failed, node in preflist.down))
                for node in candidates:
                    try:
                        results[partition] = await self._ask(node, bucket, partition)
                        return
                    except (RpcError, OSError, ValueError) as error:
                        count, first = failed.get(node, (0, str(error)))
                        failed[node] = count + 1, first
                uncovered.append(partition)
        async with trio.open_nursery() as nursery:
            for partition in range(partitions):
                nursery.start_soon(cover, partition)
        for node, (count, first) in sorted(failed.items()):
            self.log.info("listing: %s failed %d partition ask(s), the first with: %s", node, count, first)
        if uncovered:
            raise CoverageError(sorted(uncovered))
        return results

    async def _ask(self, node: str, bucket: bytes | None, partition: int) -> list[bytes]:
        if node == self.node_id:
            return await self.local(bucket, partition)
        reply = await self.pool.call(node, LIST_TYPE, [bucket, partition], self.timeout_s)
        if not (isinstance(reply, list) and all(type(item) is bytes for item in reply)):
            raise ValueError(f"kv.list from {node}: not a list of bytes")
        return reply

