"""Whole nodes under crashes in the simulator: sloppy quorum and hinted handoff, and the history check
while a coordinator crashes (as tests/e2e/test_fault.py does with real processes, here over many seeds)."""

import functools
import random

import pytest
import trio

from tools.sim.history import History, check_history, check_resurrections
from tools.sim.network import NetworkConfig
from tools.sim.node_workload import final_state, replica_divergence, ring_divergence, writer
from tools.sim.replay import replayable, seeds
from tools.sim.trio_run import run_simulation

HINT_DRAIN_TIMEOUT_S = 30.0
LOSSY = NetworkConfig(latency_s=0.0005, jitter_s=0.002, drop_p=0.002, reorder_p=0.05, reorder_delay_s=0.01)


async def killed_primary_gets_its_writes_back(cluster):
    bucket, key = "handoff", "k1"
    primaries = cluster.primaries(bucket, key)
    victim, coordinator = primaries[2], primaries[0]

    async def write(value, **query):
        """A put with the context of a read first. LOSSY loses a message now and then (0.2%), and a put
        that needs every target then times out (seed 2002: "W-value unsatisfied: 2/3" for the first put)
        or fails at once (seed 4004: a lost handshake message, and the peer's reconnect backoff turns the
        next requests away): such a put is tried again, up to 3 times, a second apart, as a client would."""
        for attempt in range(3):
            if attempt:
                await cluster.sleep(1.0)
            read = await cluster.get(coordinator, bucket, key)
            assert read.status in (200, 404), read.text
            reply = await cluster.put(coordinator, bucket, key, value, read.vclock, **query)
            if not (reply.status == 503 and reply.text.startswith("W-value unsatisfied")):
                break
        return reply

    assert (await write(b"v0", w="all")).status == 204
    await cluster.crash(victim)
    await cluster.wait_seen_down(victim)

    for i in range(1, 6):
        put = await write(f"v{i}".encode(), w=2)
        assert put.status == 204, put.text
    sloppy = await write(b"v3-sloppy", w=3)  # met only with a fallback standing in
    assert sloppy.status == 204, sloppy.text
    assert "primary=2 fallback=1" in sloppy.headers["x-dynamo-replicas"], sloppy.headers
    refused = await write(b"pw3", pw=3)
    assert refused.status == 503 and "PW-value unsatisfied" in refused.text, (refused.status, refused.text)
    latest = b"v6"
    assert (await write(latest, w=2)).status == 204
    assert sum(cluster.hints_pending().values()) > 0, "a fallback keeps a hint for the dead primary"

    await cluster.start(victim)
    await cluster.wait_all_up(cluster.ids)
    await cluster.wait_for(lambda: sum(cluster.hints_pending().values()) == 0, HINT_DRAIN_TIMEOUT_S,
                           "every hint to be delivered (hints_pending 0 on every node)")
    local = await cluster.get(victim, bucket, key, r=1)  # its own copy answers first: handoff delivered
    assert (local.status, local.body) == (200, latest), (local.status, local.text)
    assert cluster.stored_object(victim, bucket, key).siblings[0].value == latest
    for reader in cluster.ids:
        async def pr3():
            reply = await cluster.get(reader, bucket, key, pr=3, r=3)
            return reply if reply.status != 503 else None
        got = None
        for _ in range(60):  # a pool that backed off from the dead peer fails fast until its backoff ends
            got = await pr3()
            if got is not None:
                break
            await cluster.sleep(0.25)
        assert got is not None, f"a pr=3 read on {reader} never reached all three primaries"
        assert (got.status, got.body) == (200, latest), (reader, got.status, got.text)
    assert cluster.errors == [] and cluster.network.errors == []


@pytest.mark.parametrize("seed", seeds([21, 22, 23]))
def test_a_crashed_primary_gets_its_writes_back_through_hints(seed):
    with replayable(seed):
        run_simulation(seed, killed_primary_gets_its_writes_back, faults=LOSSY)


async def coordinator_crash_under_writers(cluster, rng, *, victim_stays_down_s, writers=4, deletes=0.0):
    history = History()
    victim = cluster.ids[rng.randrange(len(cluster.ids))]
    until_s = trio.current_time() + 4.0 + victim_stays_down_s + 3.0
    async with trio.open_nursery() as clients:
        for i in range(writers):
            nodes = cluster.ids[i:] + cluster.ids[:i]
            keys = [f"h{i}-{j}" for j in range(3)]
            clients.start_soon(functools.partial(writer, cluster, history, keys, nodes, until_s, f"w{i}",
                                                 random.Random(rng.getrandbits(64)), delete_p=deletes))
        await cluster.sleep(rng.uniform(1.0, 4.0))
        acked_before = history.outcomes()["ok"]
        await cluster.crash(victim)
        await cluster.sleep(victim_stays_down_s)
        await cluster.start(victim)
    assert acked_before > 0 and history.outcomes()["ok"] > acked_before, history.outcomes()
    await cluster.wait_all_up(cluster.ids)
    await cluster.wait_for(lambda: sum(cluster.hints_pending().values()) == 0, HINT_DRAIN_TIMEOUT_S,
                           "hints to drain")
    keys = sorted({w.key for w in history.writes})
    final = await final_state(cluster, keys)
    problems = check_history(history, final) + check_resurrections(history, final)
    await cluster.sleep(2.0)  # read repair of the final reads
    problems += replica_divergence(cluster, keys) + ring_divergence(cluster)
    problems += cluster.errors + cluster.network.errors
    assert problems == [], "\n".join(problems) + "\n" + cluster.report()
    return history


@pytest.mark.parametrize("seed", seeds(range(100, 110)))
def test_no_acknowledged_write_is_lost_when_a_coordinator_crashes(seed):
    rng = random.Random(seed)

    async def scenario(cluster):
        return await coordinator_crash_under_writers(cluster, rng, victim_stays_down_s=rng.uniform(0.5, 8.0),
                                                     deletes=0.1 if seed % 2 else 0.0)

    with replayable(seed):
        history = run_simulation(seed, scenario, faults=LOSSY)
    print(f"seed {seed}: {len(history.writes)} writes {history.outcomes()}")
