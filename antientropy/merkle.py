"""A Merkle tree over one partition's keys, updatable in O(depth), for anti-entropy between replicas.

Theory of operation
-------------------
The tree summarises a mapping key -> digest (both bytes; the caller's digest covers the key's causal clock,
so two replicas agree on a key exactly when they hold the same digest for it). Keys fall into a fixed number
of leaf *segments* (a power of two) by a stable hash of the key alone, so a key never moves between segments
when its digest changes.

A segment's hash is the XOR of H(key, digest) over its entries; an interior node's hash is the XOR of its
children's hashes. XOR is commutative, associative and its own inverse, which gives the three rules this
module keeps:

- content alone decides the tree: any order of inserts, updates and removals that ends in the same mapping
  yields the same hashes at every level, and `MerkleTree.build` produces exactly that tree in one pass;
- a change is O(depth): toggling one entry hash in or out of a segment XORs the same delta into each ancestor;
- every hash is a fixed-size summary (HASH_BYTES), whatever the number of keys below it.

Nodes are numbered per level; the parent of node j is always j >> log2(fanout). The fan-out is fixed (default
32: a 1024-segment tree is two levels deep, so a full descent costs 3 round trips plus one for the segment
contents, and each differing node costs 32 hashes). A smaller fan-out sends fewer hashes per difference but
needs more round trips; over a network the round trips are the dearer part. When log2(segments) is not a
multiple of log2(fanout), the level under the root is the narrow one.

H is MurmurHash3 x64 128-bit over a length-prefixed key followed by the digest (the prefix keeps
key/digest boundaries unambiguous). It protects against accidental collisions only: a XOR-of-hashes set
digest is linear, so no inner hash would make it safe against someone who chooses keys on purpose; the
same trade Riak's Tictac AAE makes. Segment placement uses a different seed than the ring so that keys of
one partition (which share their ring-hash prefix) still spread over all segments.

The tree keeps each segment's entries in a dict (made on first use), so it can answer `segment(s)` at the
bottom of an exchange; `update` checks the caller's idea of the old digest against it, which catches a
caller whose view of the store has drifted from the tree before it corrupts the XOR.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import mmh3

HASH_BYTES = 16
HASH_VERSION = 1  # bump when H, the seeds or the node combination change: such trees must not be compared
DEFAULT_SEGMENTS = 1024
DEFAULT_FANOUT = 32
SEGMENTS_MAX = 1 << 24  # the segment hash is 32 bits; beyond this the level lists alone cost too much memory
_SEGMENT_SEED = 0x5E67  # not 0: the ring hashes with seed 0
_ENTRY_SEED = 0xAAE1


class MerkleError(ValueError):
    """Bad input to a Merkle tree: wrong types, bad shape, a key that is (or is not) there, a stale digest."""


@dataclasses.dataclass(frozen=True)
class TreeShape:
    """What two trees must share to be comparable: segment count, fan-out and hash version."""

    segments: int = DEFAULT_SEGMENTS
    fanout: int = DEFAULT_FANOUT
    hash_version: int = HASH_VERSION

    def __post_init__(self):
        for name in ("segments", "fanout"):
            value = getattr(self, name)
            if not _is_power_of_two(value) or value < 2:
                raise MerkleError(f"{name} must be a power of two >= 2, got {value!r}")
        if self.segments > SEGMENTS_MAX:
            raise MerkleError(f"segments must be at most {SEGMENTS_MAX}, got {self.segments}")
        if self.hash_version != HASH_VERSION:
            raise MerkleError(f"unknown hash version {self.hash_version!r} (this code speaks {HASH_VERSION})")

    @property
    def fanout_bits(self) -> int:
        return self.fanout.bit_length() - 1

    @property
    def depth(self) -> int:
        """Number of levels below the root; the segments live at level `depth`."""
        segment_bits = self.segments.bit_length() - 1
        return -(-segment_bits // self.fanout_bits)

    @property
    def widths(self) -> tuple[int, ...]:
        """Node count per level, root (level 0) first."""
        bits = self.fanout_bits
        return (1,) + tuple(self.segments >> (bits * (self.depth - level)) for level in range(1, self.depth + 1))

    def children(self, level: int, index: int) -> range:
        """Indices, at level + 1, of the children of node `index` at `level`."""
        assert 0 <= level < self.depth
        first = index << self.fanout_bits
        return range(first, min(first + self.fanout, self.widths[level + 1]))


def segment_of(key: bytes, segments: int) -> int:
    """The segment a key falls in, for a tree of `segments` (a power of two) segments."""
    return mmh3.hash(key, _SEGMENT_SEED, signed=False) & (segments - 1)


def entry_hash(key: bytes, digest: bytes) -> int:
    """H(key, digest) as a 128-bit int; the tree XORs these together."""
    return mmh3.hash128(len(key).to_bytes(4, "big") + key + digest, _ENTRY_SEED, signed=False)


def hash_bytes(value: int) -> bytes:
    return value.to_bytes(HASH_BYTES, "big")


class MerkleTree:
    """Merkle tree over key -> digest with fixed segments and fan-out; see the module docstring."""

    __slots__ = ("shape", "_fanout_bits", "_levels", "_entries", "_count")

    def __init__(self, segments: int = DEFAULT_SEGMENTS, fanout: int = DEFAULT_FANOUT):
        self.shape = TreeShape(segments, fanout)
        self._fanout_bits = self.shape.fanout_bits
        # Hashes are kept as ints: XOR on ints is cheap, and they become bytes only when they leave the tree.
        self._levels: list[list[int]] = [[0] * width for width in self.shape.widths]
        self._entries: list[dict[bytes, bytes] | None] = [None] * segments
        self._count = 0

    @classmethod
    def build(cls, pairs: Iterable[tuple[bytes, bytes]], segments: int = DEFAULT_SEGMENTS,
              fanout: int = DEFAULT_FANOUT) -> MerkleTree:
        """A tree holding `pairs` (e.g. a partition scanned at start-up). Order does not matter; the result
        equals the one incremental updates to the same content give. A repeated key is an error."""
        tree = cls(segments, fanout)
        leaves, entries, mask = tree._levels[-1], tree._entries, segments - 1
        count = 0
        for pair in pairs:
            key, digest = _check_pair(pair)
            s = mmh3.hash(key, _SEGMENT_SEED, signed=False) & mask
            bucket = entries[s]
            if bucket is None:
                bucket = entries[s] = {}
            elif key in bucket:
                raise MerkleError(f"key {key!r} appears twice in the build input")
            bucket[key] = digest
            leaves[s] ^= entry_hash(key, digest)
            count += 1
        tree._count = count
        tree._rebuild_interior()
        return tree

    def _rebuild_interior(self):
        bits = self.shape.fanout_bits
        for level in range(self.shape.depth - 1, -1, -1):
            parents, children = self._levels[level], self._levels[level + 1]
            for j, value in enumerate(children):
                parents[j >> bits] ^= value

    # -- changes ------------------------------------------------------------------------------------

    def update(self, key: bytes, old_digest: bytes | None, new_digest: bytes | None):
        """Move `key` from `old_digest` to `new_digest`; None on either side means absent (so this also
        inserts and removes). The tree must hold exactly `old_digest` for the key, or MerkleError."""
        _check_bytes("key", key)
        for name, digest in (("old_digest", old_digest), ("new_digest", new_digest)):
            if digest is not None:
                _check_bytes(name, digest)
        s = segment_of(key, self.shape.segments)
        bucket = self._entries[s]
        held = None if bucket is None else bucket.get(key)
        if held != old_digest:
            raise MerkleError(f"key {key!r}: tree holds digest {held!r}, caller expected {old_digest!r}")
        self._move(s, bucket, key, old_digest, new_digest)

    def _move(self, s: int, bucket: dict[bytes, bytes] | None, key: bytes, old_digest: bytes | None,
              new_digest: bytes | None):
        """Change `key` of segment `s` (whose dict is `bucket`, None if empty) from the digest it holds,
        `old_digest`, to `new_digest`: the entries, the count and every hash up to the root."""
        if old_digest == new_digest:
            return
        delta = 0
        if old_digest is not None:
            delta ^= entry_hash(key, old_digest)
            del bucket[key]
            self._count -= 1
        if new_digest is not None:
            delta ^= entry_hash(key, new_digest)
            if bucket is None:
                bucket = self._entries[s] = {}
            bucket[key] = new_digest
            self._count += 1
        if not bucket:
            self._entries[s] = None  # empty segments cost nothing, which matters with many segments
        self._toggle(s, delta)

    def insert(self, key: bytes, digest: bytes):
        """Add a key that is not in the tree."""
        _check_bytes("digest", digest)
        self.update(key, None, digest)

    def remove(self, key: bytes) -> bytes:
        """Remove a key that is in the tree; returns the digest it had."""
        held = self.get(key)
        if held is None:
            raise MerkleError(f"key {key!r} is not in the tree")
        self.update(key, held, None)
        return held

    def put(self, key: bytes, digest: bytes) -> bytes | None:
        """Set the key's digest whether or not it is there; returns the previous digest (None if absent).
        (`update` with the held digest, in one segment lookup: a replica calls this on every write.)"""
        _check_bytes("key", key)
        _check_bytes("digest", digest)
        s = segment_of(key, self.shape.segments)
        bucket = self._entries[s]
        held = None if bucket is None else bucket.get(key)
        self._move(s, bucket, key, held, digest)
        return held

    def _toggle(self, segment: int, delta: int):
        bits, index = self._fanout_bits, segment
        for level in reversed(self._levels):
            level[index] ^= delta
            index >>= bits
        assert index == 0

    # -- queries ------------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        _check_bytes("key", key)
        bucket = self._entries[segment_of(key, self.shape.segments)]
        return None if bucket is None else bucket.get(key)

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return self._count

    @property
    def root(self) -> bytes:
        return hash_bytes(self._levels[0][0])

    @property
    def depth(self) -> int:
        return self.shape.depth

    def level(self, depth: int) -> list[bytes]:
        """All hashes at `depth` (0 = root, self.depth = segments), left to right."""
        self._check_level(depth, self.shape.depth)
        return [hash_bytes(value) for value in self._levels[depth]]

    def children_hashes(self, depth: int, indices: Iterable[int]) -> list[bytes]:
        """Hashes of the children (at depth + 1) of each node in `indices` (at `depth`), concatenated in order."""
        self._check_level(depth, self.shape.depth - 1)
        width, below = self.shape.widths[depth], self._levels[depth + 1]
        hashes = []
        for index in indices:
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < width:
                raise MerkleError(f"node index {index!r} out of range at depth {depth} (width {width})")
            hashes.extend(hash_bytes(below[child]) for child in self.shape.children(depth, index))
        return hashes

    def segment(self, s: int) -> list[tuple[bytes, bytes]]:
        """The (key, digest) entries of segment `s`, in key order."""
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < self.shape.segments:
            raise MerkleError(f"segment {s!r} out of range (0..{self.shape.segments - 1})")
        bucket = self._entries[s]
        return [] if bucket is None else sorted(bucket.items())

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, digest) entry, in no particular order."""
        return [pair for bucket in self._entries if bucket is not None for pair in bucket.items()]

    def segment_size(self, s: int) -> int:
        """Number of entries in segment `s` (an index the caller got from this tree)."""
        bucket = self._entries[s]
        return 0 if bucket is None else len(bucket)

    def _check_level(self, depth: int, deepest: int):
        if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= deepest:
            raise MerkleError(f"depth {depth!r} out of range (0..{deepest})")

    def check_invariants(self):
        """Recompute every hash from the entries and compare (slow; for tests and debugging)."""
        fresh = MerkleTree.build(((k, d) for b in self._entries if b for k, d in b.items()),
                                 self.shape.segments, self.shape.fanout)
        assert fresh._levels == self._levels, "tree hashes disagree with its entries"
        assert fresh._count == self._count == sum(len(b) for b in self._entries if b)
        assert all(b is None or b for b in self._entries), "empty segment dict kept"


def _is_power_of_two(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0 and value & (value - 1) == 0


def _check_bytes(name: str, value):
    if not isinstance(value, bytes):
        raise MerkleError(f"{name} must be bytes, got {type(value).__name__}")


def _check_pair(pair) -> tuple[bytes, bytes]:
    if not (isinstance(pair, tuple) and len(pair) == 2
            and isinstance(pair[0], bytes) and isinstance(pair[1], bytes)):
        raise MerkleError(f"build input must be (key, digest) pairs of bytes, got {pair!r:.80}")
    return pair
