"""Anti-entropy in running nodes: what finding and repairing d differing keys among n costs, and what a
repair does to client throughput (measures and prints; not a test).

Two in-process nodes (n_val 2, so both hold every key) over memory backends, talking RPC over loopback TCP,
in one trio process on one core. Both stores are filled with the same n objects (written straight into
the backends, then the nodes start and build their trees from them: that build time is printed too).
For each d, half the d keys are dropped on node2 and half get a concurrent sibling on node1, then one
anti-entropy round of node1 (every partition, with node2) runs with an unlimited budget; the table shows
its wall time, the exchange's hash and byte counts (antientropy estimates), the repair's blob bytes, and
checks every partition's roots agree afterwards.

Throughput: a closed loop of 16 client tasks (half gets of the filled keys, half puts of fresh keys)
against node1's HTTP API object (no sockets), for a few seconds with no repair, then right after for as
long while a 10,000-key repair runs; once under the default budget (aae_keys_per_s), once unlimited.

Usage: python -m tools.aaenodebench [--keys N] [--quick] [--load-s S]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from typing import Any

import trio

from dynamo.api import Api
from dynamo.config import Member, NodeConfig
from dynamo.http.message import make_request
from dynamo.node import Node
from dynamo.object import Content, StoredObject, encode_object, put
from dynamo.service.replica import OBJECTS
from dynamo.storage import MemoryBackend, Put
from ring.hashing import partition_for_key

PARTITIONS = 64
N_VAL = 2  # both nodes hold every key
DIFFERENCES = (1, 100, 10_000)
BUCKET = b"bench"
UNLIMITED_KEYS_PER_S = 10**9


def key_of(i: int) -> bytes:
    return b"key%08d" % i


def fill(backends: list[MemoryBackend], keys: int) -> None:
    blob = encode_object(put(None, Content(b"x" * 100), None, "loader:1"))
    for start in range(0, keys, 20_000):
        ops = [Put(partition_for_key(BUCKET, key_of(i), PARTITIONS), BUCKET, key_of(i), blob)
               for i in range(start, min(keys, start + 20_000))]
        for backend in backends:
            backend.write_batch(ops)


async def start_nodes(nursery: trio.Nursery, backends: list[MemoryBackend], keys_per_s: int) -> list[Node]:
    listeners = [await trio.open_tcp_listeners(0, host="127.0.0.1") for _ in backends]
    ports = [pair[0].socket.getsockname()[1] for pair in listeners]
    members = tuple(Member(f"node{i + 1}", f"127.0.0.1:{port}", f"127.0.0.1:{40000 + i}")
                    for i, port in enumerate(ports))
    nodes = []
    for i, backend in enumerate(backends):
        config = NodeConfig(node_id=f"node{i + 1}", cluster="bench", rpc_port=ports[i], http_port=40000 + i,
                            data_dir=None, backend="memory", members=members, partitions=PARTITIONS, n_val=N_VAL,
                            r=1, w=1, dw=1, read_repair=False, aae_interval_s=10**6, aae_keys_per_s=keys_per_s,
                            gossip_interval_s=0.2, log_level="WARNING")
        node = Node(config, backend=backend, serve_http=False)
        await nursery.start(lambda task_status, n=node, l=listeners[i]: n.run(rpc_listeners=l,
                                                                               task_status=task_status))
        nodes.append(node)
    return nodes


async def diverge(nodes: list[Node], count: int, rng: random.Random, keys: int) -> None:
    node1, node2 = nodes
    chosen = rng.sample(range(keys), count)
    for j, i in enumerate(chosen):
        key = key_of(i)
        if j % 2 == 0:
            blob = node2.replica.read(BUCKET, key)
            await node2.replica.drop_if(BUCKET, key, blob, lambda obj: True)
        else:
            base: StoredObject = OBJECTS.decode(node1.replica.read(BUCKET, key))
            sibling = put(base, Content(b"sibling-%d" % j), None, f"other:{j}")
            await node1.replica.merge_in(BUCKET, key, encode_object(sibling), None)


async def repair_round(nodes: list[Node]) -> dict[str, Any]:
    aae = nodes[0].aae
    before = (aae.hashes_received, aae.bytes_exchanged, aae.repair_bytes, nodes[0].stats.aae_keys_repaired)
    started = time.perf_counter()
    await aae.round()
    elapsed_s = time.perf_counter() - started
    agree = all(nodes[0].aae.trees.tree(p, N_VAL).root == nodes[1].aae.trees.tree(p, N_VAL).root
                for p in range(PARTITIONS))
    return {"time_s": elapsed_s, "hashes": aae.hashes_received - before[0], "bytes": aae.bytes_exchanged - before[1],
            "repair_bytes": aae.repair_bytes - before[2], "repaired": nodes[0].stats.aae_keys_repaired - before[3],
            "agree": agree}


async def client_load(api: Api, keys: int, duration_s: float, tasks: int = 16) -> float:
    """Requests per second of a closed loop against `api`: half gets of the filled keys, half puts."""
    done = 0
    deadline = trio.current_time() + duration_s

    async def worker(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        while trio.current_time() < deadline:
            if rng.random() < 0.5:
                reply = await api(make_request("GET", "/buckets/bench/keys/" + key_of(rng.randrange(keys)).decode()))
            else:  # a fresh key each time: no sibling pile-up from context-free puts
                path = f"/buckets/load/keys/{seed}-{done}"
                reply = await api(make_request("PUT", path, [("Content-Type", "text/plain")], b"y" * 100))
            assert reply.status in (200, 204, 300), reply.status
            done += 1
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for seed in range(tasks):
            nursery.start_soon(worker, seed)
    return done / (trio.current_time() - started)


async def throughput_table(nodes: list[Node], keys: int, load_s: float, default_budget: int,
                           rng: random.Random) -> list[tuple[str, float, float, str]]:
    """Per budget: client req/s without repair, then (right after, same state) while 10,000 keys repair."""
    api = Api(nodes[0])
    await client_load(api, keys, 1.0)  # warm-up: caches, the load bucket's first partitions
    rows = []
    for label, budget in ((f"budget {default_budget} keys/s", default_budget),
                          ("unlimited budget", UNLIMITED_KEYS_PER_S)):
        baseline = await client_load(api, keys, load_s)
        await diverge(nodes, 10_000, rng, keys)
        nodes[0].aae.set_budget(budget)
        repaired_before = nodes[0].stats.aae_keys_repaired
        async with trio.open_nursery() as nursery:
            started = time.perf_counter()
            nursery.start_soon(nodes[0].aae.round)
            rate = await client_load(api, keys, load_s)
            repaired_during = nodes[0].stats.aae_keys_repaired - repaired_before
        rows.append((label, baseline, rate, f"{repaired_during} keys repaired in the window; all 10,000 "
                                            f"after {time.perf_counter() - started:.1f} s"))
    return rows


async def main(keys: int, load_s: float) -> None:
    rng = random.Random(7)
    backends = [MemoryBackend(), MemoryBackend()]
    started = time.perf_counter()
    fill(backends, keys)
    print(f"filled two stores with {keys:,} keys in {time.perf_counter() - started:.1f} s")
    default_budget = NodeConfig().aae_keys_per_s
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        nodes = await start_nodes(nursery, backends, UNLIMITED_KEYS_PER_S)
        for node in nodes:
            await node.aae.trees.build_done.wait()
        gc.collect()
        gc.freeze()  # the million stored objects are long-lived: keep full collections from rescanning them
        print(f"both nodes built their trees from storage in {time.perf_counter() - started:.1f} s "
              f"({PARTITIONS} partitions, {NodeConfig().aae_tree_segments} segments each, one core)")
        await trio.sleep(1.0)  # gossip: each node sees the other up
        print(f"\nfind and repair d differing keys among {keys:,} (one round of node1: {PARTITIONS} exchanges)")
        print(f"{'d':>7} {'time s':>8} {'hashes':>8} {'exch. KiB':>10} {'repair KiB':>11} {'repaired':>9} agree")
        await repair_round(nodes)  # nothing differs: the baseline, root rounds only
        for d in (0,) + DIFFERENCES:
            if d:
                await diverge(nodes, d, rng, keys)
            row = await repair_round(nodes)
            print(f"{d:>7} {row['time_s']:>8.3f} {row['hashes']:>8} {row['bytes'] / 1024:>10.1f} "
                  f"{row['repair_bytes'] / 1024:>11.1f} {row['repaired']:>9} {row['agree']}")
        print(f"\nclient throughput on node1 (16 tasks, half gets/half puts, {load_s:g} s each)")
        print(f"{'repair of 10,000 keys':<24} {'idle req/s':>10} {'during':>8}  repair")
        for label, baseline, rate, note in await throughput_table(nodes, keys, load_s, default_budget, rng):
            print(f"{label:<24} {baseline:>10.0f} {rate:>8.0f}  {note}")
        nursery.cancel_scope.cancel()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10**6)
    parser.add_argument("--quick", action="store_true", help="10^5 keys and 2 s loads")
    parser.add_argument("--load-s", type=float, default=5.0)
    args = parser.parse_args()
    keys, load_s = (100_000, 2.0) if args.quick else (args.keys, args.load_s)
    trio.run(main, keys, load_s)


if __name__ == "__main__":
    cli()
