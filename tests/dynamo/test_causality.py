"""DVV sets against a model of causality, their laws, the sibling-explosion scenario, and the encodings.

The model: every write gets a unique id (the value stored). A replica's ground truth is the set of writes
it has seen; a write covers exactly the writes the client's context had seen. The versions a replica must
hold are those it has seen that no write it has seen covers. The DVVSet must hold exactly those.
"""

import base64

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamo.causality import (
    CONTEXT_ENTRIES_MAX,
    CONTEXT_LENGTH_MAX,
    CausalityDecodeError,
    CausalityError,
    DVVSet,
    Entry,
    Ordering,
    VersionVector,
    compare,
    decode_context,
    decode_dvvset,
    descends,
    encode_context,
    encode_dvvset,
    less_or_equal,
    new_write,
    sync,
    sync_all,
    update,
)

NODES = ("a", "b", "c")
CLIENTS = (0, 1, 2)


class History:
    """Replicas holding DVVSets, clients holding opaque contexts, and the ground truth beside them."""

    def __init__(self):
        self.replicas = {node: None for node in NODES}
        self.seen = {node: frozenset() for node in NODES}
        self.contexts = {client: (None, frozenset()) for client in CLIENTS}  # token, writes it saw
        self.covers = {}  # write id → the writes its context covered
        self.dots = {}  # write id → (actor, counter) it was given
        self.states = []  # every set any replica held, for the laws

    def read(self, client, node):
        held = self.replicas[node]
        token = encode_context(held.context()) if held is not None else None
        self.contexts[client] = (token, self.seen[node])

    def write(self, client, node, with_context):
        token, saw = self.contexts[client] if with_context else (None, frozenset())
        write_id = len(self.covers)
        before = self.replicas[node]
        after = update(new_write(write_id, decode_context(token) if token else None), before, node)
        if before is not None:
            assert less_or_equal(before, after) and compare(before, after) is Ordering.BEFORE
        self.dots[write_id] = (node, after.context().get(node))
        self.covers[write_id] = saw
        self.seen[node] = self.seen[node] | saw | {write_id}
        self.replicas[node] = after
        self.states.append(after)

    def read_modify_write(self, client, read_node, write_node):
        self.read(client, read_node)
        self.write(client, write_node, True)

    def sync(self, x, y):
        held = [s for s in (self.replicas[x], self.replicas[y]) if s is not None]
        if not held:
            return
        merged = sync_all(held)
        self.replicas[x] = self.replicas[y] = merged
        self.seen[x] = self.seen[y] = self.seen[x] | self.seen[y]
        self.states.append(merged)

    def apply(self, op):
        getattr(self, op[0])(*op[1:])

    def expected_live(self, node):
        seen = self.seen[node]
        covered = frozenset().union(*(self.covers[w] for w in seen))
        return seen - covered

    def check(self, node):
        held, seen = self.replicas[node], self.seen[node]
        if held is None:
            assert not seen
            return
        assert sorted(held.values) == sorted(self.expected_live(node))
        counters = {}
        for w in seen:
            actor, counter = self.dots[w]
            counters[actor] = max(counter, counters.get(actor, 0))
        assert held.context() == VersionVector.from_mapping(counters)
        assert [dot for dot, _ in held.dotted_values()] == sorted(self.dots[w] for w in held.values)
        assert held.values == tuple(value for _, value in held.dotted_values())
        assert len(held.entries) <= len({self.dots[w][0] for w in seen})  # one entry per coordinator


node_st = st.sampled_from(NODES)
client_st = st.sampled_from(CLIENTS)
op_st = st.one_of(
    st.tuples(st.just("read"), client_st, node_st),
    st.tuples(st.just("write"), client_st, node_st, st.sampled_from([True, True, True, False])),
    st.tuples(st.just("sync"), node_st, node_st),
    st.tuples(st.just("read_modify_write"), client_st, node_st, node_st),
)
history_st = st.lists(op_st, min_size=10, max_size=50)


def run(ops):
    history = History()
    for op in ops:
        history.apply(op)
    return history


@given(history_st)
def test_replicas_hold_exactly_the_writes_no_context_covered(ops):
    history = History()
    for op in ops:
        history.apply(op)
        for node in NODES:
            history.check(node)
    # after everyone syncs: one state, holding exactly the truly concurrent writes of the whole history
    for x in NODES:
        for y in NODES:
            history.sync(x, y)
    final = {node: history.replicas[node] for node in NODES}
    assert len(set(final.values())) == 1
    for node in NODES:
        history.check(node)
    if history.covers:
        all_covered = frozenset().union(*history.covers.values())
        assert len(final["a"].values) == len(history.covers.keys() - all_covered)


@given(history_st, st.data())
def test_sync_is_a_join_on_real_states(ops, data):
    states = run(ops).states
    if not states:
        return
    a, b, c = (data.draw(st.sampled_from(states)) for _ in range(3))
    assert sync(a, a) == a
    assert sync(a, b) == sync(b, a)
    assert sync(sync(a, b), c) == sync(a, sync(b, c))
    assert less_or_equal(a, sync(a, b)) and descends(sync(a, b), b)
    assert less_or_equal(a, b) == (sync(a, b) == b)
    assert compare(a, b) is {Ordering.BEFORE: Ordering.AFTER, Ordering.AFTER: Ordering.BEFORE}.get(
        compare(b, a), compare(b, a))


@given(st.lists(node_st, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_writes_without_context_are_all_kept(coordinators, rnd):
    replicas = {}
    for write_id, node in enumerate(coordinators):
        replicas[node] = update(new_write(write_id), replicas.get(node), node)
    merged = replicas.values()
    merged = sync_all(rnd.sample(list(merged), len(merged)))
    assert sorted(merged.values) == list(range(len(coordinators)))
    assert len(merged.entries) == len(set(coordinators))


def rmw_schedule(schedule, returnbody):
    """Two clients through coordinator "x". With returnbody each keeps the context its put returned; else
    each reads, may wait while the other acts, then writes with what it read. Yields the set and, per
    write, the writes its context had seen (on one coordinator: every write before that context)."""
    held, contexts, pending, written, covers = None, [(None, set())] * 2, [False, False], [], {}
    for step, client in enumerate(schedule):
        if not returnbody and not pending[client]:
            contexts[client] = (held.context() if held else None, set(written))
            pending[client] = True
            continue
        context, saw = contexts[client]
        held = update(new_write(step, context), held, "x")
        covers[step], pending[client] = saw, False
        written.append(step)
        if returnbody:
            contexts[client] = (held.context(), set(written))
        yield held, covers


@pytest.mark.parametrize("returnbody", [True, False])
@given(schedule=st.lists(st.sampled_from([0, 1]), max_size=80))
def test_no_sibling_explosion_through_one_coordinator(returnbody, schedule):
    for held, covers in rmw_schedule(schedule, returnbody):
        assert len(held.values) <= 2
        assert set(held.values) == covers.keys() - set().union(*covers.values())


def naive_put(obj, context, value, actor):
    """One vector clock per object, siblings share it (Riak before DVV): the explosion to contrast with."""
    clock, siblings = obj or (VersionVector(), ())
    context = context or VersionVector()
    siblings = (value,) if context.descends(clock) else siblings + (value,)
    joined = clock.join(context)
    return joined.join(VersionVector(((actor, joined.get(actor) + 1),))), siblings


def test_interleaved_stale_contexts_explode_vector_clocks_but_not_dvvsets():
    held, naive, contexts, naive_contexts = None, None, [None, None], [None, None]
    for step in range(200):
        client = step % 2
        held = update(new_write(step, contexts[client]), held, "x")
        naive = naive_put(naive, naive_contexts[client], step, "x")
        contexts[client], naive_contexts[client] = held.context(), naive[0]
        assert len(held.values) <= 2
    assert sorted(held.values) == [198, 199]
    assert len(naive[1]) == 200  # every write kept as a sibling: the explosion


def test_worked_example():
    v1 = update(new_write("v1"), None, "a")
    assert v1.entries == (Entry("a", 1, ("v1",)),)
    v2 = update(new_write("v2", v1.context()), v1, "a")  # saw v1: replaces it
    assert v2.entries == (Entry("a", 2, ("v2",)),)
    v3 = update(new_write("v3", v1.context()), v2, "a")  # saw only v1: concurrent with v2
    assert v3.entries == (Entry("a", 3, ("v2", "v3")),)
    assert v3.dotted_values() == ((("a", 2), "v2"), (("a", 3), "v3"))
    v4 = update(new_write("v4", v3.context()), v3, "b")  # saw both
    assert v4.entries == (Entry("a", 3), Entry("b", 1, ("v4",)))
    assert sync(v3, v4) == v4 and sync(v1, v2) == v2 and sync(v2, v3) == v3
    assert compare(v2, v3) is Ordering.BEFORE and compare(v4, v2) is Ordering.AFTER
    # same context, but one replica knows v1 is replaced: the other is behind, not equal
    stale = DVVSet((Entry("a", 2, ("v1", "v2")),))
    assert compare(stale, v2) is Ordering.BEFORE and v2.context() == stale.context()
    assert compare(v2, DVVSet((Entry("b", 1, ("w",)),))) is Ordering.CONCURRENT
    assert DVVSet().is_empty and not v4.is_empty and DVVSet((Entry("a", 3),)).is_empty
    # siblings come in dot order (actor, counter), whatever the values are and whichever side merges first
    z_then_y = sync(update(new_write("y"), None, "b"), update(new_write("z"), None, "a"))
    assert z_then_y.values == ("z", "y")


def test_counter_never_reused_when_context_is_ahead_of_the_coordinator():
    held = update(new_write("late", VersionVector((("a", 5),))), None, "a")
    assert held.dotted_values() == ((("a", 6), "late"),)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(CausalityError):
        update(new_write(1), None, "")
    with pytest.raises(CausalityError):
        new_write(1, {"a": 1})
    with pytest.raises(CausalityError):
        Entry("a", 1, (1, 2))
    with pytest.raises(CausalityError):
        DVVSet((Entry("b", 1), Entry("a", 1)))
    for entries in [(("b", 1), ("a", 1)), (("a", 1), ("a", 2)), (("a", 0),), (("a", True),), (("", 1),)]:
        with pytest.raises(CausalityError):
            VersionVector(entries)
    assert issubclass(CausalityDecodeError, CausalityError) and issubclass(CausalityError, ValueError)


# ---- version vectors ------------------------------------------------------------------------------------

vv_st = st.dictionaries(st.sampled_from("abcde"), st.integers(0, 4)).map(VersionVector.from_mapping)


@given(vv_st, vv_st, vv_st)
def test_version_vector_join_is_least_upper_bound(x, y, z):
    joined = x.join(y)
    assert joined == y.join(x) and joined.descends(x) and joined.descends(y)
    assert x.join(y).join(z) == x.join(y.join(z)) and x.join(x) == x
    if z.descends(x) and z.descends(y):
        assert z.descends(joined)
    assert x.compare(y) is Ordering.EQUAL if x == y else x.compare(y) is not Ordering.EQUAL
    assert x.dominates(y) == (x.compare(y) is Ordering.AFTER)


def test_version_vector_basics():
    x = VersionVector.from_mapping({"b": 2, "a": 1, "z": 0})
    assert x.entries == (("a", 1), ("b", 2)) and x.get("z") == 0 and len(x) == 2
    assert x.covers("b", 2) and not x.covers("b", 3) and not x.covers("c", 1)
    y = VersionVector.from_mapping({"a": 3})
    assert x.compare(y) is Ordering.CONCURRENT and x.join(y).as_dict() == {"a": 3, "b": 2}
    assert VersionVector().compare(x) is Ordering.BEFORE


# ---- encodings ------------------------------------------------------------------------------------------


@given(history_st)
def test_sets_and_contexts_round_trip(ops):
    for state in run(ops).states:
        assert decode_dvvset(encode_dvvset(state)) == state
        assert decode_context(encode_context(state.context())) == state.context()
        assert decode_context(encode_context(state.context()).encode()) == state.context()


@given(vv_st)
def test_any_context_round_trips(vv):
    assert decode_context(encode_context(vv)) == vv


@given(st.binary())
def test_garbage_bytes_never_decode_to_another_set(data):
    try:
        decoded = decode_dvvset(data)
    except CausalityDecodeError:
        return
    assert encode_dvvset(decoded) == data


@given(st.text() | st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="))
def test_garbage_strings_never_decode_to_another_context(token):
    try:
        decoded = decode_context(token)
    except CausalityDecodeError:
        return
    assert encode_context(decoded) == token


def mutations(data, index, byte):
    index %= len(data)
    yield data[:index] + bytes([byte]) + data[index + 1:]
    yield data[:index] + bytes([byte]) + data[index:]
    yield data[:index] + data[index + 1:]
    yield data[:index]


@given(history_st.filter(lambda ops: any(op[0] == "write" for op in ops)), st.integers(0), st.integers(0, 255))
def test_mutated_encodings_are_rejected_or_exact(ops, index, byte):
    state = run(ops).states[-1]
    rejected = 0
    for mutated in mutations(encode_dvvset(state), index, byte):
        try:
            decoded = decode_dvvset(mutated)
        except CausalityDecodeError:
            rejected += 1
            continue
        assert encode_dvvset(decoded) == mutated
    assert rejected >= 1  # a truncated encoding at least is never valid
    token = encode_context(state.context())
    position = index % len(token)
    for char in "A/=+z!\x00é":
        mutated = token[:position] + char + token[position + 1:]
        try:
            assert encode_context(decode_context(mutated)) == mutated
        except CausalityDecodeError:
            pass


def raw_set(entries, version=1, **extra):
    return cbor2.dumps({"v": version, "e": entries, **extra}, canonical=True)


BAD_SETS = [
    raw_set([], version=2),
    raw_set([], version=True),
    raw_set([], x=1),
    cbor2.dumps({"v": 1}, canonical=True),
    cbor2.dumps([1, []], canonical=True),
    raw_set([["a", 0, []]]),
    raw_set([["a", -1, []]]),
    raw_set([["a", 1.0, []]]),
    raw_set([["a", True, []]]),
    raw_set([["a", 2**64, []]]),
    raw_set([["a", 1, [1, 2]]]),
    raw_set([["b", 1, []], ["a", 1, []]]),
    raw_set([["a", 1, []], ["a", 2, []]]),
    raw_set([["", 1, []]]),
    raw_set([["x" * 256, 1, []]]),
    raw_set([[1, 1, []]]),
    raw_set([["a", 1]]),
    raw_set([["a", 1, 5]]),
    raw_set(["a", 1, []]),
    raw_set([]) + b"\x00",  # trailing bytes
    bytes.fromhex("a26165") + bytes.fromhex("9f ff") + bytes.fromhex("617601"),  # indefinite-length list
    bytes.fromhex("a26165801876") + b"\x01",  # garbage: not even a key
    bytes.fromhex("a2616580617618" + "01"),  # non-minimal integer 1
    b"",
    "not bytes",
]


@pytest.mark.parametrize("data", BAD_SETS)
def test_structurally_wrong_sets_are_rejected(data):
    with pytest.raises(CausalityDecodeError):
        decode_dvvset(data)


def token(raw):
    return base64.b64encode(cbor2.dumps(raw, canonical=True)).decode()


BAD_CONTEXTS = [
    "",
    "!!!!",
    "omF2AWJ2doKCYWEBgmFiAQ",  # padding missing
    "omF2AWJ2doKCYWEBgmFiAR==",  # unused bits set: not canonical base64
    " " + encode_context(VersionVector((("a", 1),))),
    token({"v": 2, "vv": []}),
    token({"v": 1, "vv": [["a", -1]]}),
    token({"v": 1, "vv": [["a", 0]]}),
    token({"v": 1, "vv": [["a", 1], ["a", 2]]}),
    token({"v": 1, "vv": [["b", 1], ["a", 2]]}),
    token({"v": 1, "vv": [["a", 1, 2]]}),
    token({"v": 1, "vv": {"a": 1}}),
    token({"v": 1, "e": []}),
    token({"v": 1, "vv": [[f"n{i}", 1] for i in range(CONTEXT_ENTRIES_MAX + 1)]}),
    "A" * (CONTEXT_LENGTH_MAX + 4),
    b"\xff\xfe",
    12,
    None,
]


@pytest.mark.parametrize("bad", BAD_CONTEXTS)
def test_bad_contexts_are_rejected(bad):
    with pytest.raises(CausalityDecodeError):
        decode_context(bad)


def test_the_context_example_decodes():
    assert BAD_CONTEXTS[2] + "==" == encode_context(VersionVector((("a", 1), ("b", 1))))
    assert decode_context(BAD_CONTEXTS[2] + "==").as_dict() == {"a": 1, "b": 1}
