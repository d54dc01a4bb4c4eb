"""The spaced ring closest to a given one, for few nodes: dynamic programming with Lagrangian balance.

Theory of operation
- With target_n + 1 nodes a spaced ring is rigid (each window holds all but one node), so single moves
  rarely fix a count; repairing a ring partition by partition can get stuck. Instead solve the whole ring.
- `closest`: over all spaced assignments of the members, minimise (partitions that differ from the old
  ring) + sum of weight[node] * (partitions of node). Dynamic programming round the ring from `start`,
  the state being the last target_n - 1 owners (at most 5 * 4 * 3 states for 5 nodes and target_n 4).
  The first target_n - 1 partitions keep their old owners (the caller picks a start where they are
  members), and the last windows must close cleanly over the wrap.
- `balanced_closest`: the weights are Lagrange multipliers for balance; raise the weight of a node that
  came out too big, lower it for one too small, with shrinking steps, and keep the best (least unbalanced,
  then fewest moves) result. Many assignments tie on cost yet differ in counts, so each round adds a
  tiny jitter from a Random seeded with the round number (deterministic) to pick a different one. The caller finishes any leftover imbalance with chains (draft.rebalance).
- Pure and deterministic: members are scanned in sorted order, ties keep the first state found.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from random import Random

ROUNDS = 12
JITTER = 0.01  # far below one move, so it only ever chooses among equally good assignments


def closest(original: Sequence[str | None], members: Sequence[str], target_n: int,
            weight: Sequence[Mapping[str, float]], start: int) -> list[str] | None:
    """The spaced assignment minimising moves + weight[position][node], or None if the start admits none."""
    size = len(original)
    width = target_n - 1
    order = [(start + k) % size for k in range(size)]
    first = tuple(original[position] for position in order[:width])
    if any(node not in members for node in first) or len(set(first)) < width:
        return None
    states = [state for state in itertools.permutations(members, width)]
    state_id = {state: number for number, state in enumerate(states)}
    moves_from = [[(node, state_id[state[1:] + (node,)]) for node in members if node not in state]
                  for state in states]
    infinity = float("inf")
    cost = [infinity] * len(states)
    cost[state_id[first]] = 0.0
    back: list[list[tuple[int, str]]] = []
    for position in order[width:]:
        old, price = original[position], weight[position]
        step_price = {node: price[node] + (node != old) for node in members}
        following = [infinity] * len(states)
        came_from: list[tuple[int, str]] = [(-1, "")] * len(states)
        for number, here in enumerate(cost):
            if here == infinity:
                continue
            for node, target in moves_from[number]:
                value = here + step_price[node]
                if value < following[target]:
                    following[target] = value
                    came_from[target] = (number, node)
        back.append(came_from)
        cost = following
    closing = [(cost[number], number) for number, state in enumerate(states)
               if cost[number] < infinity and _wraps_clean(state + first, target_n)]
    if not closing:
        return None
    _, number = min(closing)
    result: list[str] = [""] * size
    for offset, node in enumerate(first):
        result[order[offset]] = node
    for position, came_from in zip(reversed(order[width:]), reversed(back)):
        number, node = came_from[number][0], came_from[number][1]
        result[position] = node
    return result


def balanced_closest(original: Sequence[str | None], members: Sequence[str], target_n: int,
                     low: int, high: int, start: int) -> list[str] | None:
    """`closest` with weights tuned towards every count in [low, high]; the best attempt, or None.

    Two passes of ROUNDS rounds: plain subgradient steps 1/(k+2), then (weights reset) larger steps
    with jitter. Neither alone balances every case we tried; together they usually do.
    """
    members = sorted(members)
    best: tuple[tuple[int, int], list[str]] | None = None
    for jittered in (False, True):
        weight = {node: 0.0 for node in members}
        for round_index in range(ROUNDS):
            jitter = Random(round_index)
            prices = [{node: weight[node] + (JITTER * jitter.random() if jittered else 0.0) for node in members}
                      for _ in original]
            result = closest(original, members, target_n, prices, start)
            if result is None:
                return None
            counts = Counter(result)
            off = sum(max(0, low - counts[node]) + max(0, counts[node] - high) for node in members)
            moved = sum(1 for old, new in zip(original, result) if old != new)
            if best is None or (off, moved) < best[0]:
                best = ((off, moved), result)
            if off == 0:
                return best[1]
            step = 0.5 / (1 + round_index // 4) if jittered else 1.0 / (round_index + 2)
            for node in members:
                weight[node] += step * (max(0, counts[node] - high) - max(0, low - counts[node]))
    return best[1] if best else None


def _wraps_clean(sequence: Sequence[str], target_n: int) -> bool:
    """Every window of target_n inside `sequence` (the last owners, then the first) is distinct."""
    return all(len(set(sequence[k:k + target_n])) == target_n
               for k in range(len(sequence) - target_n + 1))
