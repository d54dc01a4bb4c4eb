"""Tombstone reaping in running nodes: only when every primary holds the tombstone and no hint is pending;
a primary that missed the delete comes back without resurrecting the value; a reap never lets a later
write be swallowed by a tombstone another replica still holds."""

from __future__ import annotations

import pytest
import trio

from dynamo.http.multipart import decode_multipart
from dynamo.object import decode_object, object_digest
from dynamo.service.reaper import ReapLedger

REAP = dict(read_repair=False, aae_interval_s=0.1, aae_keys_per_s=10_000, aae_tree_segments=64,
            tombstone_reap_grace_s=0.3)


def held(cluster, node_id: str, key: bytes):
    blob = cluster.node(node_id).replica.read(b"b", key)
    return None if blob is None else decode_object(blob)


def live_values(reply) -> list[bytes]:
    if reply.status == 200:
        return [reply.body]
    assert reply.status == 300, reply
    return [p.value for p in decode_multipart(reply.headers["content-type"], reply.body) if not p.deleted]


def absent_everywhere(cluster, key: bytes) -> bool:
    return all(held(cluster, n, key) is None for n in cluster.ids if cluster.handles[n].running)


def test_a_tombstone_every_primary_holds_is_reaped_everywhere(local_cluster, trio_run):
    async def main():
        async with local_cluster(3, **REAP) as cluster:
            client = cluster.client("n2")
            assert (await client.put("b", "gone", b"v", w="all")).status == 204
            assert (await client.delete("b", "gone", w="all")).status == 204
            assert all(held(cluster, n, b"gone").is_tombstone for n in cluster.ids)
            await cluster.wait_until(lambda: absent_everywhere(cluster, b"gone"), timeout_s=10)
            assert sum(cluster.node(n).stats.aae_tombstones_reaped for n in cluster.ids) == 3
            assert (await client.get("b", "gone", r="all")).status == 404
    trio_run(main, timeout_s=40)


def test_a_primary_down_through_the_delete_blocks_reaping_and_returns_without_resurrection(local_cluster,
                                                                                          trio_run):
    async def main():
        async with local_cluster(3, **REAP) as cluster:
            client = cluster.client("n1")
            assert (await client.put("b", "k", b"old", w="all")).status == 204
            await cluster.stop("n3")
            await cluster.wait_down("n3")
            assert (await client.delete("b", "k", w=2)).status == 204
            await trio.sleep(1.5)  # many rounds and grace periods
            assert held(cluster, "n1", b"k").is_tombstone and held(cluster, "n2", b"k").is_tombstone
            assert [c.value for c in held(cluster, "n3", b"k").siblings] == [b"old"]  # its disk, unchanged
            await cluster.start("n3")
            await cluster.wait_up("n3")
            await cluster.wait_until(lambda: absent_everywhere(cluster, b"k"), timeout_s=15)
            for node_id in cluster.ids:
                assert (await cluster.client(node_id).get("b", "k", r="all")).status == 404
            await trio.sleep(0.5)  # more rounds: nothing brings the value back
            assert absent_everywhere(cluster, b"k")
    trio_run(main, timeout_s=60)


def test_a_pending_hint_anywhere_blocks_reaping_until_delivered(local_cluster, trio_run):
    async def main():
        async with local_cluster(4, **{**REAP, "handoff_interval_s": 1000.0}) as cluster:
            a, b, c = cluster.primaries("b", "h")
            fallback = next(n for n in cluster.ids if n not in (a, b, c))
            client = cluster.client(a)
            assert (await client.put("b", "h", b"v1", w="all")).status == 204
            await cluster.stop(c)
            await cluster.wait_down(c)
            context = (await client.get("b", "h")).headers["x-riak-vclock"]
            reply = await client.put("b", "h", b"v2", w="all", headers={"X-Riak-Vclock": context})
            assert reply.status == 204, reply
            assert cluster.node(fallback).hints.count(c) == 1  # v2 waits on the fallback for c
            await cluster.start(c)
            await cluster.wait_up(c)
            assert (await client.delete("b", "h", w="all")).status == 204  # a, b and c hold the tombstone
            await trio.sleep(1.5)
            assert all(held(cluster, n, b"h").is_tombstone for n in (a, b, c))
            await cluster.node(fallback).handoff.round()  # delivers v2 to c: the tombstone covers it
            await cluster.wait_until(lambda: absent_everywhere(cluster, b"h"), timeout_s=15)
            assert (await client.get("b", "h", r="all")).status == 404
    trio_run(main, timeout_s=60)


def test_a_key_reaped_on_one_primary_gets_the_tombstone_back_from_the_others(local_cluster, trio_run):
    async def main():
        async with local_cluster(3, **{**REAP, "tombstone_reap_grace_s": 1000.0}) as cluster:
            client = cluster.client("n1")
            assert (await client.put("b", "m", b"v", w="all")).status == 204
            assert (await client.delete("b", "m", w="all")).status == 204
            tombstone = cluster.node("n1").replica.read(b"b", b"m")
            digest = object_digest(b"b", b"m", decode_object(tombstone))
            assert await cluster.node("n2").aae.reaper.drop([(b"b", b"m", digest)]) == [True]
            assert held(cluster, "n2", b"m") is None
            await cluster.wait_until(lambda: cluster.node("n2").replica.read(b"b", b"m") == tombstone, timeout_s=10)
    trio_run(main, timeout_s=40)


def test_after_a_partial_reap_a_new_write_is_not_swallowed_by_a_tombstone_held_elsewhere(local_cluster, trio_run):
    async def main():
        async with local_cluster(3, **{**REAP, "aae_interval_s": 1000.0}) as cluster:
            n1 = cluster.node("n1")
            client = cluster.client("n1")
            assert (await client.put("b", "d", b"v", w="all")).status == 204
            assert (await client.delete("b", "d", w="all")).status == 204
            digest = object_digest(b"b", b"d", decode_object(n1.replica.read(b"b", b"d")))
            assert await n1.aae.reaper.drop([(b"b", b"d", b"\0" * 16)]) == [False]  # not that version
            actor = n1.coordinator.actor
            assert await n1.aae.reaper.drop([(b"b", b"d", digest)]) == [True]
            assert n1.coordinator.actor != actor  # the tombstone held its dots: it was retired first
            # n2 and n3 still hold the tombstone; a write without context at n1 must survive them.
            assert (await client.put("b", "d", b"new", w="all")).status == 204
            reply = await client.get("b", "d", r="all", headers={"Accept": "multipart/mixed"})
            assert live_values(reply) == [b"new"], reply  # beside the tombstone (concurrent), not under it
            assert [c.value for c in held(cluster, "n2", b"d").live_siblings] == [b"new"]
    trio_run(main, timeout_s=40)


def test_reap_ledger_needs_the_same_digest_agreed_for_the_grace():
    ledger = ReapLedger(grace_s=10.0)
    assert ledger.observe(7, {b"k": b"d1", b"j": b"d1"}, 0.0) == []
    assert ledger.observe(7, {b"k": b"d1", b"j": b"d1"}, 9.0) == []
    assert ledger.observe(7, {b"k": b"d2", b"j": b"d1"}, 10.0) == [(b"j", b"d1")]  # k changed: starts over
    assert ledger.observe(7, {b"k": b"d2"}, 15.0) == []  # j left the agreed set
    assert ledger.observe(7, {b"k": b"d2", b"j": b"d1"}, 20.0) == [(b"k", b"d2")]
    ledger.reset(7)  # a round without full agreement
    assert ledger.observe(7, {b"k": b"d2"}, 21.0) == []
    with pytest.raises(ValueError):
        ReapLedger(grace_s=-1)


def test_a_grace_shorter_than_two_request_timeouts_is_warned_about(local_cluster, trio_run, caplog):
    async def main():
        async with local_cluster(1, **REAP):  # grace 0.3 s, request timeout 3 s
            pass
        short = [r for r in caplog.records if "tombstone_reap_grace_s 0.3 is under twice" in r.getMessage()]
        assert len(short) == 1 and short[0].levelname == "WARNING"
        caplog.clear()
        async with local_cluster(1, **{**REAP, "tombstone_reap_grace_s": 6.0}):
            pass
        assert not [r for r in caplog.records if "tombstone_reap_grace_s" in r.getMessage()]
    trio_run(main, timeout_s=30)
