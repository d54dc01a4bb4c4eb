"""The replica side of a node: its local copies, and every read-modify-write of them.

Theory of operation
- Reads go straight to the backend (an index lookup). Every change of a local copy is a read-modify-write
  (read the blob, merge or apply a write, store) under a per-key lock, and returns only once the group
  committer made it durable. Without the lock two concurrent merges of one key could both start from the
  same copy and one would be lost; worse, two writes coordinated here could both mint the same dot.
- `coordinate` is the coordinator's write: apply the client's change to the *local, durable, latest* copy
  (that is what makes the next dot of this node's actor unique) and store it. The caller may send the new
  object on as soon as it is queued for commit (`on_queued`); the key stays locked until the commit is
  settled, so the next change of the key starts from it (see coordinator.py for why sending before the
  commit is safe). A fallback stores a hint with it, in the same atomic submit.
- `merge_in` is what a replica does with an object from a coordinator, a read repair or a handoff: merge
  it with the local copy (DVV sync: order and repetition do not matter) and store the result, with a hint
  when it stands in for a primary. Merging what is already there writes nothing (but still the hint).
- The RPC reader takes a primary's kv.replicate without a task when it can (`merge_in_nowait`: the key is
  free and the committer has room): the same merge, queued at once, answered from the commit's settling.
  Otherwise, and for hinted copies, it runs `merge_in` in a task as before.
- `merge_many` merges a batch (ownership transfers, hint delivery, anti-entropy repair) in one submit,
  holding every key of the batch until the commit settles. At most BULK_MERGES_MAX batches are applied at
  once; the rest wait *before* locking anything. Otherwise a joining node, sent dozens of 256-key batches
  at once, held thousands of keys locked while their batches queued behind each other at the committer,
  and a client write of one of those keys coordinated there waited for the whole queue (the worst request
  of tools.bench.handoff: 400-430 ms, a put; with the limit 90-140 ms, as slow as without a handoff).
- A hint's blob is left empty: handoff always sends the current local copy of the key, which holds
  everything any hint of it ever held, so storing the object twice would only cost disk and fsync time.
- Blobs are canonical encodings (equal objects, equal bytes), so "nothing changed" is a byte compare and a
  blob new to this node is stored as it came (peers are authenticated and only send encode_object output).
"""

from __future__ import annotations

from collections import OrderedDict
from time import time_ns
from typing import Any, Callable, Sequence

import trio

from dynamo.object import ObjectDigest, StoredObject, decode_object, encode_object, merge, object_digest
from dynamo.storage import Delete, GroupCommitter, HintAdd, HintStore, Op, Put
from dynamo.stats import Stats
from ring.hashing import partition_for_key

BUCKET_BYTES_MAX = 4096
KEY_BYTES_MAX = 65536
BULK_MERGES_MAX = 2  # batches merge_many applies at once: one committing while the next one reads and merges


class KeyLocks:
    """One lock per (bucket, key), created on demand and dropped when free. Release hands the lock
    straight to the oldest waiter, so a busy key cannot starve anyone."""

    def __init__(self) -> None:
        self._held: dict[tuple[bytes, bytes], list[trio.Event]] = {}

    def locked(self, name: tuple[bytes, bytes]) -> bool:
        return name in self._held

    def try_acquire(self, name: tuple[bytes, bytes]) -> bool:
        """Take the lock if it is free, without waiting; say whether it was taken."""
        if name in self._held:
            return False
        self._held[name] = []
        return True

    async def acquire(self, name: tuple[bytes, bytes]) -> None:
        waiters = self._held.get(name)
        if waiters is None:
            self._held[name] = []
            return
        event = trio.Event()
        waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event in waiters:
                waiters.remove(event)
            else:
                self.release(name)  # it was handed to us as we were cancelled: pass it on
            raise

    def release(self, name: tuple[bytes, bytes]) -> None:
        waiters = self._held[name]
        if waiters:
            waiters.pop(0).set()
        else:
            del self._held[name]

    def hold(self, name: tuple[bytes, bytes]) -> "_Held":
        return _Held(self, name)


class _Held:
    __slots__ = ("locks", "name")

    def __init__(self, locks: KeyLocks, name: tuple[bytes, bytes]) -> None:
        self.locks, self.name = locks, name

    async def __aenter__(self) -> None:
        await self.locks.acquire(self.name)

    async def __aexit__(self, *exc_info: Any) -> None:
        self.locks.release(self.name)


class SiblingLimitError(ValueError):
    """The write would leave more siblings than allowed (answered 413, nothing stored)."""


class ObjectCache:
    """Memo of decode_object for small blobs seen lately (FIFO, bounded). Decoding is a pure function
    of the bytes and objects are immutable, so one cache may serve every node of a process. A hot key
    is then decoded once, not on every read and every merge, and its vtag and context are encoded once.
    Size: a decoded object of one 100-byte value, with its vtag and context cached, measured 1.05 KB, so
    a full cache holds 16-20 MB; the value cache behind it (32 MiB of blobs) holds about ten times as
    many keys. With 4,096 entries, uniform reads of 10,000 keys missed 60% of the time and decoding was
    9% of a quorum get's CPU. An OrderedDict, not a dict: evicting a dict's first key with
    `next(iter(d))` scans the holes earlier evictions left at the front of its entry table until the next
    resize (3.6 us per eviction at 16,384 entries, against 0.2 us for `popitem(last=False)`)."""

    def __init__(self, entries_max: int = 16384, blob_bytes_max: int = 2048) -> None:
        self.entries_max, self.blob_bytes_max = entries_max, blob_bytes_max
        self._objects: OrderedDict[bytes, StoredObject] = OrderedDict()

    def decode(self, blob: bytes) -> StoredObject:
        """Blobs come from our storage or from peers (authenticated, sending encode_object output): the
        trusted decode, without the canonical re-encode check."""
        obj = self._objects.get(blob)
        if obj is None:
            obj = decode_object(blob, trusted=True)
            self.remember(blob, obj)
        return obj

    def remember(self, blob: bytes, obj: StoredObject) -> None:
        if len(blob) <= self.blob_bytes_max:
            objects = self._objects
            if len(objects) >= self.entries_max:
                objects.popitem(last=False)
            objects[blob] = obj


OBJECTS = ObjectCache()


def merge_blobs(local: bytes | None, incoming: bytes) -> bytes | None:
    """The blob to store after merging `incoming` into `local`, or None when nothing changes."""
    if local is None:
        return incoming
    if local == incoming:
        return None
    obj = merge(OBJECTS.decode(local), OBJECTS.decode(incoming))
    merged = encode_object(obj)
    if merged == local:
        return None
    OBJECTS.remember(merged, obj)
    return merged


def _check_name(bucket: Any, key: Any) -> None:
    if type(bucket) is not bytes or type(key) is not bytes or len(bucket) > BUCKET_BYTES_MAX \
            or len(key) > KEY_BYTES_MAX:
        raise ValueError("bucket and key must be bytes within the size limits")


def check_replicate(body: Any) -> tuple[bytes, bytes, bytes, str | None]:
    """kv.replicate's first four fields, checked: [bucket, key, blob, hint_for or null]."""
    bucket, key, blob, hint_for = body
    _check_name(bucket, key)
    if type(blob) is not bytes or (hint_for is not None and type(hint_for) is not str):
        raise ValueError("kv.replicate wants [bucket, key, blob, hint_for or null]")
    return bucket, key, blob, hint_for


class Replica:
    """Local copies of one node, changed only through `coordinate`, `merge_in` and `drop_if`."""

    def __init__(self, committer: GroupCommitter, hints: HintStore, partitions: int, stats: Stats,
                 wall_clock_ns: Callable[[], int] = time_ns) -> None:
        self.committer = committer
        self.wall_clock_ns = wall_clock_ns  # a hint's creation time
        self.backend = committer.backend
        self.hints = hints
        self.partitions = partitions
        self.stats = stats
        self.locks = KeyLocks()
        self._bulk = trio.CapacityLimiter(BULK_MERGES_MAX)
        # Called as on_stored(partition, bucket, key, blob or None, digest) after each local change has
        # committed, under the key's lock (so per key in commit order): the anti-entropy trees follow the
        # store. `digest` is the blob's (object_digest, tombstone flag) when at hand (a coordinated write
        # works it out; a coordinator may send it with its copy), else None.
        self.on_stored: Callable[[int, bytes, bytes, bytes | None, ObjectDigest | None], None] | None = None

    def read(self, bucket: bytes, key: bytes) -> bytes | None:
        return self.backend.get(partition_for_key(bucket, key, self.partitions), bucket, key)

    def _hint_op(self, target: str | None, partition: int, bucket: bytes, key: bytes) -> list[HintAdd]:
        if target is None:
            return []
        self.stats.hints_written += 1
        return [HintAdd(self.hints.make(target, partition, bucket, key, b"", self.wall_clock_ns() // 1000))]

    async def coordinate(self, bucket: bytes, key: bytes,
                         change: Callable[[StoredObject | None], StoredObject],
                         hint_for: str | None,
                         on_queued: Callable[[StoredObject, bytes, ObjectDigest | None], None] | None = None,
                         ) -> tuple[StoredObject, bytes]:
        """Apply `change` to the local copy and store the result durably; return (object, blob).
        `change` may raise (e.g. SiblingLimitError): then nothing is stored. `on_queued(obj, blob, digest)`,
        if given, runs as soon as the new copy is queued for its commit, before it is durable (the caller
        sends it to the other replicas meanwhile); `digest` is the copy's for the trees, None when no
        trees follow this store. The key stays locked until the commit's outcome is
        known, even if the caller is cancelled: the next change of the key must start from this one."""
        partition = partition_for_key(bucket, key, self.partitions)
        name = (bucket, key)
        await self.locks.acquire(name)
        try:
            local = self.backend.get(partition, bucket, key)
            obj = change(OBJECTS.decode(local) if local is not None else None)
            blob = encode_object(obj)
            OBJECTS.remember(blob, obj)
            digest = (object_digest(bucket, key, obj), obj.is_tombstone) if self.on_stored is not None else None
            ops = [Put(partition, bucket, key, blob)] + self._hint_op(hint_for, partition, bucket, key)
            queued = await self.committer.enqueue(ops)
            if on_queued is not None:
                on_queued(obj, blob, digest)
            await queued.wait_shielded()  # bounded: the committer settles every batch it took
            if self.on_stored is not None:
                self.on_stored(partition, bucket, key, blob, digest)
        finally:
            self.locks.release(name)
        self.stats.vnode_puts += 1
        return obj, blob

    async def merge_in(self, bucket: bytes, key: bytes, blob: bytes, hint_for: str | None,
                       digest: ObjectDigest | None = None) -> None:
        """Merge a copy from another node into the local one, durably (the one-key path of merge_many).
        `digest`, if given, is the copy's (object_digest, tombstone flag), as its coordinator sent it."""
        name = (bucket, key)
        await self.locks.acquire(name)
        try:
            partition, merged, ops = self._merge(bucket, key, blob, hint_for)
            if ops:
                await self.committer.submit(ops)
            self._merged_stored(partition, bucket, key, merged, blob, digest)
        finally:
            self.locks.release(name)
        self.stats.vnode_puts += 1

    def merge_in_nowait(self, bucket: bytes, key: bytes, blob: bytes,
                        on_done: Callable[[Exception | None], None], digest: ObjectDigest | None = None) -> bool:
        """`merge_in` of a primary's copy (no hint) without a task, for the RPC reader: if the key is free
        and the committer has room, merge and queue now, and call `on_done(None)` once durable (or
        `on_done(error)`), exactly once, later or at once. Return False, having done nothing, when that
        would need a wait: the caller then uses `merge_in`. The key stays locked until the commit settled,
        as in `merge_in`; errors before anything is queued are raised."""
        name = (bucket, key)
        if not self.locks.try_acquire(name):
            return False
        try:
            partition, merged, ops = self._merge(bucket, key, blob, None)
            queued = self.committer.enqueue_nowait(ops)
        except BaseException:
            self.locks.release(name)
            raise
        if queued is None:
            self.locks.release(name)
            return False

        def settled(error: Exception | None) -> None:
            try:
                if error is None:
                    self._merged_stored(partition, bucket, key, merged, blob, digest)
            except Exception as exc:  # as merge_in would raise it
                error = exc
            finally:
                self.locks.release(name)
            if error is None:
                self.stats.vnode_puts += 1
            on_done(error)
        queued.on_settled(settled)
        return True

    def _merge(self, bucket: bytes, key: bytes, blob: bytes,
               hint_for: str | None) -> tuple[int, bytes | None, list[Op]]:
        """(partition, the local copy merged with `blob` or None when that changes nothing, the ops that
        store it with the hint for `hint_for`): the merge step of merge_in and merge_in_nowait."""
        partition = partition_for_key(bucket, key, self.partitions)
        merged = merge_blobs(self.backend.get(partition, bucket, key), blob)
        ops: list[Op] = [Put(partition, bucket, key, merged)] if merged is not None else []
        return partition, merged, ops + self._hint_op(hint_for, partition, bucket, key)

    def _merged_stored(self, partition: int, bucket: bytes, key: bytes, merged: bytes | None, incoming: bytes,
                       digest: ObjectDigest | None) -> None:
        """A merge of `incoming` (whose digest may have come with it) committed: tell the trees when it
        changed the copy; the digest holds only for a copy stored as it came."""
        if merged is not None and self.on_stored is not None:
            self.on_stored(partition, bucket, key, merged, digest if merged == incoming else None)

    async def merge_many(self, items: Sequence[tuple[bytes, bytes, bytes]], hint_for: str | None = None) -> None:
        """Merge several copies in one durable submit (handoff batches). Locks are taken in key order so
        two batches cannot deadlock; each key is merged once even if it comes twice. At most
        BULK_MERGES_MAX batches at a time (see the module docstring)."""
        async with self._bulk:
            await self._merge_batch(items, hint_for)

    async def _merge_batch(self, items: Sequence[tuple[bytes, bytes, bytes]], hint_for: str | None) -> None:
        names = sorted({(bucket, key) for bucket, key, _ in items})
        held = []
        try:
            for name in names:
                await self.locks.acquire(name)
                held.append(name)
            partitions = {name: partition_for_key(*name, self.partitions) for name in names}
            current = {name: self.backend.get(partitions[name], *name) for name in names}
            result = dict(current)
            for bucket, key, blob in items:
                merged = merge_blobs(result[(bucket, key)], blob)
                if merged is not None:
                    result[(bucket, key)] = merged
            ops: list = []
            for bucket, key in names:
                partition = partitions[(bucket, key)]
                if result[(bucket, key)] != current[(bucket, key)]:
                    ops.append(Put(partition, bucket, key, result[(bucket, key)]))
                ops.extend(self._hint_op(hint_for, partition, bucket, key))
            if ops:
                await self.committer.submit(ops)
            if self.on_stored is not None:
                for bucket, key in names:
                    if result[(bucket, key)] != current[(bucket, key)]:
                        name = (bucket, key)
                        self.on_stored(partitions[name], bucket, key, result[name], None)
        finally:
            for name in held:
                self.locks.release(name)
        self.stats.vnode_puts += len(names)

    async def drop_if(self, bucket: bytes, key: bytes, blob: bytes,
                      may_drop: Callable[[StoredObject], bool]) -> bool:
        """Delete the local copy if it is still `blob`, no hint for it is pending and `may_drop` agrees
        (checked under the key's lock, so no write can slip in between the checks and the delete)."""
        name = (bucket, key)
        partition = partition_for_key(bucket, key, self.partitions)
        async with self.locks.hold(name):
            if self.backend.get(partition, bucket, key) != blob or self.hints.has_hint(bucket, key):
                return False
            if not may_drop(OBJECTS.decode(blob)):
                return False
            await self.committer.submit([Delete(partition, bucket, key)])
            if self.on_stored is not None:
                self.on_stored(partition, bucket, key, None, None)
        return True

    # ---- RPC handlers -------------------------------------------------------------------------------

    async def rpc_get(self, body: Any) -> bytes | None:
        return self.rpc_get_now(body)

    def rpc_get_now(self, body: Any) -> bytes | None:
        """kv.get without a task: a read of the local store never waits (RpcServer's inline path)."""
        bucket, key = body
        _check_name(bucket, key)
        self.stats.vnode_gets += 1
        return self.backend.get(partition_for_key(bucket, key, self.partitions), bucket, key)

    async def rpc_replicate(self, body: Any, digest: ObjectDigest | None = None) -> bool:
        bucket, key, blob, hint_for = check_replicate(body)
        await self.merge_in(bucket, key, blob, hint_for, digest)
        return True

    def rpc_replicate_nowait(self, body: Any, on_done: Callable[[Exception | None], None],
                             digest: ObjectDigest | None = None) -> bool:
        """kv.replicate through `merge_in_nowait` when it needs no wait (and carries no hint: a fallback's
        hinted copy is rare and takes the task path); False when the caller must use `rpc_replicate`."""
        bucket, key, blob, hint_for = check_replicate(body)
        return hint_for is None and self.merge_in_nowait(bucket, key, blob, on_done, digest)

    async def rpc_handoff(self, body: Any) -> int:
        if type(body) is not list:
            raise ValueError("kv.handoff wants a list of [bucket, key, blob]")
        items = []
        for item in body:
            bucket, key, blob = item
            _check_name(bucket, key)
            if type(blob) is not bytes:
                raise ValueError("kv.handoff blobs must be bytes")
            items.append((bucket, key, blob))
        await self.merge_many(items)
        return len(items)
