"""Bad input and limits: each gets its one-line error with the right status, and the node keeps serving."""

from __future__ import annotations

import trio

from dynamo.http.message import make_request


def test_bad_requests_get_clear_4xx_errors(local_cluster, trio_run):
    async def main():
        async with local_cluster(3, value_bytes_max=1024, key_bytes_max=16) as cluster:
            client = cluster.client("n1")
            cases = [
                (client.get("b", "k", r="lots"), 400, "r must be a non-negative integer"),
                (client.get("b", "k", r=4), 400, "r must be <= n_val"),
                (client.put("b", "k", b"v", w=0), 400, "w must be >= 1"),
                (client.get("b", "k", n_val=5), 400, "n_val must be <= the bucket's n_val"),
                (client.get("b", "k", r=1, notfound_ok="maybe"), 400, "notfound_ok must be"),
                (client.request("GET", "/buckets/b/keys/k?r=1&r=2"), 400, "given more than once"),
                (client.put("b", "k", b"x" * 1025), 413, "value too large: 1025 > 1024 bytes"),
                (client.put("b", "k" * 17, b"v"), 413, "key too long"),
                (client.put("b", "k", b"v", headers={"X-Riak-Vclock": "not base64!"}), 400,
                 "malformed X-Riak-Vclock"),
                (client.delete("b", "k", headers={"X-Riak-Vclock": "aGVsbG8="}), 400, "malformed X-Riak-Vclock"),
                (client.request("GET", "/buckets//keys/k"), 400, "bucket name must not be empty"),
                (client.request("GET", "/nowhere"), 404, "not found"),
                (client.request("DELETE", "/ping"), 405, "method not allowed"),
                (client.request("PATCH", "/buckets/b/keys/k"), 405, "method not allowed"),
                (client.request("PUT", "/buckets/b/props", b"{not json"), 400, "must be JSON"),
                (client.request("PUT", "/buckets/b/props", b'{"props": {"n_val": 0}}'), 400, "n_val must be"),
                (client.request("PUT", "/buckets/b/props", b'{"props": {"r": "most"}}'), 400, "r must be"),
                (client.request("PUT", "/buckets/b/props", b'{"props": {"allow_mult": "yes"}}'), 400,
                 "allow_mult must be true or false"),
                (client.request("PUT", "/buckets/b/props", b'[1, 2]'), 400, "expected a JSON object"),
            ]
            for call, status, text in cases:
                reply = await call
                assert reply.status == status, (text, reply)
                assert text in reply.text and reply.text.endswith("\n") and reply.text.count("\n") == 1, reply
                assert "Traceback" not in reply.text
            assert (await client.put("b", "k", b"x" * 1024)).status == 204  # the limit itself is fine
            assert (await client.request("GET", "/ping")).status == 200
    trio_run(main)


def test_sibling_limit_refuses_with_413_and_keeps_what_was_stored(local_cluster, trio_run):
    async def main():
        async with local_cluster(3, siblings_max=3, siblings_warn=2) as cluster:
            client = cluster.client("n1")
            for number in range(3):
                assert (await client.put("sib", "k", b"v%d" % number, w="all")).status == 204
            refused = await client.put("sib", "k", b"one too many", w="all")
            assert refused.status == 413 and refused.text.startswith("too many siblings"), refused
            reply = await client.get("sib", "k", headers={"Accept": "text/plain"})
            assert reply.status == 300 and len(reply.text.split("\n")[1:-1]) == 3
            stats = await client.stats()
            assert stats["siblings_refused"] == 1 and stats["siblings_warned"] >= 1
            resolved = await client.put("sib", "k", b"resolved", headers={"X-Riak-Vclock":
                                                                          reply.headers["x-riak-vclock"]})
            assert resolved.status == 204
    trio_run(main)


def test_inflight_limit_answers_503_with_retry_after(local_cluster, trio_run):
    async def main():
        async with local_cluster(3, inflight_max=1) as cluster:
            client = cluster.client("n1")
            assert (await client.put("busy", "k", b"v0", w="all")).status == 204
            # Hold the key on n2 so a w=all write waits there: one request stays in flight on n1.
            held = cluster.node("n2").replica.locks
            await held.acquire((b"busy", b"k"))
            async with trio.open_nursery() as nursery:
                slow = {}

                async def slow_put():
                    slow["reply"] = await client.put("busy", "k", b"v1", w="all")
                nursery.start_soon(slow_put)
                await cluster.wait_until(lambda: cluster.node("n1").http_server.inflight == 1)
                refused = await client.request("GET", "/ping")
                assert refused.status == 503 and refused.headers["retry-after"] == "1", refused
                held.release((b"busy", b"k"))
            assert slow["reply"].status == 204
            assert (await client.request("GET", "/ping")).status == 200
    trio_run(main)


def test_timeout_parameter_bounds_a_write_waiting_on_a_slow_replica(local_cluster, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            client = cluster.client("n1")
            locks = cluster.node("n3").replica.locks
            await locks.acquire((b"slow", b"k"))
            started = trio.current_time()
            reply = await client.put("slow", "k", b"v", w="all", timeout=200)
            assert reply.status == 503 and reply.text == "W-value unsatisfied: 2/3\n", reply
            assert trio.current_time() - started < 2.5  # bounded by ?timeout=, not the default 3 s
            locks.release((b"slow", b"k"))
            got = await client.get("slow", "k", r="all")
            assert got.status == 200 and got.body == b"v"  # the write was not lost on the replicas that took it
    trio_run(main)


def test_api_routes_without_sockets(local_cluster, trio_run):
    """The app itself, called directly: HEAD, trailing slashes, and props round trip."""
    async def main():
        async with local_cluster(1, n_val=1, r=1, w=1, dw=1, rw=1) as cluster:
            app = cluster.node("n1").http_server.app
            assert (await app(make_request("HEAD", "/ping"))).status == 200
            assert (await app(make_request("GET", "/ping/"))).status == 200
            reply = await app(make_request("PUT", "/buckets/p/props", body=b'{"props": {"allow_mult": false}}'))
            assert reply.status == 204
            props = await app(make_request("GET", "/buckets/p/props"))
            assert b'"allow_mult":false' in props.body and b'"name":"p"' in props.body
            assert b'"n_val":1' in props.body
            put = await app(make_request("PUT", "/buckets/p/keys/k", body=b"v"))
            assert put.status == 204, put
            get = await app(make_request("GET", "/buckets/p/keys/k"))
            assert get.status == 200 and get.body == b"v"
    trio_run(main)
