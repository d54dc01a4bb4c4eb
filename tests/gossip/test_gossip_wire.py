"""The gossip wire codec: round trips through CBOR, and garbage gives a clear WireError, never a crash."""

import cbor2
import pytest
from hypothesis import given, strategies as st

from gossip.message import Ack, Ack2, Delta, Syn, WireError, from_wire, to_wire

node_ids = st.text(min_size=1, max_size=12)
counts = st.integers(0, 2**40)
scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
digests = st.tuples(node_ids, counts, counts)
tombstones = st.tuples(node_ids, counts)
deltas = st.builds(Delta, node_ids, counts, counts, counts,
                   st.lists(st.tuples(st.text(min_size=1, max_size=8), counts, values), max_size=4).map(tuple))
messages = st.one_of(
    st.builds(Syn, st.text(max_size=8), st.lists(digests, max_size=5).map(tuple),
              st.lists(tombstones, max_size=3).map(tuple)),
    st.builds(Ack, st.lists(digests, max_size=5).map(tuple), st.lists(deltas, max_size=3).map(tuple),
              st.lists(tombstones, max_size=3).map(tuple)),
    st.builds(Ack2, st.lists(deltas, max_size=3).map(tuple)),
)


def normalised(message):
    """Values come back from CBOR as lists where they went in as tuples: compare after one trip."""
    return from_wire(cbor2.loads(cbor2.dumps(to_wire(message))))


@given(messages)
def test_round_trip_through_cbor(message):
    once = normalised(message)
    assert type(once) is type(message)
    assert normalised(once) == once
    assert to_wire(once) == cbor2.loads(cbor2.dumps(to_wire(message)))
    if isinstance(message, Syn):
        assert once == message  # no opaque values inside: exact


def test_rpc_frame_fields_are_ignored():
    wire = to_wire(Syn("c", (("a", 1, 2),)))
    wire.update({"v": 1, "id": 7})
    assert from_wire(wire) == Syn("c", (("a", 1, 2),))


GOOD_ACK = to_wire(Ack((("a", 1, 0),), (Delta("a", 1, 3, 4000, (("status", 1, "valid"),)),), (("z", 2),)))


@pytest.mark.parametrize("garbage, fragment", [
    (None, "must be a map"),
    ([1, 2], "must be a map"),
    ({}, "unknown gossip message type"),
    ({"t": "gossip.nope"}, "unknown gossip message type"),
    ({"t": "gossip.syn", "d": [], "r": []}, "cluster"),
    ({"t": "gossip.syn", "c": "x", "d": "abc", "r": []}, "'d' must be a list"),
    ({"t": "gossip.syn", "c": "x", "d": [["a", 1]], "r": []}, "list of 3"),
    ({"t": "gossip.syn", "c": "x", "d": [["a", -1, 0]], "r": []}, "non-negative integer"),
    ({"t": "gossip.syn", "c": "x", "d": [["a", True, 0]], "r": []}, "non-negative integer"),
    ({"t": "gossip.syn", "c": "x", "d": [["a", 1.5, 0]], "r": []}, "non-negative integer"),
    ({"t": "gossip.syn", "c": "x", "d": [["", 1, 0]], "r": []}, "node id"),
    ({"t": "gossip.syn", "c": "x", "d": [[7, 1, 0]], "r": []}, "node id"),
    ({"t": "gossip.syn", "c": "x", "d": [], "r": [["a"]]}, "list of 2"),
    ({"t": "gossip.syn", "c": "x", "d": [], "r": None}, "'r' must be a list"),
    ({**GOOD_ACK, "s": [["a", 1, 3, 4000]]}, "list of 5"),
    ({**GOOD_ACK, "s": [["a", 1, 3, 4000, "x"]]}, "states must be a list"),
    ({**GOOD_ACK, "s": [["a", 1, 3, 4000, [["", 1, 0]]]]}, "state key"),
    ({**GOOD_ACK, "s": [["a", 1, 3, 4000, [["k", -5, 0]]]]}, "state version"),
    ({**GOOD_ACK, "q": [["a", 1, 2**70]]}, "non-negative integer"),
    ({"t": "gossip.ack2"}, "'s' must be a list"),
])
def test_garbage_gives_a_clear_error(garbage, fragment):
    with pytest.raises(WireError, match=fragment):
        from_wire(garbage)


def test_wire_error_is_a_value_error():
    assert issubclass(WireError, ValueError)


def test_oversized_lists_are_refused():
    with pytest.raises(WireError, match="more than"):
        from_wire({"t": "gossip.syn", "c": "x", "d": [["a", 1, 1]] * 70_000, "r": []})


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
                    max_leaves=20))
def test_arbitrary_data_raises_only_wire_error(data):
    try:
        from_wire(data)
    except WireError:
        pass


@given(messages, st.data())
def test_mutated_messages_decode_or_fail_cleanly(message, data):
    wire = to_wire(message)
    key = data.draw(st.sampled_from(sorted(wire)))
    wire[key] = data.draw(st.none() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=3))
    try:
        from_wire(wire)
    except WireError:
        pass


def test_to_wire_refuses_non_messages():
    with pytest.raises(TypeError):
        to_wire("hello")
