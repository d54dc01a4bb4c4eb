"""Gossip under faults: partitions heal, removals stick, rings converge, runs replay exactly."""

import pytest

from gossip.gossiper import EventKind
from gossip.membership import Status, ring_digest
from tools.sim import NetworkConfig, World
from tools.sim.gossip_node import (GossipNodeConfig, act, add_cluster, disagreement, live_gossipers,
                                   rings_agree)
from tools.sim.replay import replayable, seeds

LOSSY = NetworkConfig(latency_s=0.002, jitter_s=0.02, drop_p=0.05, duplicate_p=0.02, reorder_p=0.05)


def cluster(seed, n=8, network=LOSSY, wire=False, keep_trace=False):
    world = World(seed, network, keep_trace=keep_trace, history_size=5000)
    names = [f"n{i}" for i in range(n)]
    add_cluster(world, names, GossipNodeConfig(seeds=tuple(names[:2]), wire=wire))
    return world, names


def settle(world, members_count=None, within_s=30.0):
    """Run until every live view agrees; fail with the disagreement after `within_s`."""
    agreed = world.run_while(lambda: disagreement(world, members_count) is not None, world.now + within_s, 1.0)
    assert agreed, disagreement(world, members_count)


@pytest.mark.parametrize("seed", seeds([1, 2, 3]))
def test_a_healed_partition_reconverges(seed):
    with replayable(seed):
        world, names = cluster(seed)
        world.run_until(20.0)
        left, right = set(names[:4]), set(names[4:])
        world.partition(left, right)
        act(world, "n1", "publish", "load", 0.7)           # changes on both sides while cut
        act(world, "n6", "leave")
        world.run_for(30.0)
        for node in left:
            assert not any(world.process(node).gossiper.is_alive(other) for other in right)
        world.heal()
        settle(world, 8)
        for gossiper in live_gossipers(world).values():
            assert gossiper.live_members() == sorted(names)
            assert gossiper.app_state("n1", "load") == 0.7 and gossiper.status("n6") is Status.LEAVING


@pytest.mark.parametrize("seed", seeds([4, 5]))
def test_a_removed_node_never_comes_back_from_stale_gossip(seed):
    with replayable(seed):
        world, names = cluster(seed)
        world.run_until(20.0)
        stale = [m for m in world.history if m[1] != "n5"]                  # messages from before the removal
        assert any(delta.node == "n5" and any(key == "joined" for key, _, _ in delta.states)
                   for _, _, message in stale for delta in getattr(message, "deltas", ()))  # n5's full state
        act(world, "n2", "force_remove", "n5")
        world.run_for(15.0)
        assert world.process("n5").gossiper.stopped                          # it learned, and stopped
        assert world.process("n5").gossiper.status("n5") is Status.REMOVED
        for src, dst, message in stale:                                      # replay the past, everywhere
            if dst != "n5":
                world.inject(src, dst, message, delay_s=world.rng.random())
        world.run_for(20.0)
        settle(world, 7)
        for node, gossiper in live_gossipers(world).items():
            assert "n5" not in gossiper.members() and gossiper.status("n5") is Status.REMOVED, node
            assert not any(e.kind is EventKind.JOINED and e.node == "n5" and e.at_s > 20.0
                           for e in world.process(node).events)


def test_removal_during_a_partition_reaches_the_other_side_after_heal():
    seed = seeds([6])[0]
    with replayable(seed):
        world, names = cluster(seed)
        world.run_until(20.0)
        world.partition(names[:4], names[4:])
        act(world, "n0", "force_remove", "n7")                               # n7 is on the other side
        world.run_for(20.0)
        assert "n7" in world.process("n4").gossiper.members()
        world.heal()
        settle(world, 7)
        assert world.process("n7").gossiper.stopped
        assert all("n7" not in g.members() for g in live_gossipers(world).values())


def test_a_removed_node_rejoins_only_explicitly():
    seed = seeds([7])[0]
    with replayable(seed):
        world, names = cluster(seed)
        world.run_until(20.0)
        act(world, "n1", "force_remove", "n3")
        world.run_for(10.0)
        world.restart("n3")                                    # plain restart: generation 2, old join
        world.run_for(10.0)
        assert world.process("n3").gossiper.stopped
        assert all("n3" not in g.members() for g in live_gossipers(world).values())
        world.nodes["n3"].durable["rejoin"] = True             # the operator joins it again
        world.restart("n3")
        settle(world, 8)
        assert {g.generation("n3") for g in live_gossipers(world).values()} == {3}


def test_an_exiting_node_is_left_everywhere_and_never_reported_down():
    seed = seeds([8])[0]
    with replayable(seed):
        world, names = cluster(seed)
        world.run_until(20.0)
        act(world, "n3", "leave")
        world.run_for(5.0)
        act(world, "n3", "exit")
        world.run_for(30.0)
        for node, gossiper in live_gossipers(world).items():
            assert gossiper.status("n3") is Status.EXITING and "n3" not in gossiper.live_members()
            kinds = [e.kind for e in world.process(node).events if e.node == "n3"]
            assert EventKind.LEFT in kinds and EventKind.DOWN not in kinds, node


@pytest.mark.parametrize("seed", seeds([9, 10]))
def test_the_highest_ring_version_wins_everywhere_and_ties_are_deterministic(seed):
    with replayable(seed):
        world, names = cluster(seed)
        world.run_until(10.0)
        rings = {"n1": (3, {"by": "n1"}), "n2": (5, {"by": "n2"}), "n6": (5, {"by": "n6"}), "n7": (4, {"by": "n7"})}
        order = list(rings)
        world.rng.shuffle(order)
        for node in order:
            act(world, node, "publish_ring", *rings[node])
            world.run_for(world.rng.random())
        settle(world, 8)
        winner = min(({"by": "n2"}, {"by": "n6"}), key=ring_digest)
        for gossiper in live_gossipers(world).values():
            assert gossiper.ring_state() == (5, winner)
        act(world, "n7", "publish_ring", 6, {"by": "n7"})
        settle(world, 8)
        assert rings_agree(world) and world.process("n0").gossiper.ring_state() == (6, {"by": "n7"})


def test_clogged_links_delay_but_do_not_break_convergence():
    seed = seeds([13])[0]
    with replayable(seed):
        world, names = cluster(seed)
        world.run_until(20.0)
        world.network.swizzle(["n2", "n5", "n6"], names, world.now, step_s=2.0, hold_s=6.0)
        act(world, "n5", "publish", "hints", 3)
        world.run_for(15.0)
        settle(world, 8)
        world.run_for(5.0)
        for gossiper in live_gossipers(world).values():
            assert gossiper.live_members() == sorted(names) and gossiper.app_state("n5", "hints") == 3


def test_the_same_seed_gives_the_same_trace_under_faults():
    def run(seed):
        world, names = cluster(seed, n=6, wire=True, keep_trace=True)
        world.run_until(10.0)
        world.partition(names[:2], names[2:])
        world.run_for(8.0)
        world.heal()
        world.crash("n3")
        world.run_for(6.0)
        world.restart("n3")
        act(world, "n0", "force_remove", "n5")
        world.run_for(10.0)
        return world.trace, list(world.log_lines)

    first, second, other = run(31), run(31), run(32)
    assert first == second
    assert first[0] != other[0]
    assert any("down n3" in line for line in first[1]) and any("removed n5" in line for line in first[1])
