"""Transfer plans: what has to move when the ring changes from `old` to `new`.

Theory of operation
- Ownership handoff: a partition whose owner changed is one Transfer(partition, source=old owner,
  target=new owner). Nothing else moves ownership; the plan is sorted by partition.
- Replica responsibility: with n_val replicas, node X holds partition p's data when X is among p's
  primaries (preflist.replicas_of_partition). A join or leave also shifts that set for partitions near the
  changed ones. `replica_changes` lists, per partition whose primary set changed, the nodes that gain the
  data (must receive it) and the nodes that lose it (may drop it once the gainers have it).
- Both rings must have the same partition count (else ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass

from ring.preflist import replicas_of_partition
from ring.state import Ring


@dataclass(frozen=True)
class Transfer:
    partition: int
    source: str
    target: str


@dataclass(frozen=True)
class ReplicaChange:
    partition: int
    gained: tuple[str, ...]  # sorted
    lost: tuple[str, ...]    # sorted


def transfer_plan(old: Ring, new: Ring) -> tuple[Transfer, ...]:
    """One Transfer per partition whose owner differs between the rings, by partition."""
    _check(old, new)
    return tuple(Transfer(partition, before, after)
                 for partition, (before, after) in enumerate(zip(old.owners, new.owners)) if before != after)


def replica_changes(old: Ring, new: Ring, n_val: int) -> tuple[ReplicaChange, ...]:
    """Per partition whose primaries differ: who gains its data and who loses it."""
    _check(old, new)
    changes = []
    for partition in range(old.partitions):
        before = set(replicas_of_partition(old, partition, n_val))
        after = set(replicas_of_partition(new, partition, n_val))
        if before != after:
            changes.append(ReplicaChange(partition, tuple(sorted(after - before)), tuple(sorted(before - after))))
    return tuple(changes)


def _check(old: Ring, new: Ring) -> None:
    if old.partitions != new.partitions:
        raise ValueError(f"rings differ in partition count: {old.partitions} vs {new.partitions}")
