"""The simulated network: per-message latency, loss, duplication and reordering; partitions and clogs.

Theory of operation
- `route(src, dst, now)` decides a message's fate when it is sent and returns its delivery times: none
  (dropped), one, or two (duplicated). Latency is `latency_s` plus a jitter of mean `jitter_s` drawn from an
  exponential (default), uniform or lognormal (heavy-tailed) distribution;
  with probability `reorder_p` a message is held an extra uniform(0, `reorder_delay_s`), so it overtakes or
  is overtaken by its neighbours.
- A partition is a list of disjoint node groups; nodes in no group form one more group. A message between
  two groups is dropped, both when sent and (checked by the world) when it would arrive: a cut also loses
  what was in flight, as a real one breaks connections.
- A clog (FoundationDB's swizzle-clog) holds a directed link: messages sent on it before `until_s` arrive
  no earlier than `until_s` plus their latency, then all at once. `swizzle` clogs the links of a few nodes
  and releases them one node at a time in reverse order.
- All randomness comes from the world's one `random.Random`, drawn in the order messages are sent.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass


JITTERS = ("exponential", "uniform", "lognormal")


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    latency_s: float = 0.002
    jitter_s: float = 0.003         # the jitter's mean
    jitter: str = "exponential"     # its distribution: exponential, uniform (0..2*mean), lognormal (heavy tail)
    drop_p: float = 0.0
    duplicate_p: float = 0.0
    reorder_p: float = 0.0
    reorder_delay_s: float = 0.05

    def __post_init__(self) -> None:
        if self.jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {JITTERS}, got {self.jitter!r}")
        for name in ("drop_p", "duplicate_p", "reorder_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if min(self.latency_s, self.jitter_s, self.reorder_delay_s) < 0:
            raise ValueError("latencies must be non-negative")


class Network:
    def __init__(self, rng: random.Random, config: NetworkConfig | None = None):
        self.rng = rng
        self.config = config or NetworkConfig()
        self._group: dict[str, int] = {}
        self._clogged_until_s: dict[tuple[str, str], float] = {}

    # ---- faults -------------------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        self._group = {}
        for index, group in enumerate(groups):
            for node in group:
                if node in self._group:
                    raise ValueError(f"node {node!r} is in two partition groups")
                self._group[node] = index

    def heal(self) -> None:
        self._group = {}
        self._clogged_until_s = {}

    def partitioned(self) -> bool:
        return bool(self._group)

    def clog(self, src: str, dst: str, until_s: float) -> None:
        key = (src, dst)
        self._clogged_until_s[key] = max(until_s, self._clogged_until_s.get(key, 0.0))

    def swizzle(self, nodes: list[str], peers: list[str], now: float, step_s: float, hold_s: float) -> None:
        """Clog every link into and out of `nodes` (in that order) and release them in reverse order: the
        last node's links after `hold_s`, each earlier node's `step_s` later."""
        count = len(nodes)
        for index, node in enumerate(nodes):
            until_s = now + hold_s + (count - 1 - index) * step_s
            for peer in peers:
                if peer != node:
                    self.clog(node, peer, until_s)
                    self.clog(peer, node, until_s)

    def can_reach(self, src: str, dst: str) -> bool:
        group = self._group
        return not group or group.get(src, -1) == group.get(dst, -1)

    # ---- one message --------------------------------------------------------------------------------

    def _jitter_s(self) -> float:
        mean_s, kind = self.config.jitter_s, self.config.jitter
        if not mean_s:
            return 0.0
        if kind == "exponential":
            return self.rng.expovariate(1.0 / mean_s)
        if kind == "uniform":
            return self.rng.uniform(0.0, 2.0 * mean_s)
        return mean_s * self.rng.lognormvariate(-0.5, 1.0)  # sigma 1, scaled so the mean is mean_s

    def route(self, src: str, dst: str, now: float) -> list[float]:
        config, rng = self.config, self.rng
        if not self.can_reach(src, dst) or (config.drop_p and rng.random() < config.drop_p):
            return []
        copies = 2 if config.duplicate_p and rng.random() < config.duplicate_p else 1
        times = []
        for _ in range(copies):
            delay_s = config.latency_s + self._jitter_s()
            if config.reorder_p and rng.random() < config.reorder_p:
                delay_s += rng.uniform(0.0, config.reorder_delay_s)
            times.append(max(now, self._clogged_until_s.get((src, dst), 0.0)) + delay_s)
        return times
