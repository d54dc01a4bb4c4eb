"""Merge rules of the membership view: generations, versions, tombstones, digests, the ring winner."""

import itertools

from hypothesis import given, strategies as st

from gossip.membership import MergeKind, Member, Status, View, ring_digest
from gossip.message import Delta


def full(node, generation=1, heartbeat=10, status="valid", joined=None, extra=()):
    states = (("status", 1, status), ("addresses", 2, [f"{node}:1", f"{node}:2"]),
              ("joined", 3, generation if joined is None else joined)) + tuple(extra)
    return Delta(node, generation, heartbeat, heartbeat * 1000, states)


def view(local="me"):
    return View(Member(local, 1, 0, 0, {"status": (1, "valid"), "addresses": (2, ["x", "y"]),
                                         "joined": (3, 1)}, 3, 3))


def test_new_member_is_taken_whole():
    v = view()
    assert v.merge(full("a")).kind is MergeKind.NEW
    assert v.get("a").status is Status.VALID and v.get("a").addresses == ("a:1", "a:2")


def test_partial_state_of_an_unknown_incarnation_is_ignored():
    v = view()
    assert v.merge(Delta("a", 1, 10, 0, (("status", 1, "valid"),))).kind is MergeKind.IGNORED
    assert v.get("a") is None


def test_higher_generation_replaces_lower_is_ignored():
    v = view()
    v.merge(full("a", generation=1, extra=(("load", 5, 0.5),)))
    assert v.merge(full("a", generation=2, heartbeat=4)).kind is MergeKind.RESTARTED
    assert v.get("a").generation == 2 and "load" not in v.get("a").states
    assert v.merge(full("a", generation=1, heartbeat=99)).kind is MergeKind.IGNORED
    assert v.get("a").heartbeat == 4


def test_same_generation_keeps_the_newer_version_per_key():
    v = view()
    v.merge(full("a", extra=(("load", 5, "old"),)))
    merge = v.merge(Delta("a", 1, 12, 12000, (("load", 11, "new"), ("status", 1, "joining"))))
    assert merge.kind is MergeKind.UPDATED and merge.beat
    member = v.get("a")
    assert member.states["load"] == (11, "new") and member.status is Status.VALID
    assert member.max_version == 12 and member.states_version == 11
    assert v.merge(Delta("a", 1, 11, 11000, (("load", 6, "stale"),))).beat is False
    assert member.states["load"] == (11, "new") and member.heartbeat == 12


def test_status_change_is_reported():
    v = view()
    v.merge(full("a"))
    merge = v.merge(Delta("a", 1, 20, 20000, (("status", 15, "leaving"),)))
    assert (merge.old_status, merge.new_status) == ("valid", "leaving")


def test_malformed_reserved_states_are_dropped():
    v = view()
    v.merge(full("a"))
    v.merge(Delta("a", 1, 20, 0, (("status", 15, "removed"), ("addresses", 16, "nope"), ("joined", 17, -1))))
    member = v.get("a")
    assert member.status is Status.VALID and member.addresses == ("a:1", "a:2") and member.joined == 1
    bad_status = Delta("b", 1, 1, 0, (("status", 1, 7),) + full("b").states[1:])
    assert v.merge(bad_status).kind is MergeKind.IGNORED   # a new incarnation needs a sound status


def test_the_local_member_is_never_overwritten():
    v = view("me")
    assert v.merge(full("me", generation=9)).kind is MergeKind.IGNORED
    assert v.get("me").generation == 1


def test_tombstone_drops_and_blocks_the_removed_incarnation():
    v = view()
    v.merge(full("a", generation=3))
    dropped = v.bury("a", 3)
    assert dropped is not None and v.get("a") is None
    assert v.merge(full("a", generation=3, heartbeat=50)).kind is MergeKind.IGNORED      # stale message
    assert v.merge(full("a", generation=4, joined=2)).kind is MergeKind.IGNORED          # restart, no re-join
    assert v.merge(full("a", generation=4, joined=4)).kind is MergeKind.NEW              # explicit re-join


def test_tombstone_of_an_older_incarnation_spares_a_rejoined_member():
    v = view()
    v.merge(full("a", generation=5, joined=5))
    assert v.bury("a", 3) is None and v.get("a") is not None
    assert v.bury("a", 2) is None and v.removed["a"] == 3   # tombstones merge by max


def test_compare_asks_for_newer_and_sends_older_and_unknown():
    v = view()
    v.merge(full("a", heartbeat=10))
    v.merge(full("b", heartbeat=10))
    v.merge(full("c", generation=2, heartbeat=10))
    requests, deltas = v.compare((("a", 1, 15), ("b", 1, 4), ("c", 1, 99), ("d", 1, 7)))
    assert ("a", 1, 10) in requests and ("d", 1, 0) in requests
    sent = {d.node: d for d in deltas}
    assert sent["b"].heartbeat == 10 and {k for k, _, _ in sent["b"].states} == set()   # only newer than 4
    assert sent["c"].generation == 2 and len(sent["c"].states) == 3                      # full: newer generation
    assert "me" in sent                                                                 # unknown to the initiator


def test_compare_skips_tombstoned_digests_and_answer_serves_requests():
    v = view()
    v.merge(full("a", extra=(("load", 8, 1),)))
    v.bury("z", 4)
    requests, _ = v.compare((("z", 4, 100),))
    assert requests == []
    answered = v.answer((("a", 1, 5), ("a", 0, 9), ("ghost", 1, 0)))
    assert [d.node for d in answered] == ["a", "a"]
    assert [k for k, _, _ in answered[0].states] == ["load"] and len(answered[1].states) == 4


def ring_delta(node, version, value):
    return full(node, extra=(("ring", 20, [version, value]),))


def test_highest_ring_version_wins():
    v = view()
    v.merge(ring_delta("a", 3, {"p": "a"}))
    v.merge(ring_delta("b", 5, {"p": "b"}))
    v.merge(ring_delta("c", 4, {"p": "c"}))
    assert v.ring() == (5, {"p": "b"})


@given(st.lists(st.tuples(st.integers(0, 3), st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=2)),
                min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_ring_winner_is_independent_of_merge_order(rings, rng):
    deltas = [ring_delta(f"n{i}", version, value) for i, (version, value) in enumerate(rings)]
    first, second = view(), view()
    for delta in deltas:
        first.merge(delta)
    rng.shuffle(deltas)
    for delta in deltas:
        second.merge(delta)
    top = max(version for version, _ in rings)
    assert first.ring() == second.ring()
    assert first.ring()[0] == top
    tied = [value for version, value in rings if version == top]
    assert first.ring()[1] == min(tied, key=ring_digest)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 3), st.integers(0, 30), st.integers(4, 30)),
                max_size=12),
       st.randoms(use_true_random=False))
def test_merge_is_order_independent_and_idempotent(updates, rng):
    """Gossip delivers deltas in any order, any number of times: the view must end the same. (An author
    never gives two values one version, so the value is a function of the version here.)"""
    statuses = ["joining", "valid", "leaving"]
    deltas = [Delta(node, generation, heartbeat, heartbeat,
                    (("status", version, statuses[version % 3]),) + full(node).states[1:])
              for node, generation, heartbeat, version in updates]
    ordered, shuffled = view(), view()
    for delta in deltas:
        ordered.merge(delta)
    twice = deltas * 2
    rng.shuffle(twice)
    for delta in twice:
        shuffled.merge(delta)
    summary = lambda v: sorted((m.node, m.generation, m.heartbeat, tuple(sorted(m.states.items())))
                               for m in v.members.values())
    assert summary(ordered) == summary(shuffled)


def test_digests_list_every_member():
    v = view()
    for node in "abc":
        v.merge(full(node))
    assert sorted(d[0] for d in v.digests()) == ["a", "b", "c", "me"]
    assert dict((d[0], d[2]) for d in v.digests())["a"] == 10


def test_members_iterate_in_insertion_order():
    v = view()
    for node in itertools.islice(itertools.cycle("zyx"), 3):
        v.merge(full(node))
    assert list(v.members) == ["me", "z", "y", "x"]
