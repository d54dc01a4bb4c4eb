"""A node's counters and latency percentiles, for GET /stats (JSON) and GET /metrics (Prometheus text).

Theory of operation: counters are plain attributes bumped on the request path (an attribute add, no
locks: one trio thread). Coordinator latencies go into fixed-size windows of the most recent samples
(µs); percentiles are computed only when someone asks, by sorting one window, so recording stays O(1).
Gauges that cost a query (keys stored, hints pending) are handed in by the caller when it renders.

Names follow Riak's /stats where Riak has one: node_gets / node_puts count requests this node
coordinated, vnode_gets / vnode_puts replica-level reads and writes it served, read_repairs the replicas
it repaired, node_get_fsm_time_* / node_put_fsm_time_* coordinator latency in µs (median, 95, 99 and
100, the slowest of the window).
/metrics (dynamo/metric.py) shows every field as dynamo_<field>, with HELP from HELP below, and the
latencies as two summaries in seconds (dynamo_node_get_fsm_time_seconds, ..._put_...).
"""

from __future__ import annotations

import collections
import math
from typing import Any

from dynamo import metric

WINDOW_SAMPLES = 2048
PERCENTILES = (("median", 0.50), ("95", 0.95), ("99", 0.99), ("100", 1.0))

COUNTERS = (
    "node_gets", "node_puts", "node_deletes", "node_gets_notfound", "node_get_failures", "node_put_failures",
    "vnode_gets", "vnode_puts", "read_repairs", "coord_redirs", "hints_written", "hints_delivered",
    "handoff_keys_dropped", "handoff_failures", "siblings_refused", "siblings_warned", "requests_refused",
    "aae_exchanges", "aae_keys_repaired", "aae_tombstones_reaped", "writes_forwarded",
)
# Gauges of the node (handed to to_json by node.py) that only ever rise: counters to Prometheus.
RISING_GAUGES = ("commit_batches", "commit_ops", "commit_batches_in_loop", "commit_thread_spells",
                 "commit_background_syncs", "rpc_requests", "rpc_handler_errors", "gc_collections")
# The /metrics HELP text per /stats field; a field missing here still gets a generic one.
HELP = {
    "node_gets": "Gets this node coordinated", "node_puts": "Puts and deletes this node coordinated",
    "node_deletes": "Deletes this node coordinated", "node_gets_notfound": "Coordinated gets that found nothing",
    "node_get_failures": "Coordinated gets that failed (quorum not met)",
    "node_put_failures": "Coordinated puts that failed (quorum not met, timeout)",
    "vnode_gets": "Replica reads served", "vnode_puts": "Replica writes served",
    "read_repairs": "Replicas sent a repair after a read", "coord_redirs": "Writes forwarded to a primary",
    "hints_written": "Hinted writes stored as a fallback", "hints_delivered": "Hints handed back to a primary",
    "handoff_keys_dropped": "Handed-off keys dropped here afterwards", "handoff_failures": "Failed hint deliveries",
    "siblings_refused": "Writes refused for too many siblings", "siblings_warned": "Writes above the sibling warning",
    "requests_refused": "HTTP requests refused for load (503)",
    "writes_forwarded": "Replicated writes passed on to the new owners of a ring change the sender did not know of",
    "keys_stored": "Objects stored on this node",
    "hints_pending": "Hints waiting for their primary", "ring_version": "Version of the ring this node holds",
    "ring_members": "Members of the ring", "members_down": "Members this node sees down",
    "http_inflight": "HTTP requests in progress", "commit_batches": "Storage group commits written",
    "commit_ops": "Storage operations committed",
    "commit_batches_in_loop": "Storage group commits written from the event loop (the rest from a worker thread)",
    "commit_thread_spells": "Times slow writes from the event loop sent the next group commits to a worker thread",
    "commit_background_syncs": "Group commits from the event loop flushed to disk through io_uring, the loop serving on",
    "rpc_requests": "RPC requests served",
    "rpc_handler_errors": "RPC requests whose handler failed",
    "aae_exchanges": "Anti-entropy tree exchanges this node started",
    "aae_keys_repaired": "Keys anti-entropy wrote on either side of an exchange",
    "aae_tombstones_reaped": "Tombstones reaped here once every primary held them",
    "gc_collections": "Garbage collections of the node process", "gc_thresholds": "Garbage collector thresholds",
    "gc_frozen_objects": "Objects exempt from garbage collection (frozen at start-up)",
}


class LatencyWindow:
    """The last WINDOW_SAMPLES latencies in µs."""

    def __init__(self, size: int = WINDOW_SAMPLES) -> None:
        self._samples: collections.deque[int] = collections.deque(maxlen=size)
        self.count = 0
        self.sum_us = 0  # of every sample ever recorded, as `count`

    def record(self, latency_us: int) -> None:
        self._samples.append(latency_us)
        self.count += 1
        self.sum_us += latency_us

    def percentile(self, fraction: float) -> int:
        """Nearest-rank percentile of the window; 0 when empty."""
        if not self._samples:
            return 0
        ordered = sorted(self._samples)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return ordered[rank - 1]

    def percentiles(self) -> dict[str, int]:
        if not self._samples:
            return {name: 0 for name, _ in PERCENTILES}
        ordered = sorted(self._samples)
        return {name: ordered[max(1, math.ceil(q * len(ordered))) - 1] for name, q in PERCENTILES}


class Stats:
    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.get_latency = LatencyWindow()
        self.put_latency = LatencyWindow()

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def to_json(self, gauges: dict[str, Any]) -> dict[str, Any]:
        """Everything, as Riak's /stats is: one flat JSON object (plus `latency_ms` for people)."""
        out: dict[str, Any] = dict(gauges)
        out.update(self.counters())
        latency_ms: dict[str, dict[str, float]] = {}
        for op, window in (("get", self.get_latency), ("put", self.put_latency)):
            values = window.percentiles()
            latency_ms[op] = {}
            for name, value in values.items():
                out[f"node_{op}_fsm_time_{name}"] = value
                label = {"median": "p50", "100": "max"}.get(name, f"p{name}")
                latency_ms[op][label] = round(value / 1000, 3)
        out["latency_ms"] = latency_ms
        return out


def prometheus_text(stats: dict[str, Any], node_id: str,
                    windows: dict[str, LatencyWindow] | None = None) -> str:
    """Prometheus text (format 0.0.4) of a report rendered by Stats.to_json. The coordinator latencies
    become summaries of their window quantiles; `windows` ("get"/"put" -> LatencyWindow) adds their
    lifetime _sum and _count (without it they are 0)."""
    latency_fields = {f"node_{op}_fsm_time_{name}" for op in ("get", "put") for name, _ in PERCENTILES}
    families = metric.report_families(stats, counters=COUNTERS + RISING_GAUGES, helps=HELP,
                                      skip=latency_fields | {"latency_ms"})
    for op in ("get", "put"):
        window = (windows or {}).get(op)
        quantiles = [(q, stats.get(f"node_{op}_fsm_time_{name}", 0) / 1e6) for name, q in PERCENTILES]
        families.append(metric.summary(
            f"node_{op}_fsm_time_seconds", f"Latency of {op}s this node coordinated (quantiles of the last "
            f"{WINDOW_SAMPLES} requests), seconds", quantiles, window.count if window else 0,
            window.sum_us / 1e6 if window else 0.0))
    return metric.render(families, {"node": node_id})
