"""Anti-entropy per n_val: a bucket whose n_val is not the default is exchanged among its own primaries
(all five of an n_val=5 bucket, only the two of an n_val=2 one), and raising a bucket's n_val moves its
keys to the new tree, so anti-entropy alone fills the replicas the bucket gained."""

from __future__ import annotations

import json
import random

import trio
from hypothesis import example, given, settings, strategies as st

from antientropy.merkle import MerkleTree
from dynamo.object import Content, decode_object, encode_object, object_digest, put
from dynamo.service.tree import PartitionTrees, tree_key
from dynamo.storage import MemoryBackend, Put

AAE = dict(read_repair=False, aae_interval_s=0.2, aae_keys_per_s=10_000, aae_tree_segments=64)


async def set_n_val(cluster, bucket: str, n_val: int) -> None:
    reply = await cluster.client(cluster.ids[0]).request(
        "PUT", f"/buckets/{bucket}/props", json.dumps({"props": {"n_val": n_val}}).encode(),
        {"content-type": "application/json"})
    assert reply.status == 204, reply.text
    await cluster.wait_until(lambda: all(cluster.node(n).registry.get(bucket.encode()).n_val == n_val
                                         for n in cluster.ids), timeout_s=10)


async def drop(node, bucket: bytes, key: bytes) -> None:
    blob = node.replica.read(bucket, key)
    assert await node.replica.drop_if(bucket, key, blob, lambda obj: True)


async def rounds_pass(cluster, count: int) -> None:
    """Until every node has finished `count` more anti-entropy rounds."""
    start = {n: cluster.node(n).aae.rounds for n in cluster.ids}
    await cluster.wait_until(lambda: all(cluster.node(n).aae.rounds >= start[n] + count for n in cluster.ids),
                             timeout_s=15)


def holders(cluster, bucket: str, key: str) -> set[str]:
    return {n for n in cluster.ids if cluster.node(n).replica.read(bucket.encode(), key.encode()) is not None}


def test_every_primary_of_a_bucket_with_its_own_n_val_is_repaired_and_no_other(local_cluster, trio_run):
    async def main():
        async with local_cluster(5, **AAE) as cluster:
            await set_n_val(cluster, "five", 5)
            await set_n_val(cluster, "two", 2)
            client = cluster.client("n1")
            keys = [f"k{i}" for i in range(20)]
            for key in keys:
                for bucket in ("five", "two"):
                    assert (await client.put(bucket, key, b"v", w="all")).status == 204
            for key in keys:
                assert holders(cluster, "five", key) == set(cluster.ids)
                assert holders(cluster, "two", key) == set(cluster.primaries("two", key, 2))
                fourth, fifth = cluster.primaries("five", key, 5)[3:]  # no primary at the default n_val 3
                await drop(cluster.node(fourth), b"five", key.encode())
                await drop(cluster.node(fifth), b"five", key.encode())
                await drop(cluster.node(cluster.primaries("two", key, 2)[1]), b"two", key.encode())
            await cluster.wait_until(lambda: all(holders(cluster, "five", k) == set(cluster.ids) and
                                                 holders(cluster, "two", k) == set(cluster.primaries("two", k, 2))
                                                 for k in keys), timeout_s=20)
            # The n_val=2 keys are not in the default trees, so the default's third primary never shows
            # them as missing: once repaired, no exchange of any tree finds a difference.
            await rounds_pass(cluster, 2)
            for n in cluster.ids:
                node = cluster.node(n)
                assert {n_val for _, n_val in node.aae.status} == {2, 3, 5}
                assert all(status.last_differences == 0 for status in node.aae.status.values()), n
                assert all(node.aae.trees.key_count(p, 3) == 0 for p in range(node.replica.partitions))
            report = (await client.request("GET", "/admin/aae")).json()
            named = [name for name in report["partitions"] if name.endswith("/n_val=5")]
            assert named and all(len(report["partitions"][name]["peers"]) == 4 for name in named)
            assert sum(cluster.node(n).stats.aae_keys_repaired for n in cluster.ids) >= 60
    trio_run(main, timeout_s=90)


def test_raising_a_buckets_n_val_fills_its_new_replicas_through_anti_entropy(local_cluster, trio_run):
    async def main():
        async with local_cluster(5, **AAE) as cluster:
            client = cluster.client("n1")
            keys = [f"k{i}" for i in range(20)]
            for key in keys:
                assert (await client.put("grow", key, key.encode(), w="all")).status == 204
            assert all(holders(cluster, "grow", k) == set(cluster.primaries("grow", k, 3)) for k in keys)
            await set_n_val(cluster, "grow", 5)

            def tree_counts(n: str) -> tuple[int, int]:
                """Keys in the node's n_val=5 and n_val=3 trees."""
                trees, partitions = cluster.node(n).aae.trees, range(cluster.node(n).replica.partitions)
                return sum(trees.key_count(p, 5) for p in partitions), sum(trees.key_count(p, 3) for p in partitions)

            # Every node holds every key, and has moved the keys it held before into the n_val=5 tree. The
            # move waits for that node's next round (rehome), which can come after a peer already refilled
            # the new replicas: so the trees are waited for too, not checked right after the copies.
            await cluster.wait_until(lambda: all(holders(cluster, "grow", k) == set(cluster.ids) for k in keys)
                                     and all(tree_counts(n) == (len(keys), 0) for n in cluster.ids), timeout_s=20)
            for n in cluster.ids:
                for key in keys:
                    stored = cluster.node(n).replica.read(b"grow", key.encode())
                    assert decode_object(stored).siblings[0].value == key.encode()
    trio_run(main, timeout_s=90)


# ---- PartitionTrees.rehome, on its own -------------------------------------------------------------------

BUCKETS = (b"a", b"b")
PARTITIONS = 4


def blob_of(value: int) -> bytes:
    return encode_object(put(None, Content(b"%d" % value), None, f"w:{value}"))


def expected_trees(backend: MemoryBackend, n_val_of) -> dict[tuple[int, int], bytes]:
    """(partition, n_val) -> root of a tree built from what the store holds, placed by the n_vals now."""
    pairs: dict[tuple[int, int], list] = {}
    for partition in range(PARTITIONS):
        for bucket, key, blob in backend.iterate(partition):
            digest = object_digest(bucket, key, decode_object(blob))
            pairs.setdefault((partition, n_val_of(bucket)), []).append((tree_key(bucket, key), digest))
    return {tree: MerkleTree.build(entries, segments=16).root for tree, entries in pairs.items()}


STEPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.sampled_from(BUCKETS), st.integers(0, 5), st.integers(0, 99)),
    st.tuples(st.just("n_val"), st.sampled_from(BUCKETS), st.integers(2, 4)),
    st.tuples(st.just("rehome"))), max_size=40)


@settings(max_examples=100, deadline=None)
@given(steps=STEPS)
# A key rewritten while its bucket's n_val was briefly different: the older entry must not survive.
@example(steps=[("write", b"a", 0, 1), ("n_val", b"a", 2), ("write", b"a", 0, 2), ("n_val", b"a", 3)])
def test_after_a_rehome_every_key_sits_in_the_tree_of_its_buckets_n_val_now(steps):
    n_vals = {bucket: 3 for bucket in BUCKETS}
    backend = MemoryBackend()
    trees = PartitionTrees(backend, PARTITIONS, 16, n_vals.__getitem__)

    async def main():
        await trees.build()
        for step in steps:
            if step[0] == "write":
                _, bucket, k, value = step
                key, partition = b"k%d" % k, k % PARTITIONS
                blob = blob_of(value)
                backend.write_batch([Put(partition, bucket, key, blob)])
                trees.on_stored(partition, bucket, key, blob)
            elif step[0] == "n_val":
                n_vals[step[1]] = step[2]
            else:
                await trees.rehome()
        await trees.rehome()
    trio.run(main)
    expected = expected_trees(backend, n_vals.__getitem__)
    held = {(p, n): trees.tree(p, n) for p in range(PARTITIONS) for n in range(1, 5)}
    assert {tree: t.root for tree, t in held.items() if len(t)} == expected
    for t in held.values():
        t.check_invariants()


def test_a_key_written_during_a_rehome_keeps_its_new_state():
    """The rehome moves one partition, checkpoints, moves the next: a write in between lands in the right
    tree and is never overwritten by the entry it replaced."""
    n_vals = {b"a": 3}
    backend = MemoryBackend()
    trees = PartitionTrees(backend, PARTITIONS, 16, n_vals.__getitem__)
    rng = random.Random(7)

    async def main():
        await trees.build()
        for k in range(40):
            blob = blob_of(k)
            backend.write_batch([Put(k % PARTITIONS, b"a", b"k%d" % k, blob)])
            trees.on_stored(k % PARTITIONS, b"a", b"k%d" % k, blob)
        n_vals[b"a"] = 2
        async with trio.open_nursery() as nursery:
            async def writer():
                for i in range(100, 140):
                    k = rng.randrange(40)
                    blob = blob_of(i)
                    backend.write_batch([Put(k % PARTITIONS, b"a", b"k%d" % k, blob)])
                    trees.on_stored(k % PARTITIONS, b"a", b"k%d" % k, blob)
                    await trio.sleep(0)
            nursery.start_soon(writer)
            await trees.rehome()
    trio.run(main)
    assert {(p, n): trees.tree(p, n).root for p in range(PARTITIONS) for n in (2,)} == \
        expected_trees(backend, n_vals.__getitem__)
    assert all(trees.key_count(p, 3) == 0 for p in range(PARTITIONS))
