"""Merkle tree: content alone decides every hash (build == any order of incremental updates), the levels
hold together (parent = XOR of children), segments list exactly their keys, and bad input fails clearly."""

import dataclasses
import functools
import operator
import random

import pytest
from hypothesis import given, strategies as st

from antientropy.merkle import HASH_BYTES, MerkleError, MerkleTree, TreeShape, segment_of

KEYS = st.binary(max_size=6)
DIGESTS = st.binary(min_size=1, max_size=4)
SHAPES = st.sampled_from([(2, 2), (8, 2), (16, 4), (64, 8), (128, 32), (1024, 32), (4096, 16)])


def snapshot(tree):
    """Everything observable about a tree, for comparing two of them."""
    levels = [tree.level(depth) for depth in range(tree.depth + 1)]
    segments = [tree.segment(s) for s in range(tree.shape.segments)]
    return tree.root, levels, segments, len(tree)


def xor(hashes):
    value = functools.reduce(operator.xor, (int.from_bytes(h, "big") for h in hashes), 0)
    return value.to_bytes(HASH_BYTES, "big")


@given(shape=SHAPES, ops=st.lists(st.tuples(KEYS, st.none() | DIGESTS), max_size=80), seed=st.integers(0, 99))
def test_incremental_updates_equal_a_rebuild_of_the_final_content(shape, ops, seed):
    tree, model = MerkleTree(*shape), {}
    for key, digest in ops:  # inserts, updates and removals, mixed
        if digest is None:
            if key in model:
                assert tree.remove(key) == model.pop(key)
        else:
            assert tree.put(key, digest) == model.get(key)
            model[key] = digest
    tree.check_invariants()
    pairs = sorted(model.items())
    assert snapshot(tree) == snapshot(MerkleTree.build(pairs, *shape))
    random.Random(seed).shuffle(pairs)  # and the same content inserted in another order
    other = MerkleTree(*shape)
    for key, digest in pairs:
        other.insert(key, digest)
    assert snapshot(other) == snapshot(tree)


@given(shape=SHAPES, content=st.dictionaries(KEYS, DIGESTS, max_size=60), seed=st.integers(0, 99))
def test_build_ignores_input_order(shape, content, seed):
    pairs = list(content.items())
    random.Random(seed).shuffle(pairs)
    assert snapshot(MerkleTree.build(pairs, *shape)) == snapshot(MerkleTree.build(sorted(pairs), *shape))


@given(shape=SHAPES, content=st.dictionaries(KEYS, DIGESTS, min_size=1, max_size=60))
def test_levels_hold_together_and_segments_list_their_keys(shape, content):
    tree = MerkleTree.build(content.items(), *shape)
    assert [len(tree.level(d)) for d in range(tree.depth + 1)] == list(tree.shape.widths)
    for depth in range(tree.depth):
        parents = tree.level(depth)
        for index, parent in enumerate(parents):
            assert parent == xor(tree.children_hashes(depth, [index]))
        assert tree.children_hashes(depth, range(len(parents))) == tree.level(depth + 1)
    listed = {}
    for s in range(tree.shape.segments):
        entries = tree.segment(s)
        assert entries == sorted(entries)
        assert all(segment_of(key, tree.shape.segments) == s for key, _ in entries)
        assert tree.segment_size(s) == len(entries)
        listed.update(entries)
    assert listed == content and len(tree) == len(content)
    assert sorted(tree.items()) == sorted(content.items())


@given(shape=SHAPES, content=st.dictionaries(KEYS, DIGESTS, min_size=1, max_size=40), data=st.data())
def test_any_single_change_moves_the_root_and_undoing_it_restores_it(shape, content, data):
    tree = MerkleTree.build(content.items(), *shape)
    before = snapshot(tree)
    key = data.draw(st.sampled_from(sorted(content)))
    new = data.draw(DIGESTS.filter(lambda d: d != content[key]))
    tree.update(key, content[key], new)
    assert tree.root != before[0]
    assert tree.get(key) == new
    tree.update(key, new, content[key])
    assert snapshot(tree) == before
    tree.remove(key)
    assert tree.root != before[0] and key not in tree


def test_shapes_and_an_empty_tree():
    assert TreeShape().widths == (1, 32, 1024)
    assert TreeShape(1 << 16, 32).widths == (1, 2, 64, 2048, 1 << 16)  # the narrow level sits under the root
    assert TreeShape(2, 32).widths == (1, 2)
    assert TreeShape(256, 16).depth == 2
    tree = MerkleTree()
    assert len(tree) == 0 and tree.root == bytes(HASH_BYTES) and tree.segment(5) == []
    tree.insert(b"k", b"d")
    tree.remove(b"k")
    assert tree.root == bytes(HASH_BYTES)
    tree.check_invariants()


def test_key_and_digest_boundaries_do_not_collide():
    # "ab" + "c" and "a" + "bc" concatenate alike; the length prefix must tell them apart.
    one, two = MerkleTree(2, 2), MerkleTree(2, 2)
    one.insert(b"ab", b"c")
    two.insert(b"a", b"bc")
    assert one.root != two.root


def test_changes_that_disagree_with_the_tree_are_refused_and_leave_it_intact():
    tree = MerkleTree.build([(b"a", b"1"), (b"b", b"2")])
    before = snapshot(tree)
    with pytest.raises(MerkleError, match="holds digest"):
        tree.insert(b"a", b"9")
    with pytest.raises(MerkleError, match="holds digest"):
        tree.update(b"a", b"wrong", b"3")
    with pytest.raises(MerkleError, match="holds digest"):
        tree.update(b"zz", b"1", None)
    with pytest.raises(MerkleError, match="not in the tree"):
        tree.remove(b"zz")
    tree.update(b"a", b"1", b"1")  # no change is a no-op, not an error
    assert snapshot(tree) == before


@pytest.mark.parametrize("segments, fanout", [(1000, 32), (1, 32), (0, 32), (1024, 1), (1024, 3), (True, 32),
                                              (1024, 2.0), ("1024", 32), (1 << 25, 32)])
def test_bad_shapes_are_refused(segments, fanout):
    with pytest.raises(MerkleError):
        MerkleTree(segments, fanout)


def test_bad_hash_version_is_refused():
    with pytest.raises(MerkleError, match="hash version"):
        dataclasses.replace(TreeShape(), hash_version=99)


@pytest.mark.parametrize("call", [
    lambda t: t.insert("text", b"d"),
    lambda t: t.insert(b"k", "text"),
    lambda t: t.insert(b"k", None),
    lambda t: t.put(b"k", 5),
    lambda t: t.update(b"k", None, bytearray(b"d")),
    lambda t: t.get(7),
    lambda t: t.level(-1),
    lambda t: t.level(3),
    lambda t: t.level(True),
    lambda t: t.children_hashes(2, [0]),
    lambda t: t.children_hashes(1, [32]),
    lambda t: t.children_hashes(0, [-1]),
    lambda t: t.children_hashes(0, ["0"]),
    lambda t: t.segment(1024),
    lambda t: t.segment(-1),
    lambda t: t.segment(None),
])
def test_misuse_raises_a_value_error_with_a_message(call):
    tree = MerkleTree()
    with pytest.raises(MerkleError) as caught:
        call(tree)
    assert isinstance(caught.value, ValueError) and str(caught.value)


@pytest.mark.parametrize("pairs, message", [
    ([(b"a", b"1"), (b"a", b"1")], "twice"),
    ([(b"a", b"1", b"extra")], "pairs"),
    ([b"ab"], "pairs"),
    ([5], "pairs"),
    ([("a", b"1")], "bytes"),
    ([(b"a", None)], "bytes"),
])
def test_bad_build_input_is_refused(pairs, message):
    with pytest.raises(MerkleError, match=message):
        MerkleTree.build(pairs)
