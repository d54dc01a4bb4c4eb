"""Anti-entropy bench: what an exchange costs for d differences among n keys (measures and prints; not a test).

For each n it builds two identical trees, then for each d changes (even i) or removes (odd i) d keys in the
second, runs the exchange in-process (wall time covers both sides' work, no network), checks that it found
exactly those keys, and undoes the changes. Two segment policies are shown:

- fixed:  the default 1024 segments whatever n is; a differing segment then carries about n/1024 keys, so
          the bottom round grows with n;
- scaled: segments = the power of two giving about 16 keys per segment (at least 1024), so the depth grows
          with log n and the cost with d * log n. Both replicas must use the same shape, so a store picks it
          from configuration (expected partition size), never from its own key count.

Usage: python -m tools.aaebench [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import time
import tracemalloc

from antientropy.exchange import Exchange, ExchangeDone, respond
from antientropy.merkle import DEFAULT_SEGMENTS, MerkleTree

KEYS_PER_SEGMENT_TARGET = 16
DIFFERENCES = (1, 10, 100, 1000)
DIGEST_BYTES = 16
HEADER = (f"{'policy':>6} {'n':>8} {'segs':>7} {'depth':>5} {'d':>5} {'rounds':>6} {'hashes':>7} "
          f"{'entries':>8} {'sent_B':>8} {'recv_B':>9} {'B/d':>7} {'B/(d*log2n)':>11} {'ms':>8}")


def scaled_segments(n: int) -> int:
    wanted = max(DEFAULT_SEGMENTS, -(-n // KEYS_PER_SEGMENT_TARGET))
    return 1 << (wanted - 1).bit_length()


def measured_build(pairs, segments: int) -> tuple[MerkleTree, float, int]:
    """Build a tree; returns it, its build time without tracing, and the bytes it allocated (traced build)."""
    started_s = time.perf_counter()
    tree = MerkleTree.build(pairs, segments)
    build_s = time.perf_counter() - started_s
    del tree
    tracemalloc.start()
    tree = MerkleTree.build(pairs, segments)
    tree_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return tree, build_s, tree_bytes


def make_pairs(n: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    return [(b"bucket\x00key-%09d" % i, rng.randbytes(DIGEST_BYTES)) for i in range(n)]


def run_exchange(local: MerkleTree, remote: MerkleTree) -> tuple[ExchangeDone, float]:
    started_s = time.perf_counter()
    exchange = Exchange(local)
    outcome = exchange.start()
    while not isinstance(outcome, ExchangeDone):
        outcome = exchange.handle(respond(remote, outcome))
    return outcome, time.perf_counter() - started_s


def diverge(tree: MerkleTree, pairs, d: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    """Change or remove d keys of `tree`; returns the originals so the caller can undo it."""
    originals = [pairs[i] for i in rng.sample(range(len(pairs)), d)]
    for i, (key, digest) in enumerate(originals):
        tree.update(key, digest, None if i % 2 else rng.randbytes(DIGEST_BYTES))
    return originals


def undo(tree: MerkleTree, originals):
    for key, digest in originals:
        tree.put(key, digest)


def bench_policy(policy: str, pairs, segments: int, rng: random.Random) -> list[str]:
    n = len(pairs)
    local, build_s, tree_bytes = measured_build(pairs, segments)
    remote = MerkleTree.build(pairs, segments)
    print(f"# {policy:>6} n={n:<8} segments={segments:<7} build {build_s:6.2f} s per tree; the tree allocates "
          f"{tree_bytes / 2**20:5.1f} MiB = {tree_bytes / n:3.0f} B/key (keys and digests shared with the input)")
    rows = []
    for d in DIFFERENCES:
        originals = diverge(remote, pairs, d, rng)
        done, exchange_s = run_exchange(local, remote)
        assert done.keys == {key for key, _ in originals}, "exchange missed or invented keys"
        undo(remote, originals)
        assert remote.root == local.root
        s = done.stats
        per_d = s.bytes_total / d
        rows.append(f"{policy:>6} {n:>8} {segments:>7} {local.depth:>5} {d:>5} {s.rounds:>6} "
                    f"{s.hashes_received:>7} {s.entries_received:>8} {s.bytes_sent:>8} {s.bytes_received:>9} "
                    f"{per_d:>7.0f} {per_d / math.log2(n):>11.1f} {exchange_s * 1e3:>8.1f}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip n = 10^6")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    sizes = (10**4, 10**5) if args.quick else (10**4, 10**5, 10**6)
    rows = []
    for n in sizes:
        pairs = make_pairs(n, rng)
        for policy, segments in (("fixed", DEFAULT_SEGMENTS), ("scaled", scaled_segments(n))):
            rows.extend(bench_policy(policy, pairs, segments, rng))
        del pairs
    print()
    print("hashes/entries/bytes: responder -> initiator unless 'sent'; bytes are encoded-size estimates;")
    print("ms: whole exchange in one process (both sides, no network). fan-out 32.")
    print(HEADER)
    for policy in ("fixed", "scaled"):
        print("\n".join(row for row in rows if row.split()[0] == policy))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of the whole run: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
