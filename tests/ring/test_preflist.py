"""Preference lists: primaries are the first n distinct owners clockwise (n of them when S >= n), fallbacks
are never down nodes nor primaries, each stands for one down primary, and they continue the same walk."""

import pytest
from hypothesis import given, settings, strategies as st

from ring.claim import initial_claim
from ring.preflist import Preflist, Replica, preference_list, replicas_of_partition
from ring.state import Ring


def ring_of(owners, members=()):
    return Ring(len(owners), tuple(owners), 1, 3, tuple(sorted(members or set(owners))))


def reference_walk(ring, partition):
    """Distinct owners clockwise from `partition`, the naive way."""
    order = []
    for step in range(ring.partitions):
        node = ring.owner((partition + step) % ring.partitions)
        if node not in order:
            order.append(node)
    return order


@st.composite
def situations(draw):
    partitions = draw(st.sampled_from([8, 16, 64, 256]))
    count = draw(st.integers(1, 20))
    names = [f"n{i}" for i in range(count)]
    ring = ring_of(initial_claim(names, partitions), names)
    partition = draw(st.integers(0, partitions - 1))
    n_val = draw(st.integers(1, 6))
    down = frozenset(draw(st.lists(st.sampled_from(names), max_size=count, unique=True)))
    return ring, partition, n_val, down


@given(situation=situations())
@settings(deadline=None, max_examples=150)
def test_preference_list_properties(situation):
    ring, partition, n_val, down = situation
    preflist = preference_list(ring, partition, n_val, down)
    walk = reference_walk(ring, partition)
    primaries = [r.node for r in preflist.primaries]
    assert primaries == walk[:n_val]
    assert len(set(primaries)) == len(primaries) == min(n_val, len(walk))
    assert all(ring.owner(r.partition) == r.node and r.fallback_for is None for r in preflist.primaries)
    fallbacks = [r.node for r in preflist.fallbacks]
    assert len(set(fallbacks)) == len(fallbacks)
    assert not set(fallbacks) & down and not set(fallbacks) & set(primaries)
    stood_for = [r.fallback_for for r in preflist.fallbacks]
    down_primaries = [node for node in primaries if node in down]
    assert stood_for == down_primaries[:len(stood_for)]  # in walk order, one each
    # fallbacks are exactly the next eligible nodes along the same walk
    eligible = [node for node in walk[len(primaries):] if node not in down]
    assert fallbacks == eligible[:len(down_primaries)]
    assert all(ring.owner(r.partition) == r.node for r in preflist.fallbacks)
    live = [node for node in primaries if node not in down]
    assert [r.node for r in preflist.targets] == live + fallbacks
    assert preflist.nodes == tuple(live + fallbacks)
    if len(eligible) >= len(down_primaries):
        assert len(preflist.targets) == len(primaries)


@given(situation=situations())
@settings(deadline=None, max_examples=60)
def test_spaced_rings_need_only_n_consecutive_partitions(situation):
    """With S > target_n and n_val <= target_n, the primaries own exactly partitions p..p+n-1."""
    ring, partition, n_val, _ = situation
    if len(ring.nodes) > 3 and n_val <= 3:
        preflist = preference_list(ring, partition, n_val)
        assert [r.partition for r in preflist.primaries] == [(partition + k) % ring.partitions
                                                            for k in range(n_val)]


@given(situation=situations())
@settings(deadline=None, max_examples=60)
def test_replicas_of_partition_are_the_primaries(situation):
    ring, partition, n_val, _ = situation
    expected = tuple(r.node for r in preference_list(ring, partition, n_val).primaries)
    assert replicas_of_partition(ring, partition, n_val) == expected


def test_example_with_a_down_primary():
    ring = ring_of("abcdabcdabcdabcd")
    preflist = preference_list(ring, 2, 3, down={"d"})
    assert preflist == Preflist(2, 3, (Replica("c", 2), Replica("d", 3), Replica("a", 4)),
                                (Replica("b", 5, fallback_for="d"),), frozenset({"d"}))
    assert [r.node for r in preflist.targets] == ["c", "a", "b"]


def test_no_fallback_left():
    ring = ring_of("abcabcab")
    preflist = preference_list(ring, 0, 3, down={"a", "b"})
    assert [r.node for r in preflist.primaries] == ["a", "b", "c"]
    assert preflist.fallbacks == ()
    assert [r.node for r in preflist.targets] == ["c"]


def test_fewer_nodes_than_n_val():
    ring = ring_of("abababab")
    assert [r.node for r in preference_list(ring, 3, 3).primaries] == ["b", "a"]
    assert replicas_of_partition(ring, 3, 5) == ("b", "a")


@pytest.mark.parametrize("partition, n_val", [(-1, 3), (8, 3), (True, 3), (0, 0), (0, True), (0, 2.0)])
def test_bad_arguments(partition, n_val):
    with pytest.raises(ValueError):
        preference_list(ring_of("abcdabcd"), partition, n_val)
