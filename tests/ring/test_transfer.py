"""Transfer plans: exactly the partitions whose owner changed, old owner to new, sorted; applying the plan
to the old owners gives the new ones. Replica changes: who gains and who loses each partition's data."""

import pytest
from hypothesis import given, settings, strategies as st

from ring.preflist import replicas_of_partition
from ring.state import Ring
from ring.transfer import ReplicaChange, Transfer, replica_changes, transfer_plan


@st.composite
def ring_pairs(draw):
    partitions = draw(st.sampled_from([16, 64, 256]))
    names = [f"n{i}" for i in range(draw(st.integers(1, 12)))]
    old = Ring.initial(names, partitions=partitions)
    new = old
    for step in range(draw(st.integers(0, 3))):
        if len(new.nodes) > 1 and draw(st.booleans()):
            new = new.with_leave(draw(st.sampled_from(new.nodes)))
        else:
            new = new.with_join(f"j{step}")
    return old, new


@given(pair=ring_pairs())
@settings(deadline=None, max_examples=60)
def test_plan_is_exactly_the_owner_changes(pair):
    old, new = pair
    plan = transfer_plan(old, new)
    assert [t.partition for t in plan] == sorted(t.partition for t in plan)
    changed = [p for p in range(old.partitions) if old.owner(p) != new.owner(p)]
    assert [t.partition for t in plan] == changed
    assert all(t.source == old.owner(t.partition) and t.target == new.owner(t.partition) for t in plan)
    owners = list(old.owners)
    for t in plan:
        owners[t.partition] = t.target
    assert tuple(owners) == new.owners


@given(pair=ring_pairs(), n_val=st.integers(1, 4))
@settings(deadline=None, max_examples=40)
def test_replica_changes(pair, n_val):
    old, new = pair
    changes = {c.partition: c for c in replica_changes(old, new, n_val)}
    for p in range(old.partitions):
        before = set(replicas_of_partition(old, p, n_val))
        after = set(replicas_of_partition(new, p, n_val))
        if before == after:
            assert p not in changes
        else:
            assert changes[p] == ReplicaChange(p, tuple(sorted(after - before)), tuple(sorted(before - after)))


def test_join_example():
    old = Ring.initial(["a", "b", "c", "d"], partitions=16)
    new = old.with_join("e")
    plan = transfer_plan(old, new)
    assert plan and all(t.target == "e" for t in plan)
    assert len(plan) == 3  # floor(16/5): the joiner's share, nothing more
    assert transfer_plan(old, old) == ()
    assert all(isinstance(t, Transfer) for t in plan)


def test_different_partition_counts_refused():
    with pytest.raises(ValueError, match="partition count"):
        transfer_plan(Ring.initial(["a"], partitions=16), Ring.initial(["a"], partitions=32))
