"""A ring being reshaped: a mutable copy of the owners list, and the repairs the claim runs on it.

Theory of operation
- A Draft starts from the old owners and remembers them, so `moves` is always the number of partitions
  whose owner differs from the old ring. Counts are kept per member (members may own nothing).
- Every change the repairs make keeps each window that was clean clean: a node is only placed where it
  has no other partition within target_n - 1 (`spacing.conflicts`).
- `rebalance` fixes counts outside [low, high] with chains of single moves: Y gives a partition to W, W
  gives one to X, ..., found by breadth-first search over nodes (fewest hops, then the cheapest moves:
  handing a partition back to its old owner is free, re-moving an already moved one costs nothing).
- `repair_segment` clears a knot that no single move can: over a short stretch of partitions it finds,
  by dynamic programming over the last target_n - 1 owners, the spaced assignment that changes least of
  the draft as it stands (then: differs least from the old ring), the partitions outside the stretch
  fixed. The candidates are the nodes seen nearby
  plus a few others (any node seen nowhere nearby is as good as any other such node).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ring.spacing import conflicts, neighbours


class Draft:
    def __init__(self, owners: Sequence[str | None], members: Iterable[str], target_n: int) -> None:
        self.original = tuple(owners)
        self.owners: list[str | None] = list(owners)
        self.members = sorted(members)
        self.target_n = target_n
        held = Counter(node for node in owners if node is not None)
        self.counts = {node: held.get(node, 0) for node in self.members}

    @property
    def size(self) -> int:
        return len(self.owners)

    def place(self, position: int, node: str | None) -> None:
        old = self.owners[position]
        if old is not None and old in self.counts:
            self.counts[old] -= 1
        if node is not None:
            self.counts[node] += 1
        self.owners[position] = node

    def moves(self) -> int:
        return sum(1 for old, new in zip(self.original, self.owners) if old != new)

    def balanced(self, low: int, high: int) -> bool:
        return all(low <= count <= high for count in self.counts.values())

    def move_cost(self, position: int, node: str) -> int:
        """Change in `moves` if `node` took `position` now."""
        before = self.owners[position] != self.original[position]
        after = node != self.original[position]
        return int(after) - int(before)


def rebalance(draft: Draft, low: int, high: int) -> bool:
    """Bring every count into [low, high] by chains of spacing-safe moves. False if stuck."""
    for _ in range(4 * draft.size):
        over = [node for node in draft.members if draft.counts[node] > high]
        under = [node for node in draft.members if draft.counts[node] < low]
        if not over and not under:
            return True
        if over:
            sources, sinks = over, {node for node in draft.members if draft.counts[node] < high}
        else:
            sources = [node for node in draft.members if draft.counts[node] > low]
            sinks = set(under)
        chain = _shortest_chain(draft, sources, sinks)
        if chain is None:
            return False
        for position, node in reversed(chain):  # sink end first: every node keeps its count meanwhile
            if conflicts(draft.owners, position, node, draft.target_n):
                break  # an earlier step of this chain crowded this one; search again
            draft.place(position, node)
    return False


def _shortest_chain(draft: Draft, sources: Sequence[str], sinks: set[str]) -> list[tuple[int, str]] | None:
    """Moves [(position, new_owner), ...] from a source to a sink, fewest hops then cheapest."""
    held: dict[str, list[int]] = {node: [] for node in draft.members}
    for position, node in enumerate(draft.owners):
        if node in held:
            held[node].append(position)
    parent: dict[str, tuple[str, int] | None] = {node: None for node in sources}
    frontier = list(sources)
    while frontier:
        reached: dict[str, tuple[int, str, int]] = {}
        for giver in frontier:
            for position in held[giver]:
                near = neighbours(draft.owners, position, draft.target_n)
                for taker in draft.members:
                    if taker in parent or taker in near or taker == giver:
                        continue
                    cost = draft.move_cost(position, taker)
                    if taker not in reached or cost < reached[taker][0]:
                        reached[taker] = (cost, giver, position)
        for taker, (_, giver, position) in reached.items():
            parent[taker] = (giver, position)
        done = sorted(taker for taker in reached if taker in sinks)
        if done:
            return _unwind(parent, done[0])
        frontier = sorted(reached)
    return None


def _unwind(parent: dict[str, tuple[str, int] | None], sink: str) -> list[tuple[int, str]]:
    chain = []
    node = sink
    while parent[node] is not None:
        giver, position = parent[node]  # type: ignore[misc]
        chain.append((position, node))
        node = giver
    chain.reverse()
    return chain


def repair_segment(draft: Draft, center: int, radius: int, spare: int = 3) -> bool:
    """Re-assign the partitions within `radius` of `center` so every window touching them is clean."""
    width = draft.target_n - 1
    span = min(2 * radius + 1, draft.size - 2 * width)
    start = center - span // 2
    positions = [(start + k) % draft.size for k in range(span)]
    left = tuple(draft.owners[(start - width + k) % draft.size] for k in range(width))
    right = [draft.owners[(start + span + k) % draft.size] for k in range(width)]
    candidates = _candidates(draft, positions, width, spare)
    layers: list[dict[tuple, tuple[int, tuple, str]]] = []
    layer: dict[tuple, tuple[int, tuple, str]] = {left: (0, (), "")}
    for position in positions:
        following: dict[tuple, tuple[int, tuple, str]] = {}
        for state, (cost, _, _) in layer.items():
            for node in candidates:
                if node in state:
                    continue
                # changing what the draft holds now costs most (it undoes earlier decisions, such as
                # a joiner's share); among equal changes prefer the old ring's owner
                step = cost + 2 * (node != draft.owners[position]) + (node != draft.original[position])
                key = state[1:] + (node,) if width else ()
                if key not in following or step < following[key][0]:
                    following[key] = (step, state, node)
        layers.append(following)
        layer = following
    finals = [(cost, state) for state, (cost, _, _) in layer.items() if _fits_right(state, right)]
    if not finals:
        return False
    _, state = min(finals, key=lambda item: item[0])
    for position, layer in zip(reversed(positions), reversed(layers)):
        _, previous, node = layer[state]
        draft.place(position, node)
        state = previous
    return True


def _candidates(draft: Draft, positions: Sequence[int], width: int, spare: int) -> list[str]:
    around = {draft.owners[(positions[0] - width + k) % draft.size] for k in range(len(positions) + 2 * width)}
    around |= {draft.original[p] for p in positions}
    around = {node for node in around if node in draft.counts}
    others = sorted((node for node in draft.members if node not in around),
                    key=lambda node: (draft.counts[node], node))
    return sorted(around) + others[:spare]


def _fits_right(state: tuple, right: Sequence[str | None]) -> bool:
    """Windows that end in the fixed stretch after the segment repeat no segment owner."""
    width = len(state)
    for k, node in enumerate(right):
        if node is not None and node in state[k:width]:
            return False
    return True
