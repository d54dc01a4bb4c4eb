"""Anti-entropy for one partition's replicas: Merkle trees and the exchange that compares two of them.

Sans-IO and self-contained (DESIGN §2): this package imports nothing of ours, no trio, sockets, clock or
global random. `merkle` keeps the tree (key -> digest, updatable in O(depth)); `exchange` walks two trees
top-down through frozen request/reply messages and yields exactly the keys that differ. A driver in
dynamo/ carries the messages and repairs the keys.
"""

from antientropy.exchange import (
    BranchReply,
    BranchRequest,
    Exchange,
    ExchangeDone,
    ExchangeError,
    ExchangeStats,
    MalformedReply,
    RootReply,
    RootRequest,
    SegmentReply,
    SegmentRequest,
    ShapeMismatch,
    StaleReply,
    respond,
)
from antientropy.merkle import MerkleError, MerkleTree, TreeShape

__all__ = [
    "BranchReply", "BranchRequest", "Exchange", "ExchangeDone", "ExchangeError", "ExchangeStats",
    "MalformedReply", "MerkleError", "MerkleTree", "RootReply", "RootRequest", "SegmentReply",
    "SegmentRequest", "ShapeMismatch", "StaleReply", "TreeShape", "respond",
]
