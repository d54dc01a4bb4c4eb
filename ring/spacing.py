"""Spacing on the ring: windows of target_n consecutive partitions and the owners they repeat.

Theory of operation
- Window i is partitions i, i+1, ..., i+N-1 (N = target_n, indices mod Q, so windows wrap). A window is a
  violation when two of its partitions share an owner: a preference list starting there would find fewer
  than N distinct nodes among N consecutive partitions. There are exactly Q windows.
- Placing node X at partition p keeps every window through p clean iff X owns none of the other
  partitions within distance N-1 of p (`conflicts`). The claim only ever places nodes that way.
- The fewest violations a ring of S owners can have (`violations_min`), with Q a power of two >= 8:
    S > N  -> 0  (the claim achieves it; the property tests check every reachable ring).
    S < N  -> Q  (pigeonhole: N partitions drawn from fewer than N owners always repeat one).
    S == N -> 0 when N divides Q (the layout i mod N); this covers N in {1, 2, 4}.
    S == N == 3 -> 2, because 3 never divides a power of two. Proof: call a window clean when its three
      owners are distinct. If windows i and i+1 are both clean then owner[i+3] == owner[i] (it must differ
      from owner[i+1] and owner[i+2], and only three owners exist). gcd(3, Q) == 1, so the steps i -> i+3
      walk one cycle through all Q partitions. With no violation every step keeps the owner, so one node
      owns everything: impossible. With a single violation, at window j, only the steps from j-1 and j
      may change the owner, so at most two owners appear in the whole ring, yet the clean window j+1 needs
      three: impossible. So at least two; the layout i mod 3 has exactly two (the windows through the
      wrap), and the claim meets it.
  target_n is limited to 1..4 so that this table is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

TARGET_N_DEFAULT = 3
TARGET_N_MAX = 4


class TargetNError(ValueError):
    """target_n outside 1..TARGET_N_MAX."""


def check_target_n(target_n: int) -> int:
    if isinstance(target_n, bool) or not isinstance(target_n, int):
        raise TargetNError(f"target_n must be an int, got {type(target_n).__name__}")
    if not 1 <= target_n <= TARGET_N_MAX:
        raise TargetNError(f"target_n must be in [1, {TARGET_N_MAX}], got {target_n}")
    return target_n


def window_violations(owners: Sequence[str], target_n: int) -> int:
    """How many of the Q wrapping windows of target_n partitions repeat an owner."""
    count = len(owners)
    width = min(target_n, count)
    return sum(1 for start in range(count)
               if len({owners[(start + k) % count] for k in range(width)}) < width)


def violated_windows(owners: Sequence[str | None], target_n: int) -> list[int]:
    """Start indices of windows with a repeated (non-None) owner."""
    count = len(owners)
    found = []
    for start in range(count):
        seen = [owners[(start + k) % count] for k in range(min(target_n, count))]
        named = [node for node in seen if node is not None]
        if len(set(named)) < len(named):
            found.append(start)
    return found


def violations_min(partitions: int, node_count: int, target_n: int) -> int:
    """The fewest window violations any ring of `node_count` owners can have (see the module docstring)."""
    if node_count > target_n:
        return 0
    if node_count < target_n:
        return partitions
    return 0 if partitions % target_n == 0 else 2


def conflicts(owners: Sequence[str | None], position: int, node: str, target_n: int) -> bool:
    """True if `node` owns a partition other than `position` within distance target_n - 1 of it."""
    count = len(owners)
    for step in range(1, target_n):
        if owners[(position - step) % count] == node or owners[(position + step) % count] == node:
            return True
    return False


def neighbours(owners: Sequence[str | None], position: int, target_n: int) -> set[str]:
    """The owners within distance target_n - 1 of `position` (excluding position itself)."""
    count = len(owners)
    found = set()
    for step in range(1, target_n):
        found.add(owners[(position - step) % count])
        found.add(owners[(position + step) % count])
    found.discard(None)
    return found
