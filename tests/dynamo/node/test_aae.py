"""Active anti-entropy in running nodes: divergent replicas converge with read repair off, siblings are
kept, the repair budget holds, and the trees follow the store (incrementally, and rebuilt at start-up)."""

from __future__ import annotations

import random

import trio

from antientropy.merkle import MerkleTree
from dynamo.object import Content, decode_object, encode_object, object_digest, put
from dynamo.service import tree as tree_module
from dynamo.service.aae import TokenBucket
from dynamo.service.tree import PartitionTrees, tree_key
from dynamo.storage import Delete, MemoryBackend, Put
from ring.hashing import partition_for_key

AAE = dict(read_repair=False, aae_interval_s=0.2, aae_keys_per_s=10_000, aae_tree_segments=64)


def blobs(cluster, bucket: bytes, key: bytes) -> list[bytes | None]:
    return [cluster.node(n).replica.read(bucket, key) for n in cluster.ids]


async def drop(node, bucket: bytes, key: bytes) -> None:
    """Lose a key on one node (as a disk that lost it would), through the replica so its tree follows."""
    blob = node.replica.read(bucket, key)
    assert await node.replica.drop_if(bucket, key, blob, lambda obj: True)


async def write_keys(cluster, count: int, prefix: str = "k") -> list[bytes]:
    client = cluster.client(cluster.ids[0])
    keys = []
    for i in range(count):
        assert (await client.put("b", f"{prefix}{i}", f"v{i}".encode(), w="all")).status == 204
        keys.append(f"{prefix}{i}".encode())
    return keys


def test_replicas_made_to_differ_converge_through_aae_alone_keeping_siblings(local_cluster, trio_run):
    async def main():
        async with local_cluster(3, **AAE) as cluster:
            n1, n2, n3 = (cluster.node(n) for n in cluster.ids)
            keys = await write_keys(cluster, 30)
            for key in keys[:10]:
                await drop(n2, b"b", key)  # n2 lost ten keys
            base = decode_object(n1.replica.read(b"b", keys[20]))
            # Concurrent versions written straight into one store each: n1 and n3 disagree on keys[20].
            for node, value, actor in ((n1, b"from-n1", "t1:1"), (n3, b"from-n3", "t3:1")):
                blob = encode_object(put(base, Content(value), None, actor))
                await node.replica.merge_in(b"b", keys[20], blob, None)
            await cluster.wait_until(lambda: all(len(set(blobs(cluster, b"b", k))) == 1 for k in keys),
                                     timeout_s=15)
            merged = decode_object(n2.replica.read(b"b", keys[20]))
            assert sorted(c.value for c in merged.siblings) == [b"from-n1", b"from-n3", b"v20"]
            assert all(n2.replica.read(b"b", k) is not None for k in keys)
            stats = [await cluster.client(n).stats() for n in cluster.ids]
            assert sum(s["read_repairs"] for s in stats) == 0
            assert sum(s["aae_keys_repaired"] for s in stats) >= 11
            assert sum(s["aae_exchanges"] for s in stats) > 0
            report = (await cluster.client("n1").request("GET", "/admin/aae")).json()
            assert report["totals"]["keys_repaired"] == stats[0]["aae_keys_repaired"]
            partition = str(partition_for_key(b"b", keys[0], 64))
            assert sorted(report["partitions"][partition]["peers"]) == ["n2", "n3"]
            assert report["partitions"][partition]["last_exchange_unix"] is not None
            # Converged trees: every node holds the same root for every partition.
            for p in range(64):
                assert len({cluster.node(n).aae.trees.tree(p, 3).root for n in cluster.ids}) == 1, p
    trio_run(main, timeout_s=60)


def test_repair_keeps_to_its_keys_per_second_budget(local_cluster, trio_run):
    rate = 30

    async def main():
        async with local_cluster(3, **{**AAE, "aae_keys_per_s": rate, "aae_interval_s": 0.1}) as cluster:
            n2 = cluster.node("n2")
            keys = await write_keys(cluster, 100)
            samples: list[tuple[float, int]] = []
            for key in keys:
                await drop(n2, b"b", key)

            def repaired() -> int:
                return sum(cluster.node(n).stats.aae_keys_repaired for n in cluster.ids)

            async def sample():
                while True:
                    samples.append((trio.current_time(), repaired()))
                    await trio.sleep(0.05)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                await cluster.wait_until(lambda: all(n2.replica.read(b"b", k) for k in keys), timeout_s=20)
                nursery.cancel_scope.cancel()
            assert repaired() >= 100
            # Each node has its own bucket (burst = one second's worth); one batch may be counted late.
            slack = 3 * (rate + rate)
            for i, (t0, c0) in enumerate(samples):
                for t1, c1 in samples[i + 1:]:
                    assert c1 - c0 <= slack + 3 * rate * (t1 - t0), (t0, c0, t1, c1)
            # And, with all of n2's repairs done by n1 and n3 alone, the budget cannot be met in a burst.
            assert samples[-1][0] - samples[0][0] > 0.5
    trio_run(main, timeout_s=60)


def test_token_bucket_never_grants_more_than_burst_plus_rate():
    bucket = TokenBucket(rate_per_s=10, burst=10, now_s=0.0)
    assert bucket.reserve(10, 0.0) == 0.0
    assert bucket.reserve(5, 0.0) == 0.5  # in debt: wait until it is paid
    assert bucket.reserve(5, 0.5) == 0.5
    assert bucket.reserve(1, 100.0) == 0.0  # refills to the burst, not beyond
    assert bucket.reserve(10, 100.0) == 0.1


def test_trees_rebuilt_at_start_equal_the_incrementally_updated_ones(local_cluster, trio_run):
    async def main():
        async with local_cluster(3, **{**AAE, "aae_interval_s": 30.0}) as cluster:
            keys = await write_keys(cluster, 40)
            client = cluster.client("n1")
            for key in keys[:5]:
                assert (await client.delete("b", key.decode(), w="all")).status == 204
            n3 = cluster.node("n3")
            before = {p: n3.aae.trees.tree(p, 3).root for p in range(64)}
            tombstones = {p: n3.aae.trees.tombstones(p, 3) for p in range(64)}
            assert sum(map(len, tombstones.values())) == 5
            await cluster.stop("n3")
            again = await cluster.start("n3")
            await again.aae.trees.build_done.wait()
            assert {p: again.aae.trees.tree(p, 3).root for p in range(64)} == before
            assert {p: again.aae.trees.tombstones(p, 3) for p in range(64)} == tombstones
    trio_run(main, timeout_s=60)


def _expected(backend: MemoryBackend, partition: int) -> MerkleTree:
    pairs = [(tree_key(b, k), object_digest(b, k, decode_object(blob))) for b, k, blob in backend.iterate(partition)]
    return MerkleTree.build(pairs, segments=64)


def test_writes_during_a_build_leave_the_tree_exact(monkeypatch):
    """The build scans a page at a time while writes commit and then call the hook a checkpoint later."""
    monkeypatch.setattr(tree_module, "BUILD_PAGE_ROWS", 4)
    keys = [f"k{i}".encode() for i in range(1500)]
    partition_of = {k: partition_for_key(b"b", k, 8) % 4 for k in keys}

    def obj_blob(value: bytes) -> bytes:
        return encode_object(put(None, Content(value), None, f"a:{value.decode()}"))

    for seed in range(4):
        backend = MemoryBackend()
        backend.write_batch([Put(partition_of[k], b"b", k, obj_blob(b"0" + k)) for k in keys])
        trees = PartitionTrees(backend, 8, 64, lambda bucket: 3)
        during = []

        async def writer(rng: random.Random):
            for i in range(400):
                key = rng.choice(keys)
                obj = None if rng.random() < 0.2 else put(None, Content(f"{i}".encode()), None, f"w:{i}")
                partition = partition_of[key]
                op = Delete(partition, b"b", key) if obj is None else Put(partition, b"b", key, encode_object(obj))
                backend.write_batch([op])
                await trio.sleep(0)  # committed; the hook runs a scheduling pass later
                trees.on_stored(partition, b"b", key, None if obj is None else op.blob)
                during.append(not trees.all_built)
                await trio.sleep(0)

        async def main():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer, random.Random(seed))
                await nursery.start(trees.build)
            assert trees.all_built
        trio.run(main)
        assert sum(during) > 100  # the writes did overlap the build
        for p in range(4):
            assert trees.tree(p, 3).root == _expected(backend, p).root, (seed, p)
            trees.tree(p, 3).check_invariants()
