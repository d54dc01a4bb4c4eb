"""Gets, puts and deletes through the HTTP API of a 5-node in-process cluster."""

from __future__ import annotations

from dynamo.http.multipart import decode_multipart


def test_put_get_delete_at_several_quorums(local_cluster, trio_run):
    async def main():
        async with local_cluster(5) as cluster:
            # R + W > N each time: a read right after a write must see it.
            for number, (r, w) in enumerate([(1, 3), (2, 2), (3, 1), ("one", "all"), ("quorum", "quorum")]):
                key = f"key-{number}"
                writer = cluster.client(cluster.ids[number % 5])
                reader = cluster.client(cluster.ids[(number + 2) % 5])
                reply = await writer.put("b", key, f"value {number}".encode(), w=w)
                assert reply.status == 204, reply
                assert reply.headers["x-dynamo-replicas"].startswith("primary=")
                got = await reader.get("b", key, r=r)
                assert got.status == 200, got
                assert got.body == f"value {number}".encode()
                assert got.headers["content-type"] == "text/plain"
                assert "x-riak-vclock" in got.headers and got.headers["etag"].startswith('"')
                deleted = await writer.delete("b", key, w=w)
                assert deleted.status == 204, deleted
                gone = await reader.get("b", key, r=3)
                assert gone.status == 404 and "x-riak-vclock" in gone.headers, gone
            missing = await cluster.client("n1").get("b", "never-written")
            assert missing.status == 404 and "x-riak-vclock" not in missing.headers
    trio_run(main)


def test_concurrent_writes_become_siblings_and_a_merged_context_resolves_them(local_cluster, trio_run):
    async def main():
        async with local_cluster(5) as cluster:
            first, second = cluster.client("n1"), cluster.client("n4")
            assert (await first.put("s", "k", b"red", w="all")).status == 204
            assert (await second.put("s", "k", b"blue", w="all")).status == 204  # no context: concurrent
            reply = await first.get("s", "k", headers={"Accept": "multipart/mixed, */*;q=0.5"})
            assert reply.status == 300, reply
            assert reply.headers["content-type"].startswith("multipart/mixed")
            parts = decode_multipart(reply.headers["content-type"], reply.body)
            assert sorted(part.value for part in parts) == [b"blue", b"red"]
            plain = await first.get("s", "k", headers={"Accept": "text/plain"})
            assert plain.status == 300 and plain.text.startswith("Siblings:\n")
            vtags = plain.text.split("\n")[1:-1]
            assert sorted(vtags) == sorted(part.vtag for part in parts)
            chosen = await first.get("s", "k", vtag=vtags[0])
            assert chosen.status == 200 and chosen.body in (b"red", b"blue")
            context = reply.headers["x-riak-vclock"]
            resolved = await second.put("s", "k", b"purple", headers={"X-Riak-Vclock": context}, w="all",
                                        returnbody="true")
            assert resolved.status == 200 and resolved.body == b"purple", resolved
            final = await cluster.client("n3").get("s", "k", r="all")
            assert final.status == 200 and final.body == b"purple", final
    trio_run(main)


def test_delete_gives_404_with_a_context_that_a_write_can_use(local_cluster, trio_run):
    async def main():
        async with local_cluster(5) as cluster:
            client = cluster.client("n2")
            assert (await client.put("d", "k", b"v1", w="all")).status == 204
            assert (await client.delete("d", "k", w="all")).status == 204
            gone = await cluster.client("n5").get("d", "k", r="all")
            assert gone.status == 404 and gone.headers.get("x-riak-vclock"), gone
            again = await client.put("d", "k", b"v2", headers={"X-Riak-Vclock": gone.headers["x-riak-vclock"]},
                                     w="all")
            assert again.status == 204
            back = await cluster.client("n1").get("d", "k", r="all")
            assert back.status == 200 and back.body == b"v2", back  # no tombstone sibling left
    trio_run(main)


def test_metadata_content_type_returnbody_and_conditions(local_cluster, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            client = cluster.client("n1")
            reply = await client.put("m", "k", b'{"a": 1}', returnbody="true", w="all",
                                     headers={"Content-Type": "application/json", "X-Riak-Meta-Color": "red"})
            assert reply.status == 200 and reply.body == b'{"a": 1}'
            assert reply.headers["content-type"] == "application/json"
            assert reply.headers["x-riak-meta-color"] == "red"
            etag = reply.headers["etag"]
            assert (await client.get("m", "k", headers={"If-None-Match": etag})).status == 304
            assert (await client.put("m", "k", b"x", headers={"If-None-Match": "*"})).status == 412
            assert (await client.put("m", "k", b"x", headers={"If-Match": '"other"'})).status == 412
            ok = await client.put("m", "k", b"x", headers={"If-Match": etag, "X-Riak-Vclock":
                                                           reply.headers["x-riak-vclock"]})
            assert ok.status == 204, ok
            assert (await client.put("m", "new-key", b"x", headers={"If-None-Match": "*"})).status == 204
            # A conditional write that asks for the body gets the new object, not a 412 about itself.
            body = await client.put("m", "new-key-2", b"y", returnbody="true", headers={"If-None-Match": "*"})
            assert body.status == 200 and body.body == b"y", body
            assert (await client.put("m", "new-key-2", b"z", headers={"If-None-Match": "*"})).status == 412
            created = await client.request("POST", "/buckets/m/keys", b"generated", {"Content-Type": "text/plain"})
            assert created.status == 201 and created.headers["location"].startswith("/buckets/m/keys/")
            fetched = await client.request("GET", created.headers["location"])
            assert fetched.status == 200 and fetched.body == b"generated"
            slash = await client.put("m", "a/b c", b"odd key")  # %2F and space in the key
            assert slash.status == 204
            assert (await client.get("m", "a/b c")).body == b"odd key"
    trio_run(main)


def test_forwarding_when_the_receiving_node_is_not_a_replica(local_cluster, trio_run):
    async def main():
        async with local_cluster(5) as cluster:
            key = next(f"fwd{i}" for i in range(1000) if "n1" not in cluster.primaries("f", f"fwd{i}"))
            client = cluster.client("n1")
            reply = await client.put("f", key, b"forwarded", w="all", returnbody="true")
            assert reply.status == 200 and reply.body == b"forwarded", reply
            assert reply.headers["x-dynamo-replicas"] == "primary=3 fallback=0 hints=0"
            assert (await client.stats())["coord_redirs"] == 1
            primaries = cluster.primaries("f", key)
            for node_id in primaries:
                assert cluster.node(node_id).replica.read(b"f", key.encode()) is not None
            assert cluster.node("n1").replica.read(b"f", key.encode()) is None
            assert (await client.get("f", key, r="all")).body == b"forwarded"
    trio_run(main)


def test_allow_mult_false_and_last_write_wins_buckets(local_cluster, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            client = cluster.client("n1")
            set_props = await client.request("PUT", "/buckets/lww/props", b'{"props": {"last_write_wins": true}}',
                                             {"Content-Type": "application/json"})
            assert set_props.status == 204, set_props
            props = (await client.request("GET", "/buckets/lww/props")).json()["props"]
            assert props["last_write_wins"] is True and props["allow_mult"] is False
            await cluster.wait_until(lambda: cluster.node("n3").registry.get(b"lww").last_write_wins)
            assert (await client.put("lww", "k", b"old", w="all")).status == 204
            assert (await cluster.client("n3").put("lww", "k", b"new", w="all")).status == 204
            reply = await cluster.client("n2").get("lww", "k", r="all")
            assert reply.status == 200 and reply.body == b"new", reply
    trio_run(main)


def test_admin_and_observability_routes(local_cluster, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            client = cluster.client("n2")
            assert (await client.request("GET", "/ping")).body == b"OK"
            resources = (await client.request("GET", "/")).json()
            assert resources["riak_kv_wm_ping"] == "/ping"
            ring = (await client.request("GET", "/admin/ring")).json()
            assert ring["version"] == 1 and ring["partitions"] == 64 and ring["n_val"] == 3
            assert len(ring["owners"]) == 64 and set(ring["owners"]) == {"n1", "n2", "n3"}
            assert set(ring["nodes"]) == {"n1", "n2", "n3"}
            assert sum(node["partitions"] for node in ring["nodes"].values()) == 64
            assert ring["nodes"]["n1"]["http"] == f"127.0.0.1:{cluster.handles['n1'].config.http_port}"
            members = (await client.request("GET", "/admin/members")).json()["members"]
            assert [m["node"] for m in members] == ["n1", "n2", "n3"]
            await client.put("o", "k", b"v", w="all")
            await client.get("o", "k")
            stats = await client.stats()
            for name in ("keys_stored", "hints_pending", "read_repairs", "node_gets", "node_puts",
                         "node_get_fsm_time_95", "node_put_fsm_time_99"):
                assert name in stats, name
            assert stats["node_puts"] == 1 and stats["node_gets"] == 1 and stats["keys_stored"] == 1
            assert stats["latency_ms"]["put"]["p50"] > 0
            metrics = await client.request("GET", "/metrics")
            assert metrics.status == 200 and 'dynamo_node_puts{node="n2"} 1' in metrics.text
    trio_run(main)
