"""Ring state: versions and authors, lookups, the merge laws (commutative, associative, idempotent, higher
version wins, equal versions tie-broken by digest), and the plain-dict form (round trip, JSON/CBOR safe,
every malformed dict refused with a ValueError)."""

import json

import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from ring.claim import ClaimError
from ring.state import Ring, RingFormatError, merge


def build(names, partitions=64):
    return Ring.initial(names, partitions=partitions)


@st.composite
def rings(draw):
    """Rings of a few shapes and versions, including equal versions with different content."""
    partitions = 64
    count = draw(st.integers(1, 8))
    ring = Ring.initial([f"n{i}" for i in range(count)], partitions=partitions, author="seed")
    for _ in range(draw(st.integers(0, 3))):
        joiner = f"x{draw(st.integers(0, 5))}"
        if len(ring.nodes) > 1 and draw(st.booleans()):
            ring = ring.with_leave(draw(st.sampled_from(ring.nodes)))
        elif joiner not in ring.nodes:
            ring = ring.with_join(joiner)
    # re-stamp with a small version so different histories collide on versions
    return Ring(ring.partitions, ring.owners, draw(st.integers(1, 3)), ring.target_n, ring.members,
                draw(st.sampled_from(["", "a", "b"])))


def test_initial_and_changes():
    ring = build(["b", "a", "c", "d"])
    assert ring.version == 1
    assert ring.nodes == ("a", "b", "c", "d")
    assert sum(len(ring.partitions_of(node)) for node in ring.nodes) == 64
    assert all(ring.owner(p) == node for node in ring.nodes for p in ring.partitions_of(node))
    joined = ring.with_join("e")
    assert (joined.version, joined.author, joined.nodes) == (2, "e", ("a", "b", "c", "d", "e"))
    left = joined.with_leave("b", author="a")
    assert (left.version, left.author, left.nodes) == (3, "a", ("a", "c", "d", "e"))
    assert left.partitions_of("b") == ()
    assert ring.version == 1  # immutable: nothing above touched `ring`


def test_members_that_own_nothing_are_kept():
    ring = build([f"n{i:02d}" for i in range(10)], partitions=8)
    assert len(ring.nodes) == 10
    idle = [node for node in ring.nodes if not ring.partitions_of(node)]
    assert len(idle) == 2
    assert Ring.from_dict(ring.to_dict()).nodes == ring.nodes
    assert ring.with_join("zz").nodes[-1] == "zz"


def test_lookup_errors():
    ring = build(["a", "b"])
    with pytest.raises(IndexError):
        ring.owner(64)
    with pytest.raises(ClaimError):
        ring.with_join("a")
    with pytest.raises(ClaimError):
        ring.with_leave("zz")
    with pytest.raises(ClaimError):
        build(["a"]).with_leave("a")


@given(a=rings(), b=rings(), c=rings())
@settings(deadline=None, max_examples=60)
def test_merge_laws(a, b, c):
    assert merge(a, a) == a
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    winner = merge(a, b)
    assert winner in (a, b)
    assert winner.version == max(a.version, b.version)
    if a.version == b.version and a != b:
        assert winner.digest() == min(a.digest(), b.digest())


def test_higher_version_wins_whatever_the_content():
    old = build(["a", "b", "c", "d"])
    new = old.with_leave("d")
    assert merge(old, new) is new and merge(new, old) is new


def test_equal_versions_pick_one_by_digest():
    one = build(["a", "b", "c", "d"]).with_join("e")
    two = build(["a", "b", "c", "d"]).with_join("f")
    assert one.version == two.version and one != two
    assert merge(one, two) == merge(two, one) == min((one, two), key=Ring.digest)


def test_merge_refuses_different_shapes():
    with pytest.raises(RingFormatError, match="cannot merge"):
        merge(build(["a"], 64), build(["a"], 128))


@given(ring=rings())
@settings(deadline=None, max_examples=40)
def test_dict_round_trips_through_json_and_cbor(ring):
    data = ring.to_dict()
    assert Ring.from_dict(data) == ring
    assert Ring.from_dict(json.loads(json.dumps(data))) == ring
    assert Ring.from_dict(cbor2.loads(cbor2.dumps(data))) == ring
    assert Ring.from_dict(data).digest() == ring.digest()


def test_digest_is_stable():
    ring = build(["node1", "node2", "node3"])
    assert ring.digest() == Ring.from_dict(ring.to_dict()).digest()
    assert ring.digest() != ring.with_join("node4").digest()
    assert len(ring.digest()) == 64


def corrupt(data, **changes):
    bad = dict(data)
    for key, value in changes.items():
        if value is KeyError:
            del bad[key]
        else:
            bad[key] = value
    return bad


GOOD = build(["a", "b", "c", "d"]).to_dict()
BAD = [
    "not a dict", None, [], {},
    corrupt(GOOD, format=2), corrupt(GOOD, format=True), corrupt(GOOD, format=KeyError),
    corrupt(GOOD, extra=1), corrupt(GOOD, owners=KeyError), corrupt(GOOD, members=KeyError),
    corrupt(GOOD, partitions=100), corrupt(GOOD, partitions="64"), corrupt(GOOD, partitions=128),
    corrupt(GOOD, target_n=0), corrupt(GOOD, target_n=9), corrupt(GOOD, target_n="3"),
    corrupt(GOOD, version=-1), corrupt(GOOD, version=1.5), corrupt(GOOD, version=True),
    corrupt(GOOD, author=7), corrupt(GOOD, members="abcd"), corrupt(GOOD, members=["b", "a", "c", "d"]),
    corrupt(GOOD, members=["a", "a", "c", "d"]), corrupt(GOOD, members=["a", "b", "c", ""]),
    corrupt(GOOD, members=["a", "b", "c", 4]), corrupt(GOOD, owners=GOOD["owners"][:-1]),
    corrupt(GOOD, owners=GOOD["owners"][:-1] + [4]), corrupt(GOOD, owners=GOOD["owners"][:-1] + [-1]),
    corrupt(GOOD, owners=GOOD["owners"][:-1] + ["a"]), corrupt(GOOD, owners=GOOD["owners"][:-1] + [True]),
    corrupt(GOOD, owners="0123"),
]


@pytest.mark.parametrize("data", BAD)
def test_bad_dicts_raise_value_error(data):
    with pytest.raises(ValueError):
        Ring.from_dict(data)


@given(key=st.sampled_from(sorted(GOOD)), value=st.none() | st.integers(-3, 5000) | st.text(max_size=3)
       | st.lists(st.integers(-1, 5), max_size=4) | st.floats(allow_nan=False))
def test_any_field_replaced_with_junk_is_refused_or_still_valid(key, value):
    data = corrupt(GOOD, **{key: value})
    try:
        ring = Ring.from_dict(data)
    except ValueError:
        return
    assert ring.to_dict() == data  # accepted only if it really is a ring (e.g. another author string)


def test_bad_direct_construction():
    with pytest.raises(RingFormatError, match="owners"):
        Ring(64, ("a",) * 63, 1)
    with pytest.raises(RingFormatError, match="among members"):
        Ring(8, ("a",) * 8, 1, 3, ("b",))
