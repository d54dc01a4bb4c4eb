"""Failure detection in simulation: crashes are convicted within 5 s everywhere, live nodes never are.

Cluster sizes: the realistic 5-8 nodes, and 20, at the default 1 s interval. (Above 64 members the probe
threshold stretches, so detection takes longer there; see gossiper.py and the bench.)
"""

import pytest

from gossip.gossiper import EventKind
from tools.sim import NetworkConfig, World
from tools.sim.gossip_node import GossipNodeConfig, add_cluster, live_gossipers
from tools.sim.replay import replayable, seeds

LOSSY = NetworkConfig(latency_s=0.002, jitter_s=0.02, drop_p=0.05, reorder_p=0.05)


def cluster(seed, n, network=None):
    world = World(seed, network, keep_trace=False)
    names = [f"n{i}" for i in range(n)]
    add_cluster(world, names, GossipNodeConfig(seeds=tuple(names[:2]), notes=False))
    return world, names


def events_about(world, observer, node, kind, after_s=0.0):
    return [e for e in world.process(observer).events if e.node == node and e.kind is kind and e.at_s >= after_s]


@pytest.mark.parametrize("n", [5, 8, 20])
@pytest.mark.parametrize("seed", seeds([1, 2, 3]))
def test_a_crashed_node_is_marked_down_everywhere_within_5_s(n, seed):
    with replayable(seed):
        world, names = cluster(seed, n)
        world.run_until(60.0 + world.rng.random())
        victim = names[world.rng.randrange(n)]
        crashed_at_s = world.now
        world.crash(victim)
        world.run_for(30.0)
        for observer in world.running():
            downs = events_about(world, observer, victim, EventKind.DOWN, crashed_at_s)
            assert downs, f"{observer} never marked {victim} down"
            assert downs[0].at_s - crashed_at_s <= 5.0, f"{observer} took {downs[0].at_s - crashed_at_s:.2f} s"
            assert events_about(world, observer, victim, EventKind.UP, crashed_at_s) == []  # no flapping
            gossiper = world.process(observer).gossiper
            assert not gossiper.is_alive(victim) and victim in gossiper.members()      # down is not removed


@pytest.mark.parametrize("n", [5, 8, 20])
@pytest.mark.parametrize("seed", seeds([11, 12]))
def test_no_false_positives_over_10_minutes_with_5_percent_loss(n, seed):
    with replayable(seed):
        world, names = cluster(seed, n, LOSSY)
        world.run_until(600.0)
        downs = [(observer, e.node, round(e.at_s, 2)) for observer in names
                 for e in world.process(observer).events if e.kind is EventKind.DOWN]
        assert downs == []
        assert world.stats.dropped > 0.04 * world.stats.sent  # the loss really happened


def test_a_restarted_node_is_up_again_everywhere_with_a_new_generation():
    seed = seeds([21])[0]
    with replayable(seed):
        world, names = cluster(seed, 6, LOSSY)
        world.run_until(30.0)
        world.crash("n4")
        world.run_for(10.0)
        assert not any(g.is_alive("n4") for g in live_gossipers(world).values())
        world.restart("n4")
        world.run_for(5.0)
        for node, gossiper in live_gossipers(world).items():
            assert gossiper.is_alive("n4"), node
            assert gossiper.generation("n4") == 2, node
        world.run_for(60.0)
        restarted_at_s = 40.0
        assert all(events_about(world, o, "n4", EventKind.DOWN, restarted_at_s + 1) == [] for o in world.running())
