"""Exchange: yields exactly the keys that differ (against a brute-force diff), stays within its hash budget,
ends after one round on equal trees, and refuses mismatched trees, stale and malformed replies clearly."""

import dataclasses

import pytest
from hypothesis import given, strategies as st

from antientropy.exchange import (BranchRequest, Exchange, ExchangeDone, ExchangeError,
                                  MalformedReply, RootReply, RootRequest, SegmentReply, SegmentRequest,
                                  ShapeMismatch, StaleReply, respond)
from antientropy.merkle import MerkleTree, segment_of

KEYS = st.binary(max_size=6)
DIGESTS = st.binary(min_size=1, max_size=4)
SHAPES = st.sampled_from([(2, 2), (8, 2), (16, 4), (64, 8), (128, 32), (1024, 32), (4096, 16)])


def run(local, remote, **options):
    """Drive an exchange to its end, the responder answering from `remote`."""
    exchange = Exchange(local, **options)
    request = exchange.start()
    for _ in range(10_000):
        outcome = exchange.handle(respond(remote, request))
        if isinstance(outcome, ExchangeDone):
            return outcome
        request = outcome
    raise AssertionError("exchange did not end")


def brute_force_diff(a, b):
    return {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)}


@st.composite
def diverged_replicas(draw):
    """Two contents that share a base and then differ: keys missing on either side, changed digests, both."""
    base = draw(st.dictionaries(KEYS, DIGESTS, max_size=50))
    existing = st.sampled_from(sorted(base)) if base else KEYS
    sides = []
    for _ in range(2):
        content = dict(base)
        for key, digest in draw(st.lists(st.tuples(existing | KEYS, st.none() | DIGESTS), max_size=8)):
            if digest is None:
                content.pop(key, None)
            else:
                content[key] = digest
        sides.append(content)
    return sides


@given(replicas=diverged_replicas(), shape=SHAPES,
       hashes_max=st.sampled_from([32, 64, 4096]), segments_max=st.sampled_from([1, 3, 1024]),
       entries_max=st.sampled_from([1, 5, 4096]))
def test_exchange_yields_exactly_the_differing_keys(replicas, shape, hashes_max, segments_max, entries_max):
    a, b = replicas
    tree_a, tree_b = MerkleTree.build(a.items(), *shape), MerkleTree.build(b.items(), *shape)
    expected = brute_force_diff(a, b)
    options = dict(hashes_per_request_max=hashes_max, segments_per_request_max=segments_max,
                   entries_per_request_max=entries_max)
    done = run(tree_a, tree_b, **options)
    assert done.keys == expected
    assert run(tree_b, tree_a, **options).keys == expected  # either side may start
    # The cost is bounded by the differences, not the tree: each differing key can make at most one node
    # per level differ, each such node costs one fan-out of hashes, and the root costs one.
    fanout, depth = tree_a.shape.fanout, tree_a.shape.depth
    assert done.stats.hashes_received <= 1 + fanout * depth * len(expected)
    assert done.stats.entries_received <= len(b)
    if expected:  # root, one round per level, at least one segment round
        assert done.stats.rounds >= 2 + depth


@given(content=st.dictionaries(KEYS, DIGESTS, max_size=50), shape=SHAPES)
def test_equal_content_gives_equal_roots_and_one_round(content, shape):
    tree_a = MerkleTree.build(content.items(), *shape)
    tree_b = MerkleTree(*shape)
    for key, digest in reversed(list(content.items())):
        tree_b.insert(key, digest)
    assert tree_a.root == tree_b.root
    done = run(tree_a, tree_b)
    assert done.keys == frozenset()
    assert done.stats.rounds == 1 and done.stats.hashes_received == 1 and done.stats.entries_received == 0


def test_stats_count_both_directions():
    a = MerkleTree.build((b"k%d" % i, b"d") for i in range(500))
    b = MerkleTree.build((b"k%d" % i, b"d") for i in range(500))
    b.put(b"k7", b"changed")
    done = run(a, b)
    assert done.keys == {b"k7"}
    # root, then one level-1 node's 32 children, then one segment's 32 siblings; then the segment itself
    assert done.stats.rounds == 4 and done.stats.hashes_received == 1 + 32 + 32
    assert done.stats.entries_received == len(b.segment(segment_of(b"k7", 1024)))
    assert done.stats.bytes_received > 65 * 16 and done.stats.bytes_sent > 0
    assert done.stats.bytes_total == done.stats.bytes_sent + done.stats.bytes_received


def test_batches_split_a_level_into_several_rounds():
    a = MerkleTree.build((b"k%d" % i, b"d") for i in range(2000))
    b = MerkleTree.build((b"k%d" % i, b"e" if i % 10 == 0 else b"d") for i in range(2000))
    whole = run(a, b)
    split = run(a, b, hashes_per_request_max=32, segments_per_request_max=5)
    assert split.keys == whole.keys == {b"k%d" % i for i in range(0, 2000, 10)}
    assert split.stats.rounds > whole.stats.rounds
    assert split.stats.hashes_received == whole.stats.hashes_received
    by_entries = run(a, b, entries_per_request_max=10)  # about 2 keys per segment: ~5 segments a round
    assert by_entries.keys == whole.keys and by_entries.stats.rounds > whole.stats.rounds + 10


def test_an_entry_budget_never_stalls_on_a_segment_bigger_than_it():
    a = MerkleTree.build(((b"k%d" % i, b"d") for i in range(300)), segments=2, fanout=2)
    b = MerkleTree.build(((b"k%d" % i, b"e") for i in range(300)), segments=2, fanout=2)
    done = run(a, b, entries_per_request_max=1)
    assert len(done.keys) == 300 and done.stats.rounds == 2 + 2  # root, one level, one segment per round


@pytest.mark.parametrize("remote_shape", [(2048, 32), (1024, 16)])
def test_trees_of_different_shape_fail_at_the_first_reply(remote_shape):
    local, remote = MerkleTree(), MerkleTree(*remote_shape)
    exchange = Exchange(local)
    with pytest.raises(ShapeMismatch, match="different shape") as caught:
        exchange.handle(respond(remote, exchange.start()))
    assert isinstance(caught.value, ValueError)


def started(tree_a, tree_b):
    """An exchange whose root round is done and whose first branch request is outstanding."""
    exchange = Exchange(tree_a, exchange_id=7)
    request = exchange.handle(respond(tree_b, exchange.start()))
    assert isinstance(request, BranchRequest)
    return exchange, request


def differing_pair():
    a = MerkleTree.build([(b"a", b"1"), (b"b", b"2")])
    b = MerkleTree.build([(b"a", b"1"), (b"b", b"3")])
    return a, b


def test_stale_replies_are_refused_and_the_exchange_goes_on():
    a, b = differing_pair()
    exchange, request = started(a, b)
    good = respond(b, request)
    for stale in (dataclasses.replace(good, step=good.step - 1), dataclasses.replace(good, exchange_id=8),
                  RootReply(7, good.step, a.shape, a.root), SegmentReply(7, good.step, ())):
        with pytest.raises(StaleReply, match="expected BranchReply"):
            exchange.handle(stale)
    request = exchange.handle(good)
    while not isinstance(request, ExchangeDone):
        request = exchange.handle(respond(b, request))
    assert request.keys == {b"b"}


def test_misuse_of_the_state_machine_is_refused():
    a, b = differing_pair()
    exchange = Exchange(a)
    with pytest.raises(ExchangeError, match="not started"):
        exchange.handle(RootReply(0, 0, a.shape, a.root))
    first = exchange.start()
    with pytest.raises(ExchangeError, match="already started"):
        exchange.start()
    with pytest.raises(ExchangeError, match="not an exchange reply"):
        exchange.handle("garbage")
    done = exchange.handle(respond(a, first))  # equal to itself: done after the root
    assert done.keys == frozenset() and exchange.done is done
    with pytest.raises(ExchangeError, match="finished"):
        exchange.handle(respond(a, first))
    with pytest.raises(ExchangeError):
        Exchange("not a tree")
    with pytest.raises(ExchangeError, match="fan-out"):
        Exchange(a, hashes_per_request_max=8)
    with pytest.raises(ExchangeError):
        Exchange(a, segments_per_request_max=0)
    with pytest.raises(ExchangeError):
        Exchange(a, entries_per_request_max=0)


def test_malformed_replies_are_refused():
    a, b = differing_pair()
    exchange, request = started(a, b)
    good = respond(b, request)
    for bad in (dataclasses.replace(good, hashes=good.hashes[:-1]),
                dataclasses.replace(good, hashes=good.hashes[:-1] + (b"short",)),
                dataclasses.replace(good, hashes=good.hashes[:-1] + (None,)),
                dataclasses.replace(good, hashes=list(good.hashes)), dataclasses.replace(good, hashes=None)):
        with pytest.raises(MalformedReply):
            exchange.handle(bad)
    request = exchange.handle(good)
    while isinstance(request, BranchRequest):
        request = exchange.handle(respond(b, request))
    assert isinstance(request, SegmentRequest) and len(request.segments) == 1
    s = request.segments[0]
    stranger = next(bytes([i]) for i in range(256) if segment_of(bytes([i]), 1024) != s)
    entries = respond(b, request).entries[0]
    for bad in ((), (list(entries),), (entries + ((stranger, b"x"),),), (entries + entries[:1],),
                ((("key", b"x"),),), (((b"key",),),)):
        with pytest.raises(MalformedReply):
            exchange.handle(SegmentReply(7, request.step, bad))
    assert exchange.handle(respond(b, request)).keys == {b"b"}


@pytest.mark.parametrize("request_", [
    BranchRequest(0, 1, 0, (0,)),
    BranchRequest(0, 1, 3, (0,)),
    BranchRequest(0, 1, 1, (1,)),
    BranchRequest(0, 1, 2, (32,)),
    BranchRequest(0, 1, 1, None),
    BranchRequest(0, 1, "1", (0,)),
    SegmentRequest(0, 1, (1024,)),
    SegmentRequest(0, 1, (-1,)),
    SegmentRequest(0, 1, 5),
    "garbage",
])
def test_the_responder_refuses_bad_requests(request_):
    with pytest.raises(ExchangeError):
        respond(MerkleTree(), request_)


def test_messages_are_frozen():
    request = RootRequest(0, 0, MerkleTree().shape)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.step = 1
