"""Preference lists: which nodes hold the replicas of a partition's keys, and who stands in for the down.

Theory of operation (DESIGN §1)
- Walk the ring clockwise from the key's partition: partition p, p+1, ... (wrapping). The first n_val
  distinct owners met are the primaries, each tagged with the partition where the walk found it. With
  fewer than n_val owning nodes, every owning node is a primary.
- Down is not leave: down nodes stay primaries (they own the data), but a coordinator writes to a stand-in.
  For each down primary, in walk order, the fallback is the next distinct node further along the same walk
  (after the last primary) that is not a primary, not down and not already a fallback; it is tagged with
  the primary it stands in for. If the walk runs out, that primary has no fallback (a sloppy quorum of
  fewer nodes).
- `targets`: where a request goes: the live primaries in walk order, then the fallbacks in walk order.
- Everything is a pure function of the ring; results are frozen dataclasses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ring.state import Ring


@dataclass(frozen=True)
class Replica:
    node: str
    partition: int  # where the walk found this node
    fallback_for: str | None = None


@dataclass(frozen=True)
class Preflist:
    partition: int
    n_val: int
    primaries: tuple[Replica, ...]
    fallbacks: tuple[Replica, ...]
    down: frozenset[str] = frozenset()

    @property
    def targets(self) -> tuple[Replica, ...]:
        """Live primaries, then fallbacks, each in walk order."""
        return tuple(r for r in self.primaries if r.node not in self.down) + self.fallbacks

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes of `targets`."""
        return tuple(replica.node for replica in self.targets)


def preference_list(ring: Ring, partition: int, n_val: int, down: frozenset[str] | set[str] = frozenset()) -> Preflist:
    """The primaries of `partition` and, for each down primary, its fallback."""
    _check(ring, partition, n_val)
    down = frozenset(down)
    walk = _walk(ring, partition)
    primaries: list[Replica] = []
    for node, found_at in walk:
        primaries.append(Replica(node, found_at))
        if len(primaries) == n_val:
            break
    taken = {replica.node for replica in primaries}
    fallbacks: list[Replica] = []
    for primary in primaries:
        if primary.node not in down:
            continue
        for node, found_at in walk:
            if node not in down and node not in taken:
                fallbacks.append(Replica(node, found_at, fallback_for=primary.node))
                taken.add(node)
                break
    return Preflist(partition, n_val, tuple(primaries), tuple(fallbacks), down)


def replicas_of_partition(ring: Ring, partition: int, n_val: int) -> tuple[str, ...]:
    """The primary nodes responsible for the data of `partition` (its preference list, nobody down)."""
    _check(ring, partition, n_val)
    found: list[str] = []
    for node, _ in _walk(ring, partition):
        found.append(node)
        if len(found) == n_val:
            break
    return tuple(found)


def _walk(ring: Ring, start: int) -> Iterator[tuple[str, int]]:
    """Each distinct owner once, in clockwise order from `start`, with the partition it was met at.

    One iterator is shared by primaries and fallbacks, so fallbacks continue where the primaries stopped.
    """
    seen: set[str] = set()
    for step in range(ring.partitions):
        partition = (start + step) % ring.partitions
        node = ring.owners[partition]
        if node not in seen:
            seen.add(node)
            yield node, partition


def _check(ring: Ring, partition: int, n_val: int) -> None:
    if isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition < ring.partitions:
        raise ValueError(f"partition must be an int in [0, {ring.partitions}), got {partition!r}")
    if isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 1:
        raise ValueError(f"n_val must be an int >= 1, got {n_val!r}")
