"""Ownership report: how evenly a ring is shared and how well it is spaced, as data and as a text table.

Theory of operation
- Per-member partition counts (members owning nothing count as 0), their min/max/mean, the ideal bounds
  floor(Q/S)..ceil(Q/S), and the spacing violations (windows of target_n partitions repeating an owner)
  next to the fewest possible for this many nodes (spacing.violations_min).
- `format()` renders a plain text table for terminals and logs; it never reads anything but the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from ring.claim import ownership_bounds
from ring.spacing import violations_min, window_violations
from ring.state import Ring


@dataclass(frozen=True)
class OwnershipReport:
    partitions: int
    target_n: int
    version: int
    counts: tuple[tuple[str, int], ...]  # (node, partitions owned), by node
    minimum: int
    maximum: int
    mean: float
    ideal_low: int
    ideal_high: int
    violations: int
    violations_min: int

    @property
    def balanced(self) -> bool:
        return self.ideal_low <= self.minimum and self.maximum <= self.ideal_high

    def format(self) -> str:
        nodes = len(self.counts)
        width = max([len("node")] + [len(node) for node, _ in self.counts])
        lines = [f"ring v{self.version}: {self.partitions} partitions, {nodes} nodes, target_n {self.target_n}",
                 f"{'node':<{width}}  partitions   share"]
        for node, count in self.counts:
            lines.append(f"{node:<{width}}  {count:>10}  {100 * count / self.partitions:5.1f}%")
        lines.append(f"min {self.minimum}  max {self.maximum}  mean {self.mean:.2f}  "
                     f"(ideal {self.ideal_low}..{self.ideal_high}{'' if self.balanced else ', NOT MET'})")
        lines.append(f"spacing: {self.violations} of {self.partitions} windows of {self.target_n} repeat an owner "
                     f"(fewest possible: {self.violations_min})")
        return "\n".join(lines)


def ownership_report(ring: Ring) -> OwnershipReport:
    counts = tuple((node, len(ring.partitions_of(node))) for node in ring.nodes)
    values = [count for _, count in counts]
    low, high = ownership_bounds(ring.partitions, len(counts))
    return OwnershipReport(
        partitions=ring.partitions, target_n=ring.target_n, version=ring.version, counts=counts,
        minimum=min(values), maximum=max(values), mean=sum(values) / len(values),
        ideal_low=low, ideal_high=high,
        violations=window_violations(ring.owners, ring.target_n),
        violations_min=violations_min(ring.partitions, len(counts), ring.target_n))
