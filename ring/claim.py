"""Claim: who owns each of the Q partitions, and how that changes when a node joins or leaves.

Theory of operation
- Rules, in priority order. (1) Balance: every member owns floor(Q/S) or ceil(Q/S) partitions (members
  may own none when S > Q). (2) Spacing: with S > target_n no window of target_n consecutive partitions
  repeats an owner; with S <= target_n the ring has exactly spacing.violations_min violations.
  (3) Few moves: a join moves at most 2 * floor(Q/S') partitions (S' = the new size; floor(Q/S') is the
  least the joiner can take); a leave moves the leaver's partitions and, whenever (1) and (2) allow it,
  nothing else. Candidates that break (1) or (2) are never returned.
- Rings of at most target_n nodes follow the role pattern i mod target_n (template.py).
- Join to S' > target_n. From a role-pattern ring (S == target_n) the joiner first takes a lattice:
  every (target_n + 1)-th partition or so, which steps through the roles, clears the pattern's violations
  and takes evenly from every node. Any violation left is cleared by a small search
  (draft.repair_segment). Then the joiner takes partitions near evenly spaced spots until it owns
  floor(Q/S'), each from a node that may give one (those above the new ceiling first), never within
  target_n - 1 of its own. Handing a partition from X to a node that owns nothing nearby keeps every
  window clean, so a spaced ring stays spaced and the joiner's share is the only thing that moves. Only
  if that stalls do chains of moves (draft.rebalance) finish the job.
- Leave to S' > target_n. The leaver's partitions (at least target_n apart) go to nodes that own
  nothing within target_n - 1, by a bounded b-matching (matching.py) that meets every node's new floor and
  ceiling whenever any assignment can; then only the leaver's partitions move. When none can (a partition
  whose 2 * (target_n - 1) neighbours are all the other nodes, possible only with S' <= 2 * target_n - 2;
  or a node that must grow sits next to all of the leaver's partitions), the rest is placed anyway and
  repaired, moving a few other partitions. With S' == target_n + 1 spaced rings are rigid, so two more
  kinds of candidate are tried and the one moving fewest partitions wins: the closest spaced ring by
  dynamic programming (relaxation.py), and the role pattern of all but one node plus that node's lattice.
- If every candidate failed, the claim would fall back to a fresh layout (layout.py): valid, but it
  moves most partitions; the property tests would see that as a broken move bound.
- Deterministic: members are sorted, choices scan in a fixed order, and anything "random" (the joiner's
  first spot, the matching's preference order) is a SHA-256 of node ids and positions.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

from ring.draft import Draft, rebalance, repair_segment
from ring.hashing import PARTITIONS_DEFAULT, check_partitions
from ring.layout import arc_layout
from ring.matching import assign_slots
from ring.relaxation import balanced_closest
from ring.spacing import TARGET_N_DEFAULT, check_target_n, conflicts, neighbours, violated_windows, \
    violations_min, window_violations
from ring.template import role_layout


RELAXATION_CUTS = 4  # cut points tried by the relaxation candidate
STEERED_SHIFTS = 64  # rotations tried for a steered lattice (each costs O(Q/S'))


class ClaimError(ValueError):
    """A join or leave that makes no sense for the given ring (unknown node, duplicate, last node)."""


def ownership_bounds(partitions: int, node_count: int) -> tuple[int, int]:
    """(floor(Q/S), ceil(Q/S)): the least and most partitions any member may own."""
    if node_count < 1:
        raise ClaimError("a ring needs at least one node")
    low = partitions // node_count
    return low, low + (1 if partitions % node_count else 0)


def initial_claim(nodes: Iterable[str], partitions: int = PARTITIONS_DEFAULT,
                  target_n: int = TARGET_N_DEFAULT) -> tuple[str, ...]:
    """The ring for `nodes`, built by joining them one at a time in sorted order."""
    check_partitions(partitions)
    check_target_n(target_n)
    members = _check_members(nodes)
    if not members:
        raise ClaimError("a ring needs at least one node")
    owners: tuple[str, ...] = (members[0],) * partitions
    for count in range(1, len(members)):
        owners = claim_join(owners, members[:count], members[count], target_n)
    return owners


def claim_join(owners: Sequence[str], members: Iterable[str], node: str,
               target_n: int = TARGET_N_DEFAULT) -> tuple[str, ...]:
    """The owners after `node` joins the ring `owners` whose member set is `members`."""
    members = _check_ring(owners, members, target_n)
    if not isinstance(node, str) or not node:
        raise ClaimError(f"node ids are non-empty strings, got {node!r}")
    if node in members:
        raise ClaimError(f"{node!r} is already a member")
    after = sorted(members + [node])
    if len(after) <= target_n:
        return tuple(role_layout(owners, after, target_n))
    draft = Draft(owners, after, target_n)
    low, high = ownership_bounds(draft.size, len(after))
    if len(members) == target_n:
        _take_lattice(draft, node, low, high)
    if window_violations(draft.owners, target_n):
        _clear_violations(draft, node)
    _take_spots(draft, node, low, high)
    return _best(owners, after, target_n, [_finish(draft, low, high)])


def claim_leave(owners: Sequence[str], members: Iterable[str], node: str,
                target_n: int = TARGET_N_DEFAULT) -> tuple[str, ...]:
    """The owners after `node` leaves the ring `owners` whose member set is `members`."""
    members = _check_ring(owners, members, target_n)
    if node not in members:
        raise ClaimError(f"{node!r} is not a member")
    after = [member for member in members if member != node]
    if not after:
        raise ClaimError("the last node cannot leave")
    if len(after) <= target_n:
        return tuple(role_layout(owners, after, target_n))
    draft = Draft(owners, after, target_n)
    low, high = ownership_bounds(draft.size, len(after))
    freed = [position for position, owner in enumerate(owners) if owner == node]
    for position in freed:
        draft.place(position, None)
    _fill(draft, freed, low, high)
    candidates = [_finish(draft, low, high)]
    rigid = len(after) == target_n + 1
    small = len(after) <= 2 * target_n  # the relaxation's state space grows as S'^(target_n - 1)
    if small and (candidates[0] is None or rigid and _moved(owners, candidates[0]) > len(freed)):
        candidates.append(_relaxed(owners, after, node, target_n, 2 * len(freed)))
    if rigid and _moved(owners, min(candidates, key=lambda c: _moved(owners, c))) > len(freed):
        candidates += [_rebuild_small(owners, after, lattice, target_n) for lattice in after]
    return _best(owners, after, target_n, candidates)


def _check_members(nodes: Iterable[str]) -> list[str]:
    members = list(nodes)
    for node in members:
        if not isinstance(node, str) or not node:
            raise ClaimError(f"node ids are non-empty strings, got {node!r}")
    if len(set(members)) != len(members):
        raise ClaimError("node ids must be unique")
    return sorted(members)


def _check_ring(owners: Sequence[str], members: Iterable[str], target_n: int) -> list[str]:
    check_partitions(len(owners))
    check_target_n(target_n)
    members = _check_members(members)
    stray = set(owners) - set(members)
    if stray:
        raise ClaimError(f"owners not in the member set: {sorted(stray)}")
    return members


def _finish(draft: Draft, low: int, high: int) -> tuple[str, ...] | None:
    """Balance by chains if needed; the owners if every rule holds, else None."""
    if not draft.balanced(low, high):
        rebalance(draft, low, high)
    owners = draft.owners
    wanted = violations_min(draft.size, len(draft.members), draft.target_n)
    if None in owners or not draft.balanced(low, high) or window_violations(owners, draft.target_n) > wanted:
        return None
    return tuple(owners)  # type: ignore[arg-type]


def _relaxed(owners: Sequence[str], after: Sequence[str], leaver: str, target_n: int,
             good_enough: int) -> tuple[str, ...] | None:
    """For target_n + 1 nodes: the closest spaced ring by relaxation, balanced off by chains.

    The relaxation is exact only given its first target_n - 1 owners, and how well the balancing goes
    depends on where the ring is cut, so try a few evenly spread cuts; stop at a result that moves at
    most `good_enough` partitions.
    """
    size = len(owners)
    starts = [position for position in range(size)
              if all(owners[(position + k) % size] != leaver for k in range(target_n - 1))]
    low, high = ownership_bounds(size, len(after))
    best = None
    for start in starts[::max(1, len(starts) // RELAXATION_CUTS)][:RELAXATION_CUTS]:
        result = balanced_closest(owners, after, target_n, low, high, start)
        if result is None:
            continue
        draft = Draft(owners, after, target_n)
        for position, node in enumerate(result):
            if draft.owners[position] != node:
                draft.place(position, node)
        candidate = _finish(draft, low, high)
        if candidate is not None and (best is None or _moved(owners, candidate) < _moved(owners, best)):
            best = candidate
            if _moved(owners, best) <= good_enough:
                break
    return best


def _rebuild_small(owners: Sequence[str], after: Sequence[str], lattice: str,
                   target_n: int) -> tuple[str, ...] | None:
    """For target_n + 1 nodes: the role pattern for all but `lattice`, which then joins on its lattice."""
    others = [node for node in after if node != lattice]
    base = role_layout(owners, others, target_n)
    draft = Draft(base, after, target_n)
    low, high = ownership_bounds(draft.size, len(after))
    _take_lattice(draft, lattice, low, high)
    if window_violations(draft.owners, target_n):
        _clear_violations(draft, lattice)
    _take_spots(draft, lattice, low, high)
    return _finish(draft, low, high)


def _best(owners: Sequence[str], after: Sequence[str], target_n: int,
          candidates: Sequence[tuple[str, ...] | None]) -> tuple[str, ...]:
    """The valid candidate that moves fewest partitions (first on ties); a fresh layout if none is valid."""
    valid = [candidate for candidate in candidates if candidate is not None]
    if not valid:
        return tuple(arc_layout(after, len(owners), target_n))
    return min(valid, key=lambda candidate: _moved(owners, candidate))


def _moved(owners: Sequence[str], candidate: Sequence[str] | None) -> int:
    if candidate is None:
        return len(owners) + 1
    return sum(1 for old, new in zip(owners, candidate) if old != new)


def _take_lattice(draft: Draft, node: str, low: int, high: int) -> None:
    """Joining a ring of exactly target_n nodes (the role pattern): take about every (Q/S')-th partition.

    The joiner takes `low` partitions at gaps of target_n + 1 or more, so its partitions are spaced. A
    gap of target_n + 1 steps the role by one, so the givers (one per role) take turns. Candidates: the
    uniform lattice (gaps floor or ceil(Q/low)) at every rotation, then, if none is perfect, a lattice
    whose gaps are steered towards the givers that still owe partitions. Keep the one that clears the
    most violated windows of the old ring, then leaves the givers closest to balanced.
    """
    size = draft.size
    bad = violated_windows(draft.owners, draft.target_n)
    start = int.from_bytes(hashlib.sha256(node.encode()).digest()[:8], "big") % size
    best = None
    for steered in (False, True):
        for shift in range(STEERED_SHIFTS if steered else size):
            offset = (start + shift) % size
            if steered:
                spots = _steered_spots(draft, node, low, high, offset)
            else:
                spots = {(offset + (index * size) // low) % size for index in range(low)}
            score = (sum(1 for first in bad if not _window_clean(draft, first, spots, node)),
                     _excess(draft, node, low, high, spots))
            if best is None or score < best[0]:
                best = (score, spots)
            if score == (0, 0):
                break
        if best is not None and best[0] == (0, 0):
            break
    assert best is not None
    for spot in sorted(best[1]):
        draft.place(spot, node)


def _excess(draft: Draft, node: str, low: int, high: int, spots: set[int]) -> int:
    """How far the givers would end outside [low, high] if the joiner took `spots`."""
    taken = Counter(draft.owners[spot] for spot in spots)
    left = {giver: draft.counts[giver] - taken.get(giver, 0) for giver in draft.members if giver != node}
    return sum(max(0, low - count) + max(0, count - high) for count in left.values())


def _steered_spots(draft: Draft, node: str, low: int, high: int, offset: int) -> set[int]:
    """`low` spots from `offset`, each gap in [N+1, 2N] chosen for a giver that still owes the most."""
    size, width = draft.size, draft.target_n + 1
    taken: Counter[str | None] = Counter({draft.owners[offset]: 1})
    spots, span = [offset], 0
    for placed in range(1, low):
        gaps_left = low - placed  # gaps still to come after the next spot, including the closing one
        pace = (size - span) / (gaps_left + 1)
        options = []
        for gap in range(width, 2 * width - 1):
            if span + gap + gaps_left * width > size:
                break
            giver = draft.owners[(offset + span + gap) % size]
            if giver is None or giver == node:
                continue
            owed = draft.counts[giver] - taken[giver] - high
            room = draft.counts[giver] - taken[giver] - low
            options.append((owed <= 0, room <= 0, abs(gap - pace), gap, giver))
        if not options:
            gap = max(width, int(pace))
            options.append((True, True, 0.0, gap, draft.owners[(offset + span + gap) % size]))
        _, _, _, gap, giver = min(options)
        span += gap
        spots.append((offset + span) % size)
        taken[giver] += 1
    return set(spots)


def _window_clean(draft: Draft, first: int, spots: set[int], node: str) -> bool:
    window = [(first + k) % draft.size for k in range(draft.target_n)]
    names = [node if position in spots else draft.owners[position] for position in window]
    return len(set(names)) == len(names)


def _clear_violations(draft: Draft, node: str) -> None:
    """Joining a ring of exactly target_n nodes: put the joiner where the old ring repeats an owner."""
    width = draft.target_n - 1
    for _ in range(draft.size):
        bad = violated_windows(draft.owners, draft.target_n)
        if not bad:
            return
        best = None
        for start in bad:
            for position in [(start + k) % draft.size for k in range(draft.target_n)]:
                if draft.owners[position] == node or conflicts(draft.owners, position, node, draft.target_n):
                    continue
                gain = _local_violations(draft, position) - _local_violations(draft, position, node)
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, position)
        if best is None:
            break
        draft.place(best[1], node)
    for start in violated_windows(draft.owners, draft.target_n):
        repair_segment(draft, start + width // 2, radius=3 * draft.target_n)


def _local_violations(draft: Draft, position: int, node: str | None = None) -> int:
    """Violated windows through `position`, as the ring is or with `node` placed there."""
    width = draft.target_n
    size = draft.size
    around = {offset: draft.owners[(position + offset) % size] for offset in range(1 - width, width)}
    if node is not None:
        around[0] = node
    bad = 0
    for first in range(1 - width, 1):
        window = [around[first + k] for k in range(width)]
        bad += len(set(window)) < width
    return bad


def _take_spots(draft: Draft, node: str, low: int, high: int) -> None:
    """The joiner takes partitions near evenly spaced spots until it owns `low`."""
    need = low - draft.counts[node]
    if need <= 0:
        return
    size = draft.size
    offset = int.from_bytes(hashlib.sha256(node.encode()).digest()[:8], "big") % size
    radius = max(1, size // (2 * need))
    for index in range(need):
        if draft.counts[node] >= low:
            return
        spot = offset + (index * size) // need
        order = [spot + step * sign for step in range(radius + 1) for sign in ((1, -1) if step else (1,))]
        _take_one(draft, node, low, high, [p % size for p in order])
    while draft.counts[node] < low:
        if not _take_one(draft, node, low, high, _farthest_first(draft, node)):
            return


def _take_one(draft: Draft, node: str, low: int, high: int, positions: Sequence[int]) -> bool:
    """Take the first allowed partition in `positions`, preferring nodes above the new ceiling."""
    must = sum(max(0, count - high) for member, count in draft.counts.items() if member != node)
    only_must = must >= low - draft.counts[node]
    fallback = None
    for position in positions:
        giver = draft.owners[position]
        if giver is None or giver == node or draft.counts[giver] <= low:
            continue
        if conflicts(draft.owners, position, node, draft.target_n):
            continue
        if draft.counts[giver] > high:
            draft.place(position, node)
            return True
        if fallback is None and not only_must:
            fallback = position
    if fallback is None:
        return False
    draft.place(fallback, node)
    return True


def _farthest_first(draft: Draft, node: str) -> list[int]:
    """All partitions, those farthest from the joiner's current ones first (two sweeps round the ring)."""
    size = draft.size
    if node not in draft.owners:
        return list(range(size))
    distance = [size] * size
    for sweep in (range(2 * size), range(2 * size - 1, -1, -1)):
        last = None
        for step in sweep:
            position = step % size
            if draft.owners[position] == node:
                last = step
            if last is not None:
                distance[position] = min(distance[position], abs(step - last))
    return sorted(range(size), key=lambda position: (-distance[position], position))


def _fill(draft: Draft, freed: Sequence[int], low: int, high: int) -> None:
    """Give each freed partition to a node with nothing nearby, within the new bounds if possible."""
    allowed = {}
    for position in freed:
        near = neighbours(draft.owners, position, draft.target_n)
        allowed[position] = _preference(position, [node for node in draft.members if node not in near])
    lower = {node: max(0, low - count) for node, count in draft.counts.items()}
    upper = {node: max(0, high - count) for node, count in draft.counts.items()}
    for position, node in assign_slots(freed, allowed, lower, upper).items():
        draft.place(position, node)
    for position in freed:
        if draft.owners[position] is not None:
            continue
        near = neighbours(draft.owners, position, draft.target_n)
        choices = [node for node in draft.members if node not in near]
        if choices:
            draft.place(position, min(choices, key=lambda node: (draft.counts[node], node)))
        else:
            repair_segment(draft, position, radius=2 * draft.target_n)


def _preference(position: int, nodes: Sequence[str]) -> list[str]:
    """A fixed, position-dependent order of `nodes`, so no node is everyone's first choice."""
    def rank(node: str) -> bytes:
        return hashlib.sha256(f"{position}:{node}".encode()).digest()[:8]
    return sorted(nodes, key=rank)
