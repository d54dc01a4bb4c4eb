"""A node's counters and latency percentiles, for GET /stats (JSON) and GET /metrics (Prometheus text).

Theory of operation: counters are plain attributes bumped on the request path (an attribute add, no
locks: one trio thread). Coordinator latencies go into fixed-size windows of the most recent samples
(µs); percentiles are computed only when someone asks, by sorting one window, so recording stays O(1).
Gauges that cost a query (keys stored, hints pending) are handed in by the caller when it renders.

Names follow Riak's /stats where Riak has one: node_gets / node_puts count requests this node
coordinated, vnode_gets / vnode_puts replica-level reads and writes it served, read_repairs the replicas
it repaired, node_get_fsm_time_* / node_put_fsm_time_* coordinator latency in µs (median, 95, 99).
"""

from __future__ import annotations

import collections
import math
from typing import Any

WINDOW_SAMPLES = 2048
PERCENTILES = (("median", 0.50), ("95", 0.95), ("99", 0.99))

COUNTERS = (
    "node_gets", "node_puts", "node_deletes", "node_gets_notfound", "node_get_failures", "node_put_failures",
    "vnode_gets", "vnode_puts", "read_repairs", "coord_redirs", "hints_written", "hints_delivered",
    "handoff_keys_dropped", "handoff_failures", "siblings_refused", "siblings_warned", "requests_refused",
)


class LatencyWindow:
    """The last WINDOW_SAMPLES latencies in µs."""

    def __init__(self, size: int = WINDOW_SAMPLES) -> None:
        self._samples: collections.deque[int] = collections.deque(maxlen=size)
        self.count = 0

    def record(self, latency_us: int) -> None:
        self._samples.append(latency_us)
        self.count += 1

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
                latency_ms[op]["p50" if name == "median" else f"p{name}"] = round(value / 1000, 3)
        out["latency_ms"] = latency_ms
        return out


def prometheus_text(stats: dict[str, Any], node_id: str) -> str:
    """Prometheus text exposition of the numeric entries of `stats` (as rendered by Stats.to_json)."""
    label = '{node="' + node_id.replace("\\", "\\\\").replace('"', '\\"') + '"}'
    lines = []
    for name, value in sorted(stats.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        kind = "counter" if name in COUNTERS else "gauge"
        metric = f"dynamo_{name}"
        lines.append(f"# TYPE {metric} {kind}")
        lines.append(f"{metric}{label} {value}")
    return "\n".join(lines) + "\n"
