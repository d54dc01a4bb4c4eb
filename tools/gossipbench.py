"""Gossip benchmark (not a test): convergence rounds, traffic per node per round, detection, false positives.

    python -m tools.gossipbench [--sizes 5,10,50,100,500,1000] [--seeds 3] [--cold-max 100]

Everything runs in the deterministic simulator at the default 1 s interval, so the numbers are rounds and
bytes, not wall time (CPU seconds are printed only to show what the simulation cost).
- cold rounds: all nodes start within one second knowing only 3 seeds; rounds until every view agrees
  (members, generations, statuses, application states). Only up to --cold-max nodes: simulating a cold
  start is quadratic in CPU per round and needs more rounds.
- change rounds: from a converged cluster (`prejoin`), one member publishes a ring and one node joins;
  rounds until every view agrees again.
- msgs, KiB per node per round: steady state over 3 rounds after convergence, every message CBOR-encoded
  (`to_wire`) to count its size. Includes probes of stale peers.
- detection: a node crashes after 60 s; the worst and mean time until every live node marks it down.
- false positives: down events about live nodes over 10 simulated minutes, 5% loss, 20 ms mean jitter.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import cbor2

from gossip.gossiper import EventKind
from gossip.message import to_wire
from tools.sim import NetworkConfig, World
from tools.sim.gossip_node import (GossipNodeConfig, act, add_cluster, disagreement, gossip_factory,
                                   live_gossipers, prejoin)

LOSSY = NetworkConfig(latency_s=0.002, jitter_s=0.02, drop_p=0.05, reorder_p=0.05)


def names_for(n: int) -> list[str]:
    width = len(str(n - 1))
    return [f"n{i:0{width}d}" for i in range(n)]


def rounds_until_agreed(world: World, members_count: int, start_s: float, limit: int = 60) -> int | None:
    for rounds in range(1, limit + 1):
        world.run_until(start_s + rounds)
        if disagreement(world, members_count) is None:
            return rounds
    return None


def cold_rounds(n: int, seed: int) -> int | None:
    world = World(seed, keep_trace=False)
    names = names_for(n)
    add_cluster(world, names, GossipNodeConfig(seeds=tuple(names[:3]), notes=False))
    world.run_until(1.0)
    return rounds_until_agreed(world, n, 1.0)


class Sizer:
    """Counts encoded bytes only while `on` (encoding every message all the time would dominate)."""

    def __init__(self):
        self.on = False

    def __call__(self, message) -> int:
        return len(cbor2.dumps(to_wire(message))) if self.on else 0


def change_and_traffic(n: int, seed: int) -> tuple[int | None, float, float]:
    sizer = Sizer()
    world = World(seed, keep_trace=False, sizer=sizer)
    names = names_for(n)
    config = GossipNodeConfig(seeds=tuple(names[:3]), notes=False)
    for name in names:
        world.add(name, gossip_factory(config))
    prejoin(world)
    act(world, names[n // 2], "publish_ring", 1, {"owners": [names[n // 2]] * 64})
    world.add("joiner", gossip_factory(config))
    rounds = rounds_until_agreed(world, n + 1, world.now)
    sent_before, sizer.on = world.stats.sent, True
    world.run_for(3.0)
    messages = (world.stats.sent - sent_before) / (n + 1) / 3
    kib = world.stats.bytes_sent / 1024 / (n + 1) / 3
    return rounds, messages, kib


def detection_s(n: int, seed: int, network: NetworkConfig | None = None) -> float:
    world = World(seed, network, keep_trace=False)
    names = names_for(n)
    add_cluster(world, names, GossipNodeConfig(seeds=tuple(names[:2]), notes=False))
    world.run_until(60.0 + world.rng.random())
    victim, crashed_at_s = names[world.rng.randrange(n)], world.now
    world.crash(victim)
    world.run_for(40.0)
    worst = 0.0
    for observer in world.running():
        downs = [e.at_s for e in world.process(observer).events
                 if e.node == victim and e.kind is EventKind.DOWN and e.at_s >= crashed_at_s]
        worst = max(worst, (downs[0] - crashed_at_s) if downs else math.inf)
    return worst


def false_positives(n: int, seed: int) -> int:
    world = World(seed, LOSSY, keep_trace=False)
    names = names_for(n)
    add_cluster(world, names, GossipNodeConfig(seeds=tuple(names[:2]), notes=False))
    world.run_until(600.0)
    alive = set(live_gossipers(world))
    return sum(1 for node in names for e in world.process(node).events if e.kind is EventKind.DOWN and e.node in alive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5,10,50,100,500,1000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cold-max", type=int, default=100)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = list(range(1, args.seeds + 1))

    print("convergence and traffic (default config, 1 s interval; rounds = intervals)")
    print(f"{'n':>6} {'log2n':>6} {'cold rounds':>14} {'change rounds':>14} {'msgs/node/rnd':>14} "
          f"{'KiB/node/rnd':>13} {'cpu s':>7}")
    for n in sizes:
        started = time.process_time()
        cold = [cold_rounds(n, s) for s in seeds] if n <= args.cold_max else []
        change, messages, kib = change_and_traffic(n, seeds[0])
        cold_text = "/".join(str(r) for r in cold) if cold else "-"
        print(f"{n:>6} {math.log2(n):>6.2f} {cold_text:>14} {str(change):>14} {messages:>14.2f} {kib:>13.2f} "
              f"{time.process_time() - started:>7.1f}")

    print("\ndetection of a crash (worst over live nodes, s), per seed")
    for n in (5, 10, 20, 50, 100):
        for label, network in (("quiet", None), ("5% loss", LOSSY)):
            times = [detection_s(n, s, network) for s in range(1, 6)]
            print(f"  n={n:<3} {label:<8} worst {max(times):5.2f}  mean {statistics.mean(times):5.2f}  "
                  f"({', '.join(f'{t:.2f}' for t in times)})")

    print("\nfalse positives over 10 simulated minutes, 5% loss, 20 ms jitter (down events about live nodes)")
    for n in (5, 8, 10, 20, 50):
        counts = [false_positives(n, s) for s in range(1, 6)]
        print(f"  n={n:<3} seeds 1-5: {counts}")


if __name__ == "__main__":
    main()
