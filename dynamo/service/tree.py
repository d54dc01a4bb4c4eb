"""Per-partition Merkle trees of a node's local store, for active anti-entropy (aae.py).

Theory of operation
- One `antientropy.merkle.MerkleTree` per partition this node stores, mapping a *tree key* (the bucket,
  length-prefixed, then the key) to `object_digest` of the stored object (key plus causal state, not the
  values: equal causal states hold equal siblings). Alongside, per partition, the set of tree keys whose
  object is a tombstone, for the reaper.
- Kept current by `on_stored`, which Replica calls with the stored blob after every local change has
  committed, under the key's lock: per key, calls come in commit order, so the last call always carries
  the stored state. Digests are read off the blob (`blob_digest`), without decoding the object.
- Rebuilt from storage at start-up (`build`, in the background): trees are not persisted. A rebuild costs a
  scan and a digest per key, but it cannot go stale or be torn by a crash, and checking a persisted tree
  against the store would cost the same scan anyway. The scan goes partition by partition, a page at a
  time, yielding to the scheduler between pages, so requests never wait long behind it.
- Writes during a build cannot leave a tree wrong. The scan fills the same tree the hook updates. A page is
  read and applied with no checkpoint in between, so it applies the state committed at that instant. Per
  key, at most one hook can be pending at any time (the key's lock is held from a change until its hook
  has run) and it carries the state committed last: so after a page sets a key, the key's pending hook (if
  any) sets the same state again, and every later change arrives as a later hook. Either way the last
  thing applied to a key is its latest committed state. A partition answers exchanges (`ready`) only
  once its scan is done.
- `resync` re-reads one key from the store into its tree: repair calls it for every key it visits, so a
  tree that drifted from the store (a bug, a write path that bypassed the hook) heals itself.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import trio

from antientropy.merkle import DEFAULT_FANOUT, MerkleTree
from dynamo.object import blob_digest
from dynamo.storage import Backend

log = logging.getLogger("dynamo.tree")

BUILD_PAGE_ROWS = 256  # rows decoded between two checkpoints: a few ms of work


def tree_key(bucket: bytes, key: bytes) -> bytes:
    """The bytes a (bucket, key) is filed under in a tree: 2-byte bucket length, bucket, key."""
    return len(bucket).to_bytes(2, "big") + bucket + key


def split_tree_key(tk: bytes) -> tuple[bytes, bytes]:
    """The inverse of tree_key; ValueError on bytes it cannot have made."""
    if type(tk) is not bytes or len(tk) < 2 or int.from_bytes(tk[:2], "big") > len(tk) - 2:
        raise ValueError(f"not a tree key: {tk!r:.60}")
    size = int.from_bytes(tk[:2], "big")
    return tk[2:2 + size], tk[2 + size:]


class PartitionTrees:
    """The trees of one node's store. `on_stored` is the Replica hook; `build` the start-up scan."""

    def __init__(self, backend: Backend, partitions: int, segments: int,
                 logger: logging.LoggerAdapter | None = None) -> None:
        self.backend = backend
        self.partitions = partitions
        self.segments = segments
        self.log = logger or logging.LoggerAdapter(log, {})
        self._trees: dict[int, MerkleTree] = {}
        self._tombstones: dict[int, set[bytes]] = {}
        self._built: set[int] = set()
        self.all_built = False
        self.build_done = trio.Event()
        self.keys_scanned = 0

    # -- reads ----------------------------------------------------------------------------------------

    def ready(self, partition: int) -> bool:
        return self.all_built or partition in self._built

    def tree(self, partition: int) -> MerkleTree:
        """The partition's tree (made empty on first use)."""
        tree = self._trees.get(partition)
        if tree is None:
            tree = self._trees[partition] = MerkleTree(self.segments, DEFAULT_FANOUT)
        return tree

    def tombstones(self, partition: int) -> dict[bytes, bytes]:
        """Tree key -> digest of every tombstone stored in the partition."""
        tree = self._trees.get(partition)
        if tree is None:
            return {}
        return {tk: tree.get(tk) for tk in self._tombstones.get(partition, ())}

    def key_count(self, partition: int) -> int:
        tree = self._trees.get(partition)
        return 0 if tree is None else len(tree)

    def held(self) -> list[int]:
        return sorted(p for p, tree in self._trees.items() if len(tree))

    # -- changes --------------------------------------------------------------------------------------

    def on_stored(self, partition: int, bucket: bytes, key: bytes, blob: bytes | None) -> None:
        """The store now holds `blob` for (bucket, key) (None: the key was deleted). Never raises: a tree
        error must not fail a write that is already durable; `resync` heals the entry later."""
        try:
            digest, tombstone = (None, False) if blob is None else blob_digest(bucket, key, blob)
            self._apply(partition, tree_key(bucket, key), digest, tombstone)
        except Exception:  # noqa: BLE001 - logged; the entry is fixed by the next resync of the key
            self.log.exception("tree update of %r/%r failed", bucket, key)

    def resync(self, partition: int, bucket: bytes, key: bytes, blob: bytes | None) -> None:
        """Set the entry of (bucket, key) from its stored `blob` (None: absent)."""
        self.on_stored(partition, bucket, key, blob)

    def _apply(self, partition: int, tk: bytes, digest: bytes | None, tombstone: bool) -> None:
        tree = self.tree(partition)
        if digest is None:
            if tree.get(tk) is not None:
                tree.remove(tk)
        else:
            tree.put(tk, digest)
        marks = self._tombstones.setdefault(partition, set())
        if tombstone and digest is not None:
            marks.add(tk)
        else:
            marks.discard(tk)

    # -- start-up build -------------------------------------------------------------------------------

    async def build(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Scan every stored partition into its tree (see the module docstring), then mark all built."""
        task_status.started()
        backend = self.backend
        stored = await trio.to_thread.run_sync(backend.partitions) if backend.blocking else backend.partitions()
        for partition in sorted(stored):
            await self._build_partition(partition)
        self.all_built = True
        self.build_done.set()
        self.log.info("anti-entropy trees built: %d keys in %d partitions", self.keys_scanned, len(stored))

    async def _build_partition(self, partition: int) -> None:
        after: tuple[bytes, bytes] | None = None
        while True:
            page = self.backend.scan(partition, after, BUILD_PAGE_ROWS)
            self._add_page(partition, page)  # no checkpoint between the read and the apply (see above)
            if len(page) < BUILD_PAGE_ROWS:
                break
            after = page[-1][0], page[-1][1]
            await trio.sleep(0)
        self._built.add(partition)

    def _add_page(self, partition: int, page: Iterable[tuple[bytes, bytes, bytes]]) -> None:
        for bucket, key, blob in page:
            try:
                digest, tombstone = blob_digest(bucket, key, blob)
            except ValueError:
                self.log.error("undecodable object %r/%r in partition %d: left out of its tree", bucket, key,
                               partition)
                continue
            self._apply(partition, tree_key(bucket, key), digest, tombstone)
            self.keys_scanned += 1

    def report(self) -> dict[str, Any]:
        return {"trees_ready": self.all_built, "keys_scanned": self.keys_scanned,
                "tree_keys": sum(len(t) for t in self._trees.values())}
