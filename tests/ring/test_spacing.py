"""Spacing: window counting, and the minimum-violation table of ring/spacing.py checked by brute force
(every ring of the given length and owner count)."""

import itertools

import pytest

from ring.spacing import TargetNError, check_target_n, conflicts, neighbours, violations_min, window_violations


def test_window_violations_examples():
    assert window_violations("abcabc", 3) == 0
    assert window_violations("abcabca", 3) == 2  # c-a-a and a-a-b through the wrap
    assert window_violations("abab", 3) == 4
    assert window_violations("abcd", 1) == 0
    assert window_violations("aabb", 2) == 2


def brute_minimum(length, nodes, target_n):
    best = length
    for owners in itertools.product(range(nodes), repeat=length):
        if len(set(owners)) == nodes:
            best = min(best, window_violations(owners, target_n))
    return best


@pytest.mark.parametrize("length", [7, 8, 10, 11])
def test_three_owners_need_two_violations_unless_three_divides_q(length):
    assert brute_minimum(length, 3, 3) == 2 == violations_min(length, 3, 3)


@pytest.mark.parametrize("length, nodes, target_n", [(8, 2, 3), (8, 1, 3), (8, 3, 4), (8, 1, 2)])
def test_fewer_owners_than_target_n_violate_everywhere(length, nodes, target_n):
    assert brute_minimum(length, nodes, target_n) == length == violations_min(length, nodes, target_n)


@pytest.mark.parametrize("length, nodes, target_n", [(8, 2, 2), (8, 4, 4), (9, 3, 3), (8, 4, 3), (8, 5, 3)])
def test_zero_when_possible(length, nodes, target_n):
    assert brute_minimum(length, nodes, target_n) == 0


def test_conflicts_and_neighbours():
    owners = list("abcdeabcde")
    assert neighbours(owners, 0, 3) == {"d", "e", "b", "c"}
    assert not conflicts(owners, 0, "a", 3)
    assert conflicts(owners, 0, "b", 3)
    assert conflicts(owners, 9, "a", 3)  # wraps
    assert neighbours([None, "a", None, "b"] * 2, 0, 2) == {"a", "b"}


@pytest.mark.parametrize("bad", [0, 5, -1, True, 3.0, "3"])
def test_bad_target_n(bad):
    with pytest.raises(TargetNError):
        check_target_n(bad)
