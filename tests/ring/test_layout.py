"""The last-resort layouts: arc_layout is balanced and spaced for every Q and every S > target_n; the
role layouts of template.py are balanced with the fewest violations possible."""

import pytest
from hypothesis import given, settings, strategies as st

from ring.claim import ownership_bounds
from ring.layout import arc_layout, spacing_order
from ring.spacing import violations_min, window_violations
from ring.template import role_layout


def balanced(owners, members):
    low, high = ownership_bounds(len(owners), len(members))
    return all(low <= owners.count(node) <= high for node in members)


@pytest.mark.parametrize("target_n", [1, 2, 3, 4])
@pytest.mark.parametrize("partitions", [8, 16, 32, 64, 128, 256, 1024, 4096])
def test_arc_layout_is_spaced(partitions, target_n):
    assert sorted(spacing_order(partitions, target_n)) == list(range(partitions))
    counts = range(target_n + 1, 70) if partitions <= 256 else [*range(target_n + 1, 12), 33, 64, 67]
    for count in [*counts, partitions, partitions + 3]:
        members = [f"n{i:03d}" for i in range(count)]
        owners = arc_layout(members, partitions, target_n)
        assert balanced(owners, members)
        assert window_violations(owners, target_n) == 0, (partitions, target_n, count)


@given(partitions=st.sampled_from([8, 16, 64, 256, 1024]), target_n=st.sampled_from([1, 2, 3, 4]), data=st.data())
@settings(deadline=None, max_examples=60)
def test_role_layout(partitions, target_n, data):
    count = data.draw(st.integers(1, target_n))
    members = [f"n{i}" for i in range(count)]
    old = data.draw(st.lists(st.sampled_from(members + ["gone"]), min_size=partitions, max_size=partitions))
    owners = role_layout(old, members, target_n)
    assert balanced(owners, members)
    assert window_violations(owners, target_n) == violations_min(partitions, count, target_n)
