"""Riak's list keys and list buckets over HTTP, on a 5-node in-process cluster."""

from __future__ import annotations

import json

import trio


def stream_objects(reply) -> list:
    """The JSON objects of a streamed listing, in order (Riak's stream: objects one after another)."""
    assert reply.status == 200 and reply.headers["transfer-encoding"] == "chunked", reply
    text, objects, decoder = reply.body.decode("utf-8"), [], json.JSONDecoder()
    index = 0
    while index < len(text):
        value, index = decoder.raw_decode(text, index)
        objects.append(value)
    return objects


def test_keys_and_buckets_are_listed_from_any_node_without_deleted_keys(local_cluster, trio_run):
    async def main():
        async with local_cluster(5) as cluster:
            writer, reader = cluster.client("n1"), cluster.client("n4")
            keys = [f"k{i}" for i in range(30)] + ["a/b", "naïve"]
            for key in keys:
                assert (await writer.put("fruit", key, b"x", w="all")).status == 204
            assert (await writer.put("veg", "leek", b"x", w="all")).status == 204
            assert (await writer.put("gone", "only", b"x", w="all")).status == 204
            for bucket, key in [("fruit", "k3"), ("gone", "only")]:
                assert (await writer.delete(bucket, key, w="all")).status == 204
            expected = sorted(set(keys) - {"k3"})

            listed = await reader.request("GET", "/buckets/fruit/keys", keys="true")
            assert listed.status == 200, listed
            assert listed.headers["content-type"] == "application/json"
            assert sorted(listed.json()["keys"]) == expected
            streamed = stream_objects(await cluster.client("n2").request("GET", "/buckets/fruit/keys", keys="stream"))
            assert len(streamed) > 2 and streamed[-1] == {"keys": []}  # an object per answer, then the end
            assert sorted(key for chunk in streamed for key in chunk["keys"]) == expected
            streamed = stream_objects(await reader.request("GET", "/buckets", buckets="stream"))
            assert sorted(b for chunk in streamed for b in chunk["buckets"]) == ["fruit", "veg"]
            assert (await reader.request("GET", "/buckets/none/keys", keys="true")).json() == {"keys": []}
            buckets = await cluster.client("n5").request("GET", "/buckets", buckets="true")
            assert buckets.status == 200 and buckets.json() == {"buckets": ["fruit", "veg"]}, buckets

            await cluster.stop("n3")  # each partition keeps two primaries that answer
            await cluster.wait_down("n3")
            again = await reader.request("GET", "/buckets/fruit/keys", keys="true")
            assert again.status == 200 and sorted(again.json()["keys"]) == expected
    trio_run(main, timeout_s=60)


def test_a_listing_that_cannot_cover_every_partition_is_503(local_cluster, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            client = cluster.client("n1")
            props = await client.request("PUT", "/buckets/single/props", b'{"props": {"n_val": 1}}',
                                         headers={"Content-Type": "application/json"})
            assert props.status == 204, props
            await cluster.wait_until(lambda: all(cluster.node(n).registry.get(b"single").n_val == 1
                                                 for n in cluster.ids))
            for index in range(20):
                assert (await client.put("single", f"k{index}", b"x")).status == 204
            await cluster.stop("n2")
            await cluster.wait_down("n2")
            reply = await client.request("GET", "/buckets/single/keys", keys="true")
            assert reply.status == 503 and "no primary answered for" in reply.text, reply
            streamed = stream_objects(await client.request("GET", "/buckets/single/keys", keys="stream"))
            assert "no primary answered for" in streamed[-1]["error"], streamed  # the head had gone: 200
            assert all("keys" in chunk for chunk in streamed[:-1])
            default = await client.request("GET", "/buckets/other/keys", keys="true")
            assert default.status == 200, default  # n_val 3: the other primaries cover
            buckets = await client.request("GET", "/buckets", buckets="true")
            assert buckets.json() == {"buckets": ["single"]}, buckets  # its keys on n1 and n3 show it
    trio_run(main, timeout_s=60)


def test_bad_listing_requests_are_400_and_other_methods_405(local_cluster, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            client = cluster.client("n1")
            for path, query, words in [("/buckets/b/keys", {}, "keys=true"),
                                       ("/buckets/b/keys", {"keys": "false"}, "keys=true"),
                                       ("/buckets", {}, "buckets=true"),
                                       ("/buckets/b/keys", {"keys": "true", "timeout": "soon"}, "timeout"),
                                       ("/buckets/b/keys?keys=true&keys=stream", {}, "keys given more than once")]:
                reply = await client.request("GET", path, **query)
                assert reply.status == 400 and words in reply.text, (path, query, reply)
            put = await client.request("PUT", "/buckets/b/keys", b"x")
            assert put.status == 405 and put.headers["allow"] == "GET, POST", put
    trio_run(main)


def test_a_listing_past_its_timeout_is_503(local_cluster, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            async def slow(bucket):
                await trio.sleep(5)
                return []
            async def slow_stream(bucket, emit):
                await emit([b"first"])
                await trio.sleep(5)
            cluster.node("n1").listing.keys = slow
            cluster.node("n1").listing.stream_keys = slow_stream
            reply = await cluster.client("n1").request("GET", "/buckets/b/keys", keys="true", timeout="50")
            assert reply.status == 503 and "timed out after 50 ms" in reply.text, reply
            streamed = await cluster.client("n1").request("GET", "/buckets/b/keys", keys="stream", timeout="50")
            assert stream_objects(streamed) == [{"keys": ["first"]}, {"error": "timeout"}]  # as Riak ends it
    trio_run(main)
