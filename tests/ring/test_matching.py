"""b-matching: places every slot within the bounds exactly when some assignment can (brute force on small
cases), never breaks a bound or an allowed list, and lower bounds come first."""

import itertools

from hypothesis import given, settings, strategies as st

from ring.matching import assign_slots


def feasible(slots, allowed, lower, upper):
    for choice in itertools.product(*[allowed[s] for s in slots]):
        load = {node: choice.count(node) for node in upper}
        if all(lower[n] <= load[n] <= upper[n] for n in upper):
            return True
    return False


@st.composite
def instances(draw):
    nodes = [f"n{i}" for i in range(draw(st.integers(1, 4)))]
    slots = list(range(draw(st.integers(0, 6))))
    allowed = {s: draw(st.lists(st.sampled_from(nodes), unique=True)) for s in slots}
    upper = {n: draw(st.integers(0, 3)) for n in nodes}
    lower = {n: draw(st.integers(0, upper[n])) for n in nodes}
    return slots, allowed, lower, upper


@given(instance=instances())
@settings(max_examples=300, deadline=None)
def test_matches_brute_force(instance):
    slots, allowed, lower, upper = instance
    taken = assign_slots(slots, allowed, lower, upper)
    assert all(node in allowed[slot] for slot, node in taken.items())
    load = {node: list(taken.values()).count(node) for node in upper}
    assert all(load[n] <= upper[n] for n in upper)
    complete = len(taken) == len(slots) and all(load[n] >= lower[n] for n in upper)
    assert complete == feasible(slots, allowed, lower, upper)


def test_lower_bounds_first():
    # one slot, two takers: only "b" needs it
    assert assign_slots([0], {0: ["a", "b"]}, {"a": 0, "b": 1}, {"a": 1, "b": 1}) == {0: "b"}
    # reroute: slot 0 prefers a, but a is the only taker of slot 1
    taken = assign_slots([0, 1], {0: ["a", "b"], 1: ["a"]}, {"a": 0, "b": 0}, {"a": 1, "b": 1})
    assert taken == {0: "b", 1: "a"}
