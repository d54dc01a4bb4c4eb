"""The simulator itself, with a toy process: determinism, timers, crash/restart, the fault menu."""

import os
import random
import subprocess
import sys

import pytest

from tools.sim import Network, NetworkConfig, Note, Send, Timer, World
from tools.sim.replay import replay_line, replayable, seeds


class Pinger:
    """Every second, pings each peer with a counter; counts what it receives; remembers starts durably."""

    def __init__(self, node, durable, rng, peers):
        self.node, self.durable, self.rng, self.peers = node, durable, rng, peers
        self.received = []
        self.count = 0

    def start(self, now):
        self.durable["starts"] = self.durable.get("starts", 0) + 1
        return [Timer("ping", now + self.rng.random()), Note(f"start #{self.durable['starts']}")]

    def deliver(self, src, message, now):
        self.received.append((src, message, now))
        return []

    def fire(self, name, now):
        self.count += 1
        return [Send(peer, (self.node, self.count)) for peer in self.peers if peer != self.node] + \
               [Timer("ping", now + 1.0)]


def pinger_world(seed, network=None, names=("a", "b", "c")):
    world = World(seed, network)
    for name in names:
        world.add(name, lambda node, durable, rng: Pinger(node, durable, rng, names))
    return world


def test_same_seed_same_trace_different_seed_different_trace():
    net = NetworkConfig(drop_p=0.1, duplicate_p=0.1, reorder_p=0.2, jitter_s=0.05)
    runs = []
    for seed in (7, 7, 8):
        world = pinger_world(seed, net)
        world.run_until(20.0)
        runs.append(world)
    assert runs[0].trace == runs[1].trace and runs[0].trace_digest() == runs[1].trace_digest()
    assert runs[0].trace != runs[2].trace
    assert len(runs[0].trace) > 50


def test_same_seed_same_trace_across_processes():
    """Nothing may depend on str hashing (PYTHONHASHSEED differs per process)."""
    code = ("from tests.sim.test_sim_world import pinger_world; from tools.sim import NetworkConfig; "
            "w = pinger_world(3, NetworkConfig(drop_p=0.1, reorder_p=0.2)); w.run_until(15); print(w.trace_digest())")
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_messages_arrive_after_latency_and_timers_repeat():
    world = pinger_world(1, NetworkConfig(latency_s=0.01, jitter_s=0.0))
    world.run_until(5.0)
    a = world.process("a")
    assert a.count in (4, 5)
    assert {src for src, _, _ in a.received} == {"b", "c"}
    assert world.stats.delivered == world.stats.sent and world.stats.dropped == 0


@pytest.mark.parametrize("jitter", ["exponential", "uniform", "lognormal"])
def test_latency_distributions_have_the_configured_mean(jitter):
    network = Network(random.Random(12), NetworkConfig(latency_s=0.01, jitter_s=0.02, jitter=jitter))
    delays = [times[0] - 1.0 for times in (network.route("a", "b", 1.0) for _ in range(20_000))]
    assert abs(sum(delays) / len(delays) - 0.03) < 0.002
    assert min(delays) >= 0.01


def test_drop_probability_drops_about_that_share():
    world = pinger_world(2, NetworkConfig(drop_p=0.3))
    world.run_until(200.0)
    share = world.stats.dropped / world.stats.sent
    assert 0.25 < share < 0.35


def test_duplicates_are_delivered_twice():
    world = pinger_world(3, NetworkConfig(duplicate_p=1.0))
    world.run_until(3.0)
    assert world.stats.delivered == 2 * world.stats.sent


def test_partition_cuts_only_across_groups_and_heal_restores():
    world = pinger_world(4, names=("a", "b", "c", "d"))
    world.partition({"a", "b"}, {"c"})          # d is in no group: a group of its own
    world.run_until(10.0)
    senders = {src for src, _, _ in world.process("a").received}
    assert senders == {"b"}
    assert {src for src, _, _ in world.process("d").received} == set()
    world.heal()
    world.run_until(15.0)
    late = {src for src, _, t in world.process("a").received if t > 10.5}
    assert late == {"b", "c", "d"}


def test_a_cut_loses_messages_in_flight():
    world = pinger_world(5, NetworkConfig(latency_s=5.0, jitter_s=0.0), names=("a", "b"))
    world.run_until(3.0)                          # a few pings each way, all still in the air
    assert world.stats.sent >= 4 and world.stats.delivered == 0
    world.partition({"a"}, {"b"})
    world.run_until(7.9)
    assert world.process("a").received == [] and world.process("b").received == []


def test_clog_holds_a_link_then_releases_it():
    world = pinger_world(6, NetworkConfig(latency_s=0.01, jitter_s=0.0), names=("a", "b"))
    world.clog("a", "b", 5.0)
    world.run_until(4.9)
    assert world.process("b").received == [] and world.process("a").received != []
    world.run_until(5.5)
    assert len(world.process("b").received) >= 4  # the held pings arrive together
    assert {round(t, 2) for _, _, t in world.process("b").received} == {5.01}


def test_swizzle_releases_in_reverse_order():
    world = pinger_world(6, NetworkConfig(latency_s=0.01, jitter_s=0.0), names=("a", "b", "c"))
    world.network.swizzle(["a", "b"], ["a", "b", "c"], world.now, step_s=1.0, hold_s=2.0)
    world.run_until(6.0)
    first_from = lambda src: min(t for s, _, t in world.process("c").received if s == src)
    assert first_from("b") < first_from("a")


def test_crash_discards_the_process_and_restart_keeps_durable_state():
    world = pinger_world(7)
    world.run_until(3.0)
    world.crash("b")
    assert world.process("b") is None and world.running() == ["a", "c"]
    sent_before = world.stats.sent
    world.run_until(6.0)
    assert world.stats.dropped >= world.stats.sent - sent_before - 6   # pings to b are lost
    restarted = world.restart("b")
    assert restarted.durable["starts"] == 2 and restarted.count == 0
    world.run_until(9.0)
    assert restarted.count >= 2
    with pytest.raises(ValueError):
        world.crash("b") or world.crash("b")


def test_a_restart_drops_messages_sent_to_the_old_incarnation():
    world = pinger_world(8, NetworkConfig(latency_s=0.5, jitter_s=0.0), names=("a", "b"))
    world.run_until(1.2)                          # a's ping to b is in the air
    world.restart("b")
    world.run_until(1.9)
    assert world.process("b").received == []


def test_replay_redelivers_an_old_message():
    world = pinger_world(9)
    world.run_until(3.0)
    src, dst, message = world.replay(0)
    world.run_until(3.0)
    assert world.process(dst).received[-1][:2] == (src, message)


def test_log_lines_carry_simulated_time():
    world = pinger_world(10)
    world.run_until(1.0)
    assert any(line.startswith("[     0.000s] a: start #1") for line in world.log_lines)


def test_timer_with_the_same_name_replaces_the_old_one():
    class Rearm(Pinger):
        def start(self, now):
            return [Timer("ping", now + 5.0), Timer("ping", now + 1.0)]

    world = World(11)
    world.add("a", lambda node, durable, rng: Rearm(node, durable, rng, ("a",)))
    world.run_until(0.99)
    assert world.process("a").count == 0
    world.run_until(1.01)
    assert world.process("a").count == 1
    world.run_until(5.5)
    assert world.process("a").count == 5   # the 5 s timer was replaced, not fired in addition


def test_network_config_validates():
    with pytest.raises(ValueError):
        NetworkConfig(drop_p=1.5)
    with pytest.raises(ValueError):
        NetworkConfig(jitter="gaussian")
    with pytest.raises(ValueError):
        World(1).partition({"a"}, {"a", "b"})


def test_seeds_and_replay_line(monkeypatch):
    monkeypatch.delenv("SIM_SEED", raising=False)
    assert seeds([1, 2]) == [1, 2]
    monkeypatch.setenv("SIM_SEED", "42")
    assert seeds([1, 2]) == [42]
    assert replay_line(42).startswith("SIM_SEED=42 ") and "pytest" in replay_line(42)


def test_replayable_attaches_the_replay_line(capsys):
    with pytest.raises(AssertionError) as failure:
        with replayable(1234):
            assert False, "boom"
    assert any("SIM_SEED=1234" in note for note in failure.value.__notes__)
    assert "SIM_SEED=1234" in capsys.readouterr().out
