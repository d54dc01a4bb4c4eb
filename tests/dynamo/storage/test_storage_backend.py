"""The storage interface's contract, checked against every backend (the `backend` fixture is parametrised)."""

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo.storage import (
    Delete,
    Hint,
    HintAdd,
    HintRemove,
    InvalidOperationError,
    Put,
    StorageClosedError,
)


def test_get_missing_is_none(backend):
    assert backend.get(0, b"b", b"k") is None
    assert backend.count() == 0
    assert backend.partitions() == set()
    assert list(backend.iterate(0)) == []


def test_put_overwrite_delete(backend):
    backend.write_batch([Put(3, b"b", b"k", b"one")])
    assert backend.get(3, b"b", b"k") == b"one"
    backend.write_batch([Put(3, b"b", b"k", b"two")])
    assert backend.get(3, b"b", b"k") == b"two"
    assert backend.count(3) == 1
    backend.write_batch([Delete(3, b"b", b"k")])
    assert backend.get(3, b"b", b"k") is None
    assert backend.count() == 0
    backend.write_batch([Delete(3, b"b", b"k"), Delete(0, b"never", b"there")])  # deleting the absent: no-op
    assert backend.count() == 0


def test_later_op_in_a_batch_wins(backend):
    backend.write_batch([Put(0, b"b", b"k", b"a"), Put(0, b"b", b"k", b"b")])
    assert backend.get(0, b"b", b"k") == b"b"
    backend.write_batch([Put(0, b"b", b"k", b"c"), Delete(0, b"b", b"k")])
    assert backend.get(0, b"b", b"k") is None
    backend.write_batch([Delete(0, b"b", b"k"), Put(0, b"b", b"k", b"d")])
    assert backend.get(0, b"b", b"k") == b"d"
    assert backend.count(0) == 1


def test_iterate_one_partition_in_key_order(backend):
    rng = random.Random(7)
    names = [(bytes([rng.randrange(4)]) * rng.randrange(3), os.urandom(rng.randrange(6))) for _ in range(300)]
    ops = [Put(i % 3, bucket, key, b"%d" % i) for i, (bucket, key) in enumerate(names)]
    rng.shuffle(ops)
    backend.write_batch(ops)
    model = {}
    for op in ops:
        model[op.partition, op.bucket, op.key] = op.blob
    for partition in range(3):
        expected = sorted((b, k, blob) for (p, b, k), blob in model.items() if p == partition)
        assert list(backend.iterate(partition)) == expected
        assert list(backend.iterate(partition, page_rows=7)) == expected
        assert backend.count(partition) == len(expected)
    assert list(backend.iterate(3)) == []


def test_iterate_is_resumable(backend):
    backend.write_batch([Put(1, b"b", b"%03d" % i, b"v%d" % i) for i in range(50)])
    backend.write_batch([Put(2, b"b", b"%03d" % i, b"other") for i in range(50, 60)])
    pages, after = [], None
    while True:
        page = list(backend.iterate(1, after=after, limit=8))
        assert len(page) <= 8
        if not page:
            break
        pages.append(page)
        after = page[-1][:2]
    assert [len(p) for p in pages] == [8] * 6 + [2]
    assert [row for page in pages for row in page] == list(backend.iterate(1))
    assert list(backend.iterate(1, after=(b"b", b"047"))) == [(b"b", b"%03d" % i, b"v%d" % i) for i in (48, 49)]
    assert list(backend.iterate(1, after=(b"b", b"0475"))) == [(b"b", b"%03d" % i, b"v%d" % i) for i in (48, 49)]
    assert list(backend.iterate(1, limit=0)) == []
    assert list(backend.iterate(1, after=(b"c", b""))) == []


def test_order_is_bytewise_bucket_then_key(backend):
    names = [(b"a", b"z"), (b"a\x00", b""), (b"", b"\xff"), (b"", b""), (b"a", b"\x80"), (b"a", b"\x7f"),
             (b"a", b""), (b"b", b"a"), (b"a", b"z\x00")]
    backend.write_batch([Put(0, b, k, b + b"|" + k) for b, k in names])
    assert [(b, k) for b, k, _ in backend.iterate(0)] == sorted(names)
    assert sorted(names)[:3] == [(b"", b""), (b"", b"\xff"), (b"a", b"")]


def test_empty_and_arbitrary_bytes_round_trip(backend):
    """Empty buckets and keys are allowed here (storage is a byte map; the API layer rejects empty keys)."""
    names = [(b"", b""), (b"", b"k"), (b"b", b""), (b"\x00", b"\x00\x00"),
             (bytes(range(256)), bytes(range(255, -1, -1)))]
    backend.write_batch([Put(5, b, k, b"<%d>" % i + b + k) for i, (b, k) in enumerate(names)])
    for i, (b, k) in enumerate(names):
        assert backend.get(5, b, k) == b"<%d>" % i + b + k
    assert backend.get(5, b"\x00", b"\x00") is None  # NULs are data, not terminators
    assert backend.count(5) == len(names)
    backend.write_batch([Put(5, b"e", b"empty-blob", b"")])
    assert backend.get(5, b"e", b"empty-blob") == b""


def test_large_blob(backend):
    blob = os.urandom(3 * 1024 * 1024 + 17)
    backend.write_batch([Put(9, b"big", b"k", blob), Put(9, b"big", b"small", b"x")])
    assert backend.get(9, b"big", b"k") == blob
    assert list(backend.iterate(9)) == [(b"big", b"k", blob), (b"big", b"small", b"x")]


def test_counts_and_partitions(backend):
    backend.write_batch([Put(p, b"b", b"k%d-%d" % (p, i), b"v") for p in (0, 4, 255) for i in range(p % 7 + 1)])
    assert backend.partitions() == {0, 4, 255}
    assert [backend.count(p) for p in (0, 4, 255, 1)] == [1, 5, 4, 0]
    assert backend.count() == 10
    backend.write_batch([Delete(0, b"b", b"k0-0")])
    assert backend.partitions() == {4, 255}


def test_objects_are_keyed_by_partition_too(backend):
    """The node always stores a key under its one partition; the store does not look across partitions."""
    backend.write_batch([Put(1, b"b", b"k", b"old")])
    backend.write_batch([Put(2, b"b", b"k", b"new")])
    assert backend.get(1, b"b", b"k") == b"old" and backend.get(2, b"b", b"k") == b"new"
    assert backend.count(1) == 1 and backend.count(2) == 1 and backend.count() == 2
    backend.write_batch([Delete(1, b"b", b"k")])
    assert list(backend.iterate(2)) == [(b"b", b"k", b"new")]
    assert backend.partitions() == {2}


@pytest.mark.parametrize("make_op", [
    lambda: Put(0, "bucket", b"k", b"v"),
    lambda: Put(0, b"b", bytearray(b"k"), b"v"),
    lambda: Put(0, b"b", b"k", None),
    lambda: Put(-1, b"b", b"k", b"v"),
    lambda: Put(True, b"b", b"k", b"v"),
    lambda: Put(2**63, b"b", b"k", b"v"),
    lambda: Delete(0, b"b", 3),
    lambda: Delete(b"b", b"k", b"x"),
    lambda: Hint(0, "n", 0, b"b", b"k", b"v", 0),
    lambda: Hint(1, "", 0, b"b", b"k", b"v", 0),
    lambda: Hint(1, b"n", 0, b"b", b"k", b"v", 0),
    lambda: Hint(1, "n\udc80", 0, b"b", b"k", b"v", 0),
    lambda: HintRemove(-2),
])
def test_bad_ops_are_rejected(make_op):
    with pytest.raises(InvalidOperationError):
        make_op()
    with pytest.raises(ValueError):  # InvalidOperationError is a ValueError
        make_op()


def test_a_bad_batch_applies_nothing(backend):
    with pytest.raises(InvalidOperationError):
        backend.write_batch([Put(0, b"b", b"k", b"v"), ("not", "an", "op")])
    with pytest.raises(InvalidOperationError):
        backend.write_batch(b"not a list of ops")
    assert backend.get(0, b"b", b"k") is None
    with pytest.raises(InvalidOperationError):
        backend.get(0, "b", b"k")
    with pytest.raises(InvalidOperationError):
        backend.get(-1, b"b", b"k")
    with pytest.raises(InvalidOperationError):
        list(backend.iterate(0, after=b"k"))
    with pytest.raises(InvalidOperationError):
        backend.iterate(0, limit=-1)
    with pytest.raises(InvalidOperationError):
        backend.hints(b"node")


def test_closed_backend_raises(backend):
    backend.write_batch([Put(0, b"b", b"k", b"v")])
    backend.close()
    backend.close()  # idempotent
    for call in (lambda: backend.get(0, b"b", b"k"), lambda: backend.write_batch([]), lambda: backend.count(),
                 lambda: backend.write_batch([Delete(0, b"b", b"k")]), lambda: list(backend.iterate(0)),
                 lambda: backend.hints("n")):
        with pytest.raises(StorageClosedError):
            call()


def test_reopen_keeps_everything(backend, reopen):
    hint = Hint(4, "node-b", 2, b"hb", b"hk", b"hv", 123)
    backend.write_batch([Put(2, b"b", b"k", b"v"), Put(3, b"b", b"k2", b"v2"), HintAdd(hint)])
    backend = reopen(backend)
    assert backend.get(2, b"b", b"k") == b"v"
    assert list(backend.iterate(3)) == [(b"b", b"k2", b"v2")]
    assert backend.hints("node-b") == [hint]
    assert backend.hint_id_max() == 4


# -- property: any sequence of batches matches a dict model ------------------------------------------

names_st = st.tuples(st.sampled_from([b"", b"b", b"b\x00"]), st.binary(max_size=2))
op_st = st.one_of(
    st.builds(lambda n, p, v: Put(p, n[0], n[1], v), names_st, st.integers(0, 3), st.binary(max_size=8)),
    st.builds(lambda n, p: Delete(p, *n), names_st, st.integers(0, 3)),
    st.builds(lambda i, t, n: HintAdd(Hint(i, t, 0, n[0], n[1], b"h%d" % i, i)), st.integers(1, 12),
              st.sampled_from(["n1", "n2"]), names_st),
    st.builds(HintRemove, st.integers(1, 12)),
)


def apply_to_model(objects, hints, op):
    if isinstance(op, Put):
        objects[op.partition, op.bucket, op.key] = op.blob
    elif isinstance(op, Delete):
        objects.pop((op.partition, op.bucket, op.key), None)
    elif isinstance(op, HintAdd):
        hints[op.hint.hint_id] = op.hint
    else:
        hints.pop(op.hint_id, None)


def check_against_model(backend, objects, hints):
    for name, blob in objects.items():
        assert backend.get(*name) == blob
    assert backend.count() == len(objects)
    assert backend.partitions() == {p for p, _, _ in objects}
    for partition in range(4):
        expected = sorted((b, k, blob) for (p, b, k), blob in objects.items() if p == partition)
        assert list(backend.iterate(partition, page_rows=3)) == expected
        assert backend.count(partition) == len(expected)
    for target in ("n1", "n2"):
        assert backend.hints(target) == sorted((h for h in hints.values() if h.target == target),
                                               key=lambda h: h.hint_id)
    counts = {}
    for hint in hints.values():
        counts[hint.target] = counts.get(hint.target, 0) + 1
    assert backend.hint_counts() == counts
    assert backend.hint_id_max() == max(hints, default=0)
    hinted = {(h.bucket, h.key) for h in hints.values()}
    for bucket, key in hinted | {(b, k) for _, b, k in objects}:
        assert backend.has_hint(bucket, key) == ((bucket, key) in hinted)


def clear(backend):
    """Empty the store in one batch (cheaper than a new SQLite file per Hypothesis example)."""
    ops = [Delete(p, b, k) for p in backend.partitions() for b, k, _ in backend.iterate(p)]
    ops += [HintRemove(h.hint_id) for target in backend.hint_counts() for h in backend.hints(target)]
    backend.write_batch(ops)
    assert backend.count() == 0 and backend.hint_counts() == {}


@pytest.fixture
def shared_backend(make_backend):
    return make_backend()


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(op_st, max_size=8), max_size=6))
def test_batches_match_a_dict_model(shared_backend, batches):
    backend = shared_backend
    clear(backend)
    objects, hints = {}, {}
    for ops in batches:
        backend.write_batch(ops)
        for op in ops:
            apply_to_model(objects, hints, op)
        for name in {(op.partition, op.bucket, op.key) for op in ops if isinstance(op, (Put, Delete))}:
            assert backend.get(*name) == objects.get(name)
    check_against_model(backend, objects, hints)
