"""ring/change.py: the next ring, the moves that reach it, per-partition routing, the claimant."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ring.change import (Move, Transition, TransitionFormatError, claimant, merge_transitions, next_ring,
                         plan_moves)
from ring.claim import ClaimError
from ring.preflist import replicas_of_partition
from ring.report import ownership_report
from ring.state import Ring

NODES = [f"n{i}" for i in range(1, 10)]


@st.composite
def changes(draw):
    """A ring of 3..7 nodes and a non-empty staged change: joins, leaves and removals."""
    size = draw(st.integers(3, 7))
    partitions = draw(st.sampled_from([32, 64]))
    members = NODES[:size]
    ring = Ring.initial(members, partitions=partitions)
    joins = draw(st.lists(st.sampled_from(NODES[size:]), max_size=2, unique=True))
    departing = draw(st.lists(st.sampled_from(members), max_size=max(0, size + len(joins) - 3), unique=True))
    split = draw(st.integers(0, len(departing)))
    leaves, removes = departing[:split], departing[split:]
    if not joins and not departing:
        joins = [NODES[size]]
    n_vals = draw(st.sets(st.integers(1, 4), min_size=1, max_size=2))
    return ring, joins, leaves, removes, n_vals


@settings(deadline=None, max_examples=40)
@given(changes())
def test_moves_bring_every_gainer_its_data_from_a_live_holder(change):
    ring, joins, leaves, removes, n_vals = change
    new = next_ring(ring, joins, leaves, removes)
    assert new.version == ring.version + 1
    assert set(new.members) == (set(ring.members) | set(joins)) - set(leaves) - set(removes)
    report = ownership_report(new)
    assert report.balanced
    moves = plan_moves(ring, new, n_vals, removes)
    n_max = max(n_vals)
    for move in moves:
        assert move.source != move.target and move.source not in removes
        if move.source is not None:
            assert move.source in replicas_of_partition(ring, move.partition, n_max)
    for k in range(ring.partitions):  # after the moves, every new replica holds k (or no live copy existed)
        live = {node for node in replicas_of_partition(ring, k, n_max) if node not in removes}
        holders = live | {m.target for m in moves if m.partition == k and m.source is not None}
        for n in n_vals:
            needed = set(replicas_of_partition(new, k, n))
            assert needed <= holders or not live, (k, n)


@settings(deadline=None, max_examples=30)
@given(changes(), st.data())
def test_routing_switches_per_partition_once_its_moves_are_done(change, data):
    ring, joins, leaves, removes, n_vals = change
    transition = Transition.plan(ring, next_ring(ring, joins, leaves, removes), n_vals, removes)
    ids = [(m.partition, m.target) for m in transition.moves]
    done = frozenset(data.draw(st.lists(st.sampled_from(ids), unique=True)) if ids else [])
    for k in range(ring.partitions):
        finished = all((m.partition, m.target) in done or m.source is None for m in transition.moves_of(k))
        assert transition.partition_done(k, done) == finished
        assert transition.ring_for(k, done) is (transition.next if finished else transition.current)
        n = max(n_vals)
        pending = transition.pending(k, n, done)
        if finished:
            assert pending == ()
        else:  # pending = the gainers: new replicas that are not current ones
            current = replicas_of_partition(ring, k, n)
            assert set(pending) == set(replicas_of_partition(transition.next, k, n)) - set(current)
    assert transition.complete(frozenset(ids))
    assert transition.complete(done) == all(transition.partition_done(k, done) for k in range(ring.partitions))


def test_a_join_moves_only_the_joiners_share():
    ring = Ring.initial(["a", "b", "c", "d", "e"], partitions=64)
    new = next_ring(ring, joins=["f"])
    transition = Transition.plan(ring, new, {3})
    assert len(new.partitions_of("f")) == 64 // 6
    assert {m.target for m in transition.moves} == {"f"}
    assert all(m.source != "f" for m in transition.moves)
    # each owner change shifts up to n_val key-partitions' replica sets
    assert len(transition.moves) <= 3 * sum(1 for a, b in zip(ring.owners, new.owners) if a != b)


def test_a_leaver_streams_its_own_data_away():
    ring = Ring.initial(["a", "b", "c", "d", "e"], partitions=64)
    transition = Transition.plan(ring, next_ring(ring, leaves=["c"]), {3})
    holding = [m for m in transition.moves if "c" in replicas_of_partition(ring, m.partition, 3)]
    assert holding and all(m.source == "c" for m in holding)


def test_a_removed_node_is_never_a_source():
    ring = Ring.initial(["a", "b", "c", "d", "e"], partitions=64)
    transition = Transition.plan(ring, next_ring(ring, removes=["c"]), {3}, removed=["c"])
    assert transition.moves and all(m.source not in (None, "c") for m in transition.moves)
    assert transition.removed == ("c",)


def test_bad_changes_are_claim_errors():
    ring = Ring.initial(["a", "b", "c"], partitions=16)
    with pytest.raises(ClaimError, match="no staged changes"):
        next_ring(ring)
    with pytest.raises(ClaimError, match="already a member"):
        next_ring(ring, joins=["a"])
    with pytest.raises(ClaimError, match="not a member"):
        next_ring(ring, leaves=["z"])
    with pytest.raises(ClaimError, match="last member"):
        next_ring(Ring.initial(["a"], partitions=16), leaves=["a"])


def test_dict_round_trip_and_malformed_input():
    ring = Ring.initial(["a", "b", "c", "d"], partitions=32)
    transition = Transition.plan(ring, next_ring(ring, joins=["e"]), {3})
    assert Transition.from_dict(transition.to_dict()) == transition
    broken = transition.to_dict()
    broken["moves"] = [[1, "a"]]
    for bad in ({}, broken, {**transition.to_dict(), "next": transition.to_dict()["current"]}, []):
        with pytest.raises(TransitionFormatError):
            Transition.from_dict(bad)
    with pytest.raises(TransitionFormatError):
        Transition(ring, ring.with_join("e"), (Move(0, "a", "zz"),))


def test_merge_prefers_the_newer_then_the_smaller_digest():
    ring = Ring.initial(["a", "b", "c", "d"], partitions=32)
    one = Transition.plan(ring, next_ring(ring, joins=["e"]), {3})
    other = Transition.plan(ring, next_ring(ring, joins=["f"]), {3})
    later_base = next_ring(one.next, joins=["g"])
    later = Transition.plan(one.next, later_base, {3})
    assert merge_transitions(one, other) == merge_transitions(other, one)
    assert merge_transitions(one, other) in (one, other)
    assert merge_transitions(one, later) is later and merge_transitions(later, one) is later
    assert merge_transitions(None, one) is one and merge_transitions(one, None) is one


def test_claimant_is_the_smallest_valid_live_member():
    ring = Ring.initial(["b", "c", "d"], partitions=16)
    assert claimant(ring, {"c", "d", "a"}) == "c"  # "a" is alive but not a member of the ring
    assert claimant(ring, set()) is None
