"""Client workloads and end-of-run checks for simulated clusters (tools/sim/node_cluster.py).

- `writer`: read-modify-write cycles on its own keys, over a list of coordinators, recording every read
  and write attempt in a `tools.sim.history.History` (the same client the real-process test runs).
- `final_state`: after heal, read every key at r=all (retrying while quorums fail), which also starts
  read repair; returns key -> live values for the history checkers.
- `replica_divergence`: the primaries of each key hold byte-equal copies (canonical encodings: equal
  bytes are equal causal histories), or a problem line saying who differs.
- `ring_divergence`: every running node holds the same ring (version and digest).
"""

from __future__ import annotations

import random
from typing import Iterable

import trio

from tools.sim.history import History, Write
from tools.sim.node_cluster import ClientError, Lost, Refused, SimCluster

BUCKET = "history"


async def writer(cluster: SimCluster, history: History, keys: list[str], nodes: list[str], until_s: float,
                 name: str, rng: random.Random, *, delete_p: float = 0.0, pause_s: float = 0.25) -> None:
    """Read-modify-write cycles until virtual time `until_s`; each write's value is unique (name-seq)."""
    seq = 0
    while trio.current_time() < until_s:
        seq += 1
        key, node = keys[seq % len(keys)], nodes[seq % len(nodes)]
        await trio.sleep(rng.uniform(0, pause_s))
        try:
            read = await cluster.get(node, BUCKET, key)
        except ClientError:
            continue
        if read.status not in (200, 300, 404):
            continue
        seen = frozenset(read.values())
        history.record_read(key, seen)
        delete = read.vclock is not None and rng.random() < delete_p  # a delete names what it saw
        write = Write(key, b"" if delete else f"{name}-{seq}".encode(), seen, delete=delete)
        history.begin(write)
        try:
            if delete:
                reply = await cluster.delete(node, BUCKET, key, read.vclock)
            else:
                reply = await cluster.put(node, BUCKET, key, write.value, read.vclock)
            write.outcome = "ok" if reply.status == 204 else "unknown"
        except Refused:
            write.outcome = "refused"
        except Lost:
            write.outcome = "unknown"


async def final_state(cluster: SimCluster, keys: Iterable[str], *, timeout_s: float = 60.0,
                      bucket: str = BUCKET) -> dict[str, frozenset[bytes]]:
    """Each key's live values read at r=all (pr=all too: only primaries), retried until it succeeds."""
    final = {}
    for i, key in enumerate(sorted(keys)):
        reader = cluster.alive()[i % len(cluster.alive())]

        async def read():
            try:
                reply = await cluster.get(reader, bucket, key, r="all", pr="all")
            except ClientError:
                return None
            return reply if reply.status in (200, 300, 404) else None

        reply = None
        deadline_s = trio.current_time() + timeout_s
        while reply is None:
            reply = await read()
            if reply is None:
                if trio.current_time() > deadline_s:
                    raise AssertionError(f"{key}: no r=all read succeeded within {timeout_s} s")
                await trio.sleep(0.5)
        final[key] = frozenset(reply.values())
    return final


def replica_divergence(cluster: SimCluster, keys: Iterable[str], *, bucket: str = BUCKET,
                       n_val: int = 3) -> list[str]:
    problems = []
    for key in sorted(keys):
        primaries = cluster.primaries(bucket, key, n_val)
        copies = {node: cluster.stored(node, bucket, key) for node in primaries}
        if len(set(copies.values())) > 1:
            summary = {node: (None if blob is None else cluster.stored_object(node, bucket, key).clock.entries)
                       for node, blob in copies.items()}
            problems.append(f"{key}: primaries differ: {summary}")
    return problems


def ring_divergence(cluster: SimCluster) -> list[str]:
    rings = cluster.rings()
    return [] if len(set(rings.values())) <= 1 else [f"rings differ: {rings}"]
