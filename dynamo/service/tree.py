"""Per-(partition, n_val) Merkle trees of a node's local store, for active anti-entropy (aae.py).

Theory of operation
- One `antientropy.merkle.MerkleTree` per partition this node stores and per n_val of the buckets stored
  there, mapping a *tree key* (the bucket, length-prefixed, then the key) to `object_digest` of the stored
  object (key plus causal state, not the values: equal causal states hold equal siblings). A key's n_val
  decides who its primaries are, so keys of different n_val are exchanged with different peers and must sit
  in different trees (Riak keeps its hashtrees per {index, n_val} for the same reason). Alongside, per
  partition, the set of tree keys whose object is a tombstone, for the reaper.
- A key sits in exactly one tree of its partition, the one of its bucket's n_val (`n_val_of`) when it was
  last applied. A change to a bucket's n_val moves its keys with `rehome`, which the anti-entropy driver runs
  when the bucket registry changed; every update of a key also takes it out of the partition's other trees.
- Kept current by `on_stored`, which Replica calls with the stored blob after every local change has
  committed, under the key's lock: per key, calls come in commit order, so the last call always carries
  the stored state. Digests are read off the blob (`blob_digest`), without decoding the object, or come
  with the call: the coordinator of a write works its copy's digest out once, for its own tree and for
  the replicas it sends the copy to (coordinator.py).
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
from typing import Any, Callable, Iterable

import trio

from antientropy.merkle import DEFAULT_FANOUT, MerkleTree
from dynamo.object import ObjectDigest, blob_digest
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

    def __init__(self, backend: Backend, partitions: int, segments: int, n_val_of: Callable[[bytes], int],
                 logger: logging.LoggerAdapter | None = None) -> None:
        self.backend = backend
        self.partitions = partitions
        self.segments = segments
        self.n_val_of = n_val_of  # bucket -> its n_val now (the bucket registry)
        self.log = logger or logging.LoggerAdapter(log, {})
        self._trees: dict[int, dict[int, MerkleTree]] = {}  # partition -> n_val -> tree
        self._tombstones: dict[int, set[bytes]] = {}
        self._built: set[int] = set()
        self.all_built = False
        self.build_done = trio.Event()
        self.keys_scanned = 0

    # -- reads ----------------------------------------------------------------------------------------

    def ready(self, partition: int) -> bool:
        return self.all_built or partition in self._built

    def tree(self, partition: int, n_val: int) -> MerkleTree:
        """The tree of the partition's keys whose bucket has `n_val` (made empty on first use)."""
        by_n_val = self._trees.get(partition)
        if by_n_val is None:
            by_n_val = self._trees[partition] = {}
        tree = by_n_val.get(n_val)
        if tree is None:
            tree = by_n_val[n_val] = MerkleTree(self.segments, DEFAULT_FANOUT)
        return tree

    def tombstones(self, partition: int, n_val: int) -> dict[bytes, bytes]:
        """Tree key -> digest of every tombstone in the partition's tree of `n_val`."""
        tree = self._trees.get(partition, {}).get(n_val)
        if tree is None:
            return {}
        found = ((tk, tree.get(tk)) for tk in self._tombstones.get(partition, ()))
        return {tk: digest for tk, digest in found if digest is not None}

    def key_count(self, partition: int, n_val: int) -> int:
        tree = self._trees.get(partition, {}).get(n_val)
        return 0 if tree is None else len(tree)

    def n_vals(self) -> set[int]:
        """The n_vals some tree holds keys of."""
        return {n for by_n_val in self._trees.values() for n, tree in by_n_val.items() if len(tree)}

    # -- changes --------------------------------------------------------------------------------------

    def on_stored(self, partition: int, bucket: bytes, key: bytes, blob: bytes | None,
                  known: ObjectDigest | None = None) -> None:
        """The store now holds `blob` for (bucket, key) (None: the key was deleted); `known`, if given, is
        its (digest, tombstone flag), worked out by whoever made it, so the blob need not be read for it.
        Never raises: a tree error must not fail a write that is already durable; `resync` heals the
        entry later."""
        try:
            if blob is None:
                digest, tombstone = None, False
            elif known is not None:
                digest, tombstone = known
            else:
                digest, tombstone = blob_digest(bucket, key, blob)
            self._apply(partition, bucket, tree_key(bucket, key), digest, tombstone)
        except Exception:  # noqa: BLE001 - logged; the entry is fixed by the next resync of the key
            self.log.exception("tree update of %r/%r failed", bucket, key)

    def resync(self, partition: int, bucket: bytes, key: bytes, blob: bytes | None) -> None:
        """Set the entry of (bucket, key) from its stored `blob` (None: absent)."""
        self.on_stored(partition, bucket, key, blob)

    def _apply(self, partition: int, bucket: bytes, tk: bytes, digest: bytes | None, tombstone: bool) -> None:
        n_val = self.n_val_of(bucket)
        tree = self.tree(partition, n_val)
        if digest is None:
            if tree.get(tk) is not None:
                tree.remove(tk)
        else:
            tree.put(tk, digest)
        by_n_val = self._trees[partition]
        if len(by_n_val) > 1:  # an entry left in another tree by an n_val change would be stale from now on
            for other_n_val, other in by_n_val.items():
                if other_n_val != n_val and other.get(tk) is not None:
                    other.remove(tk)
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
            self._apply(partition, bucket, tree_key(bucket, key), digest, tombstone)
            self.keys_scanned += 1

    # -- a bucket's n_val changed -----------------------------------------------------------------------

    async def rehome(self) -> int:
        """Move every key whose tree is not its bucket's n_val now into the right one; returns how many
        moved. A partition at a time, with a checkpoint between partitions: within one there is none, so a
        key updated meanwhile (`_apply` puts it in the right tree and takes it out of the others) is never
        overwritten by the stale entry, which only moves where the key is absent."""
        moved = 0
        for partition in sorted(self._trees):
            by_n_val = self._trees[partition]
            for n_val, tree in list(by_n_val.items()):
                misplaced = [(tk, digest, target) for tk, digest in tree.items()
                             if (target := self.n_val_of(split_tree_key(tk)[0])) != n_val]
                for tk, digest, target in misplaced:
                    tree.remove(tk)
                    destination = self.tree(partition, target)
                    if destination.get(tk) is None:
                        destination.put(tk, digest)
                moved += len(misplaced)
            await trio.sleep(0)
        if moved:
            self.log.info("anti-entropy trees: %d keys moved to the tree of their bucket's new n_val", moved)
        return moved

    def report(self) -> dict[str, Any]:
        return {"trees_ready": self.all_built, "keys_scanned": self.keys_scanned,
                "tree_keys": sum(len(t) for by_n_val in self._trees.values() for t in by_n_val.values())}
