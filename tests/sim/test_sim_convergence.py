"""Convergence without faults: every view agrees within C * log2(n) rounds, for n = 5, 50 and 500.

Agreement = the same members, generations, statuses, application states (not heartbeats) and tombstones
(`Gossiper.summary`). C = 2, measured in gossip intervals:
- n = 5 and 50 start cold: every node starts within the first second knowing only the seeds, joins through
  them and turns valid; rounds are counted from t = 1 s.
- n = 500 starts converged (`prejoin`, which would otherwise cost a minute of CPU to simulate), then a
  member publishes a new ring and a 501st node joins through a seed; rounds are counted from there.
"""

import math

import pytest

from tools.sim import World
from tools.sim.gossip_node import (GossipNodeConfig, add_cluster, disagreement, gossip_factory, live_gossipers,
                                   prejoin, act)
from tools.sim.replay import replayable, seeds

C = 2


def rounds_to_agree(world, members_count, start_s, bound):
    for rounds in range(1, bound + 1):
        world.run_until(start_s + rounds)
        if disagreement(world, members_count) is None:
            return rounds
    raise AssertionError(f"no agreement after {bound} rounds: {disagreement(world, members_count)}")


@pytest.mark.parametrize("n", [5, 50])
@pytest.mark.parametrize("seed", seeds([1, 2, 3]))
def test_cold_start_converges_within_c_log2_n_rounds(n, seed):
    with replayable(seed):
        world = World(seed, keep_trace=False)
        names = [f"n{i:02d}" for i in range(n)]
        add_cluster(world, names, GossipNodeConfig(seeds=tuple(names[:3]), notes=False))
        world.run_until(1.0)
        bound = math.ceil(C * math.log2(n))
        rounds = rounds_to_agree(world, n, 1.0, bound)
        print(f"n={n} seed={seed}: agreed after {rounds} rounds (bound {bound})")
        statuses = {g.status(name).value for g in live_gossipers(world).values() for name in names}
        assert statuses == {"valid"}


def test_wire_mode_converges_too():
    """The same, with every message CBOR-encoded and decoded by the codec."""
    with replayable(4):
        world = World(4, keep_trace=False, sizer=len)
        names = [f"n{i}" for i in range(8)]
        add_cluster(world, names, GossipNodeConfig(seeds=tuple(names[:2]), wire=True, notes=False))
        world.run_until(1.0)
        rounds_to_agree(world, 8, 1.0, math.ceil(C * math.log2(8)))
        assert world.stats.bytes_sent > 0


def test_500_nodes_converge_on_a_change_within_c_log2_n_rounds():
    seed = seeds([5])[0]
    with replayable(seed):
        world = World(seed, keep_trace=False)
        names = [f"n{i:03d}" for i in range(500)]
        config = GossipNodeConfig(seeds=tuple(names[:3]), notes=False)
        for name in names:
            world.add(name, gossip_factory(config))
        prejoin(world)
        assert disagreement(world, 500) is None
        act(world, "n123", "publish_ring", 9, {"owners": ["n123"] * 64})
        world.add("late", gossip_factory(config))
        bound = math.ceil(C * math.log2(501))
        rounds = rounds_to_agree(world, 501, world.now, bound)
        print(f"n=501: agreed after {rounds} rounds (bound {bound})")
        rings = {repr(g.ring_state()) for g in live_gossipers(world).values()}
        assert rings == {repr((9, {"owners": ["n123"] * 64}))}
