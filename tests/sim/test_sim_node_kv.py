"""Five whole nodes in the simulator: reads and writes at several quorums, siblings, deletes (as tests/e2e/
test_kv.py does with real processes, here over several seeds and a jittery network)."""

import pytest
import trio
import trio.testing

from tools.sim.network import NetworkConfig
from tools.sim.node_cluster import open_cluster
from tools.sim.replay import replayable, seeds
from tools.sim.trio_run import run_simulation, simulation

JITTERY = NetworkConfig(latency_s=0.0005, jitter_s=0.002, reorder_p=0.05, reorder_delay_s=0.01)
QUORUM_VALUES = {1: 1, 2: 2, 3: 3, "one": 1, "quorum": 2, "all": 3}
QUORUMS = [(1, 3, 1), (2, 2, 2), (3, 1, 3), ("quorum", "quorum", "quorum"), ("all", "one", "all"), (1, 1, "one")]


async def put_get_delete(cluster, w, r, rw):
    key = f"k-{w}-{r}"
    writer, reader, deleter = cluster.ids[0], cluster.ids[2], cluster.ids[4]
    value = f"value for w={w} r={r}".encode()
    put = await cluster.put(writer, "quorums", key, value, w=w)
    assert put.status == 204, put.text
    assert put.headers["x-dynamo-replicas"].startswith("primary=")
    if QUORUM_VALUES[w] + QUORUM_VALUES[r] <= 3:  # the quorums need not overlap: let the write spread
        await cluster.sleep(0.5)
    got = await cluster.get(reader, "quorums", key, r=r)
    assert (got.status, got.body, got.headers["content-type"]) == (200, value, "text/plain")
    assert got.vclock
    deleted = await cluster.delete(deleter, "quorums", key, got.vclock, rw=rw, w=rw)
    assert deleted.status == 204, deleted.text
    gone = await cluster.get(writer, "quorums", key, r="all")
    assert gone.status == 404 and gone.vclock, (gone.status, gone.headers)


async def siblings_and_tombstones(cluster):
    assert (await cluster.put("node1", "siblings", "cart", b"apples", w="all")).status == 204
    assert (await cluster.put("node4", "siblings", "cart", b"pears", w="all")).status == 204
    both = await cluster.get("node2", "siblings", "cart")
    assert both.status == 300, both.text
    assert both.headers["content-type"].startswith("multipart/mixed")
    assert sorted(both.values()) == [b"apples", b"pears"]
    plain = await cluster.request("node3", "GET", "/buckets/siblings/keys/cart", headers=[("Accept", "text/plain")])
    assert plain.status == 300 and plain.text.startswith("Siblings:") and len(plain.text.split()) == 3
    merged = await cluster.put("node5", "siblings", "cart", b"apples+pears", both.vclock, w="all")
    assert merged.status == 204, merged.text
    for node in cluster.ids:
        one = await cluster.get(node, "siblings", "cart")
        assert (one.status, one.body) == (200, b"apples+pears")
    # A delete leaves a tombstone: 404 with a context, and a write with that context replaces it.
    read = await cluster.get("node3", "siblings", "cart")
    assert (await cluster.delete("node4", "siblings", "cart", read.vclock)).status == 204
    gone = await cluster.get("node5", "siblings", "cart", r="all")
    assert gone.status == 404 and gone.vclock, (gone.status, gone.headers)
    assert (await cluster.put("node1", "siblings", "cart", b"back", gone.vclock, w="all")).status == 204
    back = await cluster.get("node2", "siblings", "cart", r="all")
    assert (back.status, back.body) == (200, b"back")


async def bad_input_is_refused(cluster):
    too_big = await cluster.get("node1", "quorums", "k", r=4)
    assert too_big.status == 400, too_big.text
    bad_clock = await cluster.put("node2", "quorums", "k", b"v", "not-a-clock")
    assert bad_clock.status == 400 and "X-Riak-Vclock" in bad_clock.text, bad_clock.text


@pytest.mark.parametrize("seed", seeds([11, 12, 13]))
def test_kv_semantics_at_several_quorums(seed):
    async def scenario(cluster):
        for w, r, rw in QUORUMS:
            await put_get_delete(cluster, w, r, rw)
        await siblings_and_tombstones(cluster)
        await bad_input_is_refused(cluster)
        assert cluster.errors == [] and cluster.network.errors == []

    with replayable(seed):
        run_simulation(seed, scenario, faults=JITTERY)


def test_a_scenario_can_drive_its_own_trio_run_with_open_cluster():
    async def main():
        async with open_cluster(7, nodes=4) as cluster:
            rings = cluster.rings()
            assert sorted(rings) == cluster.ids and len(set(rings.values())) == 1
            assert len(set(cluster.primaries("b", "k"))) == 3
            return cluster.digest()

    with simulation(7):
        first = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    with simulation(7):
        assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == first
