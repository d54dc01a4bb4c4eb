"""Ring benchmark: the fixed-partition claim against classic random-token consistent hashing.

Run: python -m tools.ringbench [--partitions 256] [--seed 1]

For each cluster size S it prints, for the claim ring (Q partitions, target_n 3):
  max/mean   partitions of the fullest node / Q/S (1.00 is perfect balance);
  viol       windows of 3 consecutive partitions repeating a node, as a share of the key space;
  join       partitions moved when the S-th node joins S-1 nodes, / floor(Q/S) (the least possible);
  leave      partitions moved when one node (the first by name) leaves S nodes, / its own partitions;
and for random tokens (T points per node on a 2**64 circle, a seeded Random; a key belongs to the next
token clockwise), with T = 16 and 256, the same measures in Q-equivalents: max/mean share, the share of
keys whose 3 next tokens repeat a node, and the share of the circle that changes hands on the S-th join
(times Q, / floor(Q/S)). Then a seeded random walk of joins and leaves, and what its leaves cost by
the size left behind. This measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import bisect
import random
import time

from ring.claim import claim_join, claim_leave, initial_claim
from ring.spacing import window_violations

SIZES = (3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)
CIRCLE = 2 ** 64
TARGET_N = 3


def claim_row(partitions: int, size: int) -> tuple[float, float, float, float, float]:
    names = [f"node{i:02d}" for i in range(size)]
    before = initial_claim(names[:-1], partitions) if size > 1 else None
    started = time.perf_counter()
    owners = initial_claim(names, partitions)
    build_s = time.perf_counter() - started
    counts = [owners.count(name) for name in names]
    balance = max(counts) / (partitions / size)
    violations = window_violations(owners, TARGET_N) / partitions
    joined = claim_join(before, names[:-1], names[-1]) if before else owners
    join = sum(a != b for a, b in zip(before or owners, joined)) / max(1, partitions // size)
    left = claim_leave(owners, names, names[0])
    leave = sum(a != b for a, b in zip(owners, left)) / owners.count(names[0])
    return balance, violations, join, leave, build_s


def token_ring(size: int, tokens: int, rng: random.Random) -> list[tuple[int, int]]:
    return sorted((rng.randrange(CIRCLE), node) for node in range(size) for _ in range(tokens))


def token_shares(ring: list[tuple[int, int]], size: int) -> list[float]:
    shares = [0.0] * size
    for index, (point, node) in enumerate(ring):
        previous = ring[index - 1][0] if index else ring[-1][0] - CIRCLE
        shares[node] += (point - previous) / CIRCLE
    return shares


def token_violations(ring: list[tuple[int, int]]) -> float:
    """Share of keys whose owning token and the next two tokens do not name 3 distinct nodes."""
    bad = 0.0
    count = len(ring)
    for index, (point, node) in enumerate(ring):
        previous = ring[index - 1][0] if index else ring[-1][0] - CIRCLE
        window = {ring[(index + k) % count][1] for k in range(TARGET_N)}
        if len(window) < min(TARGET_N, len({n for _, n in ring})):
            bad += (point - previous) / CIRCLE
    return bad


def owner_at(ring: list[tuple[int, int]], point: int) -> int:
    index = bisect.bisect_left(ring, (point, -1))
    return ring[index % len(ring)][1]


def moved_share(old: list[tuple[int, int]], new: list[tuple[int, int]]) -> float:
    """Share of the circle whose owner differs between the two token rings."""
    points = sorted({point for point, _ in old} | {point for point, _ in new})
    moved = 0
    for index, point in enumerate(points):
        previous = points[index - 1] if index else points[-1] - CIRCLE
        if owner_at(old, point) != owner_at(new, point):
            moved += point - previous
    return moved / CIRCLE


def token_row(partitions: int, size: int, tokens: int, seed: int) -> tuple[float, float, float]:
    rng = random.Random(seed * 1000 + tokens)
    old = token_ring(size - 1, tokens, rng)
    new = sorted(old + [(rng.randrange(CIRCLE), size - 1) for _ in range(tokens)])
    shares = token_shares(new, size)
    balance = max(shares) * size
    join = moved_share(old, new) * partitions / max(1, partitions // size)
    return balance, token_violations(new), join


def walk_table(partitions: int, steps: int, seed: int) -> None:
    """A seeded random walk of joins and leaves over 1..64 nodes: what leaves cost, by size after."""
    rng = random.Random(seed)
    names = [f"w{i:03d}" for i in range(rng.randint(1, 64))]
    owners = initial_claim(names, partitions)
    fresh, seen = len(names), {}
    for _ in range(steps):
        if len(names) == 1 or (len(names) < 64 and rng.random() < 0.5):
            node, fresh = f"w{fresh:03d}", fresh + 1
            owners, names = claim_join(owners, names, node), sorted(names + [node])
            continue
        node = rng.choice(names)
        new = claim_leave(owners, names, node)
        names = [name for name in names if name != node]
        own = owners.count(node)
        ratio = sum(a != b for a, b in zip(owners, new)) / own if own else 1.0
        bucket = min(len(names), 9)
        count, only, worst = seen.get(bucket, (0, 0, 0.0))
        seen[bucket] = (count + 1, only + (ratio == 1.0), max(worst, ratio))
        owners = new
    print(f"\nleaves in a random walk of {steps} joins/leaves (Q={partitions}, seed {seed}): "
          f"moved / the leaver's own partitions")
    print(f"{'S after':>8} {'leaves':>7} {'only own':>9} {'worst':>6}")
    for bucket in sorted(seen):
        count, only, worst = seen[bucket]
        label = f"{bucket}" if bucket < 9 else "9..63"
        print(f"{label:>8} {count:>7} {100 * only / count:8.0f}% {worst:6.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.ringbench", description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--walk-steps", type=int, default=1500)
    args = parser.parse_args(argv)
    q = args.partitions
    print(f"Q={q}, target_n={TARGET_N}; max/mean: fullest node / fair share; viol: share of keys whose "
          f"{TARGET_N} next partitions (tokens) repeat a node;")
    print("join: moved on the S-th join / floor(Q/S); leave: moved when one node leaves / its partitions\n")
    print(f"{'':>4} | {'claim (fixed partitions)':^42} | {'16 random tokens/node':^26} | "
          f"{'256 random tokens/node':^26}")
    print(f"{'S':>4} | {'max/mean':>8} {'viol':>6} {'join':>6} {'leave':>6} {'build ms':>9} | "
          f"{'max/mean':>8} {'viol':>7} {'join':>7} | {'max/mean':>8} {'viol':>7} {'join':>7}")
    for size in SIZES:
        balance, violations, join, leave, build_s = claim_row(q, size)
        row = (f"{size:>4} | {balance:8.2f} {100 * violations:5.1f}% {join:6.2f} {leave:6.2f} "
               f"{1000 * build_s:9.1f}")
        for tokens in (16, 256):
            t_balance, t_violations, t_join = token_row(q, size, tokens, args.seed)
            row += f" | {t_balance:8.2f} {100 * t_violations:6.1f}% {t_join:7.2f}"
        print(row)
    walk_table(q, args.walk_steps, args.seed)


if __name__ == "__main__":
    main()
