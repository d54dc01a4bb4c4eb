"""Layouts for rings of at most target_n nodes: the roles of the pattern i mod N, dealt out to nodes.

Theory of operation
- With S <= N nodes spacing cannot hold (spacing.violations_min). The best layouts follow one pattern:
  partition i plays role i mod N. With S == N each node plays exactly one role; that layout has the fewest
  violations possible (0 when N divides Q, else 2, at the wrap). With S < N every window repeats anyway,
  and the roles are still dealt out whole where balance allows: the roles, in some order, are cut into
  S consecutive chunks of floor(Q/S) or ceil(Q/S) partitions, so each node holds whole roles plus at most
  two part-roles.
- Keeping to the pattern is what makes the next step cheap: a node joining S == N-1 nodes takes over the
  one split role (about Q/N moves, the minimum), a node leaving S == N hands its role to the others
  (only its own partitions move), and a node joining S == N finds every other window already clean.
- Of all role orders and node orders we keep the layout that leaves the most partitions where they are
  (ties: first in the enumeration, which is in sorted node order). With N <= 4 that is at most 4! * 4!
  cases, each scored in O(N * S) from per-role ownership counts.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def role_layout(owners: Sequence[str | None], members: Sequence[str], target_n: int) -> list[str]:
    """The role-pattern layout for `members` (at most target_n of them) closest to `owners`."""
    members = sorted(members)
    count = len(owners)
    assert 1 <= len(members) <= target_n, "role layouts are for rings of at most target_n nodes"
    held = [{node: 0 for node in members} for _ in range(target_n)]
    for position, node in enumerate(owners):
        if node in held[position % target_n]:
            held[position % target_n][node] += 1
    sizes = [len(range(role, count, target_n)) for role in range(target_n)]
    best_score, best_shares = -1, None
    for role_order in itertools.permutations(range(target_n)):
        for node_order in itertools.permutations(members):
            shares = _deal(role_order, node_order, sizes, count, exact=len(members) == target_n)
            if shares is None:
                continue
            score = sum(min(amount, held[role][node]) for (role, node), amount in shares.items())
            if score > best_score:
                best_score, best_shares = score, shares
    assert best_shares is not None
    return _build(owners, best_shares, target_n)


def _deal(role_order: Sequence[int], node_order: Sequence[str], sizes: Sequence[int], count: int,
          exact: bool) -> dict[tuple[int, str], int] | None:
    """Cut the roles (in order) into consecutive chunks, one per node (in order): (role, node) -> amount.

    The first Q % S nodes get the larger share. With `exact` every node must get exactly one whole role
    (None if the sizes do not line up).
    """
    nodes = len(node_order)
    quotas = [count // nodes + (1 if k < count % nodes else 0) for k in range(nodes)]
    if exact:
        if any(quotas[k] != sizes[role_order[k]] for k in range(nodes)):
            return None
        return {(role_order[k], node_order[k]): quotas[k] for k in range(nodes)}
    shares: dict[tuple[int, str], int] = {}
    node_index, room = 0, quotas[0]
    for role in role_order:
        left = sizes[role]
        while left:
            amount = min(left, room)
            shares[(role, node_order[node_index])] = amount
            left -= amount
            room -= amount
            if room == 0 and node_index + 1 < nodes:
                node_index += 1
                room = quotas[node_index]
    return shares


def _build(owners: Sequence[str | None], shares: dict[tuple[int, str], int], target_n: int) -> list[str]:
    """Lay the shares out: each node first keeps the partitions of its roles it already owns."""
    count = len(owners)
    layout: list[str | None] = [None] * count
    for role in range(target_n):
        quota = {node: amount for (share_role, node), amount in shares.items() if share_role == role}
        positions = range(role, count, target_n)
        for position in positions:
            node = owners[position]
            if quota.get(node, 0) > 0:
                layout[position] = node
                quota[node] -= 1
        fill = iter([node for node in sorted(quota) for _ in range(quota[node])])
        for position in positions:
            if layout[position] is None:
                layout[position] = next(fill)
        assert next(fill, None) is None, "shares must cover each role exactly"
    return layout  # type: ignore[return-value]
