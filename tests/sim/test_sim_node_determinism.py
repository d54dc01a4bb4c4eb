"""A simulated cluster is a function of its seed: the same seed gives the same trace (every message
delivered, every reply, every client response), in this process and in another one with another hash
seed; different seeds give different traces."""

import os
import random
import subprocess
import sys

import trio

from tools.sim.network import NetworkConfig
from tools.sim.node_cluster import Lost, Refused
from tools.sim.trio_run import SimSession, run_simulation

FAULTY = NetworkConfig(latency_s=0.0005, jitter_s=0.003, drop_p=0.01, duplicate_p=0.01, reorder_p=0.1)


async def busy_scenario(cluster):
    """Writers on every node, a crash and a restart, a partition and a heal: a trace with everything."""
    rng = random.Random(cluster.seed)

    async def client(name):
        for seq in range(15):
            node = cluster.ids[rng.randrange(len(cluster.ids))]
            try:
                read = await cluster.get(node, "det", f"k{seq % 3}")
                await cluster.put(node, "det", f"k{seq % 3}", f"{name}-{seq}".encode(), read.vclock)
            except (Refused, Lost):
                pass
            await trio.sleep(rng.uniform(0, 0.2))

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(client, f"c{i}")
        await cluster.sleep(0.7)
        await cluster.crash("node2")
        cluster.network.partition({"node1", "node3"}, {"node4", "node5"})
        await cluster.sleep(1.5)
        cluster.network.heal()
        await cluster.start("node2")
    await cluster.sleep(3.0)
    return cluster.digest(), cluster.network.delivered


def test_the_same_seed_gives_the_same_trace_and_another_seed_another():
    first = run_simulation(3, busy_scenario, faults=FAULTY)
    assert first[1] > 500  # the trace covers real traffic
    assert run_simulation(3, busy_scenario, faults=FAULTY) == first
    assert run_simulation(4, busy_scenario, faults=FAULTY)[0] != first[0]


def test_a_replay_in_another_process_with_another_hash_seed_gives_the_same_trace():
    program = ("import sys; sys.path.insert(0, sys.argv[1]); "
               "from tools.sim.trio_run import run_simulation; "
               "import test_sim_node_determinism as t; "
               "print(run_simulation(3, t.busy_scenario, faults=t.FAULTY)[0])")
    here = os.path.dirname(os.path.abspath(__file__))
    runs = [subprocess.Popen([sys.executable, "-c", program, here], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": str(hash_seed)})
            for hash_seed in (1, 2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    digests = [out.strip() for out, _ in outputs]
    here_digest = run_simulation(3, busy_scenario, faults=FAULTY)[0]
    assert digests[0] == digests[1] == here_digest, (digests, here_digest, [err[-2000:] for _, err in outputs])


def test_a_session_steps_the_same_run_as_one_piece():
    """Stepping from another thread (as the state machine does) does not change what happens."""
    async def put(cluster, i):
        return (await cluster.put(cluster.ids[i % 5], "s", "k", str(i).encode())).status

    async def whole(cluster):
        statuses = [await put(cluster, i) for i in range(5)]
        await cluster.sleep(2.0)
        return statuses, cluster.digest()

    session = SimSession(9, faults=FAULTY)
    try:
        statuses = [session.run(put, i) for i in range(5)]
        session.run(lambda cluster: cluster.sleep(2.0))
        stepped = (statuses, session.run(lambda cluster: _digest(cluster)))
    finally:
        session.close()
    assert stepped == run_simulation(9, whole, faults=FAULTY)


async def _digest(cluster):
    return cluster.digest()
