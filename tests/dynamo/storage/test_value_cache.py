"""The value cache in front of SQLite reads: never a stale answer, bounded by bytes, and a read racing a
write cannot put the old value back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo.storage import Delete, Put
from dynamo.storage.sqlite import SqliteBackend
from dynamo.storage.value_cache import ENTRY_OVERHEAD_BYTES, MISSING, ValueCache

KEYS = [b"a", b"b", b"c", b"d", b"e"]
ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(min_size=1, max_size=300)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("get"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("reopen"), st.none(), st.none()),
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops, st.sampled_from([0, 500, 1 << 20]))
def test_reads_through_a_small_cache_match_the_writes(tmp_path_factory, steps, cache_bytes):
    """Whatever the budget (none, a few entries, everything), every get answers what was last written,
    also after reopening (the cache starts empty; the store keeps the data)."""
    path = tmp_path_factory.mktemp("vc") / "store.sqlite3"
    backend = SqliteBackend(path, value_cache_bytes=cache_bytes)
    model: dict[bytes, bytes] = {}
    try:
        for kind, key, blob in steps:
            if kind == "put":
                backend.write_batch([Put(1, b"bk", key, blob)])
                model[key] = blob
            elif kind == "delete":
                backend.write_batch([Delete(1, b"bk", key)])
                model.pop(key, None)
            elif kind == "get":
                assert backend.get(1, b"bk", key) == model.get(key)
            else:
                backend.close()
                backend = SqliteBackend(path, value_cache_bytes=cache_bytes)
            assert backend.values.bytes <= cache_bytes
        for key in KEYS:
            assert backend.get(1, b"bk", key) == model.get(key)
    finally:
        backend.close()


def test_hits_skip_the_database_and_a_failed_batch_changes_nothing(tmp_path):
    backend = SqliteBackend(tmp_path / "s.sqlite3")
    try:
        backend.write_batch([Put(3, b"b", b"k", b"v1")])
        assert backend.get(3, b"b", b"k") == b"v1" and backend.values.hits == 1  # cached by the write
        backend.write_batch([Put(3, b"b", b"gone", b"v"), Delete(3, b"b", b"gone")])
        backend.values.clear()
        assert backend.get(3, b"b", b"gone") is None and backend.values.misses == 1
        assert backend.get(3, b"b", b"gone") is None and backend.values.hits == 2  # "not stored" is cached too
        with pytest.raises(Exception):
            backend.write_batch([Put(3, b"b", b"k", b"v2"), Put(3, b"b", b"x", b"v")] + [object()])  # not bytes
        assert backend.get(3, b"b", b"k") == b"v1"
    finally:
        backend.close()


def test_a_fill_from_a_read_that_raced_a_write_is_dropped():
    cache = ValueCache(1 << 20)
    k, j = (0, b"b", b"k"), (0, b"b", b"j")
    value, generation = cache.lookup(k)  # a reader misses and goes to the database ...
    assert value is MISSING
    cache.written([(k, b"new")])         # ... while a write commits and updates the cache
    cache.filled(k, b"old", generation)  # the reader saw the old row: it must not win
    assert cache.lookup(k)[0] == b"new"
    value, generation = cache.lookup(j)
    cache.filled(j, b"fresh", generation)  # no write in between: remembered
    assert cache.lookup(j)[0] == b"fresh"


def test_least_recently_used_entries_leave_first_and_oversized_ones_never_enter():
    entry = ENTRY_OVERHEAD_BYTES + 2 + 10
    cache = ValueCache(3 * entry)
    cache.written([((0, b"b", k), b"0123456789") for k in (b"1", b"2", b"3")])
    cache.lookup((0, b"b", b"1"))                      # 1 is now the most recently used
    cache.written([((0, b"b", b"4"), b"0123456789")])  # evicts 2, the least recently used
    assert [cache.lookup((0, b"b", k))[0] is MISSING for k in (b"1", b"2", b"3", b"4")] == [False, True, False, False]
    cache.written([((0, b"b", b"5"), b"x" * 1000)])    # larger than the whole budget: not cached
    assert cache.lookup((0, b"b", b"5"))[0] is MISSING and cache.bytes <= 3 * entry
    with pytest.raises(ValueError):
        ValueCache(-1)


def test_a_key_never_stored_is_answered_without_a_query_and_stored_keys_survive_reopening(tmp_path):
    path = tmp_path / "s.sqlite3"
    backend = SqliteBackend(path, value_cache_bytes=0)  # no cache: every "maybe" is a query
    try:
        backend.write_batch([Put(1, b"b", b"k", b"v"), Put(2, b"b", b"k", b"w")])
        assert backend.get(1, b"b", b"new") is None and backend.keys.skipped == 1
        assert backend.get(3, b"b", b"k") is None and backend.keys.skipped == 2  # same key, other partition
        assert backend.get(1, b"b", b"k") == b"v" and backend.keys.skipped == 2
        backend.close()
        backend = SqliteBackend(path, value_cache_bytes=0)  # the set is loaded from the store at open
        assert backend.get(1, b"b", b"k") == b"v" and backend.get(2, b"b", b"k") == b"w"
        assert backend.get(1, b"b", b"new") is None and backend.keys.skipped == 1
        assert len(backend.keys) == 2
    finally:
        backend.close()


def test_the_key_set_covers_a_batch_before_it_commits(tmp_path):
    """A reader racing a commit must never be told "not stored" about a key the commit makes visible:
    the key joins the set before the batch is written."""
    backend = SqliteBackend(tmp_path / "s.sqlite3", value_cache_bytes=0)
    seen_at_commit = []

    class CommitSpy:  # the writer connection, noting what a reader would be told as COMMIT runs
        def __init__(self, conn):
            self.conn = conn

        def __getattr__(self, name):
            return getattr(self.conn, name)

        def execute(self, sql, *args):
            if sql == "COMMIT":
                seen_at_commit.append(backend.keys.may_hold((1, b"b", b"k")))
            return self.conn.execute(sql, *args)

    try:
        backend._writer = CommitSpy(backend._writer)
        backend.write_batch([Put(1, b"b", b"k", b"v")])
        assert seen_at_commit == [True]
        assert backend.get(1, b"b", b"k") == b"v"
    finally:
        backend._writer = backend._writer.conn
        backend.close()
