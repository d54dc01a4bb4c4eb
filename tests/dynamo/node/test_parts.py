"""The node's small parts on their own: bucket properties, stats, key locks, wire forms of requests."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings, strategies as st

from dynamo.bucket import BadProps, BucketEntry, BucketProps, BucketRegistry, props_from_json
from dynamo.object import Content, encode_object, put
from dynamo.service.coordinator import ReplicaCounts, Version, WriteOutcome, WriteRequest, merge_versions
from dynamo.service.replica import KeyLocks, merge_blobs
from dynamo.stats import LatencyWindow, Stats, prometheus_text


def test_props_apply_validate_and_ignore_unknown_riak_names():
    base = BucketProps()
    props = props_from_json({"props": {"n_val": 2, "r": 1, "w": "all", "linkfun": {"mod": "x"}}}, base)
    assert (props.n_val, props.r, props.w, props.allow_mult) == (2, 1, "all", True)
    assert props_from_json({"props": {"last_write_wins": True}}, base).allow_mult is False
    for bad in ({"n_val": 17}, {"n_val": True}, {"r": 0}, {"pw": 4}, {"dw": "most"}, {"notfound_ok": 1},
                {"allow_mult": True, "last_write_wins": True}):
        with pytest.raises(BadProps):
            props_from_json({"props": bad}, base)
    with pytest.raises(BadProps):
        props_from_json({"n_val": 2}, base)


entries = st.tuples(st.sampled_from([b"a", b"b"]), st.integers(0, 5), st.sampled_from(["n1", "n2", "n3"]),
                    st.integers(1, 3))


@settings(max_examples=60)
@given(st.lists(entries, max_size=8), st.randoms(use_true_random=False))
def test_registry_merge_is_order_independent(items, rnd):
    def fill(order):
        registry = BucketRegistry(BucketProps(), "me")
        for bucket, stamp, node, n_val in order:
            registry.merge(bucket, BucketEntry(BucketProps(n_val=n_val), stamp, node))
        return registry.to_wire()
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert fill(items) == fill(shuffled) == fill(items + shuffled)


def test_registry_local_set_outranks_what_it_saw_and_survives_the_wire():
    registry = BucketRegistry(BucketProps(), "n1")
    registry.merge(b"b", BucketEntry(BucketProps(n_val=2), 10**18, "n9"))  # a stamp from a fast clock
    entry = registry.set(b"b", BucketProps(n_val=1), now_us=5)
    assert entry.stamp == 10**18 + 1 and registry.get(b"b").n_val == 1
    other = BucketRegistry(BucketProps(), "n2")
    assert other.merge_wire(registry.to_wire()) == 1 and other.get(b"b").n_val == 1
    assert other.merge_wire(registry.to_wire()) == 0
    assert other.merge_wire([["not", "valid"], [b"c", {"n_val": 2}, 1, "x"], 7]) == 0
    assert other.get(b"unset") == BucketProps()


def test_latency_percentiles_and_prometheus_text():
    window = LatencyWindow(size=100)
    for value in range(1, 201):
        window.record(value)
    # The last 100 samples: 101..200.
    assert window.percentiles() == {"median": 150, "95": 195, "99": 199, "100": 200}
    assert LatencyWindow().percentiles() == {"median": 0, "95": 0, "99": 0, "100": 0}
    stats = Stats()
    stats.node_puts += 3
    stats.put_latency.record(2000)
    report = stats.to_json({"keys_stored": 7, "node": "n1"})
    assert report["node_puts"] == 3 and report["node_put_fsm_time_median"] == 2000
    assert report["latency_ms"]["put"]["p99"] == 2.0 and report["latency_ms"]["put"]["max"] == 2.0
    assert report["node_put_fsm_time_100"] == 2000
    text = prometheus_text(report, 'n"1')
    assert 'dynamo_node_puts{node="n\\"1"} 3' in text and "# TYPE dynamo_keys_stored gauge" in text
    assert "dynamo_node{" not in text  # strings are not metrics


def test_key_locks_serialise_one_key_and_hand_over_in_order():
    async def main():
        locks = KeyLocks()
        order = []

        async def worker(name, key):
            await locks.acquire(key)
            order.append(("in", name))
            await trio.sleep(0.01)
            order.append(("out", name))
            locks.release(key)

        async with trio.open_nursery() as nursery:
            for name in "abc":
                nursery.start_soon(worker, name, (b"b", b"k"))
                await trio.sleep(0)
            nursery.start_soon(worker, "other", (b"b", b"other"))
        same_key = [step for step in order if step[1] != "other"]
        assert same_key == [("in", "a"), ("out", "a"), ("in", "b"), ("out", "b"), ("in", "c"), ("out", "c")]
        assert not locks.locked((b"b", b"k"))
        # A waiter cancelled while waiting leaves the queue; the lock still passes on.
        await locks.acquire((b"b", b"k"))
        with trio.move_on_after(0.01):
            await locks.acquire((b"b", b"k"))
        locks.release((b"b", b"k"))
        assert not locks.locked((b"b", b"k"))
    trio.run(main)


def test_merge_blobs_and_versions():
    a = put(None, Content(b"a"), None, "n1:x")
    b = put(None, Content(b"b"), None, "n2:y")
    blob_a, blob_b = encode_object(a), encode_object(b)
    assert merge_blobs(None, blob_a) == blob_a
    assert merge_blobs(blob_a, blob_a) is None
    merged = merge_blobs(blob_a, blob_b)
    assert merged is not None and merge_blobs(merged, blob_a) is None
    version = merge_versions(Version(blob_a), Version(blob_b))
    assert version.blob == merged and sorted(c.value for c in version.obj.siblings) == [b"a", b"b"]
    same = Version(blob_a)
    assert merge_versions(same, Version(blob_a)) is same and Version(blob_a) == Version(obj=a)


def test_write_request_and_outcome_wire_round_trip():
    content = Content(b"v", "text/plain", 12345, (("color", "red"),))
    request = WriteRequest(b"b", b"k", content, None, 3, 2, 1, 0, 2.5, False, True)
    assert WriteRequest.from_wire(request.to_wire()) == request
    outcome = WriteOutcome(200, "", put(None, content, None, "n1:x"), ReplicaCounts(2, 1, 1))
    assert WriteOutcome.from_wire(outcome.to_wire()) == outcome
    blob = encode_object(outcome.obj)
    with_blob = WriteOutcome(200, "", outcome.obj, ReplicaCounts(2, 1, 1), blob)
    assert with_blob.to_wire()[2] is blob  # the blob at hand is sent as it is, not encoded again
    assert WriteOutcome.from_wire(with_blob.to_wire()) == outcome
    assert ReplicaCounts(2, 1, 1).header() == "primary=2 fallback=1 hints=1"
    with pytest.raises(ValueError):
        WriteRequest.from_wire(request.to_wire()[:-1])
