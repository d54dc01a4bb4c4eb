"""The stored object: contents and vtags, tombstones, last-write-wins, the encoding and the digest."""

import cbor2
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dynamo.causality import CausalityDecodeError, Ordering, VersionVector, compare, less_or_equal
from dynamo.object import (
    DIGEST_BYTES,
    Content,
    ContentError,
    ObjectDecodeError,
    StoredObject,
    blob_digest,
    blob_has_live_sibling,
    decode_object,
    delete,
    encode_object,
    last_write_wins,
    merge,
    merge_all,
    newest,
    object_digest,
    put,
)

NODES = ("a", "b", "c")

content_st = st.builds(
    Content,
    value=st.binary(max_size=12),
    content_type=st.sampled_from(["application/octet-stream", "text/plain", "application/json"]),
    last_modified_us=st.integers(0, 50),  # small: equal timestamps (ties) happen often
    metadata=st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4)), max_size=3).map(tuple),
    deleted=st.booleans(),
)
op_st = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(NODES), st.none() | st.sampled_from(NODES), content_st),
    st.tuples(st.just("merge"), st.sampled_from(NODES), st.sampled_from(NODES)),
)
ops_st = st.lists(op_st, min_size=1, max_size=25)


def run(ops, lww=False):
    """Apply ops to three replicas; a put's context is a read of `context_node` just before (or none).
    Returns the replicas, every object produced, and per replica the contents it has seen."""
    replicas, produced, seen = dict.fromkeys(NODES), [], {node: set() for node in NODES}
    for op in ops:
        if op[0] == "put":
            _, node, context_node, content = op
            source = replicas[context_node] if context_node else None
            context = source.context() if source else None
            replicas[node] = put(replicas[node], content, context, node, lww=lww)
            seen[node] = seen[node] | {content}  # a context names versions; it does not bring their contents
            produced.append(replicas[node])
        else:
            _, x, y = op
            merged = merge_all([replicas[x], replicas[y]])
            replicas[x] = replicas[y] = merged
            seen[x] = seen[y] = seen[x] | seen[y]
            if merged is not None:
                produced.append(merged)
    return replicas, produced, seen


def lww_key(content):
    return (content.last_modified_us, content.deleted, content.value, content.content_type, content.metadata)


# ---- content ----------------------------------------------------------------------------------------------


def test_content_keeps_metadata_sorted_and_rejects_bad_fields():
    content = Content(b"v", metadata={"b": "2", "a": "1"})
    assert content.metadata == (("a", "1"), ("b", "2"))
    assert Content(b"v", metadata=[["b", "2"], ("a", "1")]) == content
    bad = [dict(value="text"), dict(value=bytearray(b"x")), dict(value=b"", content_type=None),
           dict(value=b"", last_modified_us=-1), dict(value=b"", last_modified_us=1.5),
           dict(value=b"", deleted=1), dict(value=b"", metadata=(("a",),)), dict(value=b"", metadata="ab"),
           dict(value=b"", metadata=((1, "x"),))]
    for fields in bad:
        with pytest.raises(ContentError):
            Content(**fields)
    assert issubclass(ContentError, ValueError)
    tomb = Content.tombstone(7)
    assert tomb.deleted and tomb.value == b"" and tomb.last_modified_us == 7


@given(content_st, content_st)
def test_vtag_is_short_deterministic_and_tells_contents_apart(x, y):
    rebuilt = Content(x.value, x.content_type, x.last_modified_us, x.metadata, x.deleted)
    assert rebuilt.vtag == x.vtag and x.vtag.isalnum() and x.vtag.isascii() and len(x.vtag) <= 17
    assert (x.vtag == y.vtag) == (x == y)


# ---- puts, merges, tombstones -----------------------------------------------------------------------------


def test_put_replaces_what_the_context_saw_and_keeps_the_rest():
    one = put(None, Content(b"1", last_modified_us=1), None, "a")
    two = put(one, Content(b"2", last_modified_us=2), None, "b")  # blind: a sibling
    assert [c.value for c in two.siblings] == [b"1", b"2"]
    three = put(two, Content(b"3", last_modified_us=3), one.context(), "a")  # saw only "1"
    assert [c.value for c in three.siblings] == [b"3", b"2"]  # dot order: ("a", 2) before ("b", 1)
    four = put(three, Content(b"4"), three.context(), "c")
    assert [c.value for c in four.siblings] == [b"4"]
    assert three.sibling(three.siblings[1].vtag) == three.siblings[1] and three.sibling("nope") is None
    assert merge(two, four) == merge(four, two) == four and merge_all([None, None]) is None
    assert StoredObject().is_empty and not four.is_empty


def test_tombstones():
    live = put(None, Content(b"x", last_modified_us=1), None, "a")
    gone = delete(live, live.context(), "b", 2)
    assert gone.is_tombstone and gone.live_siblings == () and len(gone.siblings) == 1
    concurrent = merge(gone, put(live, Content(b"y"), live.context(), "a"))  # a write the delete never saw
    assert not concurrent.is_tombstone and [c.value for c in concurrent.live_siblings] == [b"y"]
    revived = put(gone, Content(b"z"), gone.context(), "c")
    assert not revived.is_tombstone and [c.value for c in revived.siblings] == [b"z"]
    assert not StoredObject().is_tombstone
    both_deleted = merge(delete(live, live.context(), "a", 3), gone)
    assert both_deleted.is_tombstone and len(both_deleted.siblings) == 2


def test_bad_arguments():
    with pytest.raises(ContentError):
        put(None, b"raw bytes", None, "a")
    with pytest.raises(ContentError):
        StoredObject("not a clock")
    with pytest.raises(ContentError):
        object_digest("bucket", b"key", StoredObject())


# ---- last write wins --------------------------------------------------------------------------------------


@given(ops_st)
def test_last_write_wins_keeps_the_newest_and_advances_the_clock(ops):
    replicas, _, seen = run(ops, lww=True)
    for node in NODES:
        held = replicas[node]
        if held is None:
            continue
        assert newest(held) == max(seen[node], key=lww_key)
        collapsed = last_write_wins(held, node)
        assert collapsed.siblings == (newest(held),)
        if len(held.siblings) > 1:
            assert compare(held.clock, collapsed.clock) is Ordering.BEFORE  # a new event: every node learns of it
        else:
            assert collapsed is held
    everyone = merge_all(replicas.values())
    if everyone is not None:
        assert newest(everyone) == max(set().union(*seen.values()), key=lww_key)


@given(ops_st, content_st)
def test_lww_put_leaves_one_sibling_whatever_the_context(ops, content):
    replicas, _, _ = run(ops)  # a causal history, siblings and all
    for node in NODES:
        result = put(replicas[node], content, VersionVector(), node, lww=True)
        candidates = (replicas[node].siblings if replicas[node] else ()) + (content,)
        assert result.siblings == (max(candidates, key=lww_key),)
        if replicas[node] is not None:
            assert less_or_equal(replicas[node].clock, result.clock) and result != replicas[node]


def test_lww_ties_break_the_same_way_in_any_order_and_deletes_win_them():
    x, y = Content(b"x", last_modified_us=5), Content(b"y", last_modified_us=5)
    first = put(put(None, x, None, "a", lww=True), y, None, "a", lww=True)
    second = put(put(None, y, None, "a", lww=True), x, None, "a", lww=True)
    assert first.siblings == second.siblings == (y,)
    older = put(first, Content(b"old", last_modified_us=1), None, "b", lww=True)
    assert older.siblings == (y,) and older.context().get("b") == 1
    tomb = delete(first, None, "b", 5, lww=True)
    assert tomb.is_tombstone


# ---- encoding ---------------------------------------------------------------------------------------------


@given(ops_st)
def test_objects_round_trip(ops):
    _, produced, _ = run(ops)
    for obj in produced:
        decoded = decode_object(encode_object(obj))
        assert decoded == obj and object_digest(b"b", b"k", decoded) == object_digest(b"b", b"k", obj)
        assert decode_object(encode_object(obj), trusted=True) == obj
    assert decode_object(encode_object(StoredObject())) == StoredObject()
    assert decode_object(encode_object(StoredObject()), trusted=True) == StoredObject()


@given(ops_st)
def test_a_blob_digest_and_liveness_are_those_of_the_object_it_encodes(ops):
    _, produced, _ = run(ops)
    for obj in produced + [StoredObject()]:
        assert blob_digest(b"b", b"k", encode_object(obj)) == (object_digest(b"b", b"k", obj), obj.is_tombstone)
        assert blob_has_live_sibling(encode_object(obj)) == bool(obj.live_siblings)


@pytest.mark.parametrize("blob", [b"", b"\x01", cbor2.dumps({"s": 1, "v": 1}), cbor2.dumps({"s": {"e": [[1]]}})])
def test_a_blob_digest_of_something_else_is_an_object_decode_error(blob):
    with pytest.raises(ObjectDecodeError):
        blob_digest(b"b", b"k", blob)
    with pytest.raises(ObjectDecodeError):
        blob_has_live_sibling(blob)


@given(st.binary())
def test_garbage_never_decodes_to_another_object(data):
    try:
        decoded = decode_object(data)
    except ObjectDecodeError:
        return
    assert encode_object(decoded) == data


@given(st.binary())
def test_trusted_decoding_of_garbage_gives_an_object_error_or_a_valid_object(data):
    try:
        decoded = decode_object(data, trusted=True)
    except ObjectDecodeError:
        return
    assert decode_object(encode_object(decoded)) == decoded  # whatever it accepted is a real object


@given(ops_st, st.integers(0), st.integers(0, 255))
def test_mutated_encodings_are_rejected_or_exact(ops, index, byte):
    _, produced, _ = run(ops)
    assume(produced)
    encoded = encode_object(produced[-1])
    index %= len(encoded)
    mutants = [encoded[:index] + bytes([byte]) + encoded[index + 1:], encoded[:index] + encoded[index + 1:],
               encoded[:index] + bytes([byte]) + encoded[index:], encoded[:index]]
    for mutated in mutants:
        try:
            decoded = decode_object(mutated)
        except ObjectDecodeError:
            continue
        assert encode_object(decoded) == mutated


def raw_object(content, version=1):
    return cbor2.dumps({"v": version, "s": {"v": 1, "e": [["a", 1, [content]]]}}, canonical=True)


GOOD = [b"v", "text/plain", 5, [["a", "1"], ["b", "2"]], False]
BAD_OBJECTS = [
    raw_object(GOOD, version=2),
    raw_object(GOOD[:4]),
    raw_object([b"v", "text/plain", 5, [["b", "2"], ["a", "1"]], False]),  # metadata not sorted
    raw_object([b"v", "text/plain", 5, [["a"]], False]),
    raw_object([b"v", "text/plain", 5, {"a": "1"}, False]),
    raw_object(["v", "text/plain", 5, [], False]),
    raw_object([b"v", "text/plain", -5, [], False]),
    raw_object([b"v", "text/plain", 5, [], 0]),
    raw_object([b"v", 7, 5, [], False]),
    cbor2.dumps({"v": 1, "s": {"v": 1, "e": [["a", 1, [GOOD, GOOD]]]}}, canonical=True),  # 2 values, 1 event
    cbor2.dumps({"v": 1, "e": []}, canonical=True),
    cbor2.dumps({"v": 1, "s": []}, canonical=True),
    raw_object(GOOD) + b"\x00",
    b"",
]


@pytest.mark.parametrize("data", BAD_OBJECTS)
def test_structurally_wrong_objects_are_rejected(data):
    with pytest.raises(ObjectDecodeError):
        decode_object(data)


@pytest.mark.parametrize("data", BAD_OBJECTS)
def test_trusted_decoding_still_checks_every_field(data):
    with pytest.raises(ObjectDecodeError):
        decode_object(data, trusted=True)


def test_trusted_decoding_skips_only_the_canonical_form_check():
    canonical = raw_object(GOOD)
    keys_unsorted = cbor2.dumps({"v": 1, "s": {"v": 1, "e": [["a", 1, [GOOD]]]}})  # "v" before "s"
    long_int = canonical.replace(b"\x05", b"\x18\x05", 1)  # last_modified 5 written in two bytes
    for non_canonical in (keys_unsorted, long_int):
        assert non_canonical != canonical
        with pytest.raises(ObjectDecodeError, match="canonical"):
            decode_object(non_canonical)
        assert decode_object(non_canonical, trusted=True) == decode_object(canonical)


def test_the_good_raw_object_decodes_and_errors_nest():
    obj = decode_object(raw_object(GOOD))
    assert obj.siblings == (Content(b"v", "text/plain", 5, (("a", "1"), ("b", "2"))),)
    assert issubclass(ObjectDecodeError, CausalityDecodeError)


# ---- digest -----------------------------------------------------------------------------------------------


def other_values(ops):
    """The same history with every content changed: same dots, different values."""
    return [op if op[0] == "merge" else op[:3] + (Content(op[3].value + b"!", "x/y", 99, (), not op[3].deleted),)
            for op in ops]


def causal_state(obj):
    return [(e.actor, e.counter, len(e.values)) for e in obj.clock.entries]


@given(ops_st)
def test_digest_depends_on_the_clock_not_the_values(ops):
    replicas, produced, _ = run(ops)
    twins, _, _ = run(other_values(ops))
    for node in NODES:
        if replicas[node] is not None:
            assert replicas[node] != twins[node]
            assert object_digest(b"b", b"k", replicas[node]) == object_digest(b"b", b"k", twins[node])
    for x in produced:
        digest = object_digest(b"b", b"k", x)
        assert len(digest) == DIGEST_BYTES
        for y in produced:
            assert (digest == object_digest(b"b", b"k", y)) == (causal_state(x) == causal_state(y))
            assert object_digest(b"b", b"k", merge(x, y)) == object_digest(b"b", b"k", merge(y, x))


def test_digest_depends_on_bucket_key_and_what_is_replaced():
    obj = put(None, Content(b"v"), None, "a")
    digests = {object_digest(b, k, obj) for b, k in [(b"a", b"bc"), (b"ab", b"c"), (b"a", b"bd"), (b"", b"abc")]}
    assert len(digests) == 4
    assert object_digest(b"a", b"b", obj) != object_digest(b"a", b"b", StoredObject())
    # same counters, but one copy knows the first write was replaced: anti-entropy must see a difference
    kept = put(obj, Content(b"w"), None, "a")
    replaced = put(obj, Content(b"w"), obj.context(), "a")
    assert kept.context() == replaced.context() and len(kept.siblings) == 2 and len(replaced.siblings) == 1
    assert object_digest(b"a", b"b", kept) != object_digest(b"a", b"b", replaced)
