"""A direct spaced layout for more than target_n nodes: contiguous arcs in a reordered ring.

Theory of operation
- Reorder the partitions so that partitions sharing a window end up far apart, then give every node one
  contiguous arc of that order, of floor(Q/S) or ceil(Q/S) partitions.
- Odd N (gcd(N, Q) == 1): order t -> partition t * N mod Q. Partitions p and p + d (0 < d < N) sit at
  orders differing by d * N^-1 (mod Q), which for N == 3 is about Q/3 either way; an arc shorter than
  that (S > 3 gives arcs of at most ceil(Q/4)) cannot hold two partitions of one window.
- Even N (N divides Q; B = Q/N): track-major order t -> partition (t mod B) * N + t // B, that is all
  partitions == 0 (mod N), then all == 1, and so on, used as a line (no arc crosses the end). Two partitions
  of one window sit in different tracks, at orders about B apart; arcs of at most B - 1, or of B aligned to
  a track, are safe, which S > N gives for every Q >= 8 that fits (checked by the tests).
- Used for the claim's last-resort rebuild; it never fails, but it ignores where partitions were before.
"""

from __future__ import annotations

from collections.abc import Sequence


def arc_layout(members: Sequence[str], partitions: int, target_n: int) -> list[str]:
    """Each member (sorted) gets one arc of the spacing order; larger shares go first."""
    members = sorted(members)
    nodes = len(members)
    order = spacing_order(partitions, target_n)
    layout: list[str] = [""] * partitions
    cursor = 0
    for index, node in enumerate(members):
        share = partitions // nodes + (1 if index < partitions % nodes else 0)
        for t in range(cursor, cursor + share):
            layout[order[t]] = node
        cursor += share
    assert cursor == partitions
    return layout


def spacing_order(partitions: int, target_n: int) -> list[int]:
    """Partition at each order index t (a permutation of range(partitions))."""
    if target_n % 2:
        return [(t * target_n) % partitions for t in range(partitions)]
    block = partitions // target_n
    return [(t % block) * target_n + t // block for t in range(partitions)]
