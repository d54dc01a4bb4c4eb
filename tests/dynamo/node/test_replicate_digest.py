"""kv.replicate's digest (the REPLICATE_DIGEST capability): a coordinator sends its copy's anti-entropy
digest to the peers that advertise the capability, and they take it for their trees instead of reading it
off the blob, unless their merge stored something else; a peer that does not advertise it (an older node)
gets kv.replicate's earlier form. Either way every tree holds exactly what its store does."""

from __future__ import annotations

import pytest

from dynamo.object import Content, decode_object, encode_object, object_digest, put
from dynamo.service import coordinator as coordinator_module
from dynamo.service import tree as tree_module
from dynamo.service.membership import CAPABILITIES_KEY, REPLICATE_DIGEST
from dynamo.service.tree import tree_key
from ring.hashing import partition_for_key

TREES = dict(read_repair=False, aae_interval_s=600, aae_tree_segments=64)  # trees kept, no exchange runs


def assert_trees_match_stores(cluster, bucket: bytes, keys: list[bytes]) -> None:
    for node_id in cluster.ids:
        node = cluster.node(node_id)
        for key in keys:
            blob = node.replica.read(bucket, key)
            tree = node.aae.trees.tree(partition_for_key(bucket, key, node.replica.partitions), 3)
            assert tree.get(tree_key(bucket, key)) == object_digest(bucket, key, decode_object(blob)), (node_id, key)


def test_replicas_take_the_coordinators_digest_and_an_older_peer_gets_the_earlier_form(
        local_cluster, trio_run, monkeypatch):
    read_off_blob: list[bytes] = []  # keys whose digest a tree read off the blob
    real_blob_digest = tree_module.blob_digest

    def counting_blob_digest(bucket, key, blob):
        read_off_blob.append(key)
        return real_blob_digest(bucket, key, blob)

    monkeypatch.setattr(tree_module, "blob_digest", counting_blob_digest)

    async def main():
        async with local_cluster(3, **TREES) as cluster:
            n1, n3 = cluster.node("n1"), cluster.node("n3")
            await cluster.wait_until(lambda: all(cluster.node(a).membership.supports(b, REPLICATE_DIGEST)
                                                 for a in cluster.ids for b in cluster.ids if a != b))
            client = cluster.client("n1")  # every node is a primary of every key: n1 coordinates
            first = [b"a%d" % i for i in range(20)]
            for key in first:
                assert (await client.put("b", key.decode(), b"v", w="all")).status == 204
            assert read_off_blob == []  # n2 and n3 took n1's digest

            n3.membership.gossiper.publish(CAPABILITIES_KEY, [])  # n3 now speaks like an older node
            await cluster.wait_until(lambda: not n1.membership.supports("n3", REPLICATE_DIGEST))
            second = [b"b%d" % i for i in range(20)]
            for key in second:
                assert (await client.put("b", key.decode(), b"v", w="all")).status == 204
            assert sorted(read_off_blob) == sorted(second)  # n3 only, once a key
            assert_trees_match_stores(cluster, b"b", first + second)

    trio_run(main, timeout_s=60)


def test_a_replica_whose_merge_stores_something_else_works_the_digest_out_itself(local_cluster, trio_run):
    async def main():
        async with local_cluster(3, **TREES) as cluster:
            n2 = cluster.node("n2")
            await cluster.wait_until(lambda: cluster.node("n1").membership.supports("n2", REPLICATE_DIGEST))
            client = cluster.client("n1")
            assert (await client.put("b", "k", b"v1", w="all")).status == 204
            reply = await client.get("b", "k")
            base = decode_object(n2.replica.read(b"b", b"k"))
            concurrent = encode_object(put(base, Content(b"only-on-n2"), None, "t2:1"))
            await n2.replica.merge_in(b"b", b"k", concurrent, None)  # n2 alone holds a sibling
            headers = {"X-Riak-Vclock": reply.headers["x-riak-vclock"]}
            assert (await client.put("b", "k", b"v2", headers=headers, w="all")).status == 204
            stored = decode_object(n2.replica.read(b"b", b"k"))
            assert sorted(c.value for c in stored.siblings) == [b"only-on-n2", b"v2"]  # not what n1 sent
            assert_trees_match_stores(cluster, b"b", [b"k"])

    trio_run(main, timeout_s=60)


@pytest.mark.parametrize("digest, tombstone", [(b"short", False), (b"x" * 16, 0), ("x" * 16, False)])
def test_a_malformed_digest_is_refused(digest, tombstone):
    with pytest.raises(ValueError, match="digest"):
        coordinator_module._replicate_routing([b"b", b"k", b"blob", None, 1, 3, digest, tombstone])
