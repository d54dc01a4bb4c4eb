"""The gossip core driven by hand (no simulator): rounds, joins, lifecycle, removal, queries, errors."""

import random

import pytest

from gossip.gossiper import EventKind, GossipConfig, GossipError, Gossiper, MemberEvent, Send
from gossip.membership import Status
from gossip.message import Ack, Ack2, Syn


def make(node, seeds=("a",), now=0.0, **kwargs):
    return Gossiper(node, kwargs.pop("generation", 1), (f"{node}:7000", f"{node}:8098"), seeds,
                    random.Random(node), now, **kwargs)


def pump(nodes, effects_by_node, now, limit=10_000):
    """Deliver every Send at once, FIFO, until quiet; returns the events seen, by node."""
    queue = [(src, e) for src, effects in effects_by_node for e in effects]
    events = {name: [] for name in nodes}
    while queue:
        limit -= 1
        assert limit > 0, "message storm"
        src, effect = queue.pop(0)
        if isinstance(effect, MemberEvent):
            events[src].append(effect)
        elif effect.to in nodes:
            queue.extend((effect.to, e) for e in nodes[effect.to].handle(src, effect.message, now))
    return events


def rounds(nodes, start_s, count, step_s=1.0):
    events = {name: [] for name in nodes}
    for i in range(count):
        now = start_s + i * step_s
        for name, seen in pump(nodes, [(n, g.tick(now)) for n, g in nodes.items()], now).items():
            events[name].extend(seen)
    return events


def cluster(names="abcd"):
    return {name: make(name) for name in names}


def test_a_lone_joiner_gossips_to_a_seed():
    joiner = make("b", seeds=("a", "c"))
    sends = [e for e in joiner.tick(0.0) if isinstance(e, Send)]
    assert len(sends) == 1 and sends[0].to in ("a", "c") and isinstance(sends[0].message, Syn)
    assert joiner.next_tick_at == pytest.approx(1.0)
    assert joiner.tick(0.5) == []   # nothing due yet


def test_join_through_a_seed_converges():
    nodes = cluster()
    events = rounds(nodes, 0.0, 6)
    for gossiper in nodes.values():
        assert gossiper.members() == ["a", "b", "c", "d"]
        assert gossiper.live_members() == ["a", "b", "c", "d"]
        assert gossiper.addresses("c") == ("c:7000", "c:8098")
        assert gossiper.status("c") is Status.JOINING
    assert {e.node for e in events["a"] if e.kind is EventKind.JOINED} == {"b", "c", "d"}
    assert len({g.summary() for g in nodes.values()}) == 1


def test_state_changes_spread():
    nodes = cluster()
    rounds(nodes, 0.0, 5)
    nodes["c"].set_status(Status.VALID)
    nodes["c"].publish("load", {"keys": 12})
    nodes["d"].publish_ring(7, {"owners": ["a", "b"]})
    events = rounds(nodes, 5.0, 5)
    for gossiper in nodes.values():
        assert gossiper.status("c") is Status.VALID
        assert gossiper.app_state("c", "load") == {"keys": 12}
        assert gossiper.ring_state() == (7, {"owners": ["a", "b"]})
    assert any(e.kind is EventKind.STATUS and e.node == "c" for e in events["a"])


def test_other_clusters_are_ignored():
    a, stranger = make("a"), make("x", config=GossipConfig(cluster="other"))
    syn = next(e.message for e in stranger.tick(0.0) if isinstance(e, Send))
    assert a.handle("x", syn, 0.1) == []
    assert a.members() == ["a"]


def test_status_transitions_follow_the_table():
    node = make("a")
    with pytest.raises(GossipError, match="illegal"):
        node.set_status(Status.JOINING)
    node.set_status(Status.VALID)
    with pytest.raises(GossipError, match="exit"):
        node.set_status(Status.EXITING)
    node.leave()
    assert node.status("a") is Status.LEAVING
    with pytest.raises(GossipError, match="illegal"):
        node.set_status(Status.JOINING)


def test_exit_announces_to_live_members_and_stops():
    nodes = cluster()
    rounds(nodes, 0.0, 5)
    nodes["b"].leave()
    rounds(nodes, 5.0, 2)
    effects = nodes["b"].exit(7.0)
    sends = [e for e in effects if isinstance(e, Send)]
    assert sorted(s.to for s in sends) == ["a", "c", "d"] and all(isinstance(s.message, Ack2) for s in sends)
    events = pump(nodes, [("b", effects)], 7.0)
    assert nodes["b"].stopped and nodes["b"].tick(8.0) == []
    for name in "acd":
        assert nodes[name].status("b") is Status.EXITING and not nodes[name].is_alive("b")
        assert "b" not in nodes[name].live_members() and "b" in nodes[name].members()
        assert any(e.kind is EventKind.LEFT and e.node == "b" for e in events[name])
    later = rounds({n: g for n, g in nodes.items() if n != "b"}, 8.0, 20)
    assert not any(e.kind is EventKind.DOWN for seen in later.values() for e in seen)   # left is not down


def test_force_remove_spreads_and_a_stale_message_cannot_bring_the_node_back():
    nodes = cluster()
    rounds(nodes, 0.0, 5)
    stale = Ack2((nodes["c"].view.members["c"].delta(0),))
    stale_syn = next(e.message for e in nodes["c"].tick(5.0) if isinstance(e, Send))
    removed = nodes["a"].force_remove("c", 5.0)
    assert [e.kind for e in removed] == [EventKind.REMOVED]
    survivors = {n: g for n, g in nodes.items() if n != "c"}
    rounds(survivors, 6.0, 6)
    for gossiper in survivors.values():
        assert "c" not in gossiper.members() and gossiper.status("c") is Status.REMOVED
        gossiper.handle("c", stale, 20.0)           # an old message from before the removal
        gossiper.handle("x", Ack((), stale.deltas), 20.0)
        assert "c" not in gossiper.members()
    answer = nodes["b"].handle("c", stale_syn, 20.0)   # the removed node itself is told
    ack = next(e.message for e in answer if isinstance(e, Send))
    assert ("c", 1) in ack.removed
    events = nodes["c"].handle("b", ack, 20.0)
    assert nodes["c"].stopped and nodes["c"].status("c") is Status.REMOVED
    assert [e.kind for e in events] == [EventKind.REMOVED]


def test_a_removed_node_returns_only_by_rejoining_with_a_higher_generation():
    nodes = cluster()
    rounds(nodes, 0.0, 5)
    nodes["a"].force_remove("c", 5.0)
    rounds({n: g for n, g in nodes.items() if n != "c"}, 6.0, 4)
    nodes["c"] = make("c", generation=2, joined_generation=1, status=Status.VALID, now=10.0)  # plain restart
    rounds(nodes, 10.0, 4)
    assert nodes["c"].stopped and all("c" not in g.members() for n, g in nodes.items() if n != "c")
    nodes["c"] = make("c", generation=3, now=14.0)                                           # re-join
    rounds(nodes, 14.0, 5)
    assert all(g.generation("c") == 3 for g in nodes.values())


def test_restart_replaces_the_old_state():
    nodes = cluster()
    rounds(nodes, 0.0, 5)
    nodes["d"].publish("load", 1)
    rounds(nodes, 5.0, 3)
    nodes["d"] = make("d", generation=2, joined_generation=1, status=Status.VALID, now=8.0)
    events = rounds(nodes, 8.0, 5)
    for gossiper in nodes.values():
        assert gossiper.generation("d") == 2 and gossiper.app_state("d", "load") is None
    assert any(e.kind is EventKind.RESTARTED and e.node == "d" for e in events["a"])


def test_a_silent_peer_is_convicted_and_revived_by_a_fresh_beat():
    nodes = cluster("abc")
    rounds(nodes, 0.0, 30)
    silent = nodes.pop("c")
    events = {n: [] for n in nodes}
    now = 30.0
    while now < 40.0:   # tick at the times the cores ask for, as a driver would
        now = min(g.next_tick_at for g in nodes.values())
        for name, seen in pump(nodes, [(n, g.tick(now)) for n, g in nodes.items()], now).items():
            events[name].extend(seen)
    downs = [e for e in events["a"] if e.kind is EventKind.DOWN]
    assert [e.node for e in downs] == ["c"] and downs[0].at_s < 35.0
    assert not nodes["a"].is_alive("c") and "c" in nodes["a"].members()   # down is not gone
    assert nodes["a"].phi("c", now) > 8.0
    nodes["c"] = silent
    events = rounds(nodes, 40.0, 4)
    assert nodes["a"].is_alive("c")
    assert any(e.kind is EventKind.UP and e.node == "c" for e in events["a"])


@pytest.mark.parametrize("call, fragment", [
    (lambda g: g.publish("status", 1), "reserved"),
    (lambda g: g.publish("", 1), "reserved"),
    (lambda g: g.publish("k", object()), "CBOR"),
    (lambda g: g.publish_ring(-1, {}), "ring version"),
    (lambda g: g.force_remove("a", 0.0), "itself"),
    (lambda g: g.force_remove("nobody", 0.0), "unknown member"),
    (lambda g: g.handle("b", "hello", 0.0), "not a gossip message"),
])
def test_bad_requests_raise_gossip_errors(call, fragment):
    with pytest.raises(GossipError, match=fragment):
        call(make("a"))


@pytest.mark.parametrize("kwargs", [dict(generation=0), dict(generation=2, joined_generation=3),
                                    dict(status=Status.EXITING), dict(status=Status.REMOVED)])
def test_bad_construction_is_refused(kwargs):
    with pytest.raises(GossipError):
        make("a", **kwargs)


def test_gossip_error_is_a_value_error():
    assert issubclass(GossipError, ValueError)
    with pytest.raises(GossipError):
        GossipConfig(interval_s=0)


def test_published_values_are_normalised_like_the_wire():
    node = make("a")
    node.publish("hints", (1, 2))
    assert node.app_state("a", "hints") == [1, 2]
