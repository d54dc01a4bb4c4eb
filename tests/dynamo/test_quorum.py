"""The quorum objects against a brute-force reading of Riak's rules."""

import pytest
from hypothesis import given, strategies as st

from dynamo.quorum import (NOT_FOUND, Failed, Found, GetQuorum, PutQuorum, QuorumFailed,
                           ReadRepair)


def merge(a, b):
    return a | b  # objects are frozensets of versions: merge is union


def get_quorum(n, r, pr=0, notfound_ok=True, basic_quorum=False, primaries=None):
    primaries = frozenset(range(n)) if primaries is None else primaries
    return GetQuorum(n=n, r=r, pr=pr, notfound_ok=notfound_ok, basic_quorum=basic_quorum,
                     primaries=primaries, merge=merge, is_tombstone=lambda o: "tomb" in o)


def test_get_meets_r_with_found_objects_and_merges_them():
    q = get_quorum(3, 2)
    q.add_reply(0, frozenset({"a"}))
    assert not q.enough()
    q.add_reply(1, frozenset({"b"}))
    assert q.enough()
    assert q.result() == Found(frozenset({"a", "b"}), False)


def test_get_all_notfound_is_notfound_without_notfound_ok():
    q = get_quorum(3, 2, notfound_ok=False)
    q.add_reply(0, NOT_FOUND)
    assert not q.enough()
    q.add_reply(1, NOT_FOUND)
    assert q.enough()  # n - r + 1 = 2 not-founds: r can no longer be met
    assert q.result() == NOT_FOUND


def test_get_errors_name_the_unmet_quorum():
    q = get_quorum(3, 2)
    q.add_reply(0, frozenset({"a"}))
    q.add_reply(1, Failed("timeout"))
    q.add_reply(2, Failed("timeout"))
    assert q.result() == QuorumFailed("R-value unsatisfied: 1/2")


def test_get_pr_counts_primaries_only():
    q = get_quorum(3, 1, pr=3, primaries=frozenset({0, 1}))  # node 2 is a fallback
    q.add_reply(0, frozenset({"a"}))
    q.add_reply(2, frozenset({"a"}))
    assert q.enough()  # only two primaries exist: PR=3 can never be met
    assert q.result() == QuorumFailed("PR-value unsatisfied: 1/3")


def test_basic_quorum_stops_early_on_a_majority_of_notfounds():
    q = get_quorum(5, 1, notfound_ok=False, basic_quorum=True)
    for node in range(3):
        assert not q.enough()
        q.add_reply(node, NOT_FOUND)
    assert q.enough()
    assert q.result() == NOT_FOUND


def test_read_repair_targets_stale_and_notfound_replicas_including_late_ones():
    q = get_quorum(3, 1)
    q.add_reply(0, frozenset({"a", "b"}))
    assert q.enough()
    q.add_reply(1, frozenset({"a"}))
    q.add_reply(2, NOT_FOUND)
    assert q.final_action() == ReadRepair((1, 2), frozenset({"a", "b"}))


def test_no_read_repair_when_replicas_agree():
    q = get_quorum(2, 2)
    q.add_reply(0, frozenset({"a"}))
    q.add_reply(1, frozenset({"a"}))
    assert q.final_action() is None


def test_duplicate_reply_is_ignored():
    q = get_quorum(3, 2)
    q.add_reply(0, frozenset({"a"}))
    q.add_reply(0, frozenset({"a"}))
    assert not q.enough()


def test_tombstone_is_reported():
    q = get_quorum(1, 1)
    q.add_reply(0, frozenset({"tomb"}))
    assert q.result() == Found(frozenset({"tomb"}), True)


def test_negative_quorum_is_rejected():
    with pytest.raises(ValueError):
        get_quorum(3, -1)
    with pytest.raises(ValueError):
        PutQuorum(n=0, w=1)


replies = st.sampled_from(["ok", "notfound", "fail"])


@given(n=st.integers(1, 5), data=st.data(), notfound_ok=st.booleans())
def test_get_enough_exactly_when_decided(n, data, notfound_ok):
    """Before enough(): success is still reachable and not yet reached. At enough(): either met, or no
    completion of the remaining replies could meet it (without basic_quorum)."""
    r = data.draw(st.integers(0, n + 1))
    pr = data.draw(st.integers(0, n + 1))
    primaries = frozenset(data.draw(st.sets(st.integers(0, n - 1))))
    kinds = data.draw(st.lists(replies, min_size=n, max_size=n))
    q = get_quorum(n, r, pr, notfound_ok, primaries=primaries)
    for node, kind in enumerate(kinds):
        reply = {"ok": frozenset({node}), "notfound": NOT_FOUND, "fail": Failed("x")}[kind]
        q.add_reply(node, reply)
        counted = [k == "ok" or (k == "notfound" and notfound_ok) for k in kinds[: node + 1]]
        ok = sum(counted)
        pok = sum(c for i, c in enumerate(counted) if i in primaries)
        met = ok >= r and pok >= pr
        waiting = n - node - 1
        waiting_primaries = len([i for i in primaries if i > node])
        reachable = ok + waiting >= r and pok + waiting_primaries >= pr
        if not q.enough():
            assert reachable and not met
        else:
            assert met or not reachable or node == n - 1
            outcome = q.result()
            seen = kinds[: node + 1]
            if met:
                assert outcome == (Found(frozenset(i for i, k in enumerate(seen) if k == "ok"), False)
                                   if "ok" in seen else NOT_FOUND)
                return
            if "ok" not in seen and "fail" not in seen and not notfound_ok and "notfound" in seen:
                assert outcome == NOT_FOUND  # every answer was not-found: the key does not exist
            else:
                assert isinstance(outcome, QuorumFailed)


@given(n=st.integers(1, 5), data=st.data())
def test_put_enough_exactly_when_decided(n, data):
    w = data.draw(st.integers(0, n + 1))
    pw = data.draw(st.integers(0, n + 1))
    primaries = frozenset(data.draw(st.sets(st.integers(0, n - 1))))
    acks = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    q = PutQuorum(n=n, w=w, pw=pw, primaries=primaries)
    for node, acked in enumerate(acks):
        q.add_reply(node, acked)
        got = sum(acks[: node + 1])
        pgot = sum(a for i, a in enumerate(acks[: node + 1]) if i in primaries)
        met = got >= w and pgot >= pw
        reachable = got + (n - node - 1) >= w and pgot + len([i for i in primaries if i > node]) >= pw
        assert q.enough() == (met or not reachable or node == n - 1)
        if q.enough():
            assert (q.result() is None) == met
            if not met:
                assert "unsatisfied" in q.result().message
            return


def test_put_messages():
    q = PutQuorum(n=3, w=2, primaries=frozenset({0, 1, 2}))
    q.add_reply(0, True)
    q.add_reply(1, False)
    q.add_reply(2, False)
    assert q.result() == QuorumFailed("W-value unsatisfied: 1/2")
    q = PutQuorum(n=3, w=1, pw=3, primaries=frozenset({0, 1}))
    q.add_reply(0, True)
    assert q.enough()
    assert q.result() == QuorumFailed("PW-value unsatisfied: 1/3")
