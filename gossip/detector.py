"""Phi accrual failure detector (Hayashibara et al.) over the age of the freshest heartbeat heard through gossip.

Theory of operation
- Classic phi accrual times the gaps between heartbeat arrivals. Through gossip most heartbeats come second
  hand: a beat produced before a crash can still arrive seconds after it, restarting the silence clock, and
  arrival gaps alone cannot meet a few-second detection bound. So each heartbeat carries its author's own
  clock (seconds since it started, `beat_s`), and we track the *age* of the freshest beat instead:
  age(now) = now - (offset + beat_s), where offset maps the author's clock onto ours.
- offset is estimated as the minimum over observations of (arrival time - beat_s): every observation is at
  least as late as its beat was produced, so the minimum is the least delayed one (a direct exchange), and
  age is never overestimated. The estimate may creep up by `creep` (1e-3 s per s) between observations so
  a peer whose clock runs slow is not made to look stale.
- Samples: when a fresher beat arrives, the age the previous freshest beat had reached is one sample (with
  direct heartbeats this is exactly the inter-arrival time). They fill a bounded window (oldest out) with
  running sums. phi(age) = -log10(P(sample >= age)) under a normal model with the window's mean (widened by
  `acceptable_pause_s`) and deviation (floored by `min_std_s`); a peer is suspected when phi > threshold (8,
  as Cassandra: one chance in 10^8 that it is merely late). The normal model, not Cassandra's exponential
  one, is what keeps detection within seconds: exponential at threshold 8 waits 18 mean intervals.
- Bootstrapping: a new peer (or incarnation) starts with two synthetic samples that spread wide around the
  gossip interval, so it is not convicted at once; real samples dilute them as they come.
- Samples above `max_interval_s` are dropped (as Cassandra): a partition or a pause says nothing about
  normal jitter and would blind the detector for long afterwards.
- Pure: time comes in as arguments. Each window keeps its crossing time (`deadline_s`), so checking 500
  peers is 500 comparisons.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    threshold: float = 8.0
    window_size: int = 100
    bootstrap_interval_s: float = 1.0
    bootstrap_spread_s: float = 1.0       # synthetic samples at interval -/+ spread: a wide first guess
    min_std_s: float = 0.3
    acceptable_pause_s: float = 0.25
    max_interval_s: float = 8.0
    creep: float = 1e-3

    def __post_init__(self) -> None:
        if self.threshold <= 0 or self.window_size < 2:
            raise ValueError("detector: threshold must be > 0 and window_size >= 2")
        if min(self.bootstrap_interval_s, self.min_std_s, self.max_interval_s) <= 0:
            raise ValueError("detector: intervals and deviations must be positive")
        if min(self.acceptable_pause_s, self.bootstrap_spread_s, self.creep) < 0:
            raise ValueError("detector: pause, spread and creep must not be negative")


def phi_of(age_s: float, mean_s: float, std_s: float) -> float:
    """-log10 of the chance that a normal(mean, std) sample is at least `age_s`."""
    p_later = 0.5 * math.erfc((age_s - mean_s) / (std_s * SQRT2))
    return math.inf if p_later <= 0.0 else -math.log10(p_later)


def z_for_phi(threshold: float) -> float:
    """How many deviations past the mean phi reaches `threshold` (bisection: erfc stays accurate in the
    far tail, where 1 - 10**-phi would round to 1)."""
    low, high = -10.0, 40.0
    for _ in range(100):
        middle = (low + high) / 2
        if phi_of(middle, 0.0, 1.0) < threshold:
            low = middle
        else:
            high = middle
    return high


class Window:
    """One peer: clock offset, freshest beat, recent samples with running sums, and the crossing time.
    Hot path (one `observe` per heartbeat per peer), hence the flattened arithmetic."""

    __slots__ = ("samples", "sum_s", "sum_sq", "offset_s", "beat_s", "seen_s", "span_s", "deadline_s",
                 "_config", "_z")

    def __init__(self, beat_s: float, now: float, config: DetectorConfig, z: float, scale: float = 1.0):
        self._config = config
        self._z = z
        self.samples: deque[float] = deque()
        self.sum_s = self.sum_sq = 0.0
        self.offset_s = now - beat_s
        self.beat_s = beat_s
        self.seen_s = now
        spread_s = config.bootstrap_spread_s * scale
        self.add(max(0.0, config.bootstrap_interval_s - spread_s))
        self.add(config.bootstrap_interval_s + spread_s)

    def add(self, sample_s: float) -> None:
        samples = self.samples
        if len(samples) == self._config.window_size:
            old = samples.popleft()
            self.sum_s -= old
            self.sum_sq -= old * old
        samples.append(sample_s)
        self.sum_s += sample_s
        self.sum_sq += sample_s * sample_s
        mean_s, std_s = self.params()
        self.span_s = mean_s + self._z * std_s
        self.deadline_s = self.offset_s + self.beat_s + self.span_s

    def params(self) -> tuple[float, float]:
        """The model: the samples' mean widened by the acceptable pause, their deviation floored."""
        count = len(self.samples)
        mean_s = self.sum_s / count
        variance = self.sum_sq / count - mean_s * mean_s  # rounding can dip a hair below zero
        std_s = math.sqrt(variance) if variance > 0.0 else 0.0
        config = self._config
        return mean_s + config.acceptable_pause_s, std_s if std_s > config.min_std_s else config.min_std_s

    def observe(self, beat_s: float, now: float) -> None:
        crept_s = self.offset_s + self._config.creep * (now - self.seen_s)
        lag_s = now - beat_s
        self.offset_s = lag_s if lag_s < crept_s else crept_s
        self.seen_s = now
        if beat_s <= self.beat_s:
            self.deadline_s = self.offset_s + self.beat_s + self.span_s
            return
        reached_s = now - self.offset_s - self.beat_s   # the age the previous freshest beat had reached
        self.beat_s = beat_s
        if reached_s <= self._config.max_interval_s:
            self.add(reached_s)
        else:
            self.deadline_s = self.offset_s + beat_s + self.span_s


class PhiAccrualDetector:
    """Windows for all peers. `check(now)` lists the suspects and the next time one could become one."""

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        self._z = z_for_phi(self.config.threshold)
        self._windows: dict[str, Window] = {}

    def reset(self, node: str, beat_s: float, now: float, scale: float = 1.0) -> None:
        """A new peer or a new incarnation: forget its history and bootstrap, with the synthetic samples'
        spread multiplied by `scale` (beats take longer to come around a bigger cluster)."""
        self._windows[node] = Window(beat_s, now, self.config, self._z, scale)

    def observe(self, node: str, beat_s: float, now: float) -> None:
        """A heartbeat of `node`, stamped `beat_s` by its own clock, reached us at `now`."""
        window = self._windows.get(node)
        if window is None:
            self.reset(node, beat_s, now)
        else:
            window.observe(beat_s, now)

    def forget(self, node: str) -> None:
        self._windows.pop(node, None)

    def tracks(self, node: str) -> bool:
        return node in self._windows

    def age(self, node: str, now: float) -> float:
        window = self._windows[node]
        return now - window.offset_s - window.beat_s

    def phi(self, node: str, now: float) -> float:
        mean_s, std_s = self._windows[node].params()
        return phi_of(self.age(node, now), mean_s, std_s)

    def suspected(self, node: str, now: float) -> bool:
        return now > self._windows[node].deadline_s

    def fresh(self, node: str, now: float) -> bool:
        """Recent enough to bring a convicted peer back: younger than half the conviction age, so a
        relayed beat from just before a crash does not make the dead flap up again."""
        window = self._windows[node]
        return now - window.offset_s - window.beat_s <= window.span_s / 2

    def check(self, now: float) -> tuple[list[str], float]:
        """(peers whose phi crossed the threshold, the earliest crossing still ahead; inf if none)."""
        suspects, next_s = [], math.inf
        for node, window in self._windows.items():
            deadline_s = window.deadline_s
            if now > deadline_s:
                suspects.append(node)
            elif deadline_s < next_s:
                next_s = deadline_s
        return suspects, next_s

    def stale(self, nodes: Iterable[str], now: float, age_min_s: float, count_max: int) -> list[str]:
        """Up to `count_max` of `nodes` whose freshest beat is at least `age_min_s` old, stalest first."""
        windows, found = self._windows, []
        for node in nodes:
            window = windows.get(node)
            if window is not None:
                produced_s = window.offset_s + window.beat_s
                if now - produced_s >= age_min_s:
                    found.append((produced_s, node))
        found.sort()
        return [node for _, node in found[:count_max]]
