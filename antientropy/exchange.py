"""The anti-entropy exchange between two replicas of a partition, as a sans-IO state machine.

Theory of operation
-------------------
The initiator owns an `Exchange` over its local tree; the responder answers each request with the pure
function `respond(tree, request)`. Neither side does I/O: a driver carries the frozen messages below.

    RootRequest(shape)            -> RootReply(shape, root)          equal roots: done, no keys
    BranchRequest(level, parents) -> BranchReply(children's hashes)  one level at a time, top down
    SegmentRequest(segments)      -> SegmentReply(their entries)     diff the key/digest lists locally

The initiator compares the responder's hashes with its own and descends only into nodes that differ;
all differing nodes of a level go out together (split only to keep each reply under
`hashes_per_request_max` hashes), so a tree of depth D costs 1 + D rounds plus the segment rounds, and
the hashes sent grow with (differences x fan-out x depth), not with the number of keys. At the bottom it
fetches the responder's entries of the differing segments, batched by a segment count and an entry budget
judged from the local segment sizes (replicas in sync hold alike segments), and reports every key that
is missing on either side or carries a different digest. The entries per differing segment are about
keys / segments, so a store should size its trees to its partitions (see tools/aaebench.py).

Rules kept:
- trees of different shape (segments, fan-out, hash version) are never compared: the root round carries
  both shapes and the initiator raises ShapeMismatch;
- a reply must answer the request outstanding: same exchange id, same step, matching type and size, or
  StaleReply / MalformedReply is raised and the exchange state is left as it was;
- the local tree is read afresh at every step, so writes during an exchange can show up as (harmless,
  repair is idempotent) extra keys or be missed until the next exchange; neither side is ever corrupted.
Sizes are estimates of the encoded bytes (payload lengths plus a small per-item and per-message
overhead), for budgeting and the bench, not exact CBOR sizes.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Union

from antientropy.merkle import HASH_BYTES, MerkleError, MerkleTree, TreeShape, segment_of

MESSAGE_OVERHEAD_BYTES = 16  # frame header, message type, exchange id and step
INDEX_BYTES = 4  # a node or segment index
ENTRY_OVERHEAD_BYTES = 4  # length prefixes of a key and a digest
HASHES_PER_REQUEST_MAX = 4096  # 64 KiB of hashes per reply
SEGMENTS_PER_REQUEST_MAX = 1024
ENTRIES_PER_REQUEST_MAX = 4096  # judged by the local segment sizes; the remote ones are alike when in sync


class ExchangeError(ValueError):
    """Misuse of an exchange or a reply that cannot belong to it."""


class ShapeMismatch(ExchangeError):
    """The two trees differ in segment count, fan-out or hash version, so they cannot be compared."""


class StaleReply(ExchangeError):
    """A reply for another exchange or another step than the one outstanding."""


class MalformedReply(ExchangeError):
    """A reply of the right step whose content does not fit the request."""


@dataclasses.dataclass(frozen=True)
class RootRequest:
    exchange_id: int
    step: int
    shape: TreeShape


@dataclasses.dataclass(frozen=True)
class RootReply:
    exchange_id: int
    step: int
    shape: TreeShape
    root: bytes


@dataclasses.dataclass(frozen=True)
class BranchRequest:
    """Ask for the hashes, at `level`, of every child of the nodes `parents` (at level - 1)."""

    exchange_id: int
    step: int
    level: int
    parents: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class BranchReply:
    exchange_id: int
    step: int
    hashes: tuple[bytes, ...]


@dataclasses.dataclass(frozen=True)
class SegmentRequest:
    exchange_id: int
    step: int
    segments: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SegmentReply:
    """`entries[i]` holds the sorted (key, digest) pairs of the i-th requested segment."""

    exchange_id: int
    step: int
    entries: tuple[tuple[tuple[bytes, bytes], ...], ...]


Request = Union[RootRequest, BranchRequest, SegmentRequest]
Reply = Union[RootReply, BranchReply, SegmentReply]


@dataclasses.dataclass(frozen=True)
class ExchangeStats:
    rounds: int = 0  # request/reply pairs
    hashes_received: int = 0  # the initiator sends indices, never hashes
    entries_received: int = 0  # (key, digest) pairs of differing segments
    bytes_sent: int = 0  # initiator -> responder, estimated
    bytes_received: int = 0  # responder -> initiator, estimated

    @property
    def bytes_total(self) -> int:
        return self.bytes_sent + self.bytes_received


@dataclasses.dataclass(frozen=True)
class ExchangeDone:
    keys: frozenset[bytes]  # missing on one side or with a different digest
    stats: ExchangeStats


def respond(tree: MerkleTree, request: Request) -> Reply:
    """The responder's side: answer one request from `tree`. Raises ExchangeError on a bad request."""
    if isinstance(request, RootRequest):
        return RootReply(request.exchange_id, request.step, tree.shape, tree.root)
    try:
        if isinstance(request, BranchRequest):
            if not isinstance(request.level, int) or request.level < 1:
                raise ExchangeError(f"branch request for level {request.level!r}; levels start at 1")
            hashes = tree.children_hashes(request.level - 1, request.parents)
            return BranchReply(request.exchange_id, request.step, tuple(hashes))
        if isinstance(request, SegmentRequest):
            entries = tuple(tuple(tree.segment(s)) for s in request.segments)
            return SegmentReply(request.exchange_id, request.step, entries)
    except (MerkleError, TypeError) as error:
        raise ExchangeError(f"bad {type(request).__name__}: {error}") from None
    raise ExchangeError(f"not an exchange request: {type(request).__name__}")


def request_size_bytes(request: Request) -> int:
    if isinstance(request, BranchRequest):
        return MESSAGE_OVERHEAD_BYTES + INDEX_BYTES * (1 + len(request.parents))
    if isinstance(request, SegmentRequest):
        return MESSAGE_OVERHEAD_BYTES + INDEX_BYTES * len(request.segments)
    return MESSAGE_OVERHEAD_BYTES + 3 * INDEX_BYTES  # the shape


def reply_size_bytes(reply: Reply) -> int:
    if isinstance(reply, RootReply):
        return MESSAGE_OVERHEAD_BYTES + 3 * INDEX_BYTES + len(reply.root)
    if isinstance(reply, BranchReply):
        return MESSAGE_OVERHEAD_BYTES + sum(len(h) for h in reply.hashes)
    return MESSAGE_OVERHEAD_BYTES + sum(len(k) + len(d) + ENTRY_OVERHEAD_BYTES
                                        for segment in reply.entries for k, d in segment)


class Exchange:
    """The initiator's side: `start()` gives the first request, `handle(reply)` the next one or the result."""

    def __init__(self, tree: MerkleTree, exchange_id: int = 0,
                 hashes_per_request_max: int = HASHES_PER_REQUEST_MAX,
                 segments_per_request_max: int = SEGMENTS_PER_REQUEST_MAX,
                 entries_per_request_max: int = ENTRIES_PER_REQUEST_MAX):
        if not isinstance(tree, MerkleTree):
            raise ExchangeError(f"an exchange needs a MerkleTree, got {type(tree).__name__}")
        if hashes_per_request_max < tree.shape.fanout:
            raise ExchangeError(f"hashes_per_request_max {hashes_per_request_max} is below the fan-out "
                                f"{tree.shape.fanout}: no request could hold one node's children")
        if segments_per_request_max < 1 or entries_per_request_max < 1:
            raise ExchangeError("segments_per_request_max and entries_per_request_max must be at least 1")
        self.tree = tree
        self.exchange_id = exchange_id
        self._parents_per_request = hashes_per_request_max // tree.shape.fanout
        self._segments_per_request = segments_per_request_max
        self._entries_per_request = entries_per_request_max
        self._step = -1  # -1: not started
        self._outstanding: Request | None = None
        self._level = 0  # level whose hashes the pending work asks for (depth + 1: segment contents)
        self._pending: collections.deque[int] = collections.deque()  # parents/segments still to ask about
        self._found: list[int] = []  # differing nodes found at self._level, to descend into next
        self._keys: set[bytes] = set()
        self._stats = ExchangeStats()
        self._done: ExchangeDone | None = None

    @property
    def stats(self) -> ExchangeStats:
        return self._stats

    @property
    def done(self) -> ExchangeDone | None:
        return self._done

    def start(self) -> RootRequest:
        if self._step != -1:
            raise ExchangeError("exchange already started")
        return self._send(RootRequest(self.exchange_id, 0, self.tree.shape))

    def handle(self, reply: Reply) -> Request | ExchangeDone:
        self._check_current(reply)
        if isinstance(reply, RootReply):
            self._on_root(reply)
        elif isinstance(reply, BranchReply):
            self._on_branch(reply)
        else:
            self._on_segments(reply)
        hashes = {RootReply: 1, BranchReply: len(getattr(reply, "hashes", ()))}.get(type(reply), 0)
        self._stats = dataclasses.replace(self._stats, rounds=self._stats.rounds + 1,
                                          hashes_received=self._stats.hashes_received + hashes,
                                          bytes_received=self._stats.bytes_received + reply_size_bytes(reply))
        return self._next()

    # -- reply handlers: validate everything first, then change state ----------------------------

    def _check_current(self, reply):
        if self._done is not None:
            raise ExchangeError("exchange already finished")
        if self._outstanding is None:
            raise ExchangeError("exchange not started: call start() first")
        expected = _REPLY_TYPE[type(self._outstanding)]
        if not isinstance(reply, (RootReply, BranchReply, SegmentReply)):
            raise ExchangeError(f"not an exchange reply: {type(reply).__name__}")
        if reply.exchange_id != self.exchange_id or reply.step != self._step or type(reply) is not expected:
            raise StaleReply(f"expected {expected.__name__} for exchange {self.exchange_id} step {self._step}, "
                             f"got {type(reply).__name__} for exchange {reply.exchange_id!r} step {reply.step!r}")

    def _on_root(self, reply: RootReply):
        if reply.shape != self.tree.shape:
            raise ShapeMismatch(f"cannot compare trees of different shape: local {self.tree.shape}, "
                                f"remote {reply.shape}")
        _check_hash(reply.root)
        if reply.root != self.tree.root:
            self._level, self._pending, self._found = 1, collections.deque([0]), []

    def _on_branch(self, reply: BranchReply):
        request = self._outstanding
        assert isinstance(request, BranchRequest)
        local = self.tree.children_hashes(request.level - 1, request.parents)
        if not isinstance(reply.hashes, tuple) or len(reply.hashes) != len(local):
            raise MalformedReply(f"expected {len(local)} hashes at level {request.level}, "
                                 f"got {reply.hashes!r:.60}")
        for remote_hash in reply.hashes:
            _check_hash(remote_hash)
        children = [c for p in request.parents for c in self.tree.shape.children(request.level - 1, p)]
        self._found.extend(c for c, mine, theirs in zip(children, local, reply.hashes) if mine != theirs)

    def _on_segments(self, reply: SegmentReply):
        request = self._outstanding
        assert isinstance(request, SegmentRequest)
        if not isinstance(reply.entries, tuple) or len(reply.entries) != len(request.segments):
            raise MalformedReply(f"expected entries of {len(request.segments)} segments")
        remote = [_checked_segment(s, entries, self.tree.shape.segments)
                  for s, entries in zip(request.segments, reply.entries)]
        for s, theirs in zip(request.segments, remote):
            mine = dict(self.tree.segment(s))
            self._keys.update(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        self._stats = dataclasses.replace(
            self._stats, entries_received=self._stats.entries_received + sum(map(len, remote)))

    # -- what to ask next --------------------------------------------------------------------------

    def _next(self) -> Request | ExchangeDone:
        depth = self.tree.shape.depth
        if not self._pending and self._found and self._level <= depth:
            self._level, self._pending, self._found = self._level + 1, collections.deque(self._found), []
        if not self._pending:
            self._outstanding = None
            self._done = ExchangeDone(frozenset(self._keys), self._stats)
            return self._done
        if self._level <= depth:
            batch = [self._pending.popleft() for _ in range(min(self._parents_per_request, len(self._pending)))]
            return self._send(BranchRequest(self.exchange_id, self._step + 1, self._level, tuple(batch)))
        return self._send(SegmentRequest(self.exchange_id, self._step + 1, self._segment_batch()))

    def _segment_batch(self) -> tuple[int, ...]:
        """The next segments to fetch: as many as fit the segment and (locally estimated) entry budgets,
        but always at least one, so a single huge segment still makes progress."""
        batch, entries = [], 0
        while self._pending and len(batch) < self._segments_per_request:
            size = self.tree.segment_size(self._pending[0])
            if batch and entries + size > self._entries_per_request:
                break
            batch.append(self._pending.popleft())
            entries += size
        return tuple(batch)

    def _send(self, request: Request) -> Request:
        self._step = request.step
        self._outstanding = request
        self._stats = dataclasses.replace(self._stats,
                                          bytes_sent=self._stats.bytes_sent + request_size_bytes(request))
        return request


_REPLY_TYPE = {RootRequest: RootReply, BranchRequest: BranchReply, SegmentRequest: SegmentReply}


def _check_hash(value):
    if not isinstance(value, bytes) or len(value) != HASH_BYTES:
        raise MalformedReply(f"a hash must be {HASH_BYTES} bytes, got {value!r:.60}")


def _checked_segment(s: int, entries, segments: int) -> dict[bytes, bytes]:
    """The remote entries of segment `s` as a dict, after checking they can belong there."""
    if not isinstance(entries, tuple):
        raise MalformedReply(f"segment {s}: entries must be a tuple of (key, digest) pairs")
    theirs: dict[bytes, bytes] = {}
    for pair in entries:
        if not (isinstance(pair, tuple) and len(pair) == 2
                and isinstance(pair[0], bytes) and isinstance(pair[1], bytes)):
            raise MalformedReply(f"segment {s}: not a (key, digest) pair of bytes: {pair!r:.60}")
        key, digest = pair
        if segment_of(key, segments) != s:
            raise MalformedReply(f"segment {s}: key {key!r:.40} belongs to segment {segment_of(key, segments)}")
        if key in theirs:
            raise MalformedReply(f"segment {s}: key {key!r:.40} listed twice")
        theirs[key] = digest
    return theirs
