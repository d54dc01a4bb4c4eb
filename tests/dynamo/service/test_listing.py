"""Listing keys and buckets: one partition's scan (any rows, any page size), and coverage over the ring."""

from __future__ import annotations

import contextlib
import logging
import types

import pytest
import trio
import trio.testing
from hypothesis import example, given, settings, strategies as st

from dynamo.object import Content, delete, encode_object, put
from dynamo.rpc import RpcTimeout, RpcUnavailable
from dynamo.service import listing as listing_module
from dynamo.service.listing import CoverageError, Listing
from dynamo.storage import MemoryBackend
from dynamo.storage.backend import Put
from ring.preflist import Preflist, Replica

WRITTEN = put(None, Content(b"v", "text/plain", 1, (), False), None, "n1")
LIVE = encode_object(WRITTEN)
TOMBSTONE = encode_object(delete(WRITTEN, WRITTEN.context(), "n1", 2))  # a delete of what was read

names = st.binary(min_size=1, max_size=3)
rows = st.lists(st.tuples(names, names, st.booleans()), max_size=40)


class FakeRegistry:
    """Every bucket has n_val 3, except those given."""

    def __init__(self, n_vals=None):
        self.n_vals = n_vals or {}
        self.defaults = types.SimpleNamespace(n_val=3)

    def get(self, bucket):
        return types.SimpleNamespace(n_val=self.n_vals.get(bucket, 3))

    def items(self):
        return [(bucket, types.SimpleNamespace(props=self.get(bucket))) for bucket in sorted(self.n_vals)]


def listing_over(backend, membership=None, pool=None, node_id="n1", registry=None) -> Listing:
    return Listing(node_id, backend, membership, registry or FakeRegistry(), pool, 1.0, logging.getLogger("test"))


async def all_of(listing, bucket, partition):
    """What `local` lists of a partition, ask after ask; checks every answer moves the cursor on."""
    names, cursor, asks = [], None, 0
    while True:
        found, after = await listing.local(bucket, partition, cursor)
        names += found
        asks += 1
        if after is None:
            return names, asks
        assert cursor is None or after > cursor
        cursor = after


@contextlib.contextmanager
def sizes(page_rows, ask_rows, ask_bytes=1 << 20):
    saved = listing_module.PAGE_ROWS, listing_module.ASK_ROWS, listing_module.ASK_BYTES
    listing_module.PAGE_ROWS, listing_module.ASK_ROWS, listing_module.ASK_BYTES = page_rows, ask_rows, ask_bytes
    try:
        yield
    finally:
        listing_module.PAGE_ROWS, listing_module.ASK_ROWS, listing_module.ASK_BYTES = saved


def stored(partition_rows: dict[int, list[tuple[bytes, bytes, bool]]]) -> MemoryBackend:
    backend = MemoryBackend()
    ops = [Put(partition, bucket, key, LIVE if live else TOMBSTONE)
           for partition, entries in partition_rows.items() for bucket, key, live in entries]
    if ops:
        backend.write_batch(ops)
    return backend


@settings(max_examples=200, deadline=None)
@given(rows, st.integers(1, 5), st.integers(1, 4), st.sampled_from([1, 2, 5, 1 << 20]), names)
@example([(b"a", b"k", False), (b"a", b"l", True), (b"b", b"k", False), (b"c", b"k", True)], 1, 1, 1 << 20, b"a")
@example([(b"a", b"k", True), (b"a", b"l", True), (b"b", b"k", True), (b"c", b"k", True)], 5, 4, 1, b"a")
def test_a_partitions_scan_lists_its_live_keys_and_buckets_whatever_the_page_and_answer_size(
        entries, page_rows, pages_per_ask, ask_bytes, bucket):
    latest = {(b, k): live for b, k, live in entries}  # a later write of a key replaces the earlier
    listing = listing_over(stored({7: entries}))
    with sizes(page_rows, page_rows * pages_per_ask, ask_bytes):
        keys, key_asks = trio.run(all_of, listing, bucket, 7)
        buckets, _ = trio.run(all_of, listing, None, 7)
        assert trio.run(all_of, listing, bucket, 8) == ([], 1) and trio.run(all_of, listing, None, 8) == ([], 1)
    assert keys == sorted(k for (b, k), live in latest.items() if b == bucket and live)
    assert buckets == sorted({b for (b, _), live in latest.items() if live})
    rows_of_bucket = sum(1 for b, _ in latest if b == bucket)
    if ask_bytes == 1 << 20:  # bounded by rows only: answers are as full as allowed
        assert key_asks <= rows_of_bucket // (page_rows * pages_per_ask) + 1
    else:  # each answer but the last carries at least ask_bytes of names
        assert key_asks <= sum(len(k) for k in keys) // ask_bytes + rows_of_bucket // (page_rows * pages_per_ask) + 1


class FakeRing:
    """Partition p's primaries are nodes p, p+1, p+2 (mod 4) of n0..n3."""

    def __init__(self, down=(), partitions=4):
        self.down, self.partitions = frozenset(down), partitions

    def preflist(self, partition, n_val):
        primaries = tuple(Replica(f"n{(partition + i) % 4}", (partition + i) % 4) for i in range(n_val))
        return Preflist(partition, n_val, primaries, (), self.down)


def cluster_listing(node_stores, down=(), unreachable=(), hung=(), partitions=4, answers_before_failing=None,
                    registry=None):
    """A Listing on n0 whose peers answer from `node_stores` (node -> backend) through their own kv.list,
    except `unreachable` (refused at once) and `hung` (no answer before the call's timeout); a node in
    `answers_before_failing` (node -> count) is unreachable after that many answers."""
    asked = []
    answers_left = dict(answers_before_failing or {})

    async def call(node, type_, body, timeout_s):
        assert type_ == listing_module.LIST_TYPE
        asked.append((node, body[1]))
        if node in unreachable or answers_left.get(node, 1) == 0:
            raise RpcUnavailable(f"{node} is gone")
        if node in hung:
            await trio.sleep(timeout_s)
            raise RpcTimeout(f"no reply from {node}")
        if node in answers_left:
            answers_left[node] -= 1
        return await listing_over(node_stores[node], membership).rpc_list(body)
    ring = FakeRing(down, partitions)
    membership = types.SimpleNamespace(ring=ring, preflist=ring.preflist)
    listing = listing_over(node_stores["n0"], membership, types.SimpleNamespace(call=call), "n0", registry)
    return listing, asked


def replicated(rows_by_partition):
    """Each node's store holding the partitions it is a primary of (FakeRing's)."""
    return {f"n{node}": stored({p: entries for p, entries in rows_by_partition.items()
                                if node in {p % 4, (p + 1) % 4, (p + 2) % 4}}) for node in range(4)}


ROWS = {0: [(b"a", b"k0", True), (b"b", b"x", False)], 1: [(b"a", b"k1", True)], 2: [(b"b", b"y", True)],
        3: [(b"a", b"k3", True), (b"a", b"gone", False)]}


def test_coverage_asks_every_partition_once_and_joins_the_answers():
    listing, asked = cluster_listing(replicated(ROWS))
    assert trio.run(listing.keys, b"a") == [b"k0", b"k1", b"k3"]
    assert sorted(asked) == [("n1", 1), ("n2", 2), ("n3", 3)]  # partition 0 from n0's own store
    assert trio.run(listing.buckets) == [b"a", b"b"]


def test_a_down_or_silent_primary_is_replaced_by_the_next_one():
    listing, asked = cluster_listing(replicated(ROWS), down={"n1"}, unreachable={"n2"})
    assert trio.run(listing.keys, b"a") == [b"k0", b"k1", b"k3"]
    assert ("n1", 1) not in asked or asked.index(("n1", 1)) > asked.index(("n2", 1))  # up ones first
    assert all(node != "n1" for node, p in asked if p != 1)  # n1 only asked where nothing else answered


def test_a_hung_primary_costs_one_timeout_per_wave_not_one_per_partition():
    rows = {p: [(b"a", b"k%d" % p, True)] for p in range(40)}
    listing, asked = cluster_listing(replicated(rows), hung={"n1"}, partitions=40)
    clock = trio.testing.MockClock(autojump_threshold=0)  # the hung asks' timeouts pass at once
    assert trio.run(listing.keys, b"a", clock=clock) == sorted(b"k%d" % p for p in range(40))
    hung_asks = [p for node, p in asked if node == "n1"]
    assert len(hung_asks) <= listing_module.CONCURRENCY < 10  # n1 leads 10 partitions: it is not asked for each


def test_a_partition_no_primary_answers_for_fails_the_listing():
    listing, _ = cluster_listing(replicated(ROWS), unreachable={"n1", "n2", "n3"})
    with pytest.raises(CoverageError) as raised:
        trio.run(listing.keys, b"a")
    assert raised.value.partitions == [1]  # n0 itself is a primary of every other partition
    assert "1 partition(s): 1" in str(raised.value)


def test_a_primary_that_fails_mid_partition_is_followed_by_the_next_from_where_it_stopped():
    rows = {1: [(b"a", b"k%03d" % i, i % 7 != 0) for i in range(100)]}
    with sizes(4, 8):  # n1 answers 8 rows, then is gone; n2 goes on after them
        listing, asked = cluster_listing(replicated(rows), answers_before_failing={"n1": 1})
        keys = trio.run(listing.keys, b"a")
    assert keys == [b"k%03d" % i for i in range(100) if i % 7 != 0]
    asks_of_1 = [node for node, partition in asked if partition == 1]
    assert asks_of_1[:3] == ["n1", "n1", "n2"] and set(asks_of_1) == {"n1", "n2"}


def test_a_stream_emits_each_name_once_one_emit_at_a_time_as_partitions_answer():
    rows = {p: [(b"a", b"k%d-%d" % (p, i), True) for i in range(5)] + [(b"b%d" % (p % 3), b"x", True)]
            for p in range(12)}
    emitted, inside = [], 0

    async def emit(names):
        nonlocal inside
        inside += 1
        assert inside == 1  # the listing serialises its emits: a writer can send each at once
        await trio.sleep(0.001)
        emitted.append(names)
        inside -= 1

    with sizes(2, 2):
        listing, _ = cluster_listing(replicated(rows), partitions=12)
        trio.run(listing.stream_keys, b"a", emit)
        keys = [key for names in emitted for key in names]
        emitted.clear()
        trio.run(listing.stream_buckets, emit)
    assert sorted(keys) == sorted(b"k%d-%d" % (p, i) for p in range(12) for i in range(5))
    assert len(keys) == 60  # each once, in answers of at most 2 rows
    assert sorted(name for names in emitted for name in names) == [b"a", b"b0", b"b1", b"b2"]


def test_a_bucket_listing_fails_when_a_smaller_n_val_bucket_may_have_been_missed():
    rows = {p: [(b"big", b"k%d" % p, True)] for p in range(4)}
    stores = replicated(rows)
    stores["n1"].write_batch([Put(1, b"single", b"only", LIVE)])  # n_val 1: on partition 1's first primary
    registry = FakeRegistry({b"single": 1})
    listing, _ = cluster_listing(stores, registry=registry)
    assert trio.run(listing.buckets) == [b"big", b"single"]
    listing, _ = cluster_listing(stores, unreachable={"n1"}, registry=registry)
    with pytest.raises(CoverageError) as raised:
        trio.run(listing.buckets)  # n2 answered for partition 1 and does not hold "single"
    assert raised.value.partitions == [1] and "smaller n_val" in str(raised.value)
    stores["n0"].write_batch([Put(0, b"single", b"also", LIVE)])  # found elsewhere: nothing missed
    listing, _ = cluster_listing(stores, unreachable={"n1"}, registry=registry)
    assert trio.run(listing.buckets) == [b"big", b"single"]
    listing, _ = cluster_listing(stores, unreachable={"n1"}, registry=FakeRegistry({b"big": 2}))
    assert trio.run(listing.buckets) == [b"big", b"single"]  # n_val 2 is covered by partition 1's second primary


def test_a_bad_kv_list_request_or_answer_is_refused():
    listing, _ = cluster_listing(replicated(ROWS))
    for body in ([b"a", 0], [b"a", 4, None], ["a", 0, None], [b"a", -1, None], {"b": 1}, [b"a", 0, [b"a"]],
                 [b"a", 0, [b"a", "k"]], [None, 0, b"ak"]):
        with pytest.raises(ValueError):
            trio.run(listing.rpc_list, body)
    assert trio.run(listing.rpc_list, [b"a", 0, None]) == [[b"k0"], None]
    assert trio.run(listing.rpc_list, [None, 0, None]) == [[b"a"], None]
    assert trio.run(listing.rpc_list, [None, 0, [b"a", b"k0"]]) == [[], None]  # after it, b/x: a tombstone
    for reply in ([[b"k"]], [[b"k"], [b"a"]], [["k"], None], [[b"k"], [b"a", b"k"]]):
        async def call(node, type_, body, timeout_s, reply=reply):
            return reply
        asker = listing_over(MemoryBackend(), pool=types.SimpleNamespace(call=call), node_id="n0")
        with pytest.raises(ValueError):  # the last: a cursor that does not move on
            trio.run(asker._ask, "n1", b"a", 0, (b"a", b"k"))
