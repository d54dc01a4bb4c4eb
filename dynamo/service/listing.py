"""Listing a bucket's keys, and the buckets, by coverage: every partition asked of one of its primaries.

Riak's list keys and list buckets, over its HTTP API (`GET /buckets/B/keys?keys=true|stream`, `GET
/buckets?buckets=true|stream`).

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
- Bounded answers: one `kv.list` answer covers at most ASK_ROWS rows of the store and about ASK_BYTES of
  names, and says where to go on from (a (bucket, key) cursor), so no answer nears the RPC frame limit and a listing holds at most
  CONCURRENCY answers at once when it streams. The cursor is a position in (bucket, key) order, the same
  on every replica, so when a primary fails mid-partition the next one goes on from where it stopped.
- Streaming (`stream_keys`, `stream_buckets`): each answer's names go to `emit` as they come, in no
  particular order, each name once; `keys` and `buckets` collect them and sort.
- Buckets with an n_val below the default live only on the first primaries of each partition. A bucket
  listing answered, for some partition, by a primary beyond such a bucket's n_val may have missed it; if
  that bucket was not found elsewhere, the listing fails with `CoverageError` rather than leave it out.
- What counts: keys with a live sibling. A key whose siblings are all tombstones is left out (Riak lists
  deleted keys until they are reaped). A bucket counts where it has such a key. A key written only to
  fallbacks, while its primaries were down, is listed once it is handed back. A listing is not a
  snapshot: a key written or deleted while it runs may or may not be in it.
- Cost: it reads every key of the bucket's partitions (a bucket listing skips to the next bucket once it
  has seen a live key), one replica per partition, in pages of PAGE_ROWS with other requests served in
  between. It is for operators and small buckets, as Riak warns of its own.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import trio

from dynamo.object import ObjectDecodeError, blob_has_live_sibling
from dynamo.rpc import RpcError

LIST_TYPE = "kv.list"
PAGE_ROWS = 1000  # rows read from the store at a time, with other requests served in between
ASK_ROWS = 10 * PAGE_ROWS  # rows one kv.list answer covers at most
ASK_BYTES = 1 << 20  # names one kv.list answer carries at most, about (it ends after the name that reaches it)
CONCURRENCY = 8

Cursor = tuple[bytes, bytes]  # the (bucket, key) row a scan goes on after
Emit = Callable[[list[bytes]], Awaitable[None]]


class CoverageError(Exception):
    """Some partitions had no primary that answered: the listing would be incomplete."""

    def __init__(self, partitions: list[int], reason: str = "no primary answered for") -> None:
        shown = ", ".join(str(p) for p in partitions[:10]) + (", ..." if len(partitions) > 10 else "")
        super().__init__(f"{reason} {len(partitions)} partition(s): {shown}")
        self.partitions = partitions


class Listing:
    """`keys(bucket)` and `buckets()` for a node, whole or streamed; `rpc_list` answers other nodes'
    `kv.list`."""

    def __init__(self, node_id: str, backend: Any, membership: Any, registry: Any, pool: Any,
                 timeout_s: float, log: Any) -> None:
        self.node_id, self.backend, self.membership = node_id, backend, membership
        self.registry, self.pool, self.timeout_s, self.log = registry, pool, timeout_s, log

    async def keys(self, bucket: bytes) -> list[bytes]:
        """The live keys of `bucket`, each once, sorted. CoverageError if a partition was not covered."""
        found: list[bytes] = []
        await self.stream_keys(bucket, _collector(found))
        return sorted(found)

    async def buckets(self) -> list[bytes]:
        """The buckets with a live key, sorted. CoverageError if a partition was not covered."""
        found: list[bytes] = []
        await self.stream_buckets(_collector(found))
        return sorted(found)

    async def stream_keys(self, bucket: bytes, emit: Emit) -> None:
        """`await emit(keys)` for each answer's live keys of `bucket` (a key hashes to one partition, so
        each key comes once), then return; CoverageError, after the rest, if a partition was not covered."""
        await self._cover(bucket, self.registry.get(bucket).n_val, emit)

    async def stream_buckets(self, emit: Emit) -> None:
        """`await emit(buckets)` with the buckets not emitted before, as answers come; CoverageError, after
        the rest, if a partition was not covered, or a bucket of a smaller n_val may have been missed."""
        seen: set[bytes] = set()

        async def emit_new(buckets: list[bytes]) -> None:
            new = [bucket for bucket in dict.fromkeys(buckets) if bucket not in seen]
            seen.update(new)
            if new:
                await emit(new)
        n_val = self.registry.defaults.n_val
        answered_by = await self._cover(None, n_val, emit_new)
        missed: set[int] = set()
        for bucket, entry in self.registry.items():
            if entry.props.n_val < n_val and bucket not in seen:
                missed.update(p for p, index in enumerate(answered_by) if index >= entry.props.n_val)
        if missed:
            raise CoverageError(sorted(missed), "buckets of a smaller n_val than the default have no answer "
                                                "from their primaries for")

    async def rpc_list(self, body: Any) -> Any:
        """kv.list: [bucket or None, partition, cursor or None] -> [names, next cursor or None]: what this
        node holds there (keys, or buckets) after the cursor, as `local` reads it."""
        if not (isinstance(body, list) and len(body) == 3 and (body[0] is None or type(body[0]) is bytes)
                and type(body[1]) is int and 0 <= body[1] < self.membership.ring.partitions
                and (body[2] is None or _is_cursor(body[2]))):
            raise ValueError("kv.list takes [bucket bytes or null, partition, [bucket, key] or null]")
        names, cursor = await self.local(body[0], body[1], None if body[2] is None else tuple(body[2]))
        return [names, None if cursor is None else list(cursor)]

    async def local(self, bucket: bytes | None, partition: int,
                    after: Cursor | None = None) -> tuple[list[bytes], Cursor | None]:
        """The live keys of `bucket` in `partition` of the local store (with bucket None, the buckets that
        have one there), in order, from the rows after `after`: ASK_ROWS rows and about ASK_BYTES of names at
        most; and the cursor to go on from, None when the partition is done."""
        if bucket is None:
            return await self._buckets_here(partition, after)
        return await self._keys_here(bucket, partition, after)

    async def _keys_here(self, bucket: bytes, partition: int,
                         after: Cursor | None) -> tuple[list[bytes], Cursor | None]:
        keys: list[bytes] = []
        size_bytes = 0
        if after is None or after < (bucket, b""):
            after = bucket, b""  # rows come in (bucket, key) order: the bucket's first key is next
        for _ in range(0, ASK_ROWS, PAGE_ROWS):
            page = self.backend.scan(partition, after, PAGE_ROWS)
            for row_bucket, key, blob in page:
                if row_bucket != bucket:
                    return keys, None
                if self._live(row_bucket, key, blob):
                    keys.append(key)
                    size_bytes += len(key)
                    if size_bytes >= ASK_BYTES:
                        return keys, (row_bucket, key)
            if len(page) < PAGE_ROWS:
                return keys, None
            after = page[-1][0], page[-1][1]
            await trio.sleep(0)  # let requests run between pages
        return keys, after

    async def _buckets_here(self, partition: int, after: Cursor | None) -> tuple[list[bytes], Cursor | None]:
        buckets: list[bytes] = []
        size_bytes = 0
        for _ in range(0, ASK_ROWS, PAGE_ROWS):
            page = self.backend.scan(partition, after, PAGE_ROWS)
            if not page:
                return buckets, None
            end = after = page[-1][0], page[-1][1]
            for row_bucket, key, blob in page:
                if self._live(row_bucket, key, blob):
                    buckets.append(row_bucket)
                    size_bytes += len(row_bucket)
                    after = row_bucket + b"\x00", b""  # skip the rest of it: the next bucket sorts after this
                    break
            if size_bytes >= ASK_BYTES:
                return buckets, after
            if len(page) < PAGE_ROWS and after == end:
                return buckets, None
            await trio.sleep(0)
        return buckets, after

    def _live(self, bucket: bytes, key: bytes, blob: bytes) -> bool:
        try:
            return blob_has_live_sibling(blob)
        except ObjectDecodeError:
            self.log.error("undecodable object %r/%r: left out of a listing", bucket, key)
            return False

    async def _cover(self, bucket: bytes | None, n_val: int, emit: Emit) -> list[int]:
        """Ask every partition of one of its first n_val primaries, emitting the names of each answer (one
        emit at a time); for each partition, the highest preflist index that answered part of it."""
        partitions = self.membership.ring.partitions
        answered_by = [0] * partitions
        uncovered: list[int] = []
        failed: dict[str, tuple[int, str]] = {}  # node -> (asks it failed, the first error)
        limiter = trio.CapacityLimiter(CONCURRENCY)
        emitting = trio.Lock()

        async def cover(partition: int) -> None:
            async with limiter:
                preflist = self.membership.preflist(partition, n_val)
                index_of = {replica.node: index for index, replica in enumerate(preflist.primaries)}
                # Up first, and a node that already failed this listing last: one that hangs costs one
                # timeout, not one per partition. Stable: ring order within each group.
                candidates = sorted(index_of, key=lambda node: (node in failed, node in preflist.down))
                cursor: Cursor | None = None
                for node in candidates:
                    try:
                        while True:
                            names, cursor = await self._ask(node, bucket, partition, cursor)
                            answered_by[partition] = max(answered_by[partition], index_of[node])
                            if names:
                                async with emitting:
                                    await emit(names)
                            if cursor is None:
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
        return answered_by

    async def _ask(self, node: str, bucket: bytes | None, partition: int,
                   after: Cursor | None) -> tuple[list[bytes], Cursor | None]:
        if node == self.node_id:
            return await self.local(bucket, partition, after)
        reply = await self.pool.call(node, LIST_TYPE, [bucket, partition, None if after is None else list(after)],
                                     self.timeout_s)
        if not (isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], list)
                and all(type(name) is bytes for name in reply[0]) and (reply[1] is None or _is_cursor(reply[1]))):
            raise ValueError(f"kv.list from {node}: not [names, cursor]")
        cursor = None if reply[1] is None else tuple(reply[1])
        if cursor is not None and after is not None and cursor <= after:
            raise ValueError(f"kv.list from {node}: its cursor does not move on")
        return reply[0], cursor


def _is_cursor(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(type(part) is bytes for part in value)


def _collector(into: list[bytes]) -> Emit:
    async def collect(names: list[bytes]) -> None:
        into.extend(names)
    return collect
