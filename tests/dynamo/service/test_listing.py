"""Listing keys and buckets: one partition's scan (any rows, any page size), and coverage over the ring."""

from __future__ import annotations

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


def listing_over(backend, membership=None, pool=None, node_id="n1") -> Listing:
    return Listing(node_id, backend, membership, types.SimpleNamespace(get=lambda bucket: types.SimpleNamespace(
        n_val=3), defaults=types.SimpleNamespace(n_val=3)), pool, 1.0, logging.getLogger("test"))


def stored(partition_rows: dict[int, list[tuple[bytes, bytes, bool]]]) -> MemoryBackend:
    backend = MemoryBackend()
    ops = [Put(partition, bucket, key, LIVE if live else TOMBSTONE)
           for partition, entries in partition_rows.items() for bucket, key, live in entries]
    if ops:
        backend.write_batch(ops)
    return backend


@settings(max_examples=150, deadline=None)
@given(rows, st.integers(1, 5), names)
@example([(b"a", b"k", False), (b"a", b"l", True), (b"b", b"k", False), (b"c", b"k", True)], 1, b"a")
def test_a_partitions_scan_lists_its_live_keys_and_buckets_whatever_the_page_size(entries, page_rows, bucket):
    latest = {(b, k): live for b, k, live in entries}  # a later write of a key replaces the earlier
    backend = stored({7: entries})
    listing = listing_over(backend)
    original, listing_module.PAGE_ROWS = listing_module.PAGE_ROWS, page_rows
    try:
        keys = trio.run(listing.local, bucket, 7)
        buckets = trio.run(listing.local, None, 7)
    finally:
        listing_module.PAGE_ROWS = original
    assert keys == sorted(k for (b, k), live in latest.items() if b == bucket and live)
    assert buckets == sorted({b for (b, _), live in latest.items() if live})
    assert trio.run(listing.local, bucket, 8) == [] and trio.run(listing.local, None, 8) == []


class FakeRing:
    """Partition p's primaries are nodes p, p+1, p+2 (mod 4) of n0..n3."""

    def __init__(self, down=(), partitions=4):
        self.down, self.partitions = frozenset(down), partitions

    def preflist(self, partition, n_val):
        primaries = tuple(Replica(f"n{(partition + i) % 4}", (partition + i) % 4) for i in range(n_val))
        return Preflist(partition, n_val, primaries, (), self.down)


def cluster_listing(node_stores, down=(), unreachable=(), hung=(), partitions=4):
    """A Listing on n0 whose peers answer from `node_stores` (node -> backend), except `unreachable` (refused
    at once) and `hung` (no answer before the call's timeout)."""
    asked = []

    async def call(node, type_, body, timeout_s):
        asked.append((node, body[1]))
        if node in unreachable:
            raise RpcUnavailable(f"{node} is gone")
        if node in hung:
            await trio.sleep(timeout_s)
            raise RpcTimeout(f"no reply from {node}")
        return await listing_over(node_stores[node], membership).local(body[0], body[1])
    ring = FakeRing(down, partitions)
    membership = types.SimpleNamespace(ring=ring, preflist=ring.preflist)
    return listing_over(node_stores["n0"], membership, types.SimpleNamespace(call=call), node_id="n0"), asked


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


def test_a_bad_kv_list_request_is_refused():
    listing, _ = cluster_listing(replicated(ROWS))
    for body in ([b"a"], [b"a", 4], ["a", 0], [b"a", -1], {"b": 1}):
        with pytest.raises(ValueError):
            trio.run(listing.rpc_list, body)
    assert trio.run(listing.rpc_list, [b"a", 0]) == [b"k0"]
