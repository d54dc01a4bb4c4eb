"""Token awareness: send a keyed request to one of the key's primaries first, saving the coordinator a hop.

Theory of operation: `RingView.from_json` reads a node's GET /admin/ring (Q, the owner of each
partition, each node's HTTP address and status). A key's primaries are found as DESIGN §3 "Ring" says:
partition = the top log2(Q) bits of MurmurHash3-128(bucket NUL key) (ring.hashing), then the owners of
that partition and the ones after it, skipping owners already taken, until n_val distinct nodes. A
`Router` keeps the latest view and says when to fetch again: every `refresh_s`, and at once when a
preferred node failed (the ring may have moved). A view is only a hint: every node can coordinate every
key, so a stale or missing view costs a hop, never correctness.

Rules kept: pure (time comes in as arguments); nodes the ring reports down go after the live primaries;
a malformed /admin/ring answer raises ValueError and the router keeps working without a view.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from ring.hashing import check_partitions, partition_for_key

REFRESH_S_DEFAULT = 30.0


@dataclasses.dataclass(frozen=True)
class RingView:
    version: int
    partitions: int
    owners: tuple[str, ...]  # node id per partition
    addresses: Mapping[str, str]  # node id -> "host:port" of its HTTP API
    down: frozenset[str]
    n_val: int

    @classmethod
    def from_json(cls, data: Any) -> "RingView":
        try:
            partitions = check_partitions(data["partitions"])
            owners = tuple(str(owner) for owner in data["owners"])
            nodes = data["nodes"]
            addresses = {str(node): str(info["http"]) for node, info in nodes.items() if info.get("http")}
            down = frozenset(str(node) for node, info in nodes.items() if info.get("status") == "down")
            version, n_val = int(data.get("version", 0)), int(data.get("n_val", 3))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a ring description: {error!r:.80}") from None
        if len(owners) != partitions:
            raise ValueError(f"ring has {len(owners)} owners for {partitions} partitions")
        return cls(version, partitions, owners, addresses, down, n_val)

    def primaries(self, bucket: bytes, key: bytes, n_val: int | None = None) -> list[str]:
        """HTTP addresses ("host:port") of the key's primaries, live ones first, in walk order."""
        wanted = n_val or self.n_val
        start = partition_for_key(bucket, key, self.partitions)
        found: list[str] = []
        for step in range(self.partitions):
            owner = self.owners[(start + step) % self.partitions]
            if owner not in found:
                found.append(owner)
                if len(found) == wanted:
                    break
        ordered = [n for n in found if n not in self.down] + [n for n in found if n in self.down]
        return [self.addresses[node] for node in ordered if node in self.addresses]


class Router:
    """The latest RingView and when to fetch the next one. Thread-safe."""

    def __init__(self, refresh_s: float = REFRESH_S_DEFAULT) -> None:
        self.refresh_s = refresh_s
        self.view: RingView | None = None
        self._next_fetch_s = float("-inf")
        self._lock = threading.Lock()

    def claim_refresh(self, now_s: float) -> bool:
        """True for exactly one caller when a fetch is due (the others go on with the view they have)."""
        with self._lock:
            if now_s < self._next_fetch_s:
                return False
            self._next_fetch_s = now_s + self.refresh_s
            return True

    def update(self, data: Any) -> None:
        """Take a fetched /admin/ring body; a malformed one leaves the old view in place."""
        try:
            view = RingView.from_json(data)
        except ValueError:
            return
        with self._lock:
            self.view = view

    def invalidate(self) -> None:
        """A preferred node failed: fetch again on the next request."""
        with self._lock:
            self._next_fetch_s = float("-inf")

    def preferred(self, route: tuple[bytes, bytes, int | None] | None) -> list[str]:
        view = self.view
        if route is None or view is None:
            return []
        bucket, key, n_val = route
        return view.primaries(bucket, key, n_val)
