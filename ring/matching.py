"""Bipartite b-matching with lower and upper bounds: which node takes which freed partition.

Theory of operation
- Slots (freed partitions) go to nodes. Each slot lists the nodes allowed to take it, in preference
  order. Each node takes at least `lower[node]` and at most `upper[node]` slots (lower <= upper).
- Augmenting paths (Kuhn's algorithm, widened to capacities). Phase one fills every node up to its
  lower bound, phase two up to its upper bound. An augmenting path only ever adds a slot to the node at its
  end, so loads reached in phase one never drop in phase two; if any assignment meets all bounds and
  places every slot, the result does too (max-flow with lower bounds, in two passes).
- Deterministic: slots are tried in the given order, nodes in each slot's preference order.
- The result may be partial (some slots unplaced, some lower bounds unmet); the caller repairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def assign_slots(slots: Sequence[int], allowed: Mapping[int, Sequence[str]],
                 lower: Mapping[str, int], upper: Mapping[str, int]) -> dict[int, str]:
    """Place as many slots as possible, meeting lower bounds first. Returns slot -> node."""
    assert all(lower.get(node, 0) <= upper.get(node, 0) for node in lower), "lower bound above upper"
    taken: dict[int, str] = {}
    held: dict[str, list[int]] = {node: [] for node in upper}
    for capacity in (lower, upper):
        for slot in slots:
            if slot not in taken:
                _augment(slot, allowed, capacity, taken, held, set())
    return taken


def _augment(slot: int, allowed: Mapping[int, Sequence[str]], capacity: Mapping[str, int],
             taken: dict[int, str], held: dict[str, list[int]], visited: set[str]) -> bool:
    """Find a path that places `slot`, moving other slots along it; True if it was placed.

    `visited` is shared by the whole search: a node already explored cannot start a new path.
    """
    candidates = [node for node in allowed.get(slot, ()) if node in held]
    for node in candidates:
        if node not in visited and len(held[node]) < capacity.get(node, 0):
            _place(slot, node, taken, held)
            return True
    for node in candidates:
        if node in visited:
            continue
        visited.add(node)
        for other in list(held[node]):
            held[node].remove(other)
            del taken[other]
            if _augment(other, allowed, capacity, taken, held, visited):
                _place(slot, node, taken, held)
                return True
            _place(other, node, taken, held)
    return False


def _place(slot: int, node: str, taken: dict[int, str], held: dict[str, list[int]]) -> None:
    taken[slot] = node
    held[node].append(slot)
