"""Issue 4 leftovers: pr/pw refused before any replica is touched, RPC backoff reset when a peer is back,
and X-Dynamo-Replicas counting the same way for get, put and delete."""

from __future__ import annotations

import math
import re

import trio


def _stored_anywhere(cluster, bucket: bytes, key: bytes) -> list[str]:
    return [node_id for node_id in cluster.ids if cluster.handles[node_id].running
            and cluster.node(node_id).replica.read(bucket, key) is not None]


def _replicas(reply) -> tuple[int, int, int]:
    found = re.fullmatch(r"primary=(\d+) fallback=(\d+) hints=(\d+)", reply.headers["x-dynamo-replicas"])
    assert found, reply.headers
    return int(found[1]), int(found[2]), int(found[3])


def test_pw_and_pr_above_the_live_primaries_are_refused_before_anything_is_written(local_cluster, trio_run):
    async def main():
        async with local_cluster(5) as cluster:
            bucket, key = "pre", "check"
            victim, *others = cluster.primaries(bucket, key)
            await cluster.stop(victim)
            await cluster.wait_down(victim)
            before = {n: await cluster.client(n).stats() for n in cluster.ids if n != victim}
            for coordinator in others + [n for n in cluster.ids if n not in (victim, *others)]:
                client = cluster.client(coordinator)
                refused = await client.put(bucket, key, b"never", pw=3)
                assert (refused.status, refused.text) == (503, "PW-value unsatisfied: 2/3\n"), refused
                assert _replicas(refused) == (0, 0, 0)
                deleted = await client.delete(bucket, key, pw="all")
                assert (deleted.status, deleted.text) == (503, "PW-value unsatisfied: 2/3\n"), deleted
                read = await client.get(bucket, key, pr=3)
                assert (read.status, read.text) == (503, "PR-value unsatisfied: 2/3\n"), read
            await trio.sleep(0.3)  # anything sent in spite of the refusal would have landed by now
            assert _stored_anywhere(cluster, bucket.encode(), key.encode()) == []
            after = {n: await cluster.client(n).stats() for n in before}
            assert all(after[n]["hints_pending"] == 0 for n in after)
            for name in ("vnode_puts", "vnode_gets", "hints_written"):  # no replica was asked
                assert sum(after[n][name] - before[n][name] for n in after) == 0, name
            assert sum(after[n]["node_put_failures"] - before[n]["node_put_failures"] for n in after) == 8
            assert sum(after[n]["node_get_failures"] - before[n]["node_get_failures"] for n in after) == 4
            # What the live primaries can meet still goes through.
            ok = await cluster.client(others[0]).put(bucket, key, b"v", pw=2)
            assert ok.status == 204, ok
            assert (await cluster.client(others[0]).get(bucket, key, pr=2)).status == 200
    trio_run(main, timeout_s=60)


def test_a_restarted_peer_is_dialled_at_once_not_after_the_backoff(local_cluster, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            n1 = cluster.node("n1")
            # A long backoff, so that only a reset can explain a quick redial.
            n1.pool.backoff_min_s = n1.pool.backoff_max_s = 60.0
            await cluster.stop("n3")
            await cluster.wait_down("n3")
            peer = n1.pool._peers["n3"]
            # n1's gossip casts to n3 fail and put n3 in backoff.
            await cluster.wait_until(lambda: peer.backoff.retry_at_s > trio.current_time() + 10)
            await cluster.start("n3")
            await cluster.wait_until(lambda: n1.membership.is_alive("n3") and "n3" not in n1.membership.down)
            assert peer.backoff.retry_at_s == -math.inf
            reply = await cluster.client("n1").get("any", "key", r="all")
            assert reply.status == 404, reply  # all three answered not-found; a backoff would give 503
            assert _replicas(reply) == (3, 0, 0)
    trio_run(main, timeout_s=60)


def test_replica_counts_are_consistent_across_get_put_and_delete(local_cluster, trio_run):
    async def main():
        async with local_cluster(4) as cluster:
            bucket, key = "count", "k"
            victim, *others = cluster.primaries(bucket, key)
            client = cluster.client(others[0])
            for quorum, low in (("one", 1), ("quorum", 2), ("all", 3)):
                for reply in (await client.put(bucket, key, b"v", w=quorum),
                              await client.get(bucket, key, r=quorum),
                              await client.delete(bucket, key, w=quorum)):
                    primary, fallback, hints = _replicas(reply)
                    assert low <= primary + fallback <= 3 and fallback == hints == 0, (quorum, reply)
            await cluster.stop(victim)
            await cluster.wait_down(victim)
            context = (await client.get(bucket, key)).headers["x-riak-vclock"]  # covers the tombstone
            put = await client.put(bucket, key, b"v2", w="all", headers={"X-Riak-Vclock": context})
            assert put.status == 204 and _replicas(put) == (2, 1, 1), put
            get = await client.get(bucket, key, r="all")
            assert get.status == 200 and _replicas(get) == (2, 1, 0), get
            gone = await client.delete(bucket, key, w="all", headers={"X-Riak-Vclock": get.headers["x-riak-vclock"]})
            assert gone.status == 204 and _replicas(gone) == (2, 1, 1), gone
    trio_run(main, timeout_s=60)
