"""The relaxation: results are spaced and close over the wrap; with no weights it keeps a ring that is
already spaced, and it is optimal on small rings (brute force)."""

from hypothesis import given, settings, strategies as st

from ring.relaxation import balanced_closest, closest
from ring.spacing import window_violations


def spaced_rings(members, length):
    """Every spaced ring over `members` (target_n 3), by depth-first search."""
    found = []

    def extend(prefix):
        if len(prefix) == length:
            if window_violations(prefix, 3) == 0:
                found.append(tuple(prefix))
            return
        for node in members:
            if node not in prefix[-2:]:
                extend(prefix + [node])
    extend([])
    return found


SPACED_8 = spaced_rings("abcd", 8)


def zero(members, length):
    return [{node: 0.0 for node in members} for _ in range(length)]


def test_keeps_a_spaced_ring():
    owners = list("abcdabcdabcdabcd")
    assert closest(owners, "abcd", 3, zero("abcd", 16), 0) == owners


@given(owners=st.lists(st.sampled_from("abcdx"), min_size=8, max_size=8), start=st.integers(0, 7))
@settings(max_examples=40, deadline=None)
def test_optimal_on_small_rings(owners, start):
    members = "abcd"
    result = closest(owners, members, 3, zero(members, 8), start)
    fixed = [owners[(start + k) % 8] for k in range(2)]
    candidates = [c for c in SPACED_8 if [c[(start + k) % 8] for k in range(2)] == fixed]
    if not candidates:
        assert result is None
        return
    best = min(sum(a != b for a, b in zip(owners, c)) for c in candidates)
    assert result is not None and window_violations(result, 3) == 0
    assert sum(a != b for a, b in zip(owners, result)) == best


def test_balanced_closest_balances_a_simple_case():
    owners = list("abcxabcxabcxabcx")  # x leaves; a, b, c, d must own 4 each
    result = balanced_closest(owners, "abcd", 3, 4, 4, 0)
    assert result is not None and window_violations(result, 3) == 0
    assert sorted(result.count(node) for node in "abcd") == [4, 4, 4, 4]
