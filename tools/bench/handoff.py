"""Handoff benchmark: a 6th node joins a 5-node cluster holding --keys keys; how fast data moves, and what
clients see meanwhile. Measures and prints; asserts nothing.

    python -m tools.bench.handoff --keys 100000 --value-bytes 100

Steps: start 5 node processes (dynamo.cluster), preload the keys (tools.bench.preload, w=quorum), run a
closed-loop client load (threads doing 90% GET / 10% PUT of preloaded keys on keep-alive connections to
random nodes) for --baseline-s, then add node6 as `dynamo cluster add` does and commit its join; the load
goes on until every node reports the change settled (/admin/transfers). Handoff rate = keys (and bytes)
the sources report sent / time from commit to settled. Latency percentiles are per phase, as the clients
saw them and, to tell a slow node from a slow client (the load threads share one interpreter, on the same
two cores), as the coordinators timed them: every node's /stats is polled twice a second for the slowest
get and put of its latency window (node_get_fsm_time_100, node_put_fsm_time_100); a window's slowest that
rose since the last poll is a request of the current phase.
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import tempfile
import threading
import time
import urllib.parse

from dynamo import cluster, expansion
from dynamo.admin import AdminError, fetch_json
from tools.bench.cluster import free_port_base
from tools.bench.preload import bench_value, preload
from tools.bench.script import load_key_prefix

RUN = "handoff"


class Load:
    """Client threads recording (phase, latency_s, status) per request."""

    def __init__(self, urls: list[str], keys: int, value: bytes, threads: int) -> None:
        self.urls, self.keys, self.value = urls, keys, value
        self.phase = "baseline"
        self.samples: list[tuple[str, float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _loop(self, seed: int) -> None:
        rng = random.Random(seed)
        prefix = "/buckets/bench/keys/" + urllib.parse.quote(load_key_prefix(RUN), safe="")
        connections: dict[str, http.client.HTTPConnection] = {}
        while not self._stop.is_set():
            url = rng.choice(self.urls)
            parsed = urllib.parse.urlsplit(url)
            conn = connections.get(url) or connections.setdefault(
                url, http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10))
            path = f"{prefix}{rng.randrange(self.keys)}"
            started_s = time.perf_counter()
            try:
                if rng.random() < 0.9:
                    conn.request("GET", path)
                else:
                    conn.request("PUT", path, self.value, {"Content-Type": "application/octet-stream"})
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                connections.pop(url).close()
                status = 0
            self.samples.append((self.phase, time.perf_counter() - started_s, status))


class StatsPoller:
    """A thread reading each node's slowest coordinated get and put (µs) twice a second; each rise of a
    window's slowest is a request that ended since the last poll, so it counts for the current phase."""

    def __init__(self, load: Load, nodes: dict[str, str]) -> None:
        self.load, self.nodes = load, nodes  # HTTP URL -> node id
        self.slowest: dict[str, dict[str, tuple[int, str]]] = {}  # phase -> op -> (µs, node id)
        self._last: dict[tuple[str, str], int] = {}  # (url, op) -> the window's slowest at the last poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            phase = self.load.phase
            for url, node_id in self.nodes.items():
                try:
                    stats = fetch_json(url, "/stats")
                except AdminError:
                    continue  # node6 before it serves; a node under load that did not answer in time
                seen = self.slowest.setdefault(phase, {})
                for op in ("get", "put"):
                    value = stats.get(f"node_{op}_fsm_time_100", 0)
                    rose = value > self._last.get((url, op), 0)
                    self._last[(url, op)] = value
                    if rose and value > seen.get(op, (0, ""))[0]:
                        seen[op] = (value, node_id)

    def describe(self, phase: str) -> str:
        seen = self.slowest.get(phase, {})
        parts = [f"{op} {seen[op][0] / 1000:.1f} ms ({seen[op][1]})" for op in ("get", "put") if op in seen]
        return "slowest as coordinators timed it: " + (", ".join(parts) if parts else "n/a")


def _percentiles(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return "n/a"
    cuts = statistics.quantiles(latencies, n=100)
    return f"p50 {cuts[49] * 1000:.1f} ms  p99 {cuts[98] * 1000:.1f} ms  max {max(latencies) * 1000:.1f} ms"


def _settled(spec: cluster.ClusterSpec) -> tuple[bool, list[dict]]:
    reports = [fetch_json(node.http_url, "/admin/transfers") for node in spec.nodes]
    return all(r["next_version"] is None and r["ring_version"] >= 2 for r in reports), reports


def run(keys: int, value_bytes: int, partitions: int, threads: int, baseline_s: float, batch_keys: int) -> None:
    data_dir = tempfile.mkdtemp(prefix="dynamo-handoff-")
    base = free_port_base(14, random.Random())
    spec = cluster.plan_cluster(data_dir, 5, http_port=base, rpc_port=base + 7, partitions=partitions,
                                node_settings={"transfer_batch_keys": batch_keys})
    supervisor = cluster.Supervisor(spec)
    try:
        cluster.write_configs(spec)
        supervisor.start_all()
        supervisor.wait_ready(120)
        supervisor.wait_converged(60)
        urls = [node.http_url for node in spec.nodes]
        loaded = preload(urls, RUN, keys, value_bytes, consistency="quorum")
        print(f"preloaded {loaded.written}/{keys} keys of {value_bytes} bytes in {loaded.duration_s:.1f} s")
        load = Load(urls, keys, bench_value(value_bytes), threads)
        poller = StatsPoller(load, {node.http_url: node.node_id for node in spec.nodes})
        load.start()
        poller.start()
        time.sleep(baseline_s)
        spec = expansion.record_added(data_dir)
        expansion.start_added(supervisor)
        supervisor.wait_ready(120, ["node6"])
        load.phase = "joining"  # node6 up, join being staged
        print(expansion.join_and_commit(spec, "node6").splitlines()[0])
        committed_s = time.monotonic()
        load.phase = "handoff"
        while True:
            done, reports = _settled(spec)
            if done:
                break
            time.sleep(0.5)
        handoff_s = time.monotonic() - committed_s
        load.phase = "after"
        time.sleep(min(baseline_s, 5.0))
        load.stop()
        poller.stop()
        sent_keys = sum(r["sent"]["keys"] for r in reports)
        sent_bytes = sum(r["sent"]["bytes"] for r in reports)
        print(f"handoff: {sent_keys} objects, {sent_bytes / 1e6:.2f} MB in {handoff_s:.1f} s (commit to settled "
              f"on every node): {sent_keys / handoff_s:.0f} objects/s, {sent_bytes / 1e6 / handoff_s:.2f} MB/s")
        print(f"node6 now stores {fetch_json(spec.node('node6').http_url, '/stats')['keys_stored']} keys")
        for phase in ("baseline", "joining", "handoff", "after"):
            rows = [(latency, status) for p, latency, status in load.samples if p == phase]
            if not rows:
                continue
            errors = sum(1 for _, status in rows if not 200 <= status < 400)  # 300: siblings, a fine answer
            seconds = {"baseline": baseline_s, "handoff": handoff_s}.get(phase)
            rate = f"{len(rows) / seconds:.0f} req/s  " if seconds else ""
            print(f"clients {phase:<8} {len(rows):>7} requests  {rate}{_percentiles([l for l, _ in rows])}  "
                  f"errors {errors}")
            print(f"        {'':<8} {poller.describe(phase)}")
    finally:
        supervisor.stop_all(grace_s=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.handoff", description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=256)
    parser.add_argument("--threads", type=int, default=4, help="client load threads (default 4)")
    parser.add_argument("--baseline-s", type=float, default=10.0)
    parser.add_argument("--batch-keys", type=int, default=256, help="keys per transfer batch (default 256)")
    args = parser.parse_args(argv)
    run(args.keys, args.value_bytes, args.partitions, args.threads, args.baseline_s, args.batch_keys)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
