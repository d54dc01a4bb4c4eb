"""Issue 5's membership scenario in the whole-node simulator: under a write load, two nodes join a 5-node
cluster, then one member leaves. The history checker finds no acknowledged write lost, every running node
ends on the same ring, and that ring is balanced and spaced."""

from __future__ import annotations

import dataclasses
import functools
import json
import random

import pytest
import trio

from dynamo.config import Member
from ring.report import ownership_report
from tools.sim.history import History, check_history, check_resurrections
from tools.sim.node_workload import final_state, ring_divergence, writer
from tools.sim.replay import replayable, seeds
from tools.sim.trio_run import run_simulation

SETTLE_TIMEOUT_S = 120.0


def standalone(cluster, first: int) -> None:
    """The first `first` nodes form the cluster; the others start knowing only themselves (to join).
    The harness builds every node with the full member list, so the configs are narrowed here."""
    slots = cluster._slots  # the harness has no public seam for nodes outside the initial cluster
    members = {node_id: Member(node_id, slot.config.rpc_address, slot.config.http_address)
               for node_id, slot in slots.items()}
    for i, node_id in enumerate(cluster.ids):
        narrowed = tuple(members[n] for n in cluster.ids[:first]) if i < first else (members[node_id],)
        slots[node_id].config = dataclasses.replace(slots[node_id].config, members=narrowed)


async def post(cluster, node_id: str, path: str, body: dict | None = None):
    payload = json.dumps(body).encode() if body is not None else b""
    reply = await cluster.request(node_id, "POST", path, payload, (("Content-Type", "application/json"),))
    assert reply.status == 200, (node_id, path, reply.status, reply.text)
    return json.loads(reply.body)


async def change_and_settle(cluster, committer: str, staged, version: int) -> None:
    await cluster.wait_for(lambda: list(cluster.node(committer).claimant.staged()[:2]) == staged, 30,
                           f"{committer} to see {staged} staged")
    answer = await post(cluster, committer, "/admin/commit")
    assert answer["committed"] == version

    def settled() -> bool:
        return all(cluster.node(n).membership.ring.version == version and cluster.node(n).membership.transition
                   is None for n in cluster.alive())
    await cluster.wait_for(settled, SETTLE_TIMEOUT_S, f"every node to settle on ring v{version}")


async def join_two_then_leave_one(cluster, rng: random.Random) -> History:
    history = History()
    standalone(cluster, 5)
    for node_id in cluster.ids[:5]:
        await cluster.start(node_id)
    await cluster.wait_all_up(cluster.ids[:5])
    for node_id in cluster.ids[5:]:  # two one-node clusters, about to join
        await cluster.start(node_id)
    until_s = trio.current_time() + 1e6
    async with trio.open_nursery() as clients:
        for i in range(3):
            nodes = cluster.ids[i:5] + cluster.ids[:i]
            keys = [f"m{i}-{j}" for j in range(4)]
            clients.start_soon(functools.partial(writer, cluster, history, keys, nodes, until_s, f"w{i}",
                                                 random.Random(rng.getrandbits(64))))
        await cluster.sleep(2.0)
        for joiner in ("node6", "node7"):
            await post(cluster, joiner, "/admin/join", {"seed": "node1", "rpc": "node1.sim:7000"})
        await change_and_settle(cluster, "node2", [["node6", "node7"], []], 2)
        await post(cluster, "node3", "/admin/leave")
        await change_and_settle(cluster, "node4", [[], ["node3"]], 3)
        await cluster.wait_for(lambda: "node3" not in cluster.alive(), 30, "node3 to stop after leaving")
        await cluster.sleep(2.0)
        clients.cancel_scope.cancel()
    assert history.outcomes()["ok"] > 20, history.outcomes()
    keys = sorted({w.key for w in history.writes})
    final = await final_state(cluster, keys)
    problems = check_history(history, final) + check_resurrections(history, final) + ring_divergence(cluster)
    problems += cluster.errors + cluster.network.errors
    assert problems == [], "\n".join(problems) + "\n" + cluster.report()
    ring = cluster.node("node1").membership.ring
    report = ownership_report(ring)
    assert ring.members == ("node1", "node2", "node4", "node5", "node6", "node7")
    assert report.balanced and report.violations == report.violations_min == 0, report.format()
    return history


@pytest.mark.parametrize("seed", seeds([501, 502]))
def test_two_joins_and_a_leave_under_writes_lose_nothing(seed):
    rng = random.Random(seed)
    with replayable(seed):
        history = run_simulation(seed, functools.partial(join_two_then_leave_one, rng=rng), nodes=7, start=False)
    print(f"seed {seed}: {len(history.writes)} writes {history.outcomes()}")
